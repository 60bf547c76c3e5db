"""Per-frame surface of the person: depth, camera-space normals, face mask and semantic labels.

Face: the 478 tracked landmarks are lifted to camera space (x, y from the image, depth from the head
pose plus MediaPipe's relative depth) and the landmark mesh is rasterised with a z-buffer. Its triangles
are derived at run time from the installed `FACEMESH_TESSELATION` edges: the 3-cliques of the edge graph
minus spurious ones (all three edges already shared by two other cliques), wound consistently so that
normals point out of the face. The eye and mouth openings of that mesh are zipped shut (each side of an
opening joined to the other by a strip of triangles, `close_openings`), so the face is one surface with
one outline and no seam around the eyes and mouth. Normals are interpolated vertex normals. Around the
eyes (EYE_RINGS rings of the mesh beyond the eye outlines: lids, sockets, under the eyes) and the lips
(LIP_RINGS rings beyond them: the mouth corners) the landmark mesh is bumpy at its triangles'
scale (the eyelid contours sink into the sockets), and those bumps divide into the albedo and multiply
into relit shading as dark blotches under side and rim lights; there the vertex normals are re-placed by
a thin-plate membrane over the rest of the face (`face_surface`, `membrane_fill`). Positions stay the
landmarks' everywhere, and the outline's normals and all others are the mesh's own. (Smoothing the whole
mesh instead, e.g. Taubin smoothing of the lifted depth or rounds of normal averaging, also flattens the
cheeks and nose whose normals the input-light fit relies on: the fit's frontal term grew by 15-35 % and
it, and the unsmoothed output, flickered more. Filling the sockets in depth as well moved the eyes in
novel views: the re-tracked pose error of the astronaut at yaw 20, pitch 10 rose from 5.0 to 5.7 deg.)

Rest of the person (hair, ears, neck, shoulders): a dome grown from the person matte (height
sqrt(d (2R - d)) at distance d px from the matte edge, flat beyond R), offset so it joins the face depth
at the face boundary (what is left along the boundary is spread outward and fades with a C1 ramp); its
normals come from the depth gradients. Face and rest meet in a seam of SEAM_WIDTH either side of the
face boundary: the rest's normals turn halfway into the face's boundary normals at the boundary, and the
face's blend into that over SEAM_WIDTH inside it, each with a C1 (smoothstep) weight that is flat at
the boundary, so normals, and with them shading, are continuous and free of creases across it (no line
across the upper forehead). Depth is blended inside the face only, into the dome's depth, which already
meets the face's at the boundary, so it stays continuous. The face interior beyond the seam is the
mesh's own.

Labels: 0 background, 1 skin, 2 eyes, 3 brows, 4 lips (the mouth opening is labelled lips too: it is
not skin), 5 rest of the head and body. Eyes, brows and lips are polygons of MediaPipe's
`face_mesh_connections` landmark sets.

All maps are (H, W) at the requested size, except that the normals may be asked for on every 2nd pixel
only (the pipeline shades on that grid: the dome is then never resized up, nor the face's normals
interpolated at the other pixels); points are cam space (OpenGL, z < 0) in head units.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from relight_core import camera as cam

if TYPE_CHECKING:
    from scipy import sparse

BACKGROUND, SKIN, EYES, BROWS, LIPS, REST = 0, 1, 2, 3, 4, 5
DOME_RADIUS = 0.3        # head units: curvature radius of the matte dome (a neck / head-sized tube)
SEAM_WIDTH = 0.04        # head units: width of the face / rest blend at the face boundary
JOIN_WIDTH = 0.08        # head units: how far the face-boundary depth correction reaches into the rest
EYE_RINGS = 3            # rings of the face mesh beyond the eye outlines that `face_surface` smooths
LIP_RINGS = 1            # the same beyond the lips' landmarks (the mouth corners)


@dataclass
class Geometry:
    """Per-frame geometry maps at (H, W).

    points (H, W, 3) float32 cam-space positions, head units (z < 0; outside the person: on the dome's
    base plane); depth (H, W) float32 = -z, 0 outside the person; grid_normals float32 unit cam-space
    normals on every `step`-th pixel (rows and columns 0, step, 2 step, ...: (ceil(H / step),
    ceil(W / step), 3); step 1: every pixel) ((0, 0, 1) outside the person, blended over its 1-2 px
    edge); face_mask (H, W) float32 0..1; alpha (H, W) float32 person matte 0..1; labels (H, W) uint8
    (module docstring); K (3, 3); vertices (478, 3) cam-space landmarks; face_tris (T, 3) and face_normals
    (478, 3) the rendered face surface's faces and unit vertex normals (`face_surface`). `normals` gives
    the normal map at (H, W).
    """

    points: np.ndarray
    depth: np.ndarray
    grid_normals: np.ndarray
    face_mask: np.ndarray
    alpha: np.ndarray
    labels: np.ndarray
    K: np.ndarray
    vertices: np.ndarray
    step: int = 1
    face_tris: np.ndarray | None = None
    face_normals: np.ndarray | None = None

    @functools.cached_property
    def normals(self) -> np.ndarray:
        """Normals (H, W, 3) float32: grid_normals at step 1, else upsampled (bilinear) and renormalised
        on first use (the pipeline shades on the grid and needs these only for a normal pass)."""
        import cv2

        if self.step == 1:
            return self.grid_normals
        h, w = self.depth.shape
        return unit_map(cv2.resize(self.grid_normals, (w, h), interpolation=cv2.INTER_LINEAR))

    def normals_every(self, step: int) -> np.ndarray:
        """Normals on every `step`-th pixel, contiguous (ceil(H / step), ceil(W / step), 3) float32."""
        if step == self.step:
            return self.grid_normals
        return np.ascontiguousarray(self.normals[::step, ::step])


# --------------------------------------------------------------------------------------------- topology

def _connections():
    from relight_core.face_model import mediapipe_module

    return mediapipe_module().solutions.face_mesh_connections


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
    from relight_core.face_model import neutral_face

    return triangles_from_edges(_connections().FACEMESH_TESSELATION, neutral_face())


@functools.lru_cache(maxsize=1)
def face_mirror() -> np.ndarray:
    """Each landmark's left/right mirror partner (478,) int (midline landmarks: themselves), from the
    symmetric neutral face (cached)."""
    from relight_core.face_model import mirror_pairs, neutral_face

    return mirror_pairs(neutral_face())


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
    """Landmarks (478, 3) px -> cam-space vertices (478, 3), head units (see `face_model.lift_landmarks`)."""
    from relight_core.face_model import lift_landmarks

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


# --------------------------------------------------------------------------------------------- surface

def boundary_loops(tris: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a triangle mesh (T, 3) -> list of (L,) int64 vertex indices, longest first,
    each in the order its triangles run it (a boundary edge is used by one triangle only)."""
    t = np.asarray(tris, dtype=np.int64)
    directed = {(int(a), int(b)) for a, b in np.concatenate([t[:, :2], t[:, 1:], t[:, [2, 0]]])}
    nxt = {a: b for a, b in directed if (b, a) not in directed}
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen and v in nxt:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(np.array(loop, dtype=np.int64))
    return sorted(loops, key=len, reverse=True)


def close_openings(tris: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Close every boundary loop of a mesh but the longest (its outline), e.g. the eye and mouth openings
    of the landmark mesh, by zipping its two sides together -> faces (T + sum (L - 2), 3) int32.

    vertices (V, 3) locate each loop's two corners (its farthest-apart vertices); the sides run corner
    to corner and the i-th vertices of the two are joined by a strip of triangles (no new vertices, so the
    mesh keeps the landmarks' count; sides of unequal length are zipped in proportion). New faces are
    wound like the mesh: each runs its loop edge the other way.
    """
    v = np.asarray(vertices, dtype=np.float64)
    faces = [np.asarray(tris, dtype=np.int64)]
    for loop in boundary_loops(tris)[1:]:
        d = np.linalg.norm(v[loop][:, None] - v[loop][None], axis=-1)
        a, b = sorted(np.unravel_index(int(np.argmax(d)), d.shape))
        side1 = loop[a:b + 1]                                   # runs with the loop
        side2 = np.concatenate([loop[b:], loop[:a + 1]])[::-1]  # from the same corner, against it
        i, j, strip = 0, 0, []
        while i < len(side1) - 1 or j < len(side2) - 1:
            # advance along the side that is behind (in fraction of its length); the loop runs
            # side1[i] -> side1[i + 1] and side2[j + 1] -> side2[j], so the fill runs them back
            if j == len(side2) - 1 or (i < len(side1) - 1 and (i + 1) / len(side1) <= (j + 1) / len(side2)):
                strip.append((side1[i + 1], side1[i], side2[j]))
                i += 1
            else:
                strip.append((side1[i], side2[j], side2[j + 1]))
                j += 1
        faces.append(np.array([t for t in strip if len(set(t)) == 3], dtype=np.int64).reshape(-1, 3))
    return np.concatenate(faces).astype(np.int32)


def umbrella_laplacian(tris: np.ndarray, n_vertices: int) -> sparse.csr_matrix:
    """The uniform ("umbrella") Laplacian of a mesh's edge graph, (V, V) scipy CSR float64:
    (L x)_i = mean of x over i's neighbours - x_i (a row of zeros for a vertex in no face)."""
    from scipy import sparse

    t = np.asarray(tris, dtype=np.int64)
    a = np.concatenate([t[:, 0], t[:, 1], t[:, 2], t[:, 1], t[:, 2], t[:, 0]])
    b = np.concatenate([t[:, 1], t[:, 2], t[:, 0], t[:, 0], t[:, 1], t[:, 2]])
    adj = sparse.csr_matrix((np.ones(len(a)), (a, b)), shape=(n_vertices, n_vertices))
    adj.data[:] = 1.0  # an edge shared by two faces was summed twice
    deg = np.asarray(adj.sum(axis=1)).ravel()
    lap = sparse.diags(1.0 / np.maximum(deg, 1.0)) @ adj - sparse.diags((deg > 0).astype(np.float64))
    return lap.tocsr()


def _membrane_blocks(tris: np.ndarray, n_vertices: int, free: np.ndarray
                     ) -> tuple[sparse.csc_matrix, sparse.csr_matrix]:
    """(Q_FF (F, F), Q_FK (F, K)) of Q = L^T L (`umbrella_laplacian`) split by the `free` (V,) bool
    vertices (F of them; K the others), both in index order."""
    lap = umbrella_laplacian(tris, n_vertices)
    q = (lap.T @ lap).tocsr()
    f = np.flatnonzero(free)
    k = np.flatnonzero(~np.asarray(free, dtype=bool))
    return q[f][:, f].tocsc(), q[f][:, k]


def membrane_weights(tris: np.ndarray, n_vertices: int, free: np.ndarray) -> sparse.csr_matrix:
    """Thin-plate interpolation weights W (F, K) over a mesh, scipy CSR float64: per-vertex values x (V, C)
    are re-placed at the F `free` (V,) bool vertices by W @ x[~free] (both in index order), the values
    that minimise the summed squared umbrella Laplacian over the whole mesh given the others
    (`membrane_fill` without forming W). Only the K vertices within two edges of the free ones have
    weights (Q_FK is zero beyond), and sparse storage keeps the per-frame product off the BLAS, whose
    threads would wait on the pipeline's busy decode and write threads (several ms a frame on 2 cores)."""
    from scipy import sparse
    from scipy.sparse.linalg import splu

    q_ff, q_fk = _membrane_blocks(tris, n_vertices, free)
    w = sparse.csr_matrix(-splu(q_ff).solve(q_fk.toarray()))
    w.eliminate_zeros()
    return w


def membrane_fill(values: np.ndarray, tris: np.ndarray, free: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex values (V, C) with those of the `free` (V,) bool vertices re-placed by the thin-plate
    membrane over the others -> new (V, C) float64 array; the others are returned exactly as given.

    The membrane minimises the summed squared umbrella Laplacian of the whole mesh given the fixed values:
    the smoothest field continuing its surroundings into the free region, keeping their level and slope
    (a linear field is reproduced exactly on a regular planar grid), with no bump, crease or sag at its
    rim.
    weights: `membrane_weights` of the same mesh and free set (computed here when not given).
    """
    x = np.array(values, dtype=np.float64)
    free = np.asarray(free, dtype=bool)
    if free.any():
        w = membrane_weights(tris, len(x), free) if weights is None else weights
        x[free] = w @ x[~free]
    return x


def smooth_normals(normals: np.ndarray, tris: np.ndarray, free: np.ndarray,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Unit vertex normals (V, 3) with those of the `free` (V,) bool vertices re-placed by the thin-plate
    membrane over the others (`membrane_fill`) and renormalised; the others, e.g. a mesh's outline, are
    returned exactly as given -> new (V, 3) float64 array."""
    free = np.asarray(free, dtype=bool)
    n = membrane_fill(normals, tris, free, weights)
    n[free] /= np.maximum(np.linalg.norm(n[free], axis=1, keepdims=True), 1e-12)
    return n


def _rings(tris: np.ndarray, n_vertices: int, seed: np.ndarray, rings: int) -> np.ndarray:
    """(V,) bool: the `seed` vertex indices and every vertex within `rings` edges of them."""
    t = np.asarray(tris)
    m = np.zeros(n_vertices, dtype=bool)
    m[seed] = True
    for _ in range(rings):
        m[t[m[t].any(axis=1)].ravel()] = True
    return m


@functools.lru_cache(maxsize=1)
def _face_surface_topology() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces (T', 3) of the landmark mesh with its eye and mouth openings zipped shut; the vertices
    (478,) bool whose normals the membrane re-places: the eye outlines and EYE_RINGS rings around them,
    the lips' landmarks and LIP_RINGS rings around them, never the face outline; the membrane's weights
    (F, 478 - F)), cached."""
    from relight_core.face_model import neutral_face

    c = _connections()
    base = face_triangles()
    tris = close_openings(base, neutral_face())
    eyes = np.unique(np.array(list(c.FACEMESH_LEFT_EYE) + list(c.FACEMESH_RIGHT_EYE)))
    lips = np.unique(np.array(list(c.FACEMESH_LIPS)))
    free = _rings(tris, 478, eyes, EYE_RINGS) | _rings(tris, 478, lips, LIP_RINGS)
    free[boundary_loops(base)[0]] = False
    return tris, free, membrane_weights(tris, 478, free)


def prepare() -> None:
    """Build the cached mesh topology now (imports MediaPipe's mesh and derives the neutral face: about
    1.5 s, once per process), so that a run whose tracking came from the cache does not charge it to its
    first frame's geometry time."""
    _face_surface_topology()


def face_surface(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rendered face surface of lifted landmarks (478, 3) cam space -> (faces (T', 3) int32, unit
    vertex normals (478, 3) cam space).

    The landmark mesh with its eye and mouth openings zipped shut (`close_openings`: no hole for the rest
    surface to show through, no seam around them) and its area-weighted vertex normals, except around
    the eyes (EYE_RINGS rings beyond the eye outlines: lids, sockets, under the eyes) and the lips
    (LIP_RINGS rings beyond them: the mouth corners). The mesh is bumpy at its triangles' scale there
    (the eyelid contours sink into the sockets, facets turn 8-9 degrees from their neighbours), which
    divides into the albedo and multiplies into relit shading as dark blotches under side and rim
    lights; there the normals are re-placed by the thin-plate membrane over the rest of the face
    (`smooth_normals`): they take the orientation of the face around them, so the eye is a smooth
    surface, not a socket. Positions are the landmarks' (the tracked geometry, which novel views
    re-project); the outline's normals and all others are the mesh's own, bit for bit.
    """
    tris, free, weights = _face_surface_topology()
    return tris, smooth_normals(vertex_normals(vertices, tris), tris, free, weights)


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
    idx = ys * W + xs, their depth (N,) = -z, plus the coverage map (H, W) bool; their unit normals
    (N, 3) (`normals`, or `normals_at` for some of them) are interpolated from the vertex normals on
    demand, from each pixel's triangle corners (corners (3, N) vertex ids) and barycentric weights
    (lam (3, N))."""

    cover: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    depth: np.ndarray
    idx: np.ndarray
    corners: np.ndarray
    lam: np.ndarray
    vertex_normals: np.ndarray

    @functools.cached_property
    def normals(self) -> np.ndarray:
        """Unit normals (N, 3) float32 of all covered pixels, cam space."""
        return self.normals_at(None)

    def normals_at(self, sel: np.ndarray | None) -> np.ndarray:
        """Unit normals (M, 3) float32 of the covered pixels `sel` indexes (M,) (None: all N)."""
        corners = self.corners if sel is None else self.corners[:, sel]
        lam = self.lam if sel is None else self.lam[:, sel]
        out = np.zeros((3, corners.shape[1]), np.float32)
        for corner in range(3):
            for c in range(3):
                out[c] += np.take(self.vertex_normals[c], corners[corner]) * lam[corner]
        inv = _inverse_length(out[0], out[1], out[2], 1e-6)
        out *= inv
        return np.ascontiguousarray(out.T)

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


def render_mesh(vertices: np.ndarray, tris: np.ndarray, k: np.ndarray, height: int, width: int,
                normals: np.ndarray | None = None) -> MeshRaster:
    """Rasterise a cam-space mesh (V, 3) with outward-wound faces (T, 3) through intrinsics k at
    (height, width), culling back faces -> MeshRaster (depth = -z, smooth vertex normals, cam space).
    normals: unit vertex normals (V, 3) to interpolate (default: `vertex_normals` of the mesh)."""
    v = np.asarray(vertices, dtype=np.float64)
    px = cam.project(v, k)
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    back = np.einsum("ij,ij->i", fn, -v[tris].mean(axis=1)) <= 0.0
    ids, idx, tid, lam = _raster_core(px, -v[:, 2], tris, height, width, cull=back)
    vn = vertex_normals(v, tris) if normals is None else np.asarray(normals, dtype=np.float64)
    tris_t = np.ascontiguousarray(np.asarray(tris, dtype=np.int32).T)
    corners = np.stack([np.take(tris_t[c], tid) for c in range(3)])
    vdepth = (-v[:, 2]).astype(np.float32)
    depth = np.zeros(len(idx), np.float32)
    for corner in range(3):
        depth += np.take(vdepth, corners[corner]) * lam[corner]
    ys, xs = np.divmod(idx, width)
    return MeshRaster(ids >= 0, ys, xs, depth, idx, corners, np.asarray(lam, np.float32),
                      np.ascontiguousarray(vn.T, dtype=np.float32))


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


def smoothstep(t: np.ndarray) -> np.ndarray:
    """3 t^2 - 2 t^3 of t clipped to [0, 1] (a C1 ramp: no crease where a blend starts or ends), float32."""
    t = np.clip(t, 0.0, 1.0).astype(np.float32)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of (N, 3) arrays -> (N,) (einsum: no (N, 3) temporary, unlike (a * b).sum(1))."""
    return np.einsum("ij,ij->i", a, b)


def inverse_norm(v: np.ndarray) -> np.ndarray:
    """1 / max(|row|, 1e-6) of an (N, 3) array -> (N,) float32."""
    return (np.float32(1.0) / np.maximum(np.sqrt(rowdot(v, v)), np.float32(1e-6))).astype(np.float32)


def _spread_from_ring(ry: np.ndarray, rx: np.ndarray, values: list[np.ndarray], shape: tuple[int, int],
                      width_px: float) -> tuple[tuple[slice, slice], np.ndarray, list[np.ndarray]]:
    """Spread values given at ring pixels outward by normalised convolution with a triangle kernel (two
    box filters of width b = 2 int(width_px) + 1: O(1) per pixel whatever the width), in the box around
    the ring that the kernel reaches (the rest of the (H, W) frame gets nothing).

    ry, rx (N,) ring pixels in `shape` (H, W) (repeats add up); values: up to three (N,) arrays.
    Returns (box: the (rows, cols) slices, weight (h, w) float32 in the box: 1 out to ~width_px from a
    straight ring, a C1 fall-off to 0 within 2 b; the ring-weighted mean of each value (h, w) float32)."""
    import cv2

    b = 2 * int(max(width_px, 1.0)) + 1
    reach = 2 * b  # two boxes of width b reach b - 1 pixels
    box = (slice(max(int(ry.min()) - reach, 0), min(int(ry.max()) + reach + 1, shape[0])),
           slice(max(int(rx.min()) - reach, 0), min(int(rx.max()) + reach + 1, shape[1])))
    bh, bw = box[0].stop - box[0].start, box[1].stop - box[1].start
    flat = (ry - box[0].start) * bw + (rx - box[1].start)
    acc = np.zeros((bh * bw, len(values) + 1), np.float32)
    np.add.at(acc[:, 0], flat, 1.0)
    for c, v in enumerate(values):
        np.add.at(acc[:, c + 1], flat, np.asarray(v, dtype=np.float32))
    acc = acc.reshape(bh, bw, len(values) + 1)
    for _ in range(2):
        acc = cv2.blur(acc, (b, b))
    mass = acc[..., 0]
    line_mass = np.float32(0.5 / b)  # mass next to a straight ring, where the weight is full
    inv = np.float32(1.0) / np.maximum(mass, np.float32(1e-6))
    return box, smoothstep(mass / line_mass), [acc[..., c + 1] * inv for c in range(len(values))]


def _rest_surface(person: np.ndarray, cover: np.ndarray, ring_ys: np.ndarray, ring_xs: np.ndarray,
                  ring_depth: np.ndarray, ring_normals: np.ndarray, k: np.ndarray, px_per_unit: float,
                  seam_px: float, step: int = 1) -> tuple[np.ndarray, np.ndarray, float]:
    """The matte dome at (H, W) -> (depth (H, W) float32, normals on every `step`-th pixel
    (ceil(H / step), ceil(W / step), 3) float32, base depth).

    person, cover (H, W) bool: the person and the face mesh's coverage; ring_*: pixels on the face
    boundary (N,), the face depth (N,) and unit normals (N, 3) there. The dome's base plane is set so that
    base - height meets the face depth along that ring (median); what is left at each ring pixel is
    spread outward and fades over ~JOIN_WIDTH (C1). The dome's normals turn halfway into the face's
    boundary normals (spread the same way) at the ring and back over seam_px px outside it, with zero
    slope at the ring: `build_geometry` turns the other half inside the face, so the join is C1. Computed
    at half resolution when the frame is large (the dome is smooth) and resized back (the normals only
    when `step` asks for a finer grid).
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
        resid = (ring_depth - (base - h_units[ry, rx])).astype(np.float32)
        box, near, (corr,) = _spread_from_ring(ry, rx, [resid], h_units.shape, JOIN_WIDTH * px_per_unit / f)
        d_small[box] += corr * near
    else:
        base = DOME_RADIUS + 1.0
    d_small += np.float32(base)
    sigma = max(0.6 * seam_px / f, 0.8)
    n_small = cv2.merge(_normal_channels(cv2.GaussianBlur(d_small, (0, 0), sigma), k_small, small))
    if len(ring_ys):
        _join_face_normals(n_small, small, cover, ry, rx, ring_normals, f, seam_px / f)
    depth = d_small if f == 1 else cv2.resize(d_small, (w, h), interpolation=cv2.INTER_LINEAR)
    grid = (-(-h // step), -(-w // step))
    if f == step and n_small.shape[:2] == grid:
        return depth, n_small, base
    if f == 1:
        return depth, np.ascontiguousarray(n_small[::step, ::step]), base
    return depth, unit_map(cv2.resize(n_small, grid[::-1], interpolation=cv2.INTER_LINEAR)), base


def _join_face_normals(n_small: np.ndarray, small: np.ndarray, cover: np.ndarray, ry: np.ndarray,
                       rx: np.ndarray, ring_normals: np.ndarray, f: int, seam_px: float) -> None:
    """Turn the dome's normals n_small (h, w, 3) (in place, unit) toward the face's boundary normals.

    small (h, w) bool person; cover (H, W) bool face coverage at f x the size; ry, rx (N,) ring pixels at
    (h, w) with the face's unit normals ring_normals (N, 3); seam_px at (h, w). The ring normals are
    spread outward (`_spread_from_ring`, at half this resolution: they vary slowly) and blended in with
    weight 1/2 on the face (where `build_geometry` blends on into the face's own) falling to 0 at
    seam_px outside it, with zero slope at the boundary, so the half-resolution face mask's edge does not
    show. Only the pixels within seam_px (+ 1 inside) of the ring are touched: the face blend uses no
    others.
    """
    import cv2

    h, w = small.shape
    m = int(seam_px) + 3
    rows = slice(max(int(ry.min()) - m, 0), min(int(ry.max()) + m + 1, h))
    cols = slice(max(int(rx.min()) - m, 0), min(int(rx.max()) + m + 1, w))
    bh, bw = rows.stop - rows.start, cols.stop - cols.start
    ring = np.ones((bh, bw), np.uint8)
    ring[ry - rows.start, rx - cols.start] = 0
    dist = cv2.distanceTransform(ring, cv2.DIST_L2, 3)  # px to the nearest ring pixel
    if f == 1:
        face = cover[rows, cols]
    else:
        full = cover[rows.start * f:rows.stop * f, cols.start * f:cols.stop * f].astype(np.uint8)
        face = cv2.resize(full, (bw, bh), interpolation=cv2.INTER_AREA) > 0
    # the pixels the face blend can reach: seam_px outside the ring, seam_px + 1 inside (flat, in the box)
    d = dist.ravel()
    sel = np.flatnonzero((d <= np.float32(seam_px + 1.0)) & small[rows, cols].ravel())
    inside = face.ravel()[sel]
    keep = inside | (d[sel] <= np.float32(seam_px))
    sel, inside = sel[keep], inside[keep]
    if sel.size == 0:
        return
    by, bx = np.divmod(sel, bw)
    # the ring normals spread outward at half this resolution (they vary slowly), resized onto the box
    qbox, _, spread = _spread_from_ring(ry // 2, rx // 2, [ring_normals[:, c] for c in range(3)],
                                        ((h + 1) // 2, (w + 1) // 2), seam_px / 2)
    qh, qw = 2 * (qbox[0].stop - qbox[0].start), 2 * (qbox[1].stop - qbox[1].start)
    q = cv2.resize(cv2.merge(spread), (qw, qh), interpolation=cv2.INTER_LINEAR).reshape(-1, 3)
    qy = np.minimum(by + (rows.start - 2 * qbox[0].start), qh - 1)
    qx = np.minimum(bx + (cols.start - 2 * qbox[1].start), qw - 1)
    e = q[qy * qw + qx]
    flat = (by + rows.start) * w + (bx + cols.start)
    n = n_small.reshape(-1, 3)[flat]
    weight = np.float32(0.5) * smoothstep(1.0 - d[sel] / np.float32(seam_px))
    weight[inside] = 0.5
    e *= (weight * inverse_norm(e))[:, None]
    n *= (np.float32(1.0) - weight)[:, None]
    n += e
    n *= inverse_norm(n)[:, None]
    n_small.reshape(-1, 3)[flat] = n


def build_geometry(analysis, i: int, height: int, width: int, step: int = 1) -> Geometry:
    """Geometry of analysis frame i at (height, width), its normals on every `step`-th pixel: see
    `Geometry` and the module docstring."""
    import cv2

    k = analysis.K_at(height, width)
    lm = analysis.landmarks_at(i, height, width)
    cfh = np.asarray(analysis.cam_from_head[i], dtype=np.float64)
    verts = face_vertices_cam(lm, cfh, k, getattr(analysis, "face_shape", None))
    tris, vnormals = face_surface(verts)
    face = render_mesh(verts, tris, k, height, width, normals=vnormals)
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
    depth, normals, base = _rest_surface(person, cover, face.ys[ring], face.xs[ring], face.depth[ring],
                                         face.normals_at(np.flatnonzero(ring)), k, px_per_unit, seam_px, step)
    # the face: mesh depth and normals, blended into the rest's over a feathered seam inside its edge
    d_flat = depth.reshape(-1)
    seam = np.flatnonzero(inner < seam_px)
    d_new = face.depth.copy()
    d_new[seam] = _blend_seam(inner[seam], seam_px, d_new[seam], np.take(d_flat, idx[seam]))
    d_flat[idx] = d_new
    _put_face_normals(face, normals, inner, seam_px, step, k)
    outside = ~person

    plane = np.where(outside, np.float32(base), depth)
    xs = (np.arange(width, dtype=np.float32) + np.float32(0.5 - k[0, 2])) * np.float32(1.0 / k[0, 0])
    ys = -(np.arange(height, dtype=np.float32) + np.float32(0.5 - k[1, 2])) * np.float32(1.0 / k[1, 1])
    pts = cv2.merge([plane * xs[None, :], plane * ys[:, None], -plane])
    depth *= person
    cover_f = cover.astype(np.float32)
    face_mask = cv2.GaussianBlur(cover_f, (0, 0), 0.7) * cover_f
    labels = label_map(lm, cover, person)
    return Geometry(points=pts, depth=depth, grid_normals=normals, face_mask=face_mask, alpha=alpha,
                    labels=labels, K=k, vertices=verts.astype(np.float32), step=step, face_tris=tris,
                    face_normals=np.asarray(vnormals, dtype=np.float32))


def _blend_seam(inner: np.ndarray, seam_px: float, face: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """Face values (N,) or (N, C) at pixels inner (N,) px inside the face's edge blended into the rest's
    with the C1 seam weight (the face's own from seam_px inward)."""
    ws = smoothstep(inner / np.float32(seam_px))
    if face.ndim == 2:
        ws = ws[:, None]
    return ws * face + (np.float32(1.0) - ws) * rest


def _put_face_normals(face: MeshRaster, grid: np.ndarray, inner: np.ndarray, seam_px: float, step: int,
                      k: np.ndarray) -> None:
    """Write the face mesh's normals into the rest's normals `grid` (every `step`-th pixel, (h', w', 3)),
    in place: the mesh's own beyond the seam, blended into the rest's (renormalised) within seam_px of the
    face's edge, and turned toward the camera (K (3, 3)) where they face away from it (`face_the_camera`).
    inner (N,): px from the edge of each of the face's raster pixels."""
    gw = grid.shape[1]
    flat = grid.reshape(-1, 3)
    if step == 1:
        on, cells = None, face.idx
    else:
        on = np.flatnonzero(((face.ys | face.xs) & (step - 1)) == 0 if step & (step - 1) == 0 else
                            (face.ys % step == 0) & (face.xs % step == 0))
        cells = (face.ys[on] // step) * gw + face.xs[on] // step
    n = face.normals_at(on)
    d = inner if on is None else inner[on]
    seam = np.flatnonzero(d < seam_px)
    b = _blend_seam(d[seam], seam_px, np.take(n, seam, axis=0), np.take(flat, cells[seam], axis=0))
    b *= inverse_norm(b)[:, None]
    n[seam] = b
    ys, xs = (face.ys, face.xs) if on is None else (face.ys[on], face.xs[on])
    flat[cells] = face_the_camera(n, xs, ys, k)


MIN_FACING = 0.1  # least cosine between a visible pixel's normal and its ray to the camera


def face_the_camera(normals: np.ndarray, xs: np.ndarray, ys: np.ndarray, k: np.ndarray,
                    min_cos: float = MIN_FACING) -> np.ndarray:
    """Unit normals (N, 3) cam space of pixels (xs, ys) (N,) seen by a camera K (3, 3) -> (N, 3) float32,
    each turned toward its pixel's ray to the camera until their cosine is about min_cos where it was less.

    A surface the camera sees cannot face away from it, but interpolated vertex normals of the landmark
    mesh do along folds seen edge-on: the nose's wings and underside, where the mesh's triangles turn
    past the silhouette. Those pixels took no light from the front, a black line along the bottom of the
    nose under any key light (and the albedo, divided by that shading, a bright one)."""
    n = np.asarray(normals, dtype=np.float32)
    t = np.empty_like(n)
    t[:, 0] = (np.float32(k[0, 2] - 0.5) - xs) * np.float32(1.0 / k[0, 0])
    t[:, 1] = (ys + np.float32(0.5 - k[1, 2])) * np.float32(1.0 / k[1, 1])
    t[:, 2] = 1.0
    t *= inverse_norm(t)[:, None]
    short = np.float32(min_cos) - rowdot(n, t)
    bad = np.flatnonzero(short > 0)
    if bad.size:
        fixed = n[bad] + short[bad, None] * t[bad]
        n = n.copy()
        n[bad] = fixed * inverse_norm(fixed)[:, None]
    return n
