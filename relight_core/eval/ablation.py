"""Geometry ablations for the evaluation (paper Table 5 layout): what the face mesh and the matte's
surface contribute.

- "sphere": the face mesh is replaced by a sphere fitted (least squares) to the 478 lifted landmarks:
  every face pixel's ray is intersected with the sphere (the nearest point on the ray where it misses),
  giving its depth and normal; blended into the original maps across the face seam as the engine does.
- "flat": the rest of the person (hair, ears, neck, shoulders) loses its matte dome: normals face the
  camera (0, 0, 1) and the depth is the constant depth of the face boundary; the face is unchanged.

The engine has no switch for these, so `geometry_variant` swaps `relight_core.geometry.build_geometry`
for a wrapped version while one pipeline run executes (the pipeline looks the function up per frame).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

KINDS = ("sphere", "flat")


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through points (N, 3) -> (centre (3,), radius).

    Solves |p|^2 = 2 c.p + (r^2 - |c|^2), linear in (c, r^2 - |c|^2).
    """
    p = np.asarray(points, dtype=np.float64)
    a = np.concatenate([2.0 * p, np.ones((len(p), 1))], axis=1)
    sol = np.linalg.lstsq(a, (p ** 2).sum(1), rcond=None)[0]
    c = sol[:3]
    return c, float(np.sqrt(max(sol[3] + c @ c, 1e-12)))


def _rays(k: np.ndarray, height: int, width: int) -> np.ndarray:
    """Unit cam-space rays (H, W, 3) through pixel centres (OpenGL: the camera looks along -z)."""
    xs = (np.arange(width) + 0.5 - k[0, 2]) / k[0, 0]
    ys = -(np.arange(height) + 0.5 - k[1, 2]) / k[1, 1]
    d = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], -np.ones((height, width))), axis=-1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _face_weight(cover: np.ndarray, seam_px: float) -> np.ndarray:
    """1 deep inside the face, falling to 0 at its boundary over seam_px (H, W) float."""
    import cv2

    inner = cv2.distanceTransform(cover.astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(inner / max(seam_px, 1.0), 0.0, 1.0)


def _seam_px(geo) -> float:
    from relight_core import geometry

    d_mean = float(np.mean(-np.asarray(geo.vertices)[:, 2]))
    return geometry.SEAM_WIDTH * float(geo.K[0, 0]) / max(d_mean, 1e-6)


def _with(geo, depth: np.ndarray, normals: np.ndarray, person: np.ndarray, rays: np.ndarray):
    """A copy of geo with new depth/normals (cam space) and points recomputed along the rays."""
    import dataclasses

    pts = np.asarray(geo.points, dtype=np.float64).copy()
    t = depth / np.maximum(-rays[..., 2], 1e-6)
    pts[person] = (rays * t[..., None])[person]
    return dataclasses.replace(geo, depth=np.where(person, depth, 0.0).astype(np.float32),
                               grid_normals=normals.astype(np.float32), step=1, points=pts.astype(np.float32))


def sphere_face(geo):
    """Geometry with the face mesh replaced by its best-fit sphere (see the module docstring)."""
    h, w = geo.depth.shape
    cover = np.asarray(geo.face_mask) > 0
    if not cover.any():
        return geo
    c, r = fit_sphere(geo.vertices)
    rays = _rays(np.asarray(geo.K, dtype=np.float64), h, w)
    dc = rays @ c
    disc = dc ** 2 - (c @ c - r * r)
    t = dc - np.sqrt(np.maximum(disc, 0.0))
    p = rays * t[..., None]
    n_s = (p - c) / np.maximum(np.linalg.norm(p - c, axis=-1, keepdims=True), 1e-9)
    wf = _face_weight(cover, _seam_px(geo))[..., None]
    normals = np.asarray(geo.normals, dtype=np.float64)
    n_new = np.where(cover[..., None], wf * n_s + (1.0 - wf) * normals, normals)
    n_new /= np.maximum(np.linalg.norm(n_new, axis=-1, keepdims=True), 1e-9)
    depth = np.asarray(geo.depth, dtype=np.float64)
    d_new = np.where(cover, wf[..., 0] * (-p[..., 2]) + (1.0 - wf[..., 0]) * depth, depth)
    return _with(geo, d_new, n_new, depth > 0, rays)


def flat_rest(geo):
    """Geometry whose rest of the person is a camera-facing plane (see the module docstring)."""
    import cv2

    h, w = geo.depth.shape
    cover = np.asarray(geo.face_mask) > 0
    depth = np.asarray(geo.depth, dtype=np.float64)
    person = depth > 0
    rest = person & ~cover
    if not rest.any():
        return geo
    ring = cover & ~cv2.erode(cover.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    base = float(np.median(depth[ring])) if ring.any() else float(np.median(depth[person]))
    normals = np.asarray(geo.normals, dtype=np.float64).copy()
    normals[rest] = (0.0, 0.0, 1.0)
    d_new = np.where(rest, base, depth)
    return _with(geo, d_new, normals, person, _rays(np.asarray(geo.K, dtype=np.float64), h, w))


TRANSFORMS = {"sphere": sphere_face, "flat": flat_rest}


@contextlib.contextmanager
def geometry_variant(kind: str | None) -> Iterator[None]:
    """While active, `relight_core.geometry.build_geometry` returns the `kind` ablation (None: no-op)."""
    if kind is None:
        yield
        return
    from relight_core import geometry

    transform = TRANSFORMS[kind]
    original = geometry.build_geometry

    def wrapped(analysis, i, height, width, step=1):
        return transform(original(analysis, i, height, width, step))

    geometry.build_geometry = wrapped
    try:
        yield
    finally:
        geometry.build_geometry = original
