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

import math
from dataclasses import dataclass

import cv2
import numpy as np

from relight_core import camera as cam
from relight_core import sh as shlib
from relight_core import skin
from relight_core.geometry import LIPS, REST, SKIN, inverse_norm, rowdot, smoothstep
from relight_core.intrinsic import luminance, rgb3

# camera (OpenGL) -> DPR: (x, y, z) -> (x, -z, y)
CAM_TO_DPR = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
DEPTH_PNG_RANGE = 8.0  # depth PNGs store depth / DEPTH_PNG_RANGE (head units) as 16-bit


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
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | float, np.ndarray | None]:
    """One key light at surface points (N, 3) cam space -> (unit direction to the light: (3,) for a
    directional light, (N, 3) for a point light; colour x strength (3,); falloff: 1.0, or (N,) the
    inverse-square power / (4 pi d^2) of a point light; the light position in cam space, None for a
    directional light). The irradiance a point receives facing the light is colour x falloff."""
    colour = np.asarray(getattr(light, "color", (1.0, 1.0, 1.0)), dtype=np.float32)[:3]
    if hasattr(light, "direction") and not hasattr(light, "position"):
        d_dpr = rot @ np.asarray(light.direction, dtype=np.float64)
        d = CAM_TO_DPR.T @ d_dpr
        d = (d / max(np.linalg.norm(d), 1e-9)).astype(np.float32)
        return d, colour * np.float32(getattr(light, "strength", 1.0)), 1.0, None
    pos_dpr = rot @ np.asarray(light.position, dtype=np.float64)
    pos = (CAM_TO_DPR.T @ pos_dpr + head_centre).astype(np.float32)
    v = pos[None, :] - points
    d2 = np.maximum(rowdot(v, v), np.float32(1e-6))
    v *= (np.float32(1.0) / np.sqrt(d2))[:, None]
    falloff = np.float32(float(getattr(light, "power", 1.0)) / (4 * np.pi)) / d2
    return v, colour, falloff.astype(np.float32), pos


def scatter_min(buf: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
    """Z-buffer reduction in place: buf[c] = min(buf[c], every value landing in cell c).

    buf: (M,) float32, e.g. initialised to inf; cells: (N,) int64 flat indices into buf; values: (N,)
    float32 depths. Equals torch's `scatter_reduce_(..., "amin")` bit for bit (min is exact); numpy's
    unbuffered `minimum.at`, which has a fast path for 1-D integer indices since numpy 1.25.
    """
    np.minimum.at(buf, cells, values.astype(buf.dtype, copy=False))


def _rows(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The rows at flat pixel indices idx (N,) of an (h, w, C) map -> (N, C) float32; the map may be a
    strided view (every 2nd pixel of a larger one), which is gathered in 2-D instead of copied first."""
    if a.flags.c_contiguous:
        return np.take(a.reshape(-1, a.shape[-1]), idx, axis=0).astype(np.float32, copy=False)
    ys, xs = np.divmod(idx, a.shape[1])
    return np.asarray(a[ys, xs], np.float32)


def _smooth_on_grid(values: np.ndarray, idx: np.ndarray, shape: tuple[int, int], sigma: float = 1.5
                    ) -> np.ndarray:
    """Values (N,) at flat indices idx (N,) of a (h, w) grid, Gaussian-smoothed over the grid among
    themselves (normalised convolution: pixels outside idx do not count) -> (N,) float32.

    Used on shadow-map visibility: a 160-cell shadow map seen at every 2nd pixel aliases into stipple where
    the surface is nearly parallel to the light (eye sockets, under the lip); skin blurs a cast shadow's
    edge over millimetres anyway."""
    grid = np.zeros(shape[0] * shape[1], np.float32)
    mass = np.zeros_like(grid)
    grid[idx] = values
    mass[idx] = 1.0
    grid = cv2.GaussianBlur(grid.reshape(shape), (0, 0), sigma).reshape(-1)
    mass = cv2.GaussianBlur(mass.reshape(shape), (0, 0), sigma).reshape(-1)
    return grid[idx] / np.maximum(mass[idx], np.float32(1e-6))


def key_light_terms(normals: np.ndarray, points: np.ndarray, mask: np.ndarray, key_lights: list,
                    rot: np.ndarray, head_centre: np.ndarray, view_pos: np.ndarray,
                    wrap: np.ndarray | None = None, shadows: bool = True, occluders: np.ndarray | None = None,
                    unshadowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The key lights' own diffuse irradiance and specular, exactly per pixel (see `relight_core.skin`).

    normals, points: (h, w, 3) cam space; mask: (h, w) bool (pixels to evaluate); view_pos: (3,) the
    (output) camera centre in input-camera space; wrap: (h, w, 3) per-pixel, per-channel wrap of the
    cosine (`skin.wrapped_cosine`; None: Lambert); occluders: (h, w) bool, the pixels whose surface casts
    shadows (None: all in the mask); unshadowed: (h, w, 3) float32, when given filled in place with the
    keys' diffuse irradiance without their cast shadows (for the shadow pass). Returns (diffuse,
    specular), both (h, w, 3), 0 outside the mask: diffuse is the key lights' irradiance x soft
    cast-shadow visibility, to add to the SH shading
    of the target light WITHOUT its key lights (`skin.ambient_sh`); specular is radiance per
    unit albedo (two-lobe GGX with Fresnel, `skin.skin_specular`), to add after a mask
    (`specular_mask`). Both are smooth: the pipeline evaluates them on the grid it shades on (every 2nd
    pixel of a large frame) and upsamples them with the shading.
    """
    h, w = mask.shape
    diffuse = np.zeros((h * w, 3), np.float32)
    spec = np.zeros((h * w, 3), np.float32)
    idx = np.flatnonzero(mask.reshape(-1))
    if key_lights and idx.size:
        n = _rows(normals, idx)
        p = _rows(points, idx)
        wr = None if wrap is None else _rows(wrap, idx)
        occ = None if occluders is None else np.take(occluders.reshape(-1), idx)
        free = None if unshadowed is None else np.zeros((idx.size, 3), np.float32)
        diffuse[idx], spec[idx] = _key_light_sums(n, p, idx, (h, w), key_lights, rot, head_centre, view_pos,
                                                  wr, shadows, occ, free)
        if unshadowed is not None:
            unshadowed.reshape(-1, 3)[idx] = free
    return diffuse.reshape(h, w, 3), spec.reshape(h, w, 3)


def _key_light_sums(n: np.ndarray, p: np.ndarray, idx: np.ndarray, shape: tuple[int, int], key_lights: list,
                    rot: np.ndarray, head_centre: np.ndarray, view_pos: np.ndarray, wrap: np.ndarray | None,
                    shadows: bool, occluders: np.ndarray | None = None, free: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`key_light_terms` at the masked pixels: normals n and points p (N, 3) at flat indices idx (N,) of a
    `shape` grid, wrap (N, 3) or None, occluders (N,) bool or None -> (diffuse (N, 3), specular (N, 3))
    summed over the lights; free (N, 3), when given, accumulates the diffuse without shadows."""
    d_acc = np.zeros((idx.size, 3), dtype=np.float32)
    s_acc = np.zeros((idx.size, 3), dtype=np.float32)
    vdir = view_pos[None, :].astype(np.float32) - p
    vdir *= inverse_norm(vdir)[:, None]
    for light in key_lights:
        ldir, colour, falloff, lpos = _key_light_dirs(light, p, head_centre, rot)
        ndl = n @ ldir if ldir.ndim == 1 else rowdot(n, ldir)
        reach = ndl if wrap is None else ndl + wrap.max(axis=1)
        if not (reach > 0).any():
            continue
        vis = np.ones(idx.size, np.float32)
        if shadows:
            to_light = ldir[None, :] if ldir.ndim == 1 else ldir
            dist = 1.0 if lpos is None else np.sqrt(rowdot(lpos[None, :] - p, lpos[None, :] - p))
            raw = skin.soft_shadow_visibility(p, to_light, lpos, skin.light_angular_radius(light, dist),
                                              cos_theta=np.maximum(ndl, 0.0), occluders=occluders,
                                              receivers=reach > 0)
            vis = _smooth_on_grid(raw, idx, shape, sigma=1.0)
        lit = (vis * falloff).astype(np.float32)
        cosine = np.maximum(ndl, 0.0)[:, None] if wrap is None else skin.wrapped_cosine(ndl, wrap)
        d_acc += (cosine * lit[:, None]) * colour[None, :]
        if free is not None:
            free += (cosine * np.asarray(falloff, np.float32).reshape(-1, 1)) * colour[None, :]
        s_acc += (skin.skin_specular(n, ldir, vdir) * lit)[:, None] * colour[None, :]
    return d_acc, s_acc


def ambient_target_sh(target_cam: np.ndarray, key_lights: list, rot: np.ndarray) -> np.ndarray:
    """The target SH (9, 3) in the input camera's DPR frame without its key lights' diffuse part -> (9, 3).

    key_lights: the frame's key lights (scaled as they are rendered), in the light frame that `rot`
    (`light_rotation`) turns into the camera's; lights without an SH of their own are left in. The keys
    are then added back exactly per pixel by `key_light_shading`."""
    shs = [np.asarray(kl.sh(), dtype=np.float64) for kl in key_lights if hasattr(kl, "sh")]
    if not shs:
        return np.asarray(target_cam, dtype=np.float64)
    return skin.ambient_sh(target_cam, sh_in_camera(np.sum(shs, axis=0), rot))


def key_light_shading(shading: np.ndarray, normals: np.ndarray, points: np.ndarray, person: np.ndarray,
                      labels: np.ndarray, key_lights: list, rot: np.ndarray, head_centre: np.ndarray,
                      view_pos: np.ndarray, fx: float, shadow_pass: bool = False
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Add the key lights to the target's ambient shading on the skin's terms, in place;
    -> (specular (h, w, 3), shadow factor (h, w) or None).

    shading (h, w, 3): the target light's SH shading without the keys (`ambient_target_sh`) on a grid of
    the frame; normals, points (h, w, 3) cam space on that grid; person (h, w) bool; labels (h, w)
    (`geometry`); fx: focal length in px of that grid. One surface, one light: the whole person (face,
    ears, neck, hair) takes the keys' diffuse light with the same cosine (`skin.TERMINATOR_WRAP`) and
    the same subsurface blur (`skin.subsurface_blur`, millimetres from fx and the face's depth), so that
    nothing steps at the face's outline. Only the face mesh casts shadows: the rest of the head is a
    smooth guess from the matte (a dome), not a shape to cast them. Returns the keys' specular (h, w, 3)
    (`key_light_terms`) and, when shadow_pass, the shadow factor of the shading before the blur
    (`passes.shadow_factor`: shadowed / unshadowed)."""
    from relight_core import passes

    wrap = np.broadcast_to(np.asarray(skin.TERMINATOR_WRAP, np.float32), shading.shape)
    face = (labels != REST) & person
    free = np.zeros_like(shading) if shadow_pass else None
    diffuse, spec = key_light_terms(normals, points, person, key_lights, rot, head_centre, view_pos,
                                    wrap=wrap, occluders=face, unshadowed=free)
    shadow = passes.shadow_factor(shading + free, diffuse - free) if free is not None else None
    shading += diffuse
    np.maximum(shading, 0.0, out=shading)
    face_depth = -points[..., 2][face]
    if face_depth.size:
        px_per_mm = fx / (float(np.median(face_depth)) * skin.MM_PER_HEAD_UNIT)
        inside = person.astype(np.float32)
        weight = cv2.GaussianBlur(inside, (0, 0), 1.0) * inside  # feathered inside the person's edge
        shading[...] = skin.subsurface_blur(shading, weight, px_per_mm)
    return spec, shadow


def specular_mask(albedo: np.ndarray, labels: np.ndarray, dark: float = 0.5, full: float = 0.8) -> np.ndarray:
    """Where key-light specular goes -> (H, W) float32 0..1: the lips, and skin (labels (H, W) 1 and 4,
    see `geometry`) as far as its albedo (H, W, 3) looks like skin.

    The face mesh also covers hair that falls over the forehead or cheeks; specular there drew a bright
    band across the bangs. Skin pixels whose albedo luminance is below `dark` x the median skin albedo are
    taken for hair (no specular), above `full` x for skin, with a smooth ramp between; the mask is then
    feathered by about a pixel (of the grid it is given: the pipeline's shading grid) so that its edge
    draws no line.
    """
    skin = labels == SKIN
    lum = luminance(albedo)
    sub = lum[::4, ::4][skin[::4, ::4]]
    ref = float(np.median(sub)) if sub.size else 1.0
    ratio = lum * np.float32(1.0 / max(ref, 1e-6))
    m = smoothstep((ratio - np.float32(dark)) * np.float32(1.0 / (full - dark)))
    m *= skin
    m[labels == LIPS] = 1.0
    return cv2.GaussianBlur(m, (3, 3), 0.8)


# --------------------------------------------------------------------------------------------- novel view

SLOPE = 1.0  # depth change per output px, in pixel footprints (depth / fx), still read as one surface
COVER_BLUR = 1.5  # Gaussian sigma (splat px) turning the binary splat silhouette into a smooth contour
EDGE_PX = 1.0  # width (output px) of the silhouette's anti-aliasing ramp
JUMP_PX = 16.0  # neighbouring splat cells whose source coordinates differ more (splat px) are not blended


def _push_pull(values: np.ndarray, weight: np.ndarray, levels: int = 8) -> np.ndarray:
    """Fill where weight == 0 from coarser levels (push-pull): values (H, W, C), weight (H, W) -> same."""
    pyr_v, pyr_w = [values * weight[..., None]], [weight]
    for _ in range(levels):
        h, w = pyr_w[-1].shape
        if min(h, w) < 4:
            break
        size = ((w + 1) // 2, (h + 1) // 2)
        pyr_v.append(cv2.resize(pyr_v[-1], size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1))
        pyr_w.append(cv2.resize(pyr_w[-1], size, interpolation=cv2.INTER_AREA))
    filled = pyr_v[-1] / np.maximum(pyr_w[-1], 1e-6)[..., None]
    for lv in range(len(pyr_v) - 2, -1, -1):
        h, w = pyr_w[lv].shape
        up = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1)
        wl = np.minimum(pyr_w[lv], 1.0)[..., None]
        own = pyr_v[lv] / np.maximum(pyr_w[lv], 1e-6)[..., None]
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
    """The input view's surface seen from a new camera, as maps for `sample`.

    points: (H, W, 3) input-camera positions; valid: (H, W) bool; new_from_input: 4x4; k_out: (fx, fy, cx,
    cy) of the new camera; out_hw: its (height, width). `splat_maps` runs at 1/step resolution (every step-th
    source pixel into a 1/step output grid); its coordinate and depth maps are upsampled to out_hw (see
    `_upsample_coords`; depth: nearest) and still address the full-resolution source, so texture detail is
    kept. Returns (map_x, map_y, cover, depth), each (h, w) float32: source pixel coordinates, the
    anti-aliased coverage 0..1 (a smooth sub-pixel silhouette, `_smooth_cover`) and the new depth (-z, head
    units; 0 outside).
    """
    h, w = out_hw
    hs, ws = (h + step - 1) // step, (w + step - 1) // step
    fx, fy, cx, cy = k_out
    if step > 1:
        points = np.ascontiguousarray(points[::step, ::step])
        valid = np.ascontiguousarray(valid[::step, ::step])
    mx, my, cover, depth = splat_maps(points, valid, new_from_input,
                                      (fx / step, fy / step, cx / step, cy / step), (hs, ws), **kw)
    if step > 1:
        # coarse source index i is full-resolution pixel step * i (points[::step] took exactly that pixel)
        mx, my = _upsample_coords(mx * step, my * step, cover > 0, step, (h, w), JUMP_PX * step)
        depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    return mx, my, _smooth_cover(cover, (h, w)), depth


def _upsample_coords(map_x: np.ndarray, map_y: np.ndarray, inside: np.ndarray, step: int,
                     out_hw: tuple[int, int], jump: float) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinate maps (h, w) float32 -> (H, W) at out_hw (about step x larger): bilinear, but each
    cell next to a jump inside the silhouette `inside` (h, w) bool (neighbouring coordinates more than
    `jump` source px apart: an occlusion edge or the seam of a filled hole) keeps its own coordinates over
    its step x step output pixels, where blending would address pixels between two unrelated surfaces."""
    h, w = out_hw
    k = np.ones((3, 3), np.uint8)
    spread = np.maximum(cv2.dilate(map_x, k) - cv2.erode(map_x, k),
                        cv2.dilate(map_y, k) - cv2.erode(map_y, k))
    cy, cx = np.nonzero((spread > jump) & inside)
    up_x = cv2.resize(map_x, (w, h), interpolation=cv2.INTER_LINEAR)
    up_y = cv2.resize(map_y, (w, h), interpolation=cv2.INTER_LINEAR)
    if cy.size:
        oy, ox = np.divmod(np.arange(step * step), step)
        ys = np.minimum(cy[:, None] * step + oy, h - 1)
        xs = np.minimum(cx[:, None] * step + ox, w - 1)
        up_x[ys, xs] = map_x[cy, cx][:, None]
        up_y[ys, xs] = map_y[cy, cx][:, None]
    return up_x, up_y


def _smooth_cover(cover: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Binary coverage (h, w) on the splat grid -> anti-aliased coverage (H, W) float32 0..1 at out_hw.

    The mask is blurred by COVER_BLUR splat px, upsampled bilinearly and its ramp steepened to EDGE_PX
    output px around the 0.5 level: a smooth sub-pixel contour through the middle of the splat's stair
    steps (and the 2 px steps of the source mask sampled every step-th pixel), so the silhouette neither
    grows nor shrinks (a convex edge of radius r splat px moves in by about COVER_BLUR^2 / 2r).
    """
    h, w = out_hw
    gain = COVER_BLUR * w / cover.shape[1] * math.sqrt(2 * math.pi) / EDGE_PX  # 1 / slope at the edge, px
    soft = cv2.GaussianBlur(cover.astype(np.float32), (0, 0), COVER_BLUR) * gain + (0.5 - 0.5 * gain)
    if soft.shape != (h, w):
        soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)  # linear: steepening commutes
    return np.clip(soft, 0.0, 1.0, out=soft)


def splat_maps(points: np.ndarray, valid: np.ndarray, new_from_input: np.ndarray,
               k_out: tuple[float, float, float, float], out_hw: tuple[int, int],
               close_px: int = 5, border_px: int = 32, margin_px: int = 8
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-splat the input view's surface into a new camera with a z-buffer; fill cracks and holes.

    points: (H, W, 3) input-camera positions; valid: (H, W) bool; new_from_input: 4x4 taking input-camera
    points to the new camera; k_out: (fx, fy, cx, cy) of the new camera; out_hw: its (height, width).
    Returns (map_x, map_y, cover, depth): float32 (h, w) source pixel coordinates for cv2.remap (sub-pixel:
    `_subpixel_offsets`), the binary coverage (h, w) float32 0/1 (the re-projected silhouette, cracks
    closed, enclosed holes filled) and the new depth (-z, 0 outside the coverage).
    Holes inside the silhouette take push-pull-interpolated source coordinates (cracks), except at a
    disocclusion, where they take those of the surface behind (`_fill_from_behind`). The coordinates also
    run on (push-pull) `margin_px` px beyond the silhouette, so that upsampling and anti-aliasing at its
    edge address the person's own edge, not unrelated pixels.
    Where the person runs out of the frame (shoulders at the bottom edge), the surface is extended by
    `border_px` by linear extrapolation (source coordinates beyond the edge: remap repeats the edge), so
    a moved camera does not open a gap between the body and the frame edge.
    """
    h, w = out_hw
    hit, coords, landed = _splat(points, valid, new_from_input, k_out, out_hw, border_px)
    _drop_flying(hit, coords)
    if not hit.any():
        zero = np.zeros((h, w), np.float32)
        return zero, zero.copy(), zero.copy(), zero.copy()
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))
    cover = _fill_enclosed(cv2.morphologyEx(hit.astype(np.float32), cv2.MORPH_CLOSE, k))
    bx, by, bw, bh = cv2.boundingRect(cover.astype(np.uint8))
    sub = np.s_[max(by - margin_px, 0):by + bh + margin_px, max(bx - margin_px, 0):bx + bw + margin_px]
    solid = hit | _crack(hit)  # hits and cracks of 1-2 px between them
    wide = (cover[sub] > 0) & ~solid[sub]  # holes wider than a crack, maybe disocclusions
    # push-pull fills the cracks, the holes and the margin around the silhouette (hits stay, up to rounding);
    # cracks then take their neighbours' mean, closer than push-pull's coarse levels
    coords[sub] = _push_pull(np.ascontiguousarray(coords[sub]), hit[sub].astype(np.float32), levels=6)
    coords[sub] = _fill_cracks(coords[sub], hit[sub], solid[sub] & ~hit[sub], k_out[0])
    coords[sub] = _fill_from_behind(coords[sub], hit[sub], wide, points, valid, k_out[0])
    # sub-pixel positions, except beside a wide hole (a disocclusion: they would reach into the occluder)
    # and near the silhouette (the derivatives would see the extrapolated margin)
    landed *= (cv2.erode(solid.view(np.uint8), np.ones((3, 3), np.uint8))
               * cv2.erode(cover, np.ones((5, 5), np.uint8)))[..., None]
    map_x, map_y = _subpixel_offsets(coords[..., 0], coords[..., 1], landed)
    depth = np.where(cover > 0, coords[..., 2], 0.0).astype(np.float32)
    return map_x, map_y, cover, depth


def _fill_cracks(coords: np.ndarray, hit: np.ndarray, cracks: np.ndarray, fx: float,
                 step_footprints: float = 16.0) -> np.ndarray:
    """coords (h, w, 3) source x, y and depth; hit, cracks (h, w) bool -> coords with each crack cell set to
    the mean of the hits in its 3x3 neighbourhood that lie on the front-most surface around it (depth
    within `step_footprints` pixel footprints of the nearest hit in 5x5), so that a crack beside an
    occlusion edge takes the occluder's coordinates only. Where the view magnifies the surface (hits
    every 1.5-2 px), push-pull's coarse levels alternated with the exact hits: a mosaic of 2x2 blocks at
    step 2. Cracks with no such neighbour keep their value."""
    z = coords[..., 2]
    z_hit = np.where(hit, z, np.float32(1e30))  # finite: erode's border value is FLT_MAX
    nearest = cv2.erode(z_hit, np.ones((5, 5), np.uint8))
    front = (hit & (z <= nearest * np.float32(1.0 + step_footprints / fx))).astype(np.float32)
    n = cv2.boxFilter(front, -1, (3, 3), normalize=False)
    total = cv2.boxFilter(cv2.multiply(coords, rgb3(front)), -1, (3, 3), normalize=False)
    mean = cv2.divide(total, rgb3(np.maximum(n, 1.0)))
    out = np.ascontiguousarray(coords).copy()
    np.copyto(out, mean, where=(cracks & (n > 0))[..., None])
    return out


def _splat(points: np.ndarray, valid: np.ndarray, new_from_input: np.ndarray,
           k_out: tuple[float, float, float, float], out_hw: tuple[int, int], border_px: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The z-buffered forward splat of `splat_maps` (same arguments) -> hit (h, w) bool (a source point
    landed here), and for the nearest such point: coords (h, w, 3) float32 its source pixel x, y and new
    depth (head units); landed (h, w, 2) float32 the cell centre minus where it landed (px, each within
    +-0.5). All 0 where nothing landed."""
    h, w = out_hw
    maps = np.zeros((5, h * w), np.float32)
    pad = border_px if border_px > 0 and (valid[0].any() or valid[-1].any() or valid[:, 0].any()
                                          or valid[:, -1].any()) else 0
    if pad:
        points = np.pad(points, ((pad, pad), (pad, pad), (0, 0)), mode="reflect", reflect_type="odd")
        valid = np.pad(valid, pad, mode="edge")
    w_in = valid.shape[1]
    idx = np.flatnonzero(valid.reshape(-1))
    if idx.size == 0:
        return np.zeros((h, w), bool), np.zeros((h, w, 3), np.float32), np.zeros((h, w, 2), np.float32)
    p = points.reshape(-1, 3)[idx].astype(np.float32)
    q = cv2.transform(p.reshape(-1, 1, 3), np.asarray(new_from_input, dtype=np.float32)[:3]).reshape(-1, 3)
    z = -q[:, 2]
    fx, fy, cx, cy = k_out
    zs = np.maximum(z, 1e-3)
    u = fx * q[:, 0] / zs + cx
    v = cy - fy * q[:, 1] / zs
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    inside = np.flatnonzero((z > 1e-3) & (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h))
    # the points, then the samples of stretched triangles (`_stretched_samples`) at pixel centres, looked
    # for only around points that landed where the points alone cover the surface sparsely
    tgt = iv[inside] * w + iu[inside]
    zbuf = np.full(h * w, np.inf, np.float32)
    scatter_min(zbuf, tgt, z[inside])
    sparse = cv2.boxFilter(np.isfinite(zbuf).reshape(h, w).astype(np.float32), -1, (3, 3)) < 0.5
    sx, sy, sz, scell = _stretched_samples(u, v, z, idx[inside[sparse.reshape(-1)[tgt]]], idx, valid.shape,
                                           k_out[0], out_hw)
    scatter_min(zbuf, scell, sz)
    tgt = np.concatenate([tgt, scell])
    z_all = np.concatenate([z[inside], sz])
    nearest = np.flatnonzero(z_all <= zbuf[tgt] + 1e-6)
    pts = nearest[nearest < inside.size]  # nearest in their cell among the points, and their cells
    win, cell = inside[pts], tgt[pts]
    src = idx[win]
    for i, val in enumerate((src % w_in - pad, src // w_in - pad, z[win], iu[win] + 0.5 - u[win],
                             iv[win] + 0.5 - v[win])):
        maps[i, cell] = val
    tri = nearest[nearest >= inside.size] - inside.size  # triangle samples: at the cell centre, landed 0
    for i, val in enumerate((sx[tri] - pad, sy[tri] - pad, sz[tri], 0.0, 0.0)):
        maps[i, scell[tri]] = val
    hit = np.zeros(h * w, bool)
    hit[cell] = True
    hit[scell[tri]] = True
    x, y, z_new, du, dv = maps.reshape(5, h, w)
    return hit.reshape(h, w), cv2.merge((x, y, z_new)), cv2.merge((du, dv))


STRETCH_AREA = 1.5  # a source triangle (area 1/2 px) covering more output px^2 than this is rasterised
STRETCH_MAX_PX = 7  # ... when it spans at most this many output px across (else left to the fill)


def _stretched_samples(u: np.ndarray, v: np.ndarray, z: np.ndarray, near: np.ndarray, idx: np.ndarray,
                       shape: tuple[int, int], fx: float, out_hw: tuple[int, int],
                       step_footprints: float = 16.0) -> tuple[np.ndarray, ...]:
    """Where the new view stretches the surface (a rim turned toward the camera), one splatted point per
    source pixel leaves gaps, and filling them from coarser levels alternates with the exact hits (a
    speckled edge). This rasterises (`geometry.rasterize_sparse`) the source grid's triangles that cover
    more than STRETCH_AREA output px^2, interpolating source position and depth linearly.

    u, v, z (N,): where the points of source pixels idx (N,) (flat indices into a grid of `shape`) land
    and their new depth; near (K,): the source pixels (flat indices) whose triangles to look at (the
    triangles of the 4 quads around each); fx: the new camera's focal length (px); out_hw: the output
    grid. A triangle is taken only when its corners are valid and on one surface (neighbouring depths
    differ by less than `step_footprints` pixel footprints z / fx: not an occlusion edge).
    Returns (x, y, depth, cell) (M,): source pixel coordinates, depth and flat output cell of each sample.
    """
    from relight_core.geometry import rasterize_sparse

    tri = _stretched_triangles(u, v, z, near, idx, shape, fx, step_footprints)
    if len(tri) == 0:
        empty = np.zeros(0, np.float32)
        return empty, empty, empty, np.zeros(0, np.int64)
    h, w = out_hw
    corners = np.arange(3 * len(tri)).reshape(-1, 3)
    pixels = np.stack([tri[:, 0:3].ravel(), tri[:, 3:6].ravel()], axis=1)
    _, ys, xs, tid, lam = rasterize_sparse(pixels, tri[:, 6:9].ravel(), corners, h, w)
    x, y, depth = (rowdot(lam, tri[tid, a:a + 3]) for a in (9, 12, 6))
    return x, y, depth, (ys * w + xs).astype(np.int64)


_QUAD_TRIANGLES = (((0, 0), (0, 1), (1, 0)), ((1, 1), (1, 0), (0, 1)))  # (row, col) corners in a 2x2 quad


def _stretched_triangles(u: np.ndarray, v: np.ndarray, z: np.ndarray, near: np.ndarray, idx: np.ndarray,
                         shape: tuple[int, int], fx: float, step_footprints: float) -> np.ndarray:
    """The triangles that `_stretched_samples` rasterises, among those of the quads around the source
    pixels `near` -> (M, 15) float32: per triangle its corners' u (3), v (3), new depth (3), source x (3)
    and source y (3)."""
    h_in, w_in = shape
    if near.size == 0:
        return np.zeros((0, 15), np.float32)
    grid = np.full((3, h_in * w_in), np.nan, np.float32)
    for g, val in zip(grid, (u, v, z), strict=True):
        g[idx] = val
    # quads (by their top-left pixel) that have a `near` pixel as a corner, inside the grid
    quad = np.unique((near[:, None] - np.array([0, 1, w_in, w_in + 1])[None, :]).ravel())
    quad = quad[(quad >= 0) & (quad % w_in < w_in - 1) & (quad // w_in < h_in - 1)]
    found = []
    for corners in _QUAD_TRIANGLES:
        at = [quad + a * w_in + b for a, b in corners]
        (u0, u1, u2), (v0, v1, v2), (z0, z1, z2) = ([g[c] for c in at] for g in grid)
        area2 = np.abs((u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0))  # NaN where a corner is missing
        tol = step_footprints / fx * z0
        span = np.fmax(np.fmax(np.abs(u1 - u0), np.abs(u2 - u0)), np.fmax(np.abs(v1 - v0), np.abs(v2 - v0)))
        sel = np.flatnonzero((area2 > 2 * STRETCH_AREA) & (span <= STRETCH_MAX_PX) & (np.abs(z1 - z0) < tol)
                             & (np.abs(z2 - z0) < tol) & (np.abs(z2 - z1) < tol))
        cols = [c[sel] for c in (u0, u1, u2, v0, v1, v2, z0, z1, z2)]
        cols += [c[sel] % w_in for c in at] + [c[sel] // w_in for c in at]
        found.append(np.stack(cols, 1).astype(np.float32))
    return np.concatenate(found)


def _drop_flying(hit: np.ndarray, coords: np.ndarray, reach: int = 2, min_agree: int = 2) -> None:
    """Clear, in place in hit (h, w) bool, splat cells whose source pixel (coords (h, w, 2+) x, y) agrees
    with fewer than `min_agree` hits within `reach` cells: a point that lands apart from its source
    neighbours ("flying pixel"). Where two surfaces of the geometry meet (the side of the dome and the
    forehead, a nostril over the cheek), a sparse row of grazing points from the surface that should be
    hidden can win single cells of the z-buffer; they showed as dark dots inside the face. "Agrees":
    within 2 + 2 d source px at d cells away (a surface stretched or squeezed stays continuous). A cheap
    pre-test (its source pixel off the neighbourhood's mean) limits the exact test to a few cells.
    """
    size = (2 * reach + 1, 2 * reach + 1)
    weight = hit.astype(np.float32)
    count = np.maximum(cv2.boxFilter(weight, -1, size, normalize=False), 1.0)
    dev = np.zeros(hit.shape, np.float32)
    for c in range(2):
        mean = cv2.boxFilter(coords[..., c] * weight, -1, size, normalize=False) / count
        dev += np.abs(coords[..., c] - mean)
    ys, xs = np.nonzero(hit & (dev > 2.0))
    if ys.size == 0:
        return
    h, w = hit.shape
    agree = np.zeros(ys.size, np.int32)
    own_x, own_y = coords[ys, xs, 0], coords[ys, xs, 1]
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy == 0 and dx == 0:
                continue
            yy, xx = np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)
            tol = 2.0 + 2.0 * max(abs(dy), abs(dx))
            agree += (hit[yy, xx] & (np.abs(coords[yy, xx, 0] - own_x) <= tol)
                      & (np.abs(coords[yy, xx, 1] - own_y) <= tol))
    drop = agree < min_agree
    hit[ys[drop], xs[drop]] = False


def _subpixel_offsets(map_x: np.ndarray, map_y: np.ndarray, landed: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates (h, w) of the points splatted into each cell -> those of the cell centres.

    landed: (h, w, 2) cell centre minus where the cell's point landed, px (0: no correction). The local
    d(source) / d(output) comes from the maps themselves (3x3 Sobel: smoothed central differences); the
    correction is limited to +-0.49 px, so a cell still addresses its own point's pixel. Without it every
    cell would take its point's pixel centre, a jitter of up to half a cell that turns straight edges in
    the texture into stairs. Returns (map_x, map_y), new arrays.
    """
    du, dv = landed[..., 0], landed[..., 1]
    out = []
    for m in (map_x, map_y):
        d_u = cv2.Sobel(m, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
        d_v = cv2.Sobel(m, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
        out.append(m + np.clip(d_u * du + d_v * dv, -0.49, 0.49))
    return out[0], out[1]


def _fill_from_behind(coords: np.ndarray, hit: np.ndarray, holes: np.ndarray, src_points: np.ndarray,
                      src_valid: np.ndarray, fx: float, slope: float = SLOPE) -> np.ndarray:
    """Hole pixels at a disocclusion take the coordinates of the surface behind it.

    coords: (H, W, 3) float32 source pixel x, y and new depth (head units), exact at hits, interpolated
    (push-pull) in holes; hit, holes: (H, W) bool (the holes to look at: wider than a crack, whose blend is
    too narrow to matter); src_points (Hs, Ws, 3), src_valid (Hs, Ws): the splatted source grid; fx: focal
    length of this grid, px. A hole pixel is a disocclusion when (a) the nearest hits bracketing it
    left/right or above/below differ in depth by more than a surface inclined by `slope` (depth change per
    px, in pixel footprints depth / fx) could span over the gap, plus one footprint, or (b) its
    interpolated source coordinates read something nearer in the source than the bracketing hits' source
    depth by as much (they cross the occluder between two sides of the background). It then takes the
    coordinates and depth of a bracketing hit behind (`_pick_behind`): the hole shows the background's edge
    stretched along the parallax, not a blend of two surfaces. Returns coords with those pixels replaced
    (a new array).
    """
    out = coords.copy()
    ys, xs = np.nonzero(holes)
    if ys.size == 0:
        return out
    n = np.arange(ys.size)
    rows, cols, dist, found = _brackets(hit, ys, xs)
    z = np.where(found, coords[rows, cols, 2], 0.0)  # (4, N) new depth of the bracketing hits
    px = z.max(axis=0) / fx  # pixel footprint at the farthest one, head units

    def step(i: int, j: int) -> np.ndarray:  # the pair i, j straddles a depth step
        return found[i] & found[j] & (np.abs(z[i] - z[j]) > px * (slope * (dist[i] + dist[j]) + 1.0))

    at = coords[rows, cols, :2]  # (4, N, 2) the bracketing hits' own source pixels
    wgt = np.where(found, 1.0 / np.maximum(dist, 1.0), 0.0)
    z_src = (wgt * _source_depth(src_points, src_valid, np.rint(at[..., 1]), np.rint(at[..., 0]))).sum(axis=0)
    z_src /= np.maximum(wgt.sum(axis=0), 1e-6)  # their source depth, interpolated
    read = _nearest_source(src_points, src_valid, coords[ys, xs, 0], coords[ys, xs, 1])
    crossing = read < z_src - px * (slope * 2.0 * dist.min(axis=0, initial=np.inf, where=found) + 1.0)
    across, down = step(0, 1), step(2, 3)
    sel = (across | down | crossing) & found.any(axis=0)
    pick = _pick_behind(z, dist, found, px * slope, px, across, down)[sel]
    out[ys[sel], xs[sel]] = coords[rows[pick, n[sel]], cols[pick, n[sel]]]
    return out


def _pick_behind(z: np.ndarray, dist: np.ndarray, found: np.ndarray, per_px: np.ndarray, tol: np.ndarray,
                 across: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Which of the 4 bracketing hits (left, right, above, below) a disocclusion pixel copies -> (N,) int.

    z, dist, found: (4, N) their new depth, distance (px) and existence; per_px, tol: (N,) the depth a
    surface may change per px and in all. When one pair straddles the step (across: left/right, down:
    above/below, (N,) bool), the far one of that pair; else the nearest of those within reach of the
    farthest (a surface behind), left or right when there is one (orbits are mostly yaw; one seam, not
    four).
    """
    n = np.arange(z.shape[1])
    far = np.argmax(z, axis=0)
    behind = found & (z >= z[far, n] - per_px * (dist + dist[far, n]) - tol)
    pick = np.argmin(np.where(behind, dist, np.inf), axis=0)
    level = behind[:2].any(axis=0)
    pick = np.where(level, np.argmin(np.where(behind[:2], dist[:2], np.inf), axis=0), pick)
    pick = np.where(across & ~down, np.where(z[1] > z[0], 1, 0), pick)
    return np.where(down & ~across, np.where(z[3] > z[2], 3, 2), pick)


def _crack(hit: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels with a hit within 2 px on both sides, left and right or above and below (cracks
    of 1-2 px, which interpolation fills well enough even across a depth step)."""
    near = [np.zeros_like(hit) for _ in range(4)]  # a hit 1 or 2 px to the left, right, above, below
    for d in (1, 2):
        near[0][:, d:] |= hit[:, :-d]
        near[1][:, :-d] |= hit[:, d:]
        near[2][d:] |= hit[:-d]
        near[3][:-d] |= hit[d:]
    return (near[0] & near[1]) | (near[2] & near[3])


def _brackets(hit: np.ndarray, ys: np.ndarray, xs: np.ndarray, reach: int = 32
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The nearest hits left, right, above and below pixels (ys, xs) (N,) of hit (H, W) bool, up to `reach`
    px away -> their rows, columns (4, N) int (0 where none), distances (4, N) float32 px and whether they
    exist (4, N) bool."""
    h, w = hit.shape
    k = np.arange(1, reach + 1)
    n = np.arange(ys.size)
    start = (ys * w + xs)[:, None]
    rows, cols, dist, found = [], [], [], []
    for along, stride, size in ((xs, -1, w), (xs, 1, w), (ys, -w, h), (ys, w, h)):
        ahead = along[:, None] + np.sign(stride) * k  # (N, reach) row or column index along the ray
        flat = start + stride * k
        got = (ahead >= 0) & (ahead < size) & hit.reshape(-1)[np.clip(flat, 0, h * w - 1)]
        first = got.argmax(axis=1)
        ok = got[n, first]
        at = np.where(ok, flat[n, first], 0)
        rows.append(at // w)
        cols.append(at % w)
        dist.append(first + 1.0)
        found.append(ok)
    return np.stack(rows), np.stack(cols), np.stack(dist).astype(np.float32), np.stack(found)


def _nearest_source(points: np.ndarray, valid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The smallest source depth (N,) over the 2x2 source pixels a bilinear sample at (x, y) (N,) reads
    (`_source_depth`): whether the sample touches something nearer."""
    x0, y0 = np.floor(x), np.floor(y)
    return np.min([_source_depth(points, valid, y0 + dy, x0 + dx) for dy in (0, 1) for dx in (0, 1)], axis=0)


def _source_depth(points: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Depth (-z) of points (Hs, Ws, 3) at whole pixel indices rows, cols (any shape, clipped to the grid;
    0 where not valid (Hs, Ws)) -> same shape."""
    hs, ws = valid.shape
    r = np.clip(rows, 0, hs - 1).astype(np.int64)
    c = np.clip(cols, 0, ws - 1).astype(np.int64)
    return np.where(valid[r, c], -points[r, c, 2], 0.0)


MIRROR_HIDDEN_TOL = 0.03  # head units: a face point this far behind the input's depth map is hidden there
MIRROR_POOR = 0.35        # cosine (normal . view ray) under which the input sees a face point poorly
MIRROR_FULL = 0.2         # ... and under which the mirrored side, when seen better, replaces it fully
MIRROR_MARGIN = 0.1       # how much better (cosine) the mirrored point must be seen to be used at all
MIRROR_GAIN = 0.4         # ... and to replace the point fully


@dataclass
class MirrorFill:
    """Face pixels of a novel view textured from the other side of the face: output pixels ys, xs (N,),
    the mirrored texture's weight (N,) float32 in 0..1 (the rest: the re-projection's own), its source
    pixel src_x, src_y (N,) float32 (`sample` coordinates) and the pixels' own unit normals (N, 3) float32,
    input camera space (to shade them: the mirror side's shading would be the wrong side's light)."""

    ys: np.ndarray
    xs: np.ndarray
    weight: np.ndarray
    src_x: np.ndarray
    src_y: np.ndarray
    normals: np.ndarray

    @classmethod
    def none(cls) -> MirrorFill:
        empty = np.zeros(0, np.float32)
        return cls(empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty,
                   np.zeros((0, 3), np.float32))


def mirror_fill(vertices: np.ndarray, tris: np.ndarray, vertex_normals: np.ndarray,
                new_from_input: np.ndarray, k_in: np.ndarray, k_out: tuple[float, float, float, float],
                out_hw: tuple[int, int], depth_in: np.ndarray, depth_out: np.ndarray) -> MirrorFill:
    """Where a novel view shows face the input camera did not see (behind the nose, the far cheek) or saw
    edge-on, take the texture of the mirrored point on the other side of the face, when that is seen
    better: faces are close to symmetric, and the re-projection can only stretch what it has there.

    vertices (478, 3), vertex_normals (478, 3): the face mesh in input-camera space, tris (T, 3) its
    faces; new_from_input 4x4; k_in (3, 3) the input intrinsics, k_out (fx, fy, cx, cy) the new camera's
    at out_hw; depth_in (H, W) the input view's depth map (-z, 0 outside the person); depth_out (h, w)
    the re-projection's depth (0 where it has nothing): pixels where it shows something nearer than the
    face (hair over the forehead) keep it. Each face vertex is rated by how squarely the input saw it
    (cosine of normal and view ray, 0 when hidden), the rating interpolated over the triangles; the
    mirrored point replaces a pixel's where that rating is under MIRROR_POOR and the mirror's is more
    than MIRROR_MARGIN higher, fully under MIRROR_FULL and MIRROR_GAIN higher. Only triangles with such
    a vertex are rasterised (a few in a turned view, none in a frontal one), so the cost follows the
    area filled.
    """
    from relight_core import geometry

    h, w = out_hw
    v_in = np.asarray(vertices, dtype=np.float64)
    v_normals = np.asarray(vertex_normals, dtype=np.float64)
    mirror = geometry.face_mirror()
    seen_v, _ = _seen_from_input(v_in, v_normals, k_in, depth_in)  # rated per vertex, interpolated
    candidate = (seen_v < MIRROR_POOR) & (seen_v[mirror] > seen_v + MIRROR_MARGIN)
    tris = np.asarray(tris)
    tris = tris[candidate[tris].any(axis=1)]  # only these can be filled: the splat's depth hides the rest
    if len(tris) == 0:
        return MirrorFill.none()
    v_new = cam.transform_points(new_from_input, v_in)
    x0, y0, x1, y1 = _pixel_box(cam.project(v_new[np.unique(tris)], k_out), h, w)
    if x1 <= x0 or y1 <= y0:
        return MirrorFill.none()
    fx, fy, cx, cy = k_out  # rasterised in the box around those triangles only
    face = geometry.render_mesh(v_new, tris, cam.k_matrix((fx, fy, cx - x0, cy - y0)), y1 - y0, x1 - x0,
                                normals=v_normals)  # interpolates the input-camera normals
    face.ys += y0  # into the whole frame (face.cover stays the box's)
    face.xs += x0
    face.idx = face.ys * w + face.xs
    seen = _barycentric(seen_v[:, None], face.corners, face.lam)[:, 0]
    seen_other = _barycentric(seen_v[mirror][:, None], face.corners, face.lam)[:, 0]
    weight = (np.clip((seen_other - seen - MIRROR_MARGIN) / (MIRROR_GAIN - MIRROR_MARGIN), 0.0, 1.0)
              * np.clip((MIRROR_POOR - seen) / (MIRROR_POOR - MIRROR_FULL), 0.0, 1.0))
    front = np.take(depth_out.reshape(-1), face.idx)
    weight *= (front <= 0) | (front >= face.depth - MIRROR_HIDDEN_TOL)
    sel = np.flatnonzero(weight > 0.0)
    other = _barycentric(v_in, mirror[face.corners[:, sel]], face.lam[:, sel])
    uv = cam.project(other, k_in)
    return MirrorFill(face.ys[sel], face.xs[sel], weight[sel].astype(np.float32),
                      (uv[:, 0] - 0.5).astype(np.float32), (uv[:, 1] - 0.5).astype(np.float32),
                      face.normals_at(sel))


def _pixel_box(px: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """Whole-pixel box (x0, y0, x1, y1), exclusive ends, around pixel coordinates (N, 2), within (h, w)."""
    x0, y0 = np.floor(px.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(px.max(axis=0)).astype(int) + 1
    return max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)


def _barycentric(values: np.ndarray, corners: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Per-vertex values (V, C) at points given by corner vertex ids (3, N) and weights (3, N) -> (N, C)."""
    return sum(values[corners[c]] * lam[c][:, None] for c in range(3))


def _seen_from_input(points: np.ndarray, normals: np.ndarray, k_in: np.ndarray, depth_in: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """How squarely the input camera sees points (N, 3) with unit normals (N, 3), input-camera space ->
    (cosine of normal and view ray (N,), clipped to 0..1 and 0 where the depth map depth_in (H, W) has
    something nearer (MIRROR_HIDDEN_TOL) or nothing; their pixel coordinates (N, 2))."""
    hh, ww = depth_in.shape
    uv = cam.project(points, k_in)
    col = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, ww - 1)
    row = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, hh - 1)
    d = depth_in[row, col]
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < ww) & (uv[:, 1] >= 0) & (uv[:, 1] < hh)
    visible = inside & (d > 0) & (-points[:, 2] <= d + MIRROR_HIDDEN_TOL)
    cosine = -rowdot(normals, points) * inverse_norm(points)
    return np.where(visible, np.clip(cosine, 0.0, 1.0), 0.0), uv


def sample(img: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, nearest: bool = False) -> np.ndarray:
    """cv2.remap wrapper: img (H, W[, C]) sampled at (map_x, map_y) pixel-index coordinates."""
    return cv2.remap(img, map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def sample_points(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of img (H, W, C) at pixel-index coordinates x, y (N,) (edges repeated) -> (N, C)."""
    h, w = img.shape[:2]
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, w - 1.0)
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.int64), w - 2) if w > 1 else np.zeros(x.shape, np.int64)
    y0 = np.minimum(y.astype(np.int64), h - 2) if h > 1 else np.zeros(y.shape, np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


EDGE_ALPHA_MIN = 0.25  # below this matte value the foreground colour is not solved for (noise / alpha)


def decontaminate_edge(rgb: np.ndarray, img: np.ndarray, alpha: np.ndarray, plate: np.ndarray) -> None:
    """Remove the background's share from the colour of the matte's soft edge, in place.

    rgb (H, W, 3): the relit person, which at the edge inherits the input pixel's mix of person and
    background; img (H, W, 3) that input; alpha (H, W) the matte; plate (H, W, 3) the background without
    the person (`inpaint_background`). Where 0.02 < alpha < 0.98 the input's foreground colour solves the
    matting equation img = alpha F + (1 - alpha) plate, F = plate + (img - plate) / alpha (alpha at least
    EDGE_ALPHA_MIN), and rgb is scaled per channel by F / img (at most 4x). A novel view stretches a rim
    turned toward the camera several times, and with it these edge pixels: without this they show the
    wall or sky behind the hair as pale or tinted streaks.
    """
    ys, xs = np.nonzero((alpha > 0.02) & (alpha < 0.98))
    if ys.size == 0:
        return
    a = np.maximum(alpha[ys, xs], EDGE_ALPHA_MIN)[:, None]
    seen, behind = img[ys, xs], plate[ys, xs]
    fore = np.maximum(behind + (seen - behind) / a, 0.0)
    rgb[ys, xs] *= np.clip(fore / np.maximum(seen, 1e-4), 0.0, 4.0)


MIRROR_EDGE_SMOOTH = 2.0  # Gaussian sigma (half-res px) of the mirror points along the hole's edge


def inpaint_background(plate: np.ndarray, alpha: np.ndarray, grow_px: int = 9, fade: float = 0.08
                       ) -> np.ndarray:
    """The plate (H, W, 3) with the person (alpha (H, W)) removed and filled from around -> (H, W, 3).

    The hole is the matte grown by `grow_px`. Near its edge it takes the plate's own texture mirrored
    across the edge (each hole pixel from the mirror image of itself about its nearest pixel outside the
    hole), so that a novel view's uncovered band continues the background's texture and colours instead
    of showing a smooth patch in the old silhouette's shape. That fades (Gaussian, 1/e at `fade` x the
    frame's longer side: 40 px at 512) into a smooth push-pull fill of the surrounding plate, which also
    takes over where the mirror image falls outside the frame or into the hole. Computed at half
    resolution (the fill is soft anyway), upsampled, and feathered into the untouched plate, which
    outside the feather is returned unchanged. About 5 ms at 512 px.
    """
    h, w = alpha.shape
    sw, sh_ = max(w // 2, 8), max(h // 2, 8)
    small = cv2.resize(np.ascontiguousarray(plate, dtype=np.float32), (sw, sh_), interpolation=cv2.INTER_AREA)
    hole = (cv2.resize(np.ascontiguousarray(alpha, dtype=np.float32), (sw, sh_), interpolation=cv2.INTER_AREA)
            > 0.02).astype(np.uint8)
    r = max(grow_px // 2, 1)
    hole = cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    if hole.min() == 1 or hole.max() == 0:  # nothing to fill from, or nothing to fill
        return np.array(plate, dtype=np.float32, copy=True)
    smooth = _smooth_fill(small, hole)
    map_x, map_y, dist = _mirror_maps(hole)
    mirrored = cv2.remap(small, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xi = np.clip(map_x, 0, sw - 1).astype(np.int32)
    yi = np.clip(map_y, 0, sh_ - 1).astype(np.int32)
    usable = (map_x >= 0) & (map_x <= sw - 1) & (map_y >= 0) & (map_y <= sh_ - 1) & (hole[yi, xi] == 0)
    fade_half_px = fade * max(sw, sh_)
    weight = cv2.GaussianBlur((usable * np.exp(-(dist / fade_half_px) ** 2)).astype(np.float32), (0, 0), 1.0)
    fill = smooth + rgb3(weight) * (mirrored - smooth)
    feather = cv2.GaussianBlur(hole.astype(np.float32), (0, 0), max(grow_px / 6.0, 0.5))
    up = cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)
    soft = cv2.resize(feather, (w, h), interpolation=cv2.INTER_LINEAR)
    out = np.ascontiguousarray(plate, dtype=np.float32)
    cv2.subtract(up, out, dst=up)
    cv2.multiply(up, rgb3(soft), dst=up)
    return cv2.add(out, up)


def _smooth_fill(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """img (h, w, 3) with hole (h, w) uint8 filled smoothly from around it (push-pull at half this
    resolution; pixels at the hole's edge count as unknown) -> (h, w, 3)."""
    h, w = hole.shape
    size = (max(w // 2, 4), max(h // 2, 4))
    known = (cv2.resize(1.0 - hole.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99)
    filled = _push_pull(cv2.resize(img, size, interpolation=cv2.INTER_AREA), known.astype(np.float32))
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)


def _mirror_maps(hole: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hole (H, W) uint8 1 = unknown -> (map_x, map_y, dist) (H, W) float32: for each hole pixel, its mirror
    image about its nearest known pixel q (2 q - p, may lie outside the frame) and its distance to q in px;
    known pixels map to themselves at distance 0."""
    h, w = hole.shape
    dist, labels = cv2.distanceTransformWithLabels(hole, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    ky, kx = np.nonzero(hole == 0)  # each known pixel has its own label
    lx = np.zeros(len(kx) + 1, np.float32)
    ly = np.zeros(len(ky) + 1, np.float32)
    lab = labels[ky, kx]
    lx[lab], ly[lab] = kx, ky
    # the nearest known pixel steps along a pixelated edge; smoothing it keeps mirrored lines straight
    qx = cv2.GaussianBlur(lx[labels], (0, 0), MIRROR_EDGE_SMOOTH)
    qy = cv2.GaussianBlur(ly[labels], (0, 0), MIRROR_EDGE_SMOOTH)
    map_x = 2.0 * qx - np.arange(w, dtype=np.float32)[None, :]
    map_y = 2.0 * qy - np.arange(h, dtype=np.float32)[:, None]
    return map_x, map_y, dist


# --------------------------------------------------------------------------------------------- passes

def composite(rgb: np.ndarray, alpha: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """Person radiance rgb (H, W, 3) with matte alpha (H, W) over background (H, W, 3) -> RGBA (H, W, 4).

    background None: transparent output, straight alpha (rgb kept where alpha > 0).
    """
    alpha = np.ascontiguousarray(alpha, dtype=np.float32)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if background is None:
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
        out[..., 3] = alpha
        return out
    bg = np.ascontiguousarray(background, dtype=np.float32)
    mixed = cv2.subtract(rgb, bg)
    cv2.multiply(mixed, rgb3(alpha), dst=mixed)
    cv2.add(mixed, bg, dst=mixed)
    return cv2.cvtColor(mixed, cv2.COLOR_RGB2RGBA)  # float alpha 1.0


def encode_normals(normals: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """Unit normals (H, W, 3) in [-1, 1] -> (H, W, 3) in [0, 1] (n * 0.5 + 0.5); 0.5 grey outside alpha."""
    enc = (normals * 0.5 + 0.5).astype(np.float32)
    if alpha is not None:
        m = (alpha > 0.02).astype(np.float32)
        m3 = cv2.merge((m, m, m))
        enc = enc * m3 + 0.5 * (1.0 - m3)
    return enc
