"""Per-frame surface of the person: depth, camera-space normals, face mask and semantic labels.

Face: the 478 tracked landmarks are lifted to camera space (x, y from the image, depth from the head
pose plus MediaPipe's relative depth) and the landmark mesh is rasterised with a z-buffer. Its triangles
are derived at run time from the installed `FACEMESH_TESSELATION` edges: the 3-cliques of the edge graph
minus spurious ones (all three edges already shared by two other cliques), wound consistently so that
normals point out of the face. Normals are interpolated vertex normals.

Rest of the person (hair, ears, neck, shoulders): a dome grown from the person matte (height
sqrt(d (2R - d)) at distance d px from the matte edge, flat beyond R), offset so it joins the face depth
at the face boundary; its normals come from the depth gradients and are blended with the face normals
across a feathered seam.

Labels: 0 background, 1 skin, 2 eyes, 3 brows, 4 lips (the mouth opening is labelled lips too: it is
not skin), 5 rest of the head and body. Eyes, brows and lips are polygons of MediaPipe's
`face_mesh_connections` landmark sets.

All maps are (H, W) at the requested size; points are cam space (OpenGL, z < 0) in head units.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from relight_core import camera as cam

BACKGROUND, SKIN, EYES, BROWS, LIPS, REST = 0, 1, 2, 3, 4, 5
DOME_RADIUS = 0.3        # head units: curvature radius of the matte dome (a neck / head-sized tube)
SEAM_WIDTH = 0.04        # head units: width of the face / rest blend at the face boundary
JOIN_WIDTH = 0.08        # head units: how far the face-boundary depth correction reaches into the rest


@dataclass
class Geometry:
    """Per-frame geometry maps at (H, W).

    points (H, W, 3) float32 cam-space positions, head units (z < 0; outside the person: on the dome's
    base plane); depth (H, W) float32 = -z, 0 outside the person; normals (H, W, 3) float32 unit cam
    space ((0, 0, 1) outside the person, blended over its 1-2 px edge); face_mask (H, W) float32 0..1;
    alpha (H, W) float32 person matte 0..1; labels (H, W) uint8 (module docstring); K (3, 3);
    vertices (478, 3) cam-space landmarks.
    """

    points: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    face_mask: np.ndarray
    alpha: np.ndarray
    labels: np.ndarray
    K: np.ndarray
    vertices: np.ndarray


# --------------------------------------------------------------------------------------------- topology

def _connections():
    from relight_core.track import _mp

    return _mp().solutions.face_mesh_connections


def triangles_from_edges(edges, vertices: np.ndarray, outward: np.ndarray | None = None) -> np.ndarray:
    """The faces of a triangulated surface given only its edges -> (T, 3) int32, consistently wound.

    Candidates are the 3-cliques of the edge graph. An edge of a surface borders at most two faces, so a
    clique whose three edges all border two or more other cliques is a spurious "separating" triangle and
    is dropped (repeated until none is left). Winding is propagated across shared edges (neighbours
    traverse a shared edge in opposite directions) and set so that normals of `vertices` (V, 3) agree
    with `outward` (3,) (default +z) on the whole.
    """
    from collections import deque

    nb: dict[int, set[int]] = {}
    for a, b in edges:
        if a != b:
            nb.setdefault(a, set()).add(b)
            nb.setdefault(b, set()).add(a)
    cliques = sorted({tuple(sorted((i, j, k))) for i, ns in nb.items() for j in ns for k in ns & nb[j]})

    def edges_of(t: tuple[int, int, int]) -> list[frozenset]:
        return [frozenset((t[0], t[1])), frozenset((t[1], t[2])), frozenset((t[0], t[2]))]

    alive = set(cliques)
    while True:
        use: dict[frozenset, int] = {}
        for t in alive:
            for e in edges_of(t):
                use[e] = use.get(e, 0) + 1
        spurious = [t for t in alive if all(use[e] >= 3 for e in edges_of(t))]
        if not spurious:
            break
        alive -= set(spurious)
    faces = sorted(alive)
    by_edge: dict[frozenset, list[int]] = {}
    for n, t in enumerate(faces):
        for e in edges_of(t):
            by_edge.setdefault(e, []).append(n)
    v = np.asarray(vertices, dtype=np.float64)
    out_dir = np.array([0.0, 0.0, 1.0]) if outward is None else np.asarray(outward, dtype=np.float64)
    wound: list[tuple[int, int, int] | None] = [None] * len(faces)
    for seed in range(len(faces)):
        if wound[seed] is not None:
            continue
        wound[seed] = faces[seed]
        queue = deque([seed])
        while queue:
            n = queue.popleft()
            a, b, c = wound[n]
            for p, q in ((a, b), (b, c), (c, a)):
                for m in by_edge[frozenset((p, q))]:
                    if wound[m] is not None:
                        continue
                    r = next(x for x in faces[m] if x not in (p, q))
                    wound[m] = (q, p, r)  # the neighbour runs the shared edge the other way
                    queue.append(m)
    t = np.array(wound, dtype=np.int64)
    fn = np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]])
    if float((fn @ out_dir).sum()) < 0:
        t = t[:, [0, 2, 1]]
    return t.astype(np.int32)


@functools.lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """The landmark mesh's faces (T, 3) int32, wound so that normals point out of the face (cached)."""
    from relight_core.track import neutral_face

    return triangles_from_edges(_connections().FACEMESH_TESSELATION, neutral_face())


def edge_loops(edges) -> list[list[int]]:
    """Split an edge set into its chains: closed loops and open paths, each as an ordered vertex list."""
    nb: dict[int, list[int]] = {}
    for a, b in edges:
        nb.setdefault(a, []).append(b)
        nb.setdefault(b, []).append(a)
    seen: set[int] = set()
    chains = []
    starts = [v for v, n in nb.items() if len(n) == 1] + list(nb)
    for s in starts:
        if s in seen:
            continue
        chain, prev, cur = [s], None, s
        seen.add(s)
        while True:
            nxt = [v for v in nb[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            chain.append(cur)
            seen.add(cur)
        chains.append(chain)
    return chains


def _region_polygon(edges) -> list[list[int]]:
    """Landmark polygons of a region: each closed loop, or two open chains joined into one outline."""
    chains = edge_loops(edges)
    closed = [c for c in chains if len(c) > 2 and _is_loop(c, edges)]
    open_ = [c for c in chains if c not in closed]
    polys = list(closed)
    while len(open_) >= 2:
        a, b = open_.pop(0), open_.pop(0)
        polys.append(a + b[::-1])  # both chains run from the same end (outer -> inner)
    return polys


def _is_loop(chain: list[int], edges) -> bool:
    es = {frozenset(e) for e in edges}
    return frozenset((chain[0], chain[-1])) in es


@functools.lru_cache(maxsize=1)
def region_polygons() -> dict[int, list[list[int]]]:
    """{label: [landmark index polygons]} for eyes, brows and lips (outer lip outline), cached."""
    c = _connections()
    lips = _region_polygon(c.FACEMESH_LIPS)
    # FACEMESH_LIPS holds the outer and the inner outline; the outer one is the longer
    lips = [max(lips, key=len)]
    return {EYES: _region_polygon(c.FACEMESH_LEFT_EYE) + _region_polygon(c.FACEMESH_RIGHT_EYE),
            BROWS: _region_polygon(c.FACEMESH_LEFT_EYEBROW) + _region_polygon(c.FACEMESH_RIGHT_EYEBROW),
            LIPS: lips}


# --------------------------------------------------------------------------------------------- lifting

def face_vertices_cam(landmarks: np.ndarray, cam_from_head: np.ndarray, k: np.ndarray,
                      shape: np.ndarray | None = None) -> np.ndarray:
    """Landmarks (478, 3) px -> cam-space vertices (478, 3), head units (see `track.lift_landmarks`)."""
    from relight_core.track import lift_landmarks

    return lift_landmarks(landmarks, cam_from_head, k, shape)


def vertex_normals(vertices: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (V, 3), unit, from (V, 3) vertices and (T, 3) outward-wound faces."""
    v = np.asarray(vertices, dtype=np.float64)
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    n = np.zeros_like(v)
    for c in range(3):
        for d in range(3):
            n[:, d] += np.bincount(tris[:, c], weights=fn[:, d], minlength=len(v))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------- raster

def rasterize_sparse(pixels: np.ndarray, depth: np.ndarray, tris: np.ndarray, height: int, width: int,
                     cull: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffered triangle raster, sparse result -> (ids (H, W) int32 with -1 = none, ys (N,), xs (N,),
    triangle (N,), barycentrics (N, 3) float32) for the N covered pixels in row-major order.

    pixels (V, 2) image coordinates (pixel centres at +0.5), depth (V,) distance (smaller = nearer),
    tris (T, 3); cull (T,) bool marks triangles to skip (e.g. back faces). Triangles are drawn far to
    near by mean depth (painter's algorithm, exact for a mesh seen from one side) with 1/16 px
    precision by OpenCV; barycentrics are then evaluated per covered pixel from per-triangle affine
    coefficients (clipped to the triangle: OpenCV also fills pixels its edges merely touch).
    """
    ids, idx, tid, lam = _raster_core(pixels, depth, tris, height, width, cull)
    ys, xs = np.divmod(idx, width)
    return ids, ys, xs, tid, lam.T


def _raster_core(pixels: np.ndarray, depth: np.ndarray, tris: np.ndarray, height: int, width: int,
                 cull: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`rasterize_sparse` with channel-first barycentrics -> (ids (H, W), flat pixel index (N,),
    triangle (N,), barycentrics (3, N) float32). Rows of (3, N) make every per-pixel numpy pass a
    contiguous 1-D loop (a reduction over a length-3 last axis is several times slower)."""
    import cv2

    px = np.asarray(pixels, dtype=np.float64)
    tris = np.asarray(tris)
    order = np.argsort(-np.asarray(depth)[tris].mean(axis=1), kind="stable")
    if cull is not None:
        order = order[~np.asarray(cull)[order]]
    ids = np.zeros((height, width), dtype=np.int32)
    if len(order) == 0:
        return ids - 1, np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros((3, 0), np.float32)
    fixed = np.round((px - 0.5) * 16.0).astype(np.int32)
    polys = fixed[tris]
    for t in order.tolist():
        cv2.fillConvexPoly(ids, polys[t], t + 1, lineType=cv2.LINE_8, shift=4)
    ids -= 1
    flat = ids.reshape(-1)
    idx = np.flatnonzero(flat >= 0)
    tid = flat[idx]
    # per-triangle affine barycentrics: l1 = A1 x + B1 y + C1, l2 = A2 x + B2 y + C2
    a, b, c = px[tris[:, 0]], px[tris[:, 1]], px[tris[:, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    a1, b1 = e2[:, 1] / det, -e2[:, 0] / det
    a2, b2 = -e1[:, 1] / det, e1[:, 0] / det
    coef = np.stack([a1, b1, -(a1 * a[:, 0] + b1 * a[:, 1]), a2, b2, -(a2 * a[:, 0] + b2 * a[:, 1])])
    coef = coef.astype(np.float32)
    ys, xs = np.divmod(idx.astype(np.int32), np.int32(width))
    fx = xs.astype(np.float32)
    fx += np.float32(0.5)
    fy = ys.astype(np.float32)
    fy += np.float32(0.5)
    lam = np.empty((3, len(idx)), np.float32)
    l0, l1, l2 = lam
    for row, cx, cy, cc in ((l1, 0, 1, 2), (l2, 3, 4, 5)):
        np.multiply(np.take(coef[cx], tid), fx, out=row)
        row += np.take(coef[cy], tid) * fy
        row += np.take(coef[cc], tid)
    np.subtract(np.float32(1.0), l1, out=l0)
    l0 -= l2
    np.clip(lam, 0.0, 1.0, out=lam)
    total = l0 + l1
    total += l2
    np.maximum(total, np.float32(1e-6), out=total)
    lam /= total
    return ids, idx, tid, lam


def rasterize(pixels: np.ndarray, depth: np.ndarray, tris: np.ndarray, height: int, width: int,
              cull: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense form of `rasterize_sparse` -> (triangle id (H, W) int32, -1 = none; barycentrics (H, W, 3)
    float32)."""
    ids, ys, xs, _, lam = rasterize_sparse(pixels, depth, tris, height, width, cull)
    bary = np.zeros((height, width, 3), dtype=np.float32)
    bary[ys, xs] = lam
    return ids, bary


def interpolate(ids: np.ndarray, bary: np.ndarray, tris: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex values (V, C) over a raster -> (H, W, C) float32 (0 where
    ids < 0)."""
    h, w = ids.shape
    out = np.zeros((h, w, values.shape[1]), dtype=np.float32)
    ys, xs = np.nonzero(ids >= 0)
    tv = tris[ids[ys, xs]]
    lam = bary[ys, xs]
    v = np.asarray(values, dtype=np.float32)
    out[ys, xs] = (v[tv[:, 0]] * lam[:, 0:1] + v[tv[:, 1]] * lam[:, 1:2] + v[tv[:, 2]] * lam[:, 2:3])
    return out


@dataclass
class MeshRaster:
    """A rasterised mesh, stored sparsely: covered pixels (ys, xs) (N,) and their flat index
    idx = ys * W + xs, their depth (N,) = -z and unit normals (N, 3), plus the coverage map (H, W) bool."""

    cover: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    idx: np.ndarray

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(depth (H, W) float32, 0 outside; normals (H, W, 3) float32, (0, 0, 1) outside)."""
        h, w = self.cover.shape
        d = np.zeros((h, w), np.float32)
        n = np.zeros((h, w, 3), np.float32)
        n[..., 2] = 1.0
        d[self.ys, self.xs] = self.depth
        n[self.ys, self.xs] = self.normals
        return d, n


def _inverse_length(x: np.ndarray, y: np.ndarray, z: np.ndarray, eps: float) -> np.ndarray:
    """1 / max(|(x, y, z)|, eps) per element, float32, with one temporary (hot path: every frame)."""
    inv = x * x
    inv += y * y
    inv += z * z
    np.sqrt(inv, out=inv)
    np.maximum(inv, np.float32(eps), out=inv)
    return np.divide(np.float32(1.0), inv, out=inv)


def render_mesh(vertices: np.ndarray, tris: np.ndarray, k: np.ndarray, height: int, width: int) -> MeshRaster:
    """Rasterise a cam-space mesh (V, 3) with outward-wound faces (T, 3) through intrinsics k at
    (height, width), culling back faces -> MeshRaster (depth = -z, smooth vertex normals, cam space)."""
    v = np.asarray(vertices, dtype=np.float64)
    px = cam.project(v, k)
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    back = np.einsum("ij,ij->i", fn, -v[tris].mean(axis=1)) <= 0.0
    ids, idx, tid, lam = _raster_core(px, -v[:, 2], tris, height, width, cull=back)
    # channel-first per-vertex values (nx, ny, nz, depth) (4, V); out (4, N) = sum_k vals[:, tv_k] lam_k
    vals = np.concatenate([vertex_normals(v, tris), -v[:, 2:3]], axis=1).astype(np.float32).T.copy()
    tris_t = np.ascontiguousarray(np.asarray(tris, dtype=np.int32).T)
    out = np.zeros((4, len(idx)), np.float32)
    for corner in range(3):
        tv = np.take(tris_t[corner], tid)
        for c in range(4):
            out[c] += np.take(vals[c], tv) * lam[corner]
    nx, ny, nz = out[0], out[1], out[2]
    inv = _inverse_length(nx, ny, nz, 1e-6)
    n = np.empty((len(idx), 3), np.float32)
    for c in range(3):
        np.multiply(out[c], inv, out=n[:, c])
    ys, xs = np.divmod(idx, width)
    return MeshRaster(ids >= 0, ys, xs, out[3].copy(), n, idx)


# --------------------------------------------------------------------------------------------- person

def unit_map(n: np.ndarray) -> np.ndarray:
    """Normalise a (H, W, 3) float32 vector map to unit length (OpenCV per-pixel ops: ~4x faster than
    numpy broadcasting at 512x512) -> new (H, W, 3) float32 array."""
    import cv2

    n = np.ascontiguousarray(n, dtype=np.float32)
    sq = cv2.transform(cv2.multiply(n, n), np.ones((1, 3), np.float32))
    inv = 1.0 / np.sqrt(np.maximum(sq, np.float32(1e-12)))
    return cv2.multiply(n, cv2.merge([inv, inv, inv]))


def _dome_height(inside: np.ndarray, radius_px: float) -> np.ndarray:
    """Height (H, W) px of a dome over a binary mask: sqrt(d (2R - d)) at distance d from its edge."""
    import cv2

    d = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    d = np.minimum(d, radius_px)
    return np.sqrt(np.maximum(d * (2.0 * radius_px - d), 0.0))


def normals_from_depth(depth: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Cam-space unit normals (H, W, 3) float32 from a depth map (H, W) (= -z, > 0), oriented toward
    the camera: the cross product of the back-projected points' finite differences, in closed form.

    P(u, v) = D (a, b, -1) with a = (u - cx) / fx, b = -(v - cy) / fy; n ~ -(dP/du x dP/dv).
    """
    import cv2

    return cv2.merge(_normal_channels(depth, k))


def _normal_channels(depth: np.ndarray, k: np.ndarray, inside: np.ndarray | None = None
                     ) -> list[np.ndarray]:
    """`normals_from_depth` as three (H, W) float32 channels [nx, ny, nz]; where `inside` (H, W) bool is
    False the normal is (0, 0, 1)."""
    h, w = depth.shape
    k = cam.k_matrix(k)
    ifx, ify = np.float32(1.0 / k[0, 0]), np.float32(1.0 / k[1, 1])
    a = ((np.arange(w, dtype=np.float32) + 0.5 - np.float32(k[0, 2])) * ifx)[None, :]
    b = (-(np.arange(h, dtype=np.float32) + 0.5 - np.float32(k[1, 2])) * ify)[:, None]
    d = np.asarray(depth, dtype=np.float32)
    du = np.gradient(d, axis=1)
    dv = np.gradient(d, axis=0)
    # dP/du = du (a, b, -1) + d (1/fx, 0, 0);  dP/dv = dv (a, b, -1) + d (0, -1/fy, 0)
    # n = -(dP/du x dP/dv) / d = (du/fy, -dv/fx, a du/fy - b dv/fx + d/(fx fy))  (toward the camera)
    nx = du * ify
    ny = dv * -ifx
    nz = d * (ifx * ify)
    nz += a * nx
    nz += b * ny
    inv = _inverse_length(nx, ny, nz, 1e-12)
    if inside is not None:
        m = inside.astype(np.float32)
        inv *= m
        nz *= inv
        nz += np.float32(1.0) - m
    else:
        nz *= inv
    nx *= inv
    ny *= inv
    return [nx, ny, nz]


def label_map(landmarks_px: np.ndarray, face: np.ndarray, person: np.ndarray) -> np.ndarray:
    """Semantic labels (H, W) uint8 from landmarks (478, 2+) px, face coverage and person masks (H, W)."""
    import cv2

    labels = np.where(person, REST, BACKGROUND).astype(np.uint8)
    labels[face] = SKIN
    regions = np.zeros_like(labels)
    fixed = np.round((np.asarray(landmarks_px)[:, :2] - 0.5) * 16.0).astype(np.int32)
    for lab in (BROWS, EYES, LIPS):
        polys = [fixed[p] for p in region_polygons()[lab]]
        cv2.fillPoly(regions, polys, int(lab), lineType=cv2.LINE_8, shift=4)
    inside = (regions > 0) & (face | person)
    labels[inside] = regions[inside]
    return labels


def _rest_surface(person: np.ndarray, ring_ys: np.ndarray, ring_xs: np.ndarray, ring_depth: np.ndarray,
                  k: np.ndarray, px_per_unit: float, seam_px: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The matte dome at (H, W) -> (depth (H, W) float32, normals (H, W, 3) float32, base depth).

    ring_*: pixels on the face boundary and the face depth there; the dome's base plane is set so that
    base - height meets the face depth along that ring (median). Computed at half resolution when the
    frame is large (the dome is smooth) and resized back.
    """
    import cv2

    h, w = person.shape
    f = 2 if min(h, w) >= 256 else 1
    small = person if f == 1 else cv2.resize(person.astype(np.uint8), (w // f, h // f),
                                             interpolation=cv2.INTER_AREA).astype(bool)
    k_small = cam.k_matrix(k) @ np.diag([1.0 / f, 1.0 / f, 1.0]) if f > 1 else cam.k_matrix(k)
    h_units = _dome_height(small, DOME_RADIUS * px_per_unit / f) * np.float32(f / px_per_unit)
    d_small = -h_units
    if len(ring_ys):
        ry = np.minimum(ring_ys // f, h_units.shape[0] - 1)
        rx = np.minimum(ring_xs // f, h_units.shape[1] - 1)
        base = float(np.median(ring_depth + h_units[ry, rx]))
        # spread what is left at each ring pixel outward (normalised convolution), fading with distance,
        # so that the dome meets the face all along its boundary and not only on average
        resid = np.zeros_like(h_units)
        mass = np.zeros_like(h_units)
        np.add.at(resid, (ry, rx), (ring_depth - (base - h_units[ry, rx])).astype(np.float32))
        np.add.at(mass, (ry, rx), 1.0)
        # two box filters of width b (a triangle kernel, O(1) per pixel whatever the width)
        b = 2 * int(max(JOIN_WIDTH * px_per_unit / f, 1.0)) + 1
        for _ in range(2):
            resid = cv2.blur(resid, (b, b))
            mass = cv2.blur(mass, (b, b))
        line_mass = np.float32(0.5 / b)  # mass next to a straight ring, where the correction is full
        d_small += resid / np.maximum(mass, 1e-6) * np.minimum(mass / line_mass, 1.0)
    else:
        base = DOME_RADIUS + 1.0
    d_small += np.float32(base)
    sigma = max(0.6 * seam_px / f, 0.8)
    n_small = cv2.merge(_normal_channels(cv2.GaussianBlur(d_small, (0, 0), sigma), k_small, small))
    if f == 1:
        return d_small, n_small, base
    depth = cv2.resize(d_small, (w, h), interpolation=cv2.INTER_LINEAR)
    normals = unit_map(cv2.resize(n_small, (w, h), interpolation=cv2.INTER_LINEAR))
    return depth, normals, base


def build_geometry(analysis, i: int, height: int, width: int) -> Geometry:
    """Geometry of analysis frame i at (height, width): see `Geometry` and the module docstring."""
    import cv2

    k = analysis.K_at(height, width)
    lm = analysis.landmarks_at(i, height, width)
    cfh = np.asarray(analysis.cam_from_head[i], dtype=np.float64)
    verts = face_vertices_cam(lm, cfh, k, getattr(analysis, "face_shape", None))
    face = render_mesh(verts, face_triangles(), k, height, width)
    cover = face.cover
    alpha = analysis.matte_at(i, height, width)
    idx = face.idx
    alpha.reshape(-1)[idx] = 1.0
    person = alpha > 0.5

    d_mean = float(np.mean(-verts[:, 2]))
    px_per_unit = k[0, 0] / d_mean
    seam_px = max(SEAM_WIDTH * px_per_unit, 1.0)
    inner = np.take(cv2.distanceTransform(cover.astype(np.uint8), cv2.DIST_L2, 3), idx)
    ring = inner <= 1.0
    depth, normals, base = _rest_surface(person, face.ys[ring], face.xs[ring], face.depth[ring], k,
                                         px_per_unit, seam_px)
    # the face: mesh depth and normals, blended into the rest's over a feathered seam inside its edge
    d_flat, n_flat = depth.reshape(-1), normals.reshape(-1, 3)
    w_face = np.minimum(inner / np.float32(seam_px), 1.0)
    seam = np.flatnonzero(w_face < 1.0)
    d_new = face.depth.copy()
    n_new = face.normals.copy()
    ws = w_face[seam]
    si = idx[seam]
    d_new[seam] = ws * d_new[seam] + (1.0 - ws) * np.take(d_flat, si)
    # normals of the seam pixels blended channel by channel (contiguous 1-D passes), then renormalised
    nb = [ws * np.take(face.normals[:, c], seam) + (1.0 - ws) * np.take(n_flat[:, c], si) for c in range(3)]
    inv = nb[0] * nb[0] + nb[1] * nb[1] + nb[2] * nb[2]
    inv = np.float32(1.0) / np.maximum(np.sqrt(inv), np.float32(1e-6))
    for c in range(3):
        n_new[seam, c] = nb[c] * inv
    d_flat[idx] = d_new
    n_flat[idx] = n_new
    outside = ~person

    plane = np.where(outside, np.float32(base), depth)
    xs = (np.arange(width, dtype=np.float32) + np.float32(0.5 - k[0, 2])) * np.float32(1.0 / k[0, 0])
    ys = -(np.arange(height, dtype=np.float32) + np.float32(0.5 - k[1, 2])) * np.float32(1.0 / k[1, 1])
    pts = cv2.merge([plane * xs[None, :], plane * ys[:, None], -plane])
    depth *= person
    cover_f = cover.astype(np.float32)
    face_mask = cv2.GaussianBlur(cover_f, (0, 0), 0.7) * cover_f
    labels = label_map(lm, cover, person)
    return Geometry(points=pts, depth=depth, normals=normals, face_mask=face_mask, alpha=alpha,
                    labels=labels, K=k, vertices=verts.astype(np.float32))
