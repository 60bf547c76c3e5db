"""Rendering: target shading, relighting, key-light specular and cast shadows, novel views, compositing.

All maps are per pixel of the INPUT view unless stated: normals (H, W, 3) unit vectors in the input
camera's space (OpenGL axes), points (H, W, 3) camera-space positions in head units (z < 0).
Shading is irradiance (see `relight_core.sh`); relit radiance = albedo * shading (+ specular).

Light frames. SH and key-light directions are given in a DPR frame: for light_space "world" that of the
input camera (the light stays put when the head turns); for "head" that of the head (DPR = head
(x, -z, y)), so the light turns with the head. Diffuse shading is view independent, so a novel view is
rendered by shading the surface in the input view and re-projecting it (identical to rotating the SH
into the output camera's frame); the view-dependent specular term uses the output camera's position.
Key-light positions (point lights) are in head units relative to the head centre, along the same axes.
"""

from __future__ import annotations

import cv2
import numpy as np

from relight_core import sh as shlib

# camera (OpenGL) -> DPR: (x, y, z) -> (x, -z, y)
CAM_TO_DPR = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
DEPTH_PNG_RANGE = 8.0  # depth PNGs store depth / DEPTH_PNG_RANGE (head units) as 16-bit
SHADOW_STRENGTH = 0.85  # fraction of a key light a cast shadow removes (skin scatters some light into it)


# --------------------------------------------------------------------------------------------- light

def light_rotation(cam_from_head: np.ndarray, light_space: str) -> np.ndarray:
    """3x3 rotation taking light directions from the light's DPR frame to the input camera's DPR frame.

    "world": identity. "head": P R P^T with R the head-to-camera rotation and P = CAM_TO_DPR.
    """
    if light_space == "head":
        r = np.asarray(cam_from_head, dtype=np.float64)[:3, :3]
        return CAM_TO_DPR @ r @ CAM_TO_DPR.T
    return np.eye(3)


def sh_in_camera(sh: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """SH (9, 3) given in the light's DPR frame -> the input camera's DPR frame (rotation `rot`)."""
    sh = np.asarray(sh, dtype=np.float64)
    if np.allclose(rot, np.eye(3)):
        return sh
    return np.asarray(shlib.rotate_sh(sh, rot), dtype=np.float64)


def exposure_scale(sh_input: np.ndarray, sh_target: np.ndarray) -> float:
    """Scale for the target light so that it gives the input light's mean irradiance on a face.

    Both (9, 3) in the input camera's DPR frame; the mean is the luminance of the irradiance averaged over
    normals of the camera-facing hemisphere (cosine weighted toward the camera), a proxy for a face.
    """
    n = _hemisphere_normals()
    w = np.array([0.2126, 0.7152, 0.0722])
    e_in = float(np.mean(np.maximum(shlib.sh_basis(n) @ np.asarray(sh_input, np.float64), 0) @ w))
    e_t = float(np.mean(np.maximum(shlib.sh_basis(n) @ np.asarray(sh_target, np.float64), 0) @ w))
    if e_t <= 1e-8 or e_in <= 1e-8:
        return 1.0
    return e_in / e_t


_HEMI: np.ndarray | None = None


def _hemisphere_normals(n: int = 400) -> np.ndarray:
    """Deterministic cosine-weighted normals around the camera direction (DPR -Y), (n, 3)."""
    global _HEMI
    if _HEMI is None or len(_HEMI) != n:
        k = np.arange(n) + 0.5
        r = np.sqrt(k / n)
        phi = k * np.pi * (3 - np.sqrt(5))
        x, z = r * np.cos(phi), r * np.sin(phi)
        y = -np.sqrt(np.maximum(1 - r * r, 0))
        _HEMI = np.stack([x, y, z], axis=1)
    return _HEMI


# --------------------------------------------------------------------------------------------- key lights

def _key_light_dirs(light, points: np.ndarray, head_centre: np.ndarray, rot: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-point unit direction to the light (N, 3) cam space, irradiance colour (N, 3) or (3,), and the
    light position in cam space (None for directional)."""
    colour = np.asarray(getattr(light, "color", (1.0, 1.0, 1.0)), dtype=np.float32)[:3]
    if hasattr(light, "direction") and not hasattr(light, "position"):
        d_dpr = rot @ np.asarray(light.direction, dtype=np.float64)
        d = CAM_TO_DPR.T @ d_dpr
        d = (d / max(np.linalg.norm(d), 1e-9)).astype(np.float32)
        e = colour * float(getattr(light, "strength", 1.0))
        return np.broadcast_to(d, points.shape), e, None
    pos_dpr = rot @ np.asarray(light.position, dtype=np.float64)
    pos = (CAM_TO_DPR.T @ pos_dpr + head_centre).astype(np.float32)
    v = pos[None, :] - points
    d2 = np.maximum((v * v).sum(axis=1, keepdims=True), 1e-6)
    v = v / np.sqrt(d2)
    power = float(getattr(light, "power", 1.0))
    e = colour[None, :] * (power / (4 * np.pi) / d2)
    return v.astype(np.float32), e.astype(np.float32), pos


def shadow_visibility(points: np.ndarray, to_light: np.ndarray, light_pos: np.ndarray | None,
                      res: int = 160, bias: float = 0.006, cos_theta: np.ndarray | None = None) -> np.ndarray:
    """Cast-shadow visibility (N,) in 0..1 of surface points (N, 3) for one light, from a shadow map.

    The visible surface (a 2.5D height field, the only one known) is splatted into the light's view
    (orthographic for a directional light, perspective for a point light); a point is lit when nothing
    lies closer to the light in its shadow-map cell, beyond a bias of `bias` head units plus a slope term
    (3 cells x tan(theta), theta the angle between normal and light, from `cos_theta` (N,) when given),
    which keeps grazing surfaces free of shadow acne. 3x3 percentage-closer filtering softens the edge.
    """
    import torch

    if light_pos is None:
        axis = to_light[0].astype(np.float64)
        rel = points
    else:
        centre = points.mean(axis=0)
        axis = (light_pos - centre).astype(np.float64)
        axis /= max(np.linalg.norm(axis), 1e-9)
        rel = points - light_pos[None, :]
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    basis = np.stack([u, v, axis], axis=1).astype(np.float32)  # columns
    q = rel @ basis
    if light_pos is None:
        su, sv, dist = q[:, 0], q[:, 1], -q[:, 2]  # smaller dist = closer to the light
        cell_units = 1.0
    else:
        front = np.maximum(-q[:, 2], 1e-4)
        su, sv, dist = q[:, 0] / front, q[:, 1] / front, front
        cell_units = float(np.median(front))
    lo_u, hi_u = float(su.min()), float(su.max())
    lo_v, hi_v = float(sv.min()), float(sv.max())
    span = max(hi_u - lo_u, hi_v - lo_v, 1e-6) * 1.02
    iu = np.clip(((su - lo_u) / span * res).astype(np.int64), 0, res - 1)
    iv = np.clip(((sv - lo_v) / span * res).astype(np.int64), 0, res - 1)
    cell = torch.from_numpy(iv * res + iu)
    zmap = torch.full((res * res,), float("inf"))
    zmap.scatter_reduce_(0, cell, torch.from_numpy(dist.astype(np.float32)), "amin")
    zmap = zmap.numpy().reshape(res, res)
    # empty cells (sparse points at grazing angles) take the nearest occluder around them (3x3, twice)
    for _ in range(2):
        empty = np.isinf(zmap)
        if not empty.any():
            break
        grown = cv2.erode(np.where(empty, 1e9, zmap).astype(np.float32), np.ones((3, 3), np.uint8))
        zmap = np.where(empty & (grown < 1e9), grown, zmap)
    tol = np.full(len(points), bias, np.float32)
    if cos_theta is not None:
        c = np.clip(cos_theta, 0.1, 1.0)
        tol += (3.0 * span / res * cell_units) * np.sqrt(1.0 - c * c) / c
    vis = np.zeros(len(points), dtype=np.float32)
    padded = np.pad(zmap, 1, mode="edge")
    lim = dist - tol
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            vis += lim <= padded[iv + dy, iu + dx]
    return vis / 9.0


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays -> (N,) (einsum: no (N, 3) temporary, unlike (a * b).sum(1))."""
    return np.einsum("ij,ij->i", a, b)


def _inverse_norm(v: np.ndarray) -> np.ndarray:
    """1 / max(|row|, 1e-6) of an (N, 3) array -> (N,) float32."""
    return (1.0 / np.maximum(np.sqrt(_rowdot(v, v)), 1e-6)).astype(np.float32)


def key_light_terms(normals: np.ndarray, points: np.ndarray, mask: np.ndarray, key_lights: list,
                    rot: np.ndarray, head_centre: np.ndarray, view_pos: np.ndarray,
                    shininess: float = 40.0, shadows: bool = True, step: int = 2
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Shadow correction of the diffuse shading and the specular irradiance of explicit key lights.

    normals, points: (H, W, 3) cam space; mask: (H, W) bool (pixels to evaluate); view_pos: (3,) the
    (output) camera centre in input-camera space. Returns (shadow_delta, specular), both (H, W, 3): add
    shadow_delta (<= 0, SHADOW_STRENGTH x the key lights' blocked Lambertian irradiance) to the SH
    shading, and add specular x a specular albedo to the relit radiance. Specular: normalised
    Blinn-Phong. Evaluated on every `step`-th pixel and upsampled (both terms are smooth: normals are
    interpolated, shadows soft).
    """
    h, w = mask.shape
    if not key_lights or not mask.any():
        z = np.zeros((h, w, 3), dtype=np.float32)
        return z, z.copy()
    ms = mask[::step, ::step]
    hs, ws = ms.shape
    idx = np.flatnonzero(ms.reshape(-1))
    ys, xs = np.divmod(idx, ws)
    full = ys * (step * w) + xs * step  # the same pixels in the full-resolution maps
    n = np.asarray(normals, np.float32).reshape(-1, 3)[full]
    p = np.asarray(points, np.float32).reshape(-1, 3)[full]
    vdir = view_pos[None, :].astype(np.float32) - p
    vdir *= _inverse_norm(vdir)[:, None]
    d_acc = np.zeros((idx.size, 3), dtype=np.float32)
    s_acc = np.zeros((idx.size, 3), dtype=np.float32)
    norm = (shininess + 8.0) / (8.0 * np.pi)
    for light in key_lights:
        ldir, e, lpos = _key_light_dirs(light, p, head_centre, rot)
        ndl = np.maximum(_rowdot(n, ldir), 0.0)
        if not (ndl > 0).any():
            continue
        vis = shadow_visibility(p, ldir, lpos, cos_theta=ndl) if shadows else np.ones(idx.size, np.float32)
        e_n = (np.broadcast_to(e, (idx.size, 3)) * ndl[:, None]).astype(np.float32)
        d_acc -= e_n * (SHADOW_STRENGTH * (1.0 - vis))[:, None]
        half = ldir + vdir
        ndh = np.maximum(_rowdot(n, half) * _inverse_norm(half), 0.0)
        s_acc += e_n * (vis * norm * ndh ** shininess)[:, None]
    small_d = np.zeros((hs * ws, 3), np.float32)
    small_s = np.zeros((hs * ws, 3), np.float32)
    small_d[idx] = d_acc
    small_s[idx] = s_acc
    if step == 1:
        return small_d.reshape(h, w, 3), small_s.reshape(h, w, 3)
    delta = cv2.resize(small_d.reshape(hs, ws, 3), (w, h), interpolation=cv2.INTER_LINEAR)
    spec = cv2.resize(small_s.reshape(hs, ws, 3), (w, h), interpolation=cv2.INTER_LINEAR)
    return delta, spec


# --------------------------------------------------------------------------------------------- novel view

def _push_pull(values: np.ndarray, weight: np.ndarray, levels: int = 8) -> np.ndarray:
    """Fill where weight == 0 from coarser levels (push-pull): values (H, W, 3), weight (H, W) -> same."""
    def expand(x: np.ndarray) -> np.ndarray:
        return cv2.merge((x, x, x))

    pyr_v, pyr_w = [values * expand(weight)], [weight]
    for _ in range(levels):
        h, w = pyr_w[-1].shape
        if min(h, w) < 4:
            break
        size = ((w + 1) // 2, (h + 1) // 2)
        pyr_v.append(cv2.resize(pyr_v[-1], size, interpolation=cv2.INTER_AREA))
        pyr_w.append(cv2.resize(pyr_w[-1], size, interpolation=cv2.INTER_AREA))
    filled = pyr_v[-1] / expand(np.maximum(pyr_w[-1], 1e-6))
    for lv in range(len(pyr_v) - 2, -1, -1):
        h, w = pyr_w[lv].shape
        up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
        wl = expand(np.minimum(pyr_w[lv], 1.0))
        own = pyr_v[lv] / expand(np.maximum(pyr_w[lv], 1e-6))
        filled = up + wl * (own - up)
    return filled


def _fill_enclosed(mask: np.ndarray) -> np.ndarray:
    """(H, W) float 0/1 -> the same with every hole that does not touch the image border filled
    (disocclusions inside the re-projected silhouette, e.g. behind the nose)."""
    h, w = mask.shape
    inv = np.ones((h + 2, w + 2), np.uint8)  # an empty ring joins every border-touching gap
    inv[1:-1, 1:-1] = mask <= 0
    flood = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(inv, flood, (0, 0), 2)
    return np.where(inv[1:-1, 1:-1] == 1, 1.0, mask).astype(np.float32)


def reproject_maps(points: np.ndarray, valid: np.ndarray, new_from_input: np.ndarray,
                   k_out: tuple[float, float, float, float], out_hw: tuple[int, int],
                   step: int = 1, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`splat_maps` at 1/step resolution (every step-th source pixel into a 1/step output grid), the
    coordinate, coverage and depth maps upsampled bilinearly to out_hw; the maps still address the
    full-resolution source, so texture detail is kept. step=1: `splat_maps` itself."""
    if step <= 1:
        return splat_maps(points, valid, new_from_input, k_out, out_hw, **kw)
    h, w = out_hw
    hs, ws = (h + step - 1) // step, (w + step - 1) // step
    fx, fy, cx, cy = k_out
    src_pts = np.ascontiguousarray(points[::step, ::step])
    src_valid = np.ascontiguousarray(valid[::step, ::step])
    mx, my, cover, depth = splat_maps(src_pts, src_valid, new_from_input,
                                      (fx / step, fy / step, cx / step, cy / step), (hs, ws), **kw)
    # coarse source index i is full-resolution pixel step * i (points[::step] took exactly that pixel)
    mx = cv2.resize(mx * step, (w, h), interpolation=cv2.INTER_LINEAR)
    my = cv2.resize(my * step, (w, h), interpolation=cv2.INTER_LINEAR)
    cover = cv2.resize(cover, (w, h), interpolation=cv2.INTER_LINEAR)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return mx, my, cover, depth


def splat_maps(points: np.ndarray, valid: np.ndarray, new_from_input: np.ndarray,
                   k_out: tuple[float, float, float, float], out_hw: tuple[int, int],
                   close_px: int = 5, border_px: int = 32
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-splat the input view's surface into a new camera with a z-buffer; fill cracks and holes.

    points: (H, W, 3) input-camera positions; valid: (H, W) bool; new_from_input: 4x4 taking input-camera
    points to the new camera; k_out: (fx, fy, cx, cy) of the new camera; out_hw: its (height, width).
    Returns (map_x, map_y, cover, depth): float32 (h, w) source pixel coordinates for cv2.remap, the
    coverage (h, w) float32 0..1 (the re-projected silhouette, cracks closed, enclosed holes filled) and
    the new depth (-z).
    Holes inside the silhouette (cracks, disocclusions) take push-pull-interpolated source coordinates.
    Where the person runs out of the frame (shoulders at the bottom edge), the surface is extended by
    `border_px` by linear extrapolation (source coordinates beyond the edge: remap repeats the edge), so
    a moved camera does not open a gap between the body and the frame edge.
    """
    import torch

    h, w = out_hw
    pad = border_px if border_px > 0 and (valid[0].any() or valid[-1].any() or valid[:, 0].any()
                                          or valid[:, -1].any()) else 0
    if pad:
        points = np.pad(points, ((pad, pad), (pad, pad), (0, 0)), mode="reflect", reflect_type="odd")
        valid = np.pad(valid, pad, mode="edge")
    h_in, w_in = valid.shape
    idx = np.flatnonzero(valid.reshape(-1))
    map_x = np.zeros((h, w), np.float32)
    map_y = np.zeros((h, w), np.float32)
    depth = np.zeros((h, w), np.float32)
    if idx.size == 0:
        return map_x, map_y, np.zeros((h, w), np.float32), depth
    p = points.reshape(-1, 3)[idx].astype(np.float32)
    m = np.asarray(new_from_input, dtype=np.float32)
    q = p @ m[:3, :3].T + m[:3, 3]
    z = -q[:, 2]
    fx, fy, cx, cy = k_out
    front = z > 1e-3
    zs = np.maximum(z, 1e-3)
    u = fx * q[:, 0] / zs + cx
    v = cy - fy * q[:, 1] / zs
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = front & (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)
    if not inside.any():
        return map_x, map_y, np.zeros((h, w), np.float32), depth
    tgt = iv[inside] * w + iu[inside]
    zin = z[inside]
    src = idx[inside]
    zt = torch.from_numpy(zin.astype(np.float32))
    zbuf = torch.full((h * w,), float("inf"))
    zbuf.scatter_reduce_(0, torch.from_numpy(tgt), zt, "amin")
    zb = zbuf.numpy()
    win = zin <= zb[tgt] + 1e-6
    tgt_w, src_w = tgt[win], src[win]
    hit = np.zeros(h * w, np.float32)
    hit[tgt_w] = 1.0
    coords = np.zeros((h * w, 3), np.float32)
    coords[tgt_w, 0] = (src_w % w_in - pad).astype(np.float32)
    coords[tgt_w, 1] = (src_w // w_in - pad).astype(np.float32)
    coords[tgt_w, 2] = zin[win]
    hit = hit.reshape(h, w)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))
    cover = _fill_enclosed(cv2.morphologyEx(hit, cv2.MORPH_CLOSE, k))
    cover_soft = cv2.GaussianBlur(cover, (3, 3), 0.7) * cover  # anti-aliased silhouette, no growth
    coords = coords.reshape(h, w, 3)
    holes = (cover > 0) & (hit == 0)
    if holes.any():
        bx, by, bw, bh = cv2.boundingRect(holes.view(np.uint8))
        y0, y1 = max(by - 8, 0), min(by + bh + 8, h)
        x0, x1 = max(bx - 8, 0), min(bx + bw + 8, w)
        filled = _push_pull(np.ascontiguousarray(coords[y0:y1, x0:x1]),
                            np.ascontiguousarray(hit[y0:y1, x0:x1]), levels=6)
        sub_holes = holes[y0:y1, x0:x1]
        coords[y0:y1, x0:x1][sub_holes] = filled[sub_holes]
    map_x, map_y = coords[..., 0], coords[..., 1]
    depth = np.where(cover > 0, coords[..., 2], 0.0).astype(np.float32)
    return np.ascontiguousarray(map_x), np.ascontiguousarray(map_y), cover_soft.astype(np.float32), depth


def sample(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, nearest: bool = False) -> np.ndarray:
    """cv2.remap wrapper: img (H, W[, C]) sampled at (map_x, map_y) pixel-index coordinates."""
    return cv2.remap(img, map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def inpaint_background(plate: np.ndarray, alpha: np.ndarray, scale: int = 4, grow_px: int = 9) -> np.ndarray:
    """The plate (H, W, 3) with the person (alpha (H, W)) removed and filled from around -> (H, W, 3).

    The matte is grown by `grow_px`; the hole is filled by push-pull interpolation of the surrounding
    plate at 1/`scale` resolution (smooth, fast), upsampled, and feathered into the untouched plate.
    """
    h, w = alpha.shape
    hole = (alpha > 0.02).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow_px + 1, 2 * grow_px + 1))
    hole = cv2.dilate(hole, k)
    sw, sh_ = max(w // scale, 8), max(h // scale, 8)
    small = cv2.resize(plate, (sw, sh_), interpolation=cv2.INTER_AREA)
    known = 1.0 - cv2.resize(hole.astype(np.float32), (sw, sh_), interpolation=cv2.INTER_AREA)
    known = np.where(known > 0.99, 1.0, 0.0).astype(np.float32)
    if known.max() == 0:
        return plate.copy()
    filled = _push_pull(np.ascontiguousarray(small, dtype=np.float32), known)
    up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    soft = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), grow_px / 3.0)
    soft3 = cv2.merge((soft, soft, soft))
    return (plate + soft3 * (up - plate)).astype(np.float32)


# --------------------------------------------------------------------------------------------- passes

def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Person radiance rgb (H, W, 3) with matte alpha (H, W) over background (H, W, 3) -> RGBA (H, W, 4).

    background None: transparent output, straight alpha (rgb kept where alpha > 0).
    """
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    if background is None:
        r, g, b = cv2.split(np.ascontiguousarray(rgb, dtype=np.float32))
        return cv2.merge((r, g, b, alpha))
    mixed = background + cv2.merge((alpha, alpha, alpha)) * (rgb - background)
    r, g, b = cv2.split(mixed.astype(np.float32))
    return cv2.merge((r, g, b, np.ones_like(alpha)))


def encode_normals(normals: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Unit normals (H, W, 3) in [-1, 1] -> (H, W, 3) in [0, 1] (n * 0.5 + 0.5); 0.5 grey outside alpha."""
    enc = (normals * 0.5 + 0.5).astype(np.float32)
    if alpha is not None:
        m = (alpha > 0.02).astype(np.float32)
        m3 = cv2.merge((m, m, m))
        enc = enc * m3 + 0.5 * (1.0 - m3)
    return enc
