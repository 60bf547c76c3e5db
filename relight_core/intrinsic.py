"""Intrinsic decomposition of a portrait frame: input-light estimation and albedo / shading separation.

Model (Lambertian, 2nd-order SH): image(p) = albedo(p) * shade(n(p), L_in), with `shade` the irradiance
of `relight_core.sh` (DPR order and normalisation) and n(p) the surface normal in the input camera's DPR
frame.

Scale / colour ambiguity, and how it is resolved: a fit of RGB SH to skin pixels gives F = rho_skin * L_in
per channel, where rho_skin is the (unknown) mean skin albedo: the fitted light absorbs the mean skin
albedo. We split it by assuming that the input light's *average* colour is neutral (white) and that the
mean skin albedo has luminance `SKIN_ALBEDO_LUMA`: L_in = F / k with k = SKIN_ALBEDO_LUMA * F[0] / lum(F[0]).
The light's DC term is then grey; its direction-dependent colour (e.g. a warm key and a cool fill) is kept
at about 60 % of its strength (each channel's fit is tied to the luminance fit's shape, see
`fit_light`); the skin tone (and any global colour cast of the input) goes into the albedo. A relit frame
under a white preset therefore keeps the person's skin tone. No white balance is attempted.
"""

from __future__ import annotations

import cv2
import numpy as np

from relight_core import sh as shlib

SKIN_ALBEDO_LUMA = 0.45  # assumed luminance of the mean skin albedo (linear), see module docstring
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)  # Rec. 709 luminance weights (linear RGB)
SKIN_LABEL = 1


def rgb3(x: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3) float32 copy in every channel (cv2.merge: far faster than numpy broadcasting
    over a trailing axis of size 1 in the hot path)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return cv2.merge((x, x, x))


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance (H, W) float32 of a linear RGB map (H, W, 3) (cv2.transform: ~3x faster than
    a numpy matmul over the channel axis)."""
    return cv2.transform(np.ascontiguousarray(img, dtype=np.float32), LUMA.reshape(1, 3))


def cam_to_dpr_normals(normals_cam: np.ndarray) -> np.ndarray:
    """Camera-space (OpenGL) vectors (..., 3) -> the camera's DPR frame (x, -z, y), float32."""
    n = np.asarray(normals_cam, dtype=np.float32)
    return np.stack([n[..., 0], -n[..., 2], n[..., 1]], axis=-1)


_FEATURE_MAP: np.ndarray | None = None


def _features_to_basis() -> np.ndarray:
    """9x9 M with sh_basis(n) == features(n) @ M, features = (1, Y, Z, X, XY, YZ, Z^2, XZ, X^2-Y^2) (DPR)."""
    global _FEATURE_MAP
    if _FEATURE_MAP is None:
        rng = np.random.default_rng(0)
        n = rng.normal(size=(64, 3))
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        x, y, z = n[:, 0], n[:, 1], n[:, 2]
        f = np.stack([np.ones_like(x), y, z, x, x * y, y * z, z * z, x * z, x * x - y * y], axis=1)
        _FEATURE_MAP = np.linalg.lstsq(f, shlib.sh_basis(n), rcond=None)[0]
    return _FEATURE_MAP


def sh_features_cam(normals_cam: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Quadratic features of camera-space normals (..., 3) in the camera's DPR frame -> (N, 9) float32.

    (1, Y, Z, X, XY, YZ, Z^2, XZ, X^2 - Y^2) with DPR (X, Y, Z) = cam (x, -z, y); `shade_features` turns
    them into irradiance with one matrix product for any number of lights.
    """
    n = np.asarray(normals_cam, dtype=np.float32).reshape(-1, 3)
    x, y, z = n[:, 0], -n[:, 2], n[:, 1]
    f = np.empty((len(n), 9), np.float32) if out is None else out
    f[:, 0] = 1.0
    f[:, 1] = y
    f[:, 2] = z
    f[:, 3] = x
    np.multiply(x, y, out=f[:, 4])
    np.multiply(y, z, out=f[:, 5])
    np.multiply(z, z, out=f[:, 6])
    np.multiply(x, z, out=f[:, 7])
    np.subtract(x * x, y * y, out=f[:, 8])
    return f


def shade_features(features: np.ndarray, shs: list[np.ndarray]) -> list[np.ndarray]:
    """Irradiance (N, 3) >= 0 of each RGB SH (9, 3) or grey (9,) for features (N, 9) (`sh_features_cam`)."""
    m = _features_to_basis()
    cols = []
    for sh in shs:
        sh3 = np.asarray(sh, dtype=np.float64)
        if sh3.ndim == 1:
            sh3 = np.repeat(sh3[:, None], 3, axis=1)
        cols.append(m @ sh3)
    out = []
    for c in cols:
        e = features @ c.astype(np.float32)
        out.append(np.maximum(e, 0.0, out=e))
    return out


DIM_SHADING_FRAC = 0.35  # below this fraction of the median irradiance, estimated shading fades to grey


def fade_dim_colour(shading: np.ndarray, frac: float = DIM_SHADING_FRAC) -> np.ndarray:
    """Estimated input shading (..., 3) with its colour faded to neutral grey (of the same luminance)
    where it is dim, in place -> the same array.

    The input light is fitted per channel on the normals the camera sees and extrapolated to those that
    turn away (jaw line, neck, hair edges). There the three channels' fits diverge and one can clamp to 0
    while the others do not, which colours the shading (olive, blue) and, through albedo = image /
    shading, puts the complementary colour into the albedo: a grey background strip inside the matte came
    back yellow from a round trip. Below `frac` x the median luminance the colour is faded linearly toward
    grey (fully at zero), so dim regions keep the image's own colour in the albedo.
    """
    flat = shading.reshape(-1, 3)
    lum = flat @ LUMA
    sub = lum[::16]
    sub = sub[sub > 1e-4]
    if sub.size == 0:
        return shading
    w = np.clip(lum * np.float32(1.0 / (frac * float(np.median(sub)))), 0.0, 1.0)
    flat -= lum[:, None]
    flat *= w[:, None]
    flat += lum[:, None]
    return shading


def shade_image(normals_dpr: np.ndarray, sh: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Irradiance of RGB SH `sh` (9, 3) for normals (H, W, 3) in the DPR frame -> (H, W, 3) float32.

    Only the pixels where `mask` (H, W) is true are evaluated (others are 0); negative irradiance (possible
    with strongly directional SH) is clamped to 0.
    """
    sh3 = np.asarray(sh, dtype=np.float32)
    if sh3.ndim == 1:
        sh3 = np.repeat(sh3[:, None], 3, axis=1)
    h, w = normals_dpr.shape[:2]
    out = np.zeros((h, w, 3), dtype=np.float32)
    if mask is None:
        basis = shlib.sh_basis(normals_dpr.reshape(-1, 3)).astype(np.float32)
        out[:] = (basis @ sh3).reshape(h, w, 3)
    else:
        idx = np.flatnonzero(mask.reshape(-1))
        if idx.size:
            basis = shlib.sh_basis(normals_dpr.reshape(-1, 3)[idx]).astype(np.float32)
            out.reshape(-1, 3)[idx] = basis @ sh3
    np.maximum(out, 0.0, out=out)
    return out


BAND_RIDGE = np.array([0.0, 0.002, 0.002, 0.002, 0.05, 0.05, 0.05, 0.05, 0.05])  # x mean diagonal of A^T A


def normal_balance_weights(normals_dpr: np.ndarray, bins: int = 6, max_ratio: float = 8.0) -> np.ndarray:
    """Weights (N,) that even out how often each normal direction occurs (a face shows mostly frontal
    normals): 1 / count of the sample's cell in a bins x bins grid over the (X, Z) components, capped at
    `max_ratio` x the smallest weight, normalised to mean 1."""
    n = np.asarray(normals_dpr, dtype=np.float64)
    ix = np.clip(((n[:, 0] + 1.0) * 0.5 * bins).astype(np.int64), 0, bins - 1)
    iz = np.clip(((n[:, 2] + 1.0) * 0.5 * bins).astype(np.int64), 0, bins - 1)
    cell = ix * bins + iz
    counts = np.bincount(cell, minlength=bins * bins).astype(np.float64)
    w = 1.0 / counts[cell]
    w = np.minimum(w, max_ratio * w.min())
    return w / w.mean()


COLOUR_TIE = 1.0  # x the mean diagonal of A^T A: pull of each channel's fit toward the luminance fit's shape


def fit_light(normals_dpr: np.ndarray, values: np.ndarray, ridge: np.ndarray = BAND_RIDGE,
              huber_k: float = 1.345, iterations: int = 8, balance: bool = True,
              colour_tie: float = COLOUR_TIE) -> np.ndarray:
    """Regularised robust SH fit: normals (N, 3) DPR, values (N, C) -> (9, C) float64.

    Only part of the sphere of normals is visible (a face seen from the front), which leaves the nine
    coefficients badly conditioned (the DC, 3z^2-1 and x^2-y^2 terms trade off and the plain fit can even
    return a negative DC). A ridge per band (`ridge` x the mean diagonal of A^T A; none on the DC term)
    pulls unseen structure toward an ambient light; Huber IRLS down-weights outliers (speculars, shadows).
    balance: weight samples by `normal_balance_weights`, so that the rarer oblique normals (forehead top,
    chin, cheek sides), which carry the light's direction, are not drowned by the frontal ones.

    Channels: the luminance (RGB) or mean (other C) of `values` is fitted first, and its robust weights
    are used for every channel. Each channel c is then fitted with a second ridge, `colour_tie` x the
    mean diagonal on all nine coefficients, toward s_c x the luminance fit (s_c: the channel's weighted
    mean over the luminance's). Fitted independently, the channels trade DC against the view-axis terms
    each in its own way: skin that is paler where it faces the camera (sheen, subsurface scattering)
    came out as a light 3.5x bluer than red from the front, which turned a white shirt orange
    in the albedo. Tied, a colour that changes with direction (a warm key, a cool fill) keeps about
    60 % of its fitted strength (log colour ratio, on a test sphere) and the ill-conditioned directions
    keep the luminance fit's shape.
    colour_tie 0: independent channels.
    """
    a = shlib.sh_basis(np.asarray(normals_dpr, dtype=np.float64).reshape(-1, 3))
    v = np.asarray(values, dtype=np.float64).reshape(len(a), -1)
    w0 = normal_balance_weights(normals_dpr) if balance else np.ones(len(a))
    reg = np.diag(np.asarray(ridge, dtype=np.float64) * _mean_diagonal(a, w0) + 1e-12)
    grey_values = v @ LUMA.astype(np.float64) if v.shape[1] == 3 else v.mean(axis=1)
    grey, w = _robust_fit(a, grey_values, w0, reg, huber_k, iterations)
    if v.shape[1] == 1:
        return grey[:, None]
    aw = a * w[:, None]
    tie = np.eye(9) * (colour_tie * _mean_diagonal(a, w))
    ratio = (w @ v) / max(float(w @ grey_values), 1e-12)
    return np.linalg.solve(a.T @ aw + reg + tie, aw.T @ v + tie @ np.outer(grey, ratio))


def _mean_diagonal(a: np.ndarray, w: np.ndarray) -> float:
    """trace(A^T W A) / 9 for the SH design matrix a (N, 9) and sample weights w (N,)."""
    return float(np.einsum("ij,ij,i->", a, a, w)) / 9.0


def _robust_fit(a: np.ndarray, v: np.ndarray, w0: np.ndarray, reg: np.ndarray, huber_k: float,
                iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Huber IRLS of a (N, 9) @ x ~ v (N,) with prior weights w0 (N,) and ridge reg (9, 9)
    -> (x (9,), the final weights (N,))."""
    w = w0.copy()
    for it in range(iterations):
        aw = a * w[:, None]
        sol = np.linalg.solve(a.T @ aw + reg, aw.T @ v)
        r = np.abs(a @ sol - v)
        scale = 1.4826 * float(np.median(r))
        if scale <= 1e-12 or it == iterations - 1:
            break
        w = w0 * np.minimum(1.0, huber_k * scale / np.maximum(r, 1e-12))
    return sol, w


def neutralise_light(fitted: np.ndarray, skin_luma: float = SKIN_ALBEDO_LUMA
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Split F = rho_skin * L (9, 3) into the input light L (9, 3) with a grey DC term and rho_skin (3,).

    See the module docstring: rho_skin = skin_luma * F[0] / lum(F[0]); L = F / rho_skin.
    """
    f = np.asarray(fitted, dtype=np.float64)
    dc = np.maximum(f[0], 1e-6)
    rho = skin_luma * dc / max(float(dc @ LUMA), 1e-6)
    return (f / rho[None, :]).astype(np.float32), rho.astype(np.float32)


def skin_samples(image: np.ndarray, labels: np.ndarray, normals: np.ndarray, frame: str = "dpr",
                 max_samples: int = 3000, erode_px: int = 3, dark_frac: float = 0.15,
                 bright_pct: float = 97.0, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Skin pixels usable for the light fit, sampled on a regular stride -> (normals_dpr (N, 3), rgb (N, 3)).

    Skin (labels == 1) eroded by `erode_px` (away from eyes, lips, hair and the silhouette), facing the
    camera (normal DPR Y < -0.15), minus specular highlights (luminance above the `bright_pct` percentile
    of the candidates, or any channel >= 0.98) and very dark pixels (below `dark_frac` of their median),
    evaluated on at most ~4 x max_samples candidate pixels (fast: no full-frame work besides the erosion).
    image (H, W, 3), labels (H, W); normals: on every `step`-th pixel of those ((ceil(H / step),
    ceil(W / step), 3)), in the DPR frame (frame="dpr") or camera space (frame="cam"); only those pixels
    are candidates.
    """
    skin = (labels == SKIN_LABEL).view(np.uint8)
    if erode_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        skin = cv2.erode(skin, k)
    gw = normals.shape[1]
    idx = np.flatnonzero(skin[::step, ::step].reshape(-1))  # cells of the normals' grid
    if idx.size > 4 * max_samples:
        idx = idx[:: idx.size // (4 * max_samples)]
    n = np.take(np.asarray(normals, dtype=np.float32).reshape(-1, 3), idx, axis=0)
    if frame == "cam":
        n = np.stack([n[:, 0], -n[:, 2], n[:, 1]], axis=1)
    gy, gx = np.divmod(idx, gw)
    rgb = np.take(image.reshape(-1, 3), (gy * image.shape[1] + gx) * step, axis=0)
    keep = n[:, 1] < -0.15
    n, rgb = n[keep], rgb[keep]
    if len(rgb) == 0:
        return n, rgb
    luma = rgb @ LUMA
    med = float(np.median(luma))
    hi = float(np.percentile(luma, bright_pct))
    keep = (luma >= dark_frac * med) & (luma <= hi) & (rgb.max(axis=1) < 0.98)
    n, rgb = n[keep], rgb[keep]
    if len(rgb) > max_samples:
        step = int(np.ceil(len(rgb) / max_samples))
        n, rgb = n[::step], rgb[::step]
    return n, rgb


def estimate_input_light(image: np.ndarray, normals: np.ndarray, labels: np.ndarray,
                         max_samples: int = 2000, frame: str = "dpr", step: int = 1
                         ) -> tuple[np.ndarray, np.ndarray] | None:
    """Input light of one frame from its skin pixels -> (L_in (9, 3), rho_skin (3,)) or None (no skin).

    image: (H, W, 3) linear RGB; normals: unit normals in the input camera's DPR frame (frame="dpr") or
    in camera space (frame="cam") on every `step`-th pixel ((H, W, 3) at step 1); labels: (H, W) uint8
    region labels (1 = skin). A regularised robust RGB SH fit (`fit_light`) to at most `max_samples`
    skin pixels, then `neutralise_light`.
    """
    n, rgb = skin_samples(image, labels, normals, frame=frame, max_samples=max_samples, step=step)
    if len(rgb) < 50:
        return None
    return neutralise_light(fit_light(n, rgb))


def estimate_albedo(image: np.ndarray, shading: np.ndarray, alpha: np.ndarray,
                    floor_frac: float = 0.12, reference: float | None = None,
                    smooth_px: int = 15) -> np.ndarray:
    """Albedo = image / input shading, regularised -> (H, W, 3) float32 (0 outside the person).

    Where the shading is below `floor_frac` x the reference shading (the median shading luminance inside
    the matte unless `reference` is given) the quotient is unreliable: the division uses max(shading,
    floor) and the result is blended toward a smoothed albedo (normalised convolution of the reliable
    pixels, box size `smooth_px` at 1/4 resolution), fully at zero shading. Values are clipped to [0, 4].
    image, shading: (H, W, 3) linear; alpha: (H, W) 0..1 person matte.
    """
    inside = alpha > 0.02
    s_l = luminance(shading)
    if reference is None:
        sub = s_l[::4, ::4][inside[::4, ::4]]
        reference = float(np.median(sub)) if sub.size else 1.0
    floor = max(floor_frac * reference, 1e-4)
    albedo = image / np.maximum(shading, floor)
    inside_f = inside.astype(np.float32)
    weak = np.clip(1.0 - s_l * (1.0 / floor), 0.0, 1.0).astype(np.float32)  # 1 where the shading is 0
    weak *= inside_f
    if weak.max() > 0:
        h, w = alpha.shape
        sh_, sw_ = max(h // 4, 1), max(w // 4, 1)
        conf = (1.0 - weak) * inside_f
        small_c = cv2.resize(conf, (sw_, sh_), interpolation=cv2.INTER_AREA)
        small_a = cv2.resize(albedo * rgb3(conf), (sw_, sh_), interpolation=cv2.INTER_AREA)
        k = max(smooth_px // 4 * 2 + 1, 3)
        num = cv2.blur(small_a, (k, k))
        den = cv2.blur(small_c, (k, k))
        smooth = cv2.resize(num / rgb3(np.maximum(den, 1e-4)), (w, h), interpolation=cv2.INTER_LINEAR)
        albedo += rgb3(weak) * (smooth - albedo)
    albedo *= rgb3(inside_f)
    return np.clip(albedo, 0.0, 4.0, out=albedo)


def suppress_highlights(albedo: np.ndarray, skin: np.ndarray, knee: float = 1.3, slope: float = 0.25
                        ) -> np.ndarray:
    """Soft-clip specular shine of the input that the diffuse model left in the albedo (in place).

    On skin pixels (`skin` (H, W) bool), albedo luminance above `knee` x the median skin albedo
    luminance is compressed with `slope` (a soft knee): diffuse skin albedo varies little, so such
    outliers are highlights, which would otherwise stay glued to the face under any new light.
    albedo: (H, W, 3) float32 -> the same array.
    """
    sub_skin = skin[::4, ::4]
    if sub_skin.sum() < 20:
        return albedo
    lum = luminance(albedo)
    ref = float(np.median(lum[::4, ::4][sub_skin]))
    k = knee * ref
    over = skin & (lum > k)
    if over.any():
        l_over = lum[over]
        albedo[over] *= ((k + slope * (l_over - k)) / l_over)[:, None]
    return albedo


def mean_face_shading(shading: np.ndarray, mask: np.ndarray) -> float:
    """Mean luminance of shading (H, W, 3) over mask (H, W) bool; 0 when the mask is empty."""
    if not mask.any():
        return 0.0
    return float((shading[mask] @ LUMA).mean())
