"""Quality metrics for relit portrait video (the paper's Sec. 4.2 / 4.4 metrics, made explicit).

Every metric is a small pure function over arrays; the formulas are stated here and in the README
("Evaluation and benchmark"). Image conventions: metrics that compare pixels (WE, tSSIM, PSNR) take DISPLAY
images, i.e. sRGB-encoded values in [0, 1] as a viewer sees them (use `to_display` on the engine's linear
frames); the lighting estimator works on LINEAR RGB because shading is linear in radiance.

Lighting (SH, DPR order and normalisation, see relight_core.sh):
- a light is compared through the shading it makes on the normals a camera can see. N is a fixed set of
  M = 2000 unit normals, cosine-weighted over the hemisphere facing the camera (DPR -Y; Malley's method
  on a sunflower disk), i.e. weighted like the surface of a face seen by that camera. Comparing the 9
  coefficients directly is ill-posed: from one view the DC and Y (view-axis) terms are nearly collinear
  over the visible normals, so an estimator can trade one for the other without changing the image.
- normalised shading  s_L(n) = g(E_L(n)) / mean_{m in N} g(E_L(m)), E_L = shade(n, L) the irradiance,
  g the Rec. 709 luminance for an RGB (9, 3) light (a grey (9,) light as is). Dividing by the mean
  removes the global scale that an image cannot separate from albedo (and the pipeline's exposure
  matching), so only the light's shape (direction, spread) is compared.
- lighting error    LE = mean_{n in N} (s_est(n) - s_target(n))^2                  (unitless, >= 0)
  with both lights in the same camera's DPR frame (the output camera's; a world-fixed target is rotated
  into a novel view's frame).
- lighting instability  LI = mean_{n in N} std_i s_est,i(n)                         (unitless, >= 0)
  the population standard deviation over all samples i (frames x views) relit with ONE target light,
  each estimate first rotated into a common frame (the input camera's, where a world-fixed light is
  constant) and evaluated on that camera's N.
- the estimator is pluggable (`LightEstimator`); the default `estimate_light` fits RGB SH by robust least
  squares (relight_core.sh.fit_sh) to the linear pixel values of the skin pixels of a frame, given the
  surface normals of that frame in the camera's DPR frame. Weighting: every skin pixel counts with its
  mask value (0..1), i.e. uniformly over the visible skin area in the image.

Temporal consistency (Lai et al. 2018, "Learning blind video temporal consistency"):
- backward flow F_t from frame t to frame t-1 on REFERENCE frames (the input footage), OpenCV DIS:
  ref_t(x) ~ ref_{t-1}(x + F_t(x)).
- occlusion mask M_t(x) = 1 where the forward-backward check passes,
  |F_t(x) + G_t(x + F_t(x))|^2 <= 0.01 (|F_t(x)|^2 + |G_t(x + F_t(x))|^2) + 0.5  (G_t: flow t-1 -> t),
  and x + F_t(x) lies inside the image; optionally multiplied by a region of interest (person matte).
- warping error     WE_t = sum_x M_t(x) ||O_t(x) - O_{t-1}(x + F_t(x))||^2 / (3 sum_x M_t(x))
  (mean squared error per channel on [0, 1] display values), WE = mean_t WE_t; relative WE =
  WE(output) / WE(input) with the same flows and masks (1 = as stable as the footage itself).
- temporal SSIM     tSSIM_t = SSIM(O_t, O_{t-1}) (scikit-image, 7x7 window, data range 1, averaged over
  channels and over the region of interest). The paper's LPIPS between consecutive frames needs
  AlexNet/VGG network weights that cannot be had here, so SSIM stands in (higher = more stable).

Others:
- pose error        angle (degrees) of R_req^T R_est: the geodesic distance between the requested view's
  head rotation and the one re-tracked on the output.
- masked PSNR       10 log10(1 / MSE) over the mask, on [0, 1] display values (dB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float64)
MIN_FIT_PIXELS = 50

LightEstimator = Callable[[np.ndarray, np.ndarray, np.ndarray], "np.ndarray | None"]
"""(image (H,W,3) linear RGB, normals (H,W,3) unit DPR frame, mask (H,W) 0..1) -> SH (9,3) or None."""


# --------------------------------------------------------------------------------------------- display


def to_display(linear: np.ndarray) -> np.ndarray:
    """(H, W, 3) linear RGB -> sRGB-encoded float32 in [0, 1] (what the metrics on pixels compare)."""
    from relight_core.io import linear_to_srgb

    return linear_to_srgb(linear)


# --------------------------------------------------------------------------------------------- lighting


def grey_sh(sh: np.ndarray) -> np.ndarray:
    """(9,) or (9, 3) SH -> (9,) grey SH (Rec. 709 luminance of an RGB light), float64."""
    sh = np.asarray(sh, dtype=np.float64)
    if sh.ndim == 2:
        if sh.shape != (9, 3):
            raise ValueError(f"an RGB SH light must be (9, 3), got {sh.shape}")
        return sh @ LUMA
    if sh.shape != (9,):
        raise ValueError(f"an SH light must be (9,) or (9, 3), got {sh.shape}")
    return sh


def front_normals(m: int = 2000) -> np.ndarray:
    """(m, 3) unit normals cosine-weighted over the camera-facing hemisphere (DPR -Y), deterministic.

    Malley's method: a sunflower (golden-angle) point set, uniform on the unit disk, lifted to the
    hemisphere; the disk's axes are DPR X (right) and Z (up).
    """
    k = np.arange(m) + 0.5
    r = np.sqrt(k / m)
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    x, z = r * np.cos(phi), r * np.sin(phi)
    return np.stack([x, -np.sqrt(np.clip(1.0 - r * r, 0.0, None)), z], axis=1)


_FRONT: np.ndarray | None = None


def _front_basis() -> np.ndarray:
    global _FRONT
    if _FRONT is None:
        from relight_core.sh import sh_basis

        _FRONT = np.asarray(sh_basis(front_normals()), dtype=np.float64)
    return _FRONT


def normalised_shading(sh: np.ndarray) -> np.ndarray:
    """s_L on the front normals: luminance irradiance / its mean -> (M,); NaNs when the mean is <= 0."""
    e = _front_basis() @ grey_sh(sh)
    mean = float(e.mean())
    if not np.isfinite(e).all() or mean <= 1e-12:
        return np.full(len(e), np.nan)
    return e / mean


def lighting_error(estimated: np.ndarray, target: np.ndarray) -> float:
    """LE = mean over the front normals of (s_estimated - s_target)^2; NaN if either is unusable.

    Both lights (9,) or (9, 3) must be expressed in the same camera's DPR frame.
    """
    return float(np.mean((normalised_shading(estimated) - normalised_shading(target)) ** 2))


def lighting_instability(estimates: np.ndarray | Sequence[np.ndarray]) -> float:
    """LI = mean over the front normals of the std (ddof 0) over samples of s_estimate.

    `estimates`: (N, 9) or (N, 9, 3), all in one common frame, all relit with the same target light.
    Samples whose estimate is unusable (NaN) are ignored; NaN when fewer than 2 remain.
    """
    s = np.array([normalised_shading(e) for e in estimates]) if len(estimates) else np.zeros((0, 1))
    s = s[np.isfinite(s).all(axis=1)] if s.size else s
    if len(s) < 2:
        return float("nan")
    return float(np.mean(np.std(s, axis=0)))


def estimate_light(image: np.ndarray, normals: np.ndarray, mask: np.ndarray,
                   robust: bool = True) -> np.ndarray | None:
    """The default LightEstimator: RGB SH fitted to the masked pixels of a LINEAR image.

    image (H, W, 3) linear RGB; normals (H, W, 3) unit vectors in the image camera's DPR frame;
    mask (H, W) weights in 0..1 (the skin pixels). Returns (9, 3) SH in the DPR convention (the
    irradiance times the mean albedo of the masked area), or None with fewer than MIN_FIT_PIXELS pixels.
    """
    from relight_core.sh import fit_sh

    m = np.asarray(mask, dtype=np.float64)
    nrm = np.asarray(normals, dtype=np.float64)
    ok = (m > 0.05) & np.isfinite(nrm).all(axis=-1) & (np.linalg.norm(nrm, axis=-1) > 0.5)
    if int(ok.sum()) < MIN_FIT_PIXELS:
        return None
    return np.asarray(fit_sh(nrm[ok], np.asarray(image, dtype=np.float64)[ok], weights=m[ok],
                             robust=robust))


CAM_TO_DPR = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def cam_to_dpr(v: np.ndarray) -> np.ndarray:
    """(..., 3) camera-space (OpenGL) vectors -> the camera's DPR frame: (x, y, z) -> (x, -z, y)."""
    return np.asarray(v, dtype=np.float64) @ CAM_TO_DPR.T


def cam_rotation_to_dpr(r_cam: np.ndarray) -> np.ndarray:
    """A 3x3 rotation acting on camera-space (OpenGL) vectors -> the same rotation in the DPR frame.

    DPR (X, Y, Z) = cam (x, -z, y), i.e. v_dpr = P v_cam; the rotation becomes P R P^T.
    """
    return CAM_TO_DPR @ np.asarray(r_cam, dtype=np.float64) @ CAM_TO_DPR.T


# --------------------------------------------------------------------------------------------- flow


def _grey_u8(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) display image in [0, 1] -> (H, W) uint8 luma for the flow estimator."""
    g = np.asarray(img, dtype=np.float32)
    if g.ndim == 3:
        g = g @ LUMA.astype(np.float32)
    return np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8)


def dis_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """OpenCV DIS optical flow (MEDIUM preset) F with src(x) ~ dst(x + F(x)); (H, W, 2) float32 pixels.

    src, dst: (H, W, 3) display images in [0, 1] (or (H, W) grey).
    """
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_grey_u8(src), _grey_u8(dst), None)


def warp(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backward warp: out(x) = img(x + flow(x)) (bilinear). Returns (warped same shape, inside (H, W) bool).

    img (H, W) or (H, W, C) float; flow (H, W, 2) in pixels (x, y).
    """
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + flow[..., 0].astype(np.float32)
    my = gy + flow[..., 1].astype(np.float32)
    src = np.asarray(img, dtype=np.float32)
    out = cv2.remap(src, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return out.reshape(src.shape), inside


def consistency_mask(flow_back: np.ndarray, flow_fwd: np.ndarray) -> np.ndarray:
    """Forward-backward occlusion check (Sundaram et al. 2010): (H, W) bool, True = reliable pixel.

    flow_back F: frame t -> t-1 (ref_t(x) ~ ref_{t-1}(x + F(x))); flow_fwd G: frame t-1 -> t.
    Reliable where |F + G(x + F)|^2 <= 0.01 (|F|^2 + |G(x + F)|^2) + 0.5 and x + F is inside the image.
    """
    g_w, inside = warp(flow_fwd, flow_back)
    s = flow_back + g_w
    lhs = (s ** 2).sum(-1)
    rhs = 0.01 * ((flow_back ** 2).sum(-1) + (g_w ** 2).sum(-1)) + 0.5
    return inside & (lhs <= rhs)


def flows_for(reference: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For consecutive reference frames (display images), the pairs (F_t, M_t) for t = 1..N-1.

    F_t (H, W, 2) is the DIS flow from frame t to t-1 and M_t (H, W) bool its occlusion mask.
    """
    out = []
    for t in range(1, len(reference)):
        fb = dis_flow(reference[t], reference[t - 1])
        ff = dis_flow(reference[t - 1], reference[t])
        out.append((fb, consistency_mask(fb, ff)))
    return out


# --------------------------------------------------------------------------------------------- temporal


def warping_error(prev: np.ndarray, cur: np.ndarray, flow_back: np.ndarray, mask: np.ndarray) -> float:
    """WE of one pair: sum_x M ||cur - warp(prev, F)||^2 / (C sum_x M); NaN when the mask is empty.

    prev, cur (H, W, C) display images in [0, 1]; flow_back (H, W, 2) from cur to prev; mask (H, W)
    weights (occlusion mask times the region of interest).
    """
    warped, inside = warp(prev, flow_back)
    m = np.asarray(mask, dtype=np.float64) * inside
    denom = m.sum()
    if denom <= 0:
        return float("nan")
    diff = (np.asarray(cur, dtype=np.float64) - warped) ** 2
    if diff.ndim == 3:
        diff = diff.mean(axis=-1)
    return float((diff * m).sum() / denom)


def warping_errors(frames: Sequence[np.ndarray], flows: Sequence[tuple[np.ndarray, np.ndarray]],
                   rois: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per-pair WE_t, t = 1..N-1, of display frames with precomputed `flows_for(reference)`; (N-1,).

    rois: optional (H, W) 0..1 region of interest per frame (e.g. the person matte of frame t).
    """
    if len(flows) != len(frames) - 1:
        raise ValueError(f"{len(frames)} frames need {len(frames) - 1} flows, got {len(flows)}")
    out = np.empty(len(flows))
    for t in range(1, len(frames)):
        fb, m = flows[t - 1]
        mask = m.astype(np.float64) if rois is None else m * np.asarray(rois[t], dtype=np.float64)
        out[t - 1] = warping_error(frames[t - 1], frames[t], fb, mask)
    return out


def ssim_pair(a: np.ndarray, b: np.ndarray, roi: np.ndarray | None = None) -> float:
    """SSIM of two display images in [0, 1] ((H, W) or (H, W, 3)), 7x7 window, averaged over the roi."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    axis = -1 if a.ndim == 3 else None
    _, smap = structural_similarity(a, b, data_range=1.0, channel_axis=axis, full=True)
    if smap.ndim == 3:
        smap = smap.mean(axis=-1)
    if roi is None:
        pad = 3  # skimage excludes the half-window border from its mean; do the same
        return float(smap[pad:-pad, pad:-pad].mean())
    w = np.asarray(roi, dtype=np.float64)
    return float((smap * w).sum() / w.sum()) if w.sum() > 0 else float("nan")


def temporal_ssim(frames: Sequence[np.ndarray], rois: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Per-pair tSSIM_t = SSIM(O_t, O_{t-1}), t = 1..N-1, of display frames; (N-1,)."""
    return np.array([ssim_pair(frames[t - 1], frames[t], None if rois is None else rois[t])
                     for t in range(1, len(frames))])


# --------------------------------------------------------------------------------------------- pose / PSNR


def rotation_angle_deg(ra: np.ndarray, rb: np.ndarray) -> float:
    """Geodesic angle (degrees) between two 3x3 rotations: arccos((trace(Ra^T Rb) - 1) / 2)."""
    c = (np.trace(np.asarray(ra, dtype=np.float64).T @ np.asarray(rb, dtype=np.float64)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_error_deg(cam2head_requested: np.ndarray, cam_from_head_tracked: np.ndarray) -> float:
    """Angle (degrees) between the requested view and the head pose re-tracked on the output.

    cam2head_requested (4, 4): the output camera's pose in head space (OpenGL axes), so the requested
    head rotation in that camera is R^T; cam_from_head_tracked (4, 4): the tracker's pose on the output.
    """
    r_req = np.asarray(cam2head_requested, dtype=np.float64)[:3, :3].T
    return rotation_angle_deg(r_req, np.asarray(cam_from_head_tracked, dtype=np.float64)[:3, :3])


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR (dB) = 10 log10(1 / MSE) of display images in [0, 1] over mask (H, W) weights; inf if equal."""
    d = (np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2
    if d.ndim == 3:
        d = d.mean(axis=-1)
    w = np.ones(d.shape) if mask is None else np.asarray(mask, dtype=np.float64)
    if w.sum() <= 0:
        return float("nan")
    mse = float((d * w).sum() / w.sum())
    return float("inf") if mse <= 0 else float(10.0 * np.log10(1.0 / mse))
