"""Key lights on skin: exact diffuse with a soft terminator, soft shadows, subsurface scattering, specular.

The target light arrives as SH that INCLUDES the key lights' diffuse part (`lights.Lighting`). Order-2
SH of a small, hard light is a blurred cosine that rings below zero on the side turned away from it
(the preset generator windows it, which spreads it further), so shading a face with it alone gives a
plaster head: a terminator smeared over the whole face, and where the ringing goes negative (the
underside of the nose, facing away from a high key) a floor of black. Here the key lights' own SH is
taken out of the target (`ambient_sh`: what remains is the fill, world and any other soft light, which
SH carries well), and each key light is added back per pixel, exactly:

- diffuse: its irradiance colour x falloff x the cosine (`wrapped_cosine` with TERMINATOR_WRAP, zero:
  a wrap of (0.22, 0.10, 0.06) past the terminator, meant for light scattered round it, cost 0.6 dB
  against Cycles' random-walk subsurface skin in `eval.groundtruth`, so the terminator's softness and
  warmth come from the light's size and the subsurface blur below), times its cast-shadow visibility;
- soft shadows (`soft_shadow_visibility`): a shadow map of the visible surface in the light's view,
  filtered percentage-closer with a kernel as wide as the penumbra of a light of the key light's size
  (a sun's angular diameter, a point light's radius) at the occluder's distance (PCSS: a blocker search
  first, then the filter), so shadows are sharp near the occluder and soften away from it, and soften
  with bigger lights;
- subsurface scattering (`subsurface_blur`): the shading on skin is blurred per channel with widths
  measured in millimetres on the face (red ~ 2.6 mm, green ~ 1.1, blue ~ 0.6; single-Gaussian fits to
  the three-layer skin profiles of d'Eon & Luebke 2007, GPU Gems 3 ch. 14), by normalised convolution
  inside the skin so that hair, eyes and background do not bleed in: a flat lit area keeps its value,
  a shadow's edge turns red;
- specular (`skin_specular`): two GGX microfacet lobes (roughness 0.55 and 0.75, i.e. alpha 0.30 and
  0.56, weights 0.85 / 0.15: the RMS slopes 0.3-0.5 Weyrich et al. 2006 measured on faces, split in
  two lobes as in Jimenez et al.'s dual-lobe skin), Smith shadowing and Schlick's Fresnel with F0 =
  0.028 (skin's index 1.4).

Units: shading is irradiance in the pipeline's units (relit = albedo x shading); specular is returned as
radiance in the same units for a white diffuse albedo: pi x f_spec x irradiance, added on top of the
diffuse after masking (`render.specular_mask`).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from relight_core import sh as shlib
from relight_core.geometry import inverse_norm, rowdot

MM_PER_HEAD_UNIT = 315.0  # camera.INTEROCULAR = 0.2 head units for a 63 mm interpupillary distance
SSS_SIGMA_MM = (2.6, 1.1, 0.6)  # per channel (R, G, B) Gaussian widths of skin's diffusion profile
TERMINATOR_WRAP = (0.0, 0.0, 0.0)  # per channel wrap of the key light's cosine (see the module docstring)
SPEC_LOBES = ((0.55, 0.85), (0.75, 0.15))  # (GGX roughness r, alpha = r^2; weight) of skin's two lobes
SKIN_F0 = 0.028  # Fresnel reflectance at normal incidence, index of refraction 1.4
SHADOW_BIAS = 0.012  # head units (4 mm): the landmark mesh's own relief below this casts no shadow
PENUMBRA_MIN_CELLS = 0.75  # the smallest filter radius (shadow-map cells): an anti-aliased hard shadow
BLOCKER_REACH = 0.35  # head units: how far from a receiver an occluder may be to be searched for
SAMPLES = 16  # samples of the penumbra filter
BLOCKER_SAMPLES = 12  # samples of the blocker search


# --------------------------------------------------------------------------------------------- light SH

def ambient_sh(target: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The target SH (9, 3) with the key lights' SH (9, 3), both in one frame, taken out -> (9, 3).

    The target was made either with the keys as they are or windowed (`sh.window_sh`, gauss: what
    presets/make_presets.py does when a hard light rings below zero), or (a request that did not follow
    the convention) without them; what is taken out is the one of the three (keys, windowed keys,
    nothing) that leaves the smoothest remainder (the smallest spread of irradiance over the sphere), so
    that what remains is the fill the target holds besides its keys.
    """
    target = np.asarray(target, dtype=np.float64)
    keys = np.asarray(keys, dtype=np.float64)
    dirs = shlib._fibonacci_sphere(400)
    best, spread = target - keys, math.inf
    for k in (keys, shlib.window_sh(keys, "gauss"), np.zeros_like(keys)):
        rest = target - k
        e = shlib.shade(dirs, rest) @ shlib.LUMA
        if float(e.max() - e.min()) < spread:
            best, spread = rest, float(e.max() - e.min())
    return best


# --------------------------------------------------------------------------------------------- diffuse

def wrapped_cosine(cos_theta: np.ndarray, wrap: np.ndarray | float) -> np.ndarray:
    """Cosine (N,) of the angle between normal and light -> (N, C) (or (N,) for a scalar wrap) wrapped
    cosine max(0, (c + w) / (1 + w))^(1 + w) per wrap w ((C,) or per point (N, C)): 0 gives Lambert's
    max(c, 0); larger w lets light reach past the terminator (c < 0) as scattering in skin does, while
    the lit side keeps nearly its Lambert value (the exponent holds c = 1 at 1)."""
    c = np.asarray(cos_theta, dtype=np.float32)
    w = np.asarray(wrap, dtype=np.float32)
    if w.ndim:
        c = c[:, None]
    t = np.maximum((c + w) / (np.float32(1.0) + w), np.float32(0.0))
    return t ** (np.float32(1.0) + w)


def subsurface_blur(shading: np.ndarray, weight: np.ndarray, px_per_mm: float,
                    sigma_mm: tuple[float, float, float] = SSS_SIGMA_MM) -> np.ndarray:
    """Screen-space subsurface scattering of irradiance on skin -> (H, W, 3) float32.

    shading (H, W, 3) irradiance; weight (H, W) 0..1 where skin is (the blur's domain, and how much of the
    blurred value a pixel takes); px_per_mm: pixels of this grid per millimetre on the face. Channel c is
    Gaussian-blurred with sigma sigma_mm[c] x px_per_mm by normalised convolution over the weight (pixels
    outside the skin neither give nor take light), then mixed in by the weight. A constant over the skin
    stays constant; a shadow edge spreads furthest in red, so its dark side turns red.
    """
    shading = np.ascontiguousarray(shading, dtype=np.float32)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    out = shading.copy()
    if not (w > 0).any():
        return out
    for c in range(3):
        sigma = float(sigma_mm[c]) * float(px_per_mm)
        if sigma < 0.3:
            continue
        num = cv2.GaussianBlur(shading[..., c] * w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        den = cv2.GaussianBlur(w, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        blurred = num / np.maximum(den, np.float32(1e-6))
        out[..., c] += w * (blurred - shading[..., c])
    return out


# --------------------------------------------------------------------------------------------- specular

def ggx_specular(n_dot_h: np.ndarray, n_dot_l: np.ndarray, n_dot_v: np.ndarray, v_dot_h: np.ndarray,
                 lobes: tuple[tuple[float, float], ...] = SPEC_LOBES, f0: float = SKIN_F0) -> np.ndarray:
    """Specular BRDF x pi x cos(theta_l) of skin (N,) for the cosines (N,) of normal and half vector,
    normal and light, normal and view, view and half vector: sum over lobes of weight x D_GGX(alpha =
    roughness^2) x G_Smith x F_Schlick / (4 n.v) x pi; 0 where n.l <= 0 or n.v <= 0."""
    nh = np.clip(n_dot_h, 0.0, 1.0).astype(np.float32)
    nl = np.clip(n_dot_l, 0.0, 1.0).astype(np.float32)
    nv = np.clip(n_dot_v, 1e-4, 1.0).astype(np.float32)
    vh = np.clip(v_dot_h, 0.0, 1.0).astype(np.float32)
    fresnel = np.float32(f0) + np.float32(1.0 - f0) * (np.float32(1.0) - vh) ** 5
    out = np.zeros_like(nh)
    for rough, weight in lobes:
        a2 = np.float32(rough ** 4)
        den = nh * nh * (a2 - np.float32(1.0)) + np.float32(1.0)
        d = a2 / (np.float32(math.pi) * den * den)
        g = _smith_g1(nl, a2) * _smith_g1(nv, a2)
        out += np.float32(weight) * d * g
    out *= fresnel * nl * np.float32(math.pi / 4.0) / nv
    out[n_dot_l <= 0] = 0.0
    return out


def _smith_g1(c: np.ndarray, a2: np.float32) -> np.ndarray:
    """Smith's GGX masking of one direction with cosine c (N,) to the normal."""
    c2 = c * c
    return np.float32(2.0) * c / (c + np.sqrt(a2 + (np.float32(1.0) - a2) * c2) + np.float32(1e-7))


def skin_specular(normals: np.ndarray, to_light: np.ndarray, to_view: np.ndarray) -> np.ndarray:
    """`ggx_specular` for unit normals (N, 3) and unit directions to the light and to the viewer, each
    (N, 3) or (3,) -> (N,) (radiance per irradiance facing the light, times pi)."""
    n = np.asarray(normals, dtype=np.float32)
    lo = np.broadcast_to(np.asarray(to_light, dtype=np.float32), n.shape)
    vi = np.broadcast_to(np.asarray(to_view, dtype=np.float32), n.shape)
    half = lo + vi
    half = half * inverse_norm(half)[:, None]
    return ggx_specular(rowdot(n, half), rowdot(n, lo), rowdot(n, vi), rowdot(vi, half))


# --------------------------------------------------------------------------------------------- shadows

def light_angular_radius(light, distance: np.ndarray | float) -> np.ndarray | float:
    """Angular radius (rad) of a key light seen from receivers at `distance` (head units) from it: half a
    sun's `angle`, asin(radius / d) of a point light's sphere; 0 for an ideal light."""
    if hasattr(light, "angle") and not hasattr(light, "position"):
        return 0.5 * float(getattr(light, "angle", 0.0) or 0.0)
    r = float(getattr(light, "radius", 0.0) or 0.0)
    if r <= 0:
        return 0.0
    return np.arcsin(np.clip(r / np.maximum(distance, r), 0.0, 1.0))


def _disc(n: int) -> np.ndarray:
    """n points (n, 2) spread evenly over the unit disc (a Vogel spiral)."""
    k = np.arange(n) + 0.5
    r = np.sqrt(k / n)
    phi = k * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1).astype(np.float32)


def _light_frame(points: np.ndarray, to_light: np.ndarray, light_pos: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Surface points (N, 3) in the light's view -> (u, v, dist) (N,) each, and the size (head units per
    (u, v) unit) at the median receiver: orthographic along to_light[0] for a directional light
    (light_pos None), perspective from light_pos (u, v = tangents) for a point light; dist is the
    distance from the light along its axis (smaller = nearer the light)."""
    if light_pos is None:
        axis = np.asarray(to_light[0], dtype=np.float64)
        rel = points
    else:
        axis = (np.asarray(light_pos, np.float64) - points.mean(axis=0)).astype(np.float64)
        rel = points - light_pos[None, :]
    axis = axis / max(np.linalg.norm(axis), 1e-9)
    helper = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    q = rel @ np.stack([u, v, axis], axis=1).astype(np.float32)
    if light_pos is None:
        return q[:, 0], q[:, 1], -q[:, 2], 1.0
    front = np.maximum(-q[:, 2], 1e-4)
    return q[:, 0] / front, q[:, 1] / front, front, float(np.median(front))


def soft_shadow_visibility(points: np.ndarray, to_light: np.ndarray, light_pos: np.ndarray | None,
                           angular_radius: float = 0.0, res: int = 256, bias: float = SHADOW_BIAS,
                           cos_theta: np.ndarray | None = None, occluders: np.ndarray | None = None,
                           receivers: np.ndarray | None = None) -> np.ndarray:
    """Cast-shadow visibility (N,) in 0..1 of surface points (N, 3) (head units) for one light.

    to_light: unit direction(s) to the light, (1, 3) for a directional light (light_pos None), else
    (N, 3) with light_pos (3,) the point light's position. angular_radius (rad): the light's size as
    seen from the surface (`light_angular_radius`).

    The visible surface (the 2.5D height field known; only the points where occluders (N,) bool is True
    when given) is splatted into a res x res shadow map in the light's view (nearest distance per cell).
    Per point: a blocker search over a disc of the penumbra a blocker BLOCKER_REACH away would cast gives
    the mean distance Delta between the point and the blockers nearer the light than the point (beyond a
    bias of `bias` head units plus a slope term from cos_theta (N,), the cosine of normal and light,
    which keeps grazing surfaces free of acne; BLOCKER_SAMPLES lookups); the point's visibility is the
    fraction of SAMPLES shadow-map lookups over a disc of radius Delta x tan(angular_radius) (at least
    PENUMBRA_MIN_CELLS cells) that are not nearer than it. So the penumbra widens with the light's size
    and with the occluder's distance, as a real one does. receivers (N,) bool: evaluate only these
    points (the rest read 1; e.g. those facing the light); the map is still made of all occluders.
    """
    su, sv, dist, unit = _light_frame(points, to_light, light_pos)
    lo_u, lo_v = float(su.min()), float(sv.min())
    span = max(float(su.max()) - lo_u, float(sv.max()) - lo_v, 1e-6) * 1.02
    cell = span / res  # (u, v) units per cell
    fu = (su - lo_u) / cell
    fv = (sv - lo_v) / cell
    iu = np.clip(fu.astype(np.int64), 0, res - 1)
    iv = np.clip(fv.astype(np.int64), 0, res - 1)
    cells, zs = iv * res + iu, dist.astype(np.float32)
    if occluders is not None:
        cells, zs = cells[occluders], zs[occluders]
    zmap = np.full(res * res, np.inf, np.float32)
    np.minimum.at(zmap, cells, zs)  # a z-buffer: the nearest occluder per cell (as `render.scatter_min`)
    zmap = _fill_empty(zmap.reshape(res, res))
    tol = np.full(len(dist), bias, np.float32)
    if cos_theta is not None:
        c = np.clip(cos_theta, 0.1, 1.0)
        tol += (1.5 * cell * unit) * np.sqrt(1.0 - c * c) / c
    lim = (dist - tol).astype(np.float32)
    vis = np.ones(len(dist), np.float32)
    todo = np.arange(len(dist)) if receivers is None else np.flatnonzero(receivers)
    if todo.size == 0:
        return vis
    fu, fv, lim, dist = fu[todo], fv[todo], lim[todo], dist[todo]
    if np.ndim(angular_radius):
        angular_radius = np.asarray(angular_radius, np.float32)[todo]
    tan_r = math.tan(min(float(np.max(angular_radius)) if np.size(angular_radius) else 0.0, 1.2))
    cells_per_unit = 1.0 / (cell * unit)  # shadow-map cells per head unit at the receivers
    disc = _disc(SAMPLES)
    search = max(BLOCKER_REACH * tan_r * cells_per_unit, 1.5)
    blocked = np.zeros(len(dist), np.float32)
    depth_sum = np.zeros(len(dist), np.float32)
    for du, dv in _disc(BLOCKER_SAMPLES) * search:
        z = _lookup(zmap, fu + du, fv + dv)
        hit = z < lim
        blocked += hit
        depth_sum += np.where(hit, z, 0.0)
    shadowed = blocked > 0
    if not shadowed.any():
        return vis
    sel = np.flatnonzero(shadowed)
    delta = np.maximum(dist[sel] - depth_sum[sel] / blocked[sel], 0.0)
    tan_sel = np.tan(np.clip(np.asarray(angular_radius, np.float32)[sel] if np.ndim(angular_radius)
                             else np.float32(angular_radius), 0.0, 1.2))
    radius = np.maximum(delta * tan_sel * np.float32(cells_per_unit), np.float32(PENUMBRA_MIN_CELLS))
    lit = np.zeros(sel.size, np.float32)
    for du, dv in disc:
        lit += _lookup(zmap, fu[sel] + du * radius, fv[sel] + dv * radius) >= lim[sel]
    vis[todo[sel]] = lit / np.float32(len(disc))
    return vis


def _lookup(zmap: np.ndarray, fu: np.ndarray, fv: np.ndarray) -> np.ndarray:
    """Nearest-cell values of a (res, res) map at fractional cell coordinates fu, fv (N,) (clamped)."""
    res = zmap.shape[0]
    iu = np.clip(fu.astype(np.int64), 0, res - 1)
    iv = np.clip(fv.astype(np.int64), 0, res - 1)
    return np.take(zmap.reshape(-1), iv * res + iu)


def _fill_empty(zmap: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Empty (inf) cells of a shadow map take the nearest occluder around them (3x3 min, `rounds` times):
    sparse points at grazing angles leave holes a light would otherwise shine through."""
    for _ in range(rounds):
        empty = np.isinf(zmap)
        if not empty.any():
            break
        grown = cv2.erode(np.where(empty, 1e9, zmap).astype(np.float32), np.ones((3, 3), np.uint8))
        zmap = np.where(empty & (grown < 1e9), grown, zmap)
    return zmap
