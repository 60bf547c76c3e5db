"""The tracked head as animated geometry for a 3D package: a deforming face mesh joined to a closed
rest-of-head shell, plus a neck, one vertex array per frame, written as a PC2 point cache (what Blender's
Mesh Cache modifier, Maya, Max and Houdini read) and a rest mesh (`head_mesh.npz`).

Vertices (`HeadTopology`):

- 0..477: the face, the tracked landmarks lifted to 3D (`face_model.lift_landmarks`) and taken into head space
  by the frame's head pose. Through the solved camera (`cam_from_head`, the analysis' intrinsics) each
  lands exactly on its tracked pixel, so vertex i IS landmark i in every frame. The iris centres and
  rings (468..477) are loose points (no faces); the eye and mouth openings are zipped shut
  (`geometry.close_openings`, the face surface the engine renders).
- then the skull shell: SHELL_ROWS - 1 rings of vertices running from the face outline (its 36 boundary
  landmarks are row 0, shared, so face and shell are one watertight surface) over an ellipsoid to a
  back pole. Row r of the column of outline landmark i follows the ellipsoid meridian from the outline's
  own direction to the back of the head, and carries the outline's offset from the ellipsoid, fading
  over the first rows (C1), so the shell deforms with the jaw and meets the face without a crease.
- then the neck: a capped elliptic tube below the skull, rigid in head space.

The ellipsoid's width (and depth) and the height of its upper half are fitted once per clip to the
person matte (`fit_shell`): the silhouette of face + shell through the solved camera against the matte
above the eyes on a few frames (largest intersection over union, a coordinate search over a grid of
scales). Hair therefore belongs to the shell, which is what a holdout of the person needs.

Axes and units: the rest mesh and the cache are in the Blender head anchor's local axes
(`camera.head_to_blender_local`: bx = x, by = -z, bz = y) in head units (eye centres 0.2 apart); the
face outline of the clip's own face shape gives `metres_per_unit` for a real-scale rig (the face,
outline to outline, REAL_FACE_WIDTH_M wide). numpy only at import time (the fit uses OpenCV when called).
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from relight_core import camera as cam

N_FACE = 478
SHELL_ROWS = 12          # rings from the face outline (row 0) to the back pole (row SHELL_ROWS)
SHELL_BLEND_ROWS = 4     # rows over which the outline's offset from the ellipsoid fades out
# skull ellipsoid in head space (head units): centre and radii (x width, y height, z depth)
SKULL_CENTRE = (0.0, 0.04, -0.02)
SKULL_RADII = (0.25, 0.33, 0.33)
# neck tube: centre line x = 0, z = NECK_Z from NECK_TOP down to NECK_BOTTOM; radii (x, z)
NECK_TOP, NECK_BOTTOM, NECK_Z = -0.12, -0.85, -0.06
NECK_RADII = (0.16, 0.15)
NECK_SEGMENTS, NECK_RINGS = 16, 5
FIT_SCALES = np.round(np.arange(0.85, 1.91, 0.05), 3)  # candidate ellipsoid scales for `fit_shell`
FIT_FRAMES = 6
REAL_FACE_WIDTH_M = 0.15
PC2_NAME, REST_NAME = "head_mesh.pc2", "head_mesh.npz"
REST_VERSION = 1


# --------------------------------------------------------------------------------------------- PC2

def write_pc2(path: str | Path, frames: np.ndarray, start: float = 0.0, rate: float = 1.0) -> None:
    """Write a PC2 point cache: frames (N, V, 3) float -> header ("POINTCACHE2\\0", version 1, V, start
    frame, sample rate, N) and N x V x 3 little-endian float32 (atomically)."""
    from relight_core import io

    a = np.ascontiguousarray(np.asarray(frames, dtype="<f4"))
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"PC2 frames must be (N, V, 3), got {a.shape}")
    header = struct.pack("<12siiffi", b"POINTCACHE2\0", 1, a.shape[1], float(start), float(rate), a.shape[0])
    with io.atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header)
        fh.write(a.tobytes())


def read_pc2(path: str | Path) -> tuple[np.ndarray, float, float]:
    """Read a PC2 point cache -> (frames (N, V, 3) float32, start frame, sample rate)."""
    raw = Path(path).read_bytes()
    magic, _version, v, start, rate, n = struct.unpack_from("<12siiffi", raw)
    if magic != b"POINTCACHE2\0" or len(raw) != 32 + n * v * 12:
        raise ValueError(f"{path} is not a PC2 point cache")
    return np.frombuffer(raw, dtype="<f4", offset=32).reshape(n, v, 3).copy(), start, rate


# --------------------------------------------------------------------------------------------- topology

@dataclass(frozen=True)
class HeadTopology:
    """Faces (T, 3) int32 over V vertices (face 0..477, shell, neck), the face outline (36,) landmark
    indices in loop order, and where the shell and neck vertices start."""

    faces: np.ndarray
    outline: np.ndarray
    shell_start: int
    neck_start: int
    n_vertices: int


def _grid_faces(rows: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """Two triangles per quad between consecutive closed rings (each (C,) vertex indices)."""
    out = []
    for a, b in zip(rows[:-1], rows[1:], strict=True):
        c = len(a)
        for i in range(c):
            j = (i + 1) % c
            out += [(a[i], a[j], b[j]), (a[i], b[j], b[i])]
    return out


def _fan(ring: np.ndarray, apex: int) -> list[tuple[int, int, int]]:
    return [(ring[i], ring[(i + 1) % len(ring)], apex) for i in range(len(ring))]


def _orient(faces: np.ndarray, verts: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Flip a block of consistently wound faces when their normals point inward on the whole."""
    v = verts[faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    return faces if float(np.sum(n * (v.mean(axis=1) - centre))) >= 0 else faces[:, [0, 2, 1]]


@functools.lru_cache(maxsize=1)
def head_topology() -> HeadTopology:
    """The head mesh's faces and vertex layout (cached; see the module docstring)."""
    from relight_core import geometry
    from relight_core.face_model import neutral_face

    base = geometry.face_triangles()
    face = geometry.close_openings(base, neutral_face())
    outline = geometry.boundary_loops(base)[0]
    c = len(outline)
    shell_start = N_FACE
    rows = [outline] + [shell_start + (r - 1) * c + np.arange(c) for r in range(1, SHELL_ROWS)]
    pole = shell_start + (SHELL_ROWS - 1) * c
    shell = np.array(_grid_faces(rows) + _fan(rows[-1], pole), dtype=np.int64)
    neck_start = pole + 1
    rings = [neck_start + r * NECK_SEGMENTS + np.arange(NECK_SEGMENTS) for r in range(NECK_RINGS)]
    top, bottom = neck_start + NECK_RINGS * NECK_SEGMENTS, neck_start + NECK_RINGS * NECK_SEGMENTS + 1
    neck = np.array(_grid_faces(rings) + _fan(rings[0][::-1], top) + _fan(rings[-1], bottom), dtype=np.int64)
    n = bottom + 1
    rest = rest_vertices(neutral_face(), HeadTopology(face, outline, shell_start, neck_start, n))
    shell = _orient(shell, rest, np.asarray(SKULL_CENTRE))
    neck = _orient(neck, rest, np.array([0.0, 0.5 * (NECK_TOP + NECK_BOTTOM), NECK_Z]))
    return HeadTopology(np.concatenate([face, shell, neck]).astype(np.int32), outline, shell_start,
                        neck_start, n)


# --------------------------------------------------------------------------------------------- vertices

def _ellipsoid(alpha: np.ndarray, phi: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Points (..., 3) of an ellipsoid at polar angle alpha from +z and azimuth phi about z (radians)."""
    s = np.sin(alpha)
    unit = np.stack([s * np.cos(phi), s * np.sin(phi), np.cos(alpha)], axis=-1)
    return centre + unit * radii


def shell_vertices(outline_points: np.ndarray, scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """The skull shell for one frame's face outline (C, 3) head space -> ((SHELL_ROWS - 1) * C + 1, 3):
    rows 1..SHELL_ROWS-1 (C each) and the back pole (module docstring).

    scale: (width and depth, height of the upper half) of the ellipsoid relative to SKULL_RADII."""
    centre = np.asarray(SKULL_CENTRE, dtype=np.float64)
    radii = np.asarray(SKULL_RADII, dtype=np.float64) * np.array([scale[0], 1.0, scale[0]])
    p = np.asarray(outline_points, dtype=np.float64)
    q = (p - centre) / radii
    phi = np.arctan2(q[:, 1], q[:, 0])
    alpha0 = np.arctan2(np.hypot(q[:, 0], q[:, 1]), q[:, 2])
    t = np.arange(1, SHELL_ROWS, dtype=np.float64)[:, None] / SHELL_ROWS
    alpha = alpha0[None] + (math.pi - alpha0[None]) * t
    pts = _ellipsoid(alpha, phi[None], centre, radii)
    pts[..., 1] = np.where(pts[..., 1] > centre[1], centre[1] + (pts[..., 1] - centre[1]) * scale[1],
                           pts[..., 1])
    start = _ellipsoid(alpha0, phi, centre, radii)
    start[:, 1] = np.where(start[:, 1] > centre[1], centre[1] + (start[:, 1] - centre[1]) * scale[1],
                           start[:, 1])
    u = np.clip(np.arange(1, SHELL_ROWS) / SHELL_BLEND_ROWS, 0.0, 1.0)
    keep = 1.0 - u * u * (3.0 - 2.0 * u)  # C1 fade of the outline's offset from the ellipsoid
    pts += keep[:, None, None] * (p - start)[None]
    pole = centre + np.array([0.0, 0.0, -radii[2]])
    return np.concatenate([pts.reshape(-1, 3), pole[None]])


def neck_vertices(scale: float = 1.0) -> np.ndarray:
    """The neck tube (NECK_RINGS * NECK_SEGMENTS + 2, 3) head space: rings top to bottom, then the two
    cap centres; radii NECK_RADII x scale."""
    phi = 2.0 * np.pi * np.arange(NECK_SEGMENTS) / NECK_SEGMENTS
    ys = np.linspace(NECK_TOP, NECK_BOTTOM, NECK_RINGS)
    rx, rz = NECK_RADII[0] * scale, NECK_RADII[1] * scale
    ring = np.stack([rx * np.cos(phi), np.zeros_like(phi), NECK_Z + rz * np.sin(phi)], axis=-1)
    rings = np.concatenate([ring + np.array([0.0, y, 0.0]) for y in ys])
    caps = np.array([[0.0, NECK_TOP, NECK_Z], [0.0, NECK_BOTTOM, NECK_Z]])
    return np.concatenate([rings, caps])


def rest_vertices(face: np.ndarray, topo: HeadTopology, scale: tuple[float, float] = (1.0, 1.0)
                  ) -> np.ndarray:
    """All head-mesh vertices (V, 3) in head space for face vertices (478, 3) in head space."""
    f = np.asarray(face, dtype=np.float64)
    return np.concatenate([f, shell_vertices(f[topo.outline], scale), neck_vertices(scale[0])])


def face_in_head(analysis, i: int) -> np.ndarray:
    """Frame i's lifted landmarks in head space (478, 3) head units (`face_model.lift_landmarks`, then the
    inverse head pose), at the analysis' own resolution."""
    from relight_core.face_model import lift_landmarks

    pose = np.asarray(analysis.cam_from_head[i], dtype=np.float64)
    lifted = lift_landmarks(np.asarray(analysis.landmarks[i], dtype=np.float64), pose, analysis.K,
                            getattr(analysis, "face_shape", None))
    return cam.transform_points(cam.invert_pose(pose), lifted)


def frame_vertices(analysis, i: int, scale: tuple[float, float], topo: HeadTopology | None = None
                   ) -> np.ndarray:
    """Frame i's head-mesh vertices (V, 3) in head space, head units."""
    return rest_vertices(face_in_head(analysis, i), topo or head_topology(), scale)


# --------------------------------------------------------------------------------------------- fitting

def silhouette(verts_head: np.ndarray, faces: np.ndarray, cam_from_head: np.ndarray, k: np.ndarray,
               height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels covered by a mesh (V, 3) head space, (T, 3) faces, seen through a camera
    (cam_from_head (4, 4), K (3, 3) at (height, width))."""
    import cv2

    px = cam.project(cam.transform_points(cam_from_head, verts_head), k)
    poly = np.round(px[faces] * 8.0).astype(np.int32)  # 3 bits of sub-pixel precision
    img = np.zeros((height, width), np.uint8)
    for tri in poly:  # one by one: fillPoly would fill overlapping triangles even-odd
        cv2.fillConvexPoly(img, tri, 1, lineType=cv2.LINE_8, shift=3)
    return img > 0


def eye_line(analysis, i: int, height: int, width: int) -> float:
    """Image row (px, at (height, width)) of the eye centres of frame i."""
    from relight_core import face_model

    lm = analysis.landmarks_at(i, height, width)
    return float(lm[list(face_model.RIGHT_EYE_CORNERS + face_model.LEFT_EYE_CORNERS), 1].mean())


def fit_shell(analysis, frames: int = FIT_FRAMES) -> tuple[float, float]:
    """(width, height) scales of the skull ellipsoid that make the silhouette of face + shell match the
    person matte above the eyes best (forehead, temples and hair: below them ears, neck and collars
    belong to the matte but not to a skull): summed IoU over up to `frames` valid frames spread over the
    clip, maximised over FIT_SCALES by a coordinate search (width, height, width again)."""
    topo = head_topology()
    rows = np.flatnonzero(np.asarray(analysis.valid, dtype=bool))
    rows = rows[np.unique(np.linspace(0, len(rows) - 1, min(frames, len(rows))).round().astype(int))]
    head_faces = topo.faces[np.all(topo.faces < topo.neck_start, axis=1)]
    mh, mw = np.asarray(analysis.matte).shape[1:3]
    k = analysis.K_at(mh, mw)
    cases = []
    for i in rows:
        cut = int(math.ceil(eye_line(analysis, int(i), mh, mw)))
        matte = analysis.matte_at(int(i), mh, mw) > 0.5
        pose = np.asarray(analysis.cam_from_head[i])
        cases.append((face_in_head(analysis, int(i)), matte[:cut], pose, cut))

    def score(sx: float, sy: float) -> float:
        total = 0.0
        for face, matte, pose, cut in cases:
            verts = np.concatenate([face, shell_vertices(face[topo.outline], (sx, sy))])
            sil = silhouette(verts, head_faces, pose, k, mh, mw)[:cut]
            total += np.count_nonzero(sil & matte) / max(np.count_nonzero(sil | matte), 1)
        return total

    best = (1.0, 1.0)
    for axis in (0, 1, 0):  # coordinate search: width, then height, then width again
        trials = [(float(s), best[1]) if axis == 0 else (best[0], float(s)) for s in FIT_SCALES]
        best = max(trials, key=lambda t: score(*t))
    return best


# --------------------------------------------------------------------------------------------- export

def face_width_units(face_shape: np.ndarray) -> float:
    """Width (head units) of a face shape (478, 3) across its outline landmarks."""
    x = np.asarray(face_shape, dtype=np.float64)[head_topology().outline, 0]
    return float(x.max() - x.min())


def export_head(analysis, folder: str | Path, progress=None) -> dict:
    """Write DIR/head_mesh.pc2 (one sample per analysis frame) and DIR/head_mesh.npz (the rest mesh)
    -> a summary dict (paths, counts, scales).

    Both in the Blender head anchor's local axes, head units. The npz holds `vertices` (V, 3) float32
    (frame 0), `faces` (T, 3) int32, `frame_indices` (N,), `cam_from_head` (N, 4, 4) and `K` (3, 3) of the
    analysis and `meta` (JSON: version, counts, landmark count, image size, fps, vertical FOV, fitted
    shell scale, metres per head unit). progress(done, total) is called per frame.
    """
    from relight_core import io
    from relight_core.face_model import neutral_face

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    topo = head_topology()
    scale = fit_shell(analysis)
    n = analysis.n_frames
    frames = np.empty((n, topo.n_vertices, 3), np.float32)
    for i in range(n):
        frames[i] = cam.head_to_blender_local(frame_vertices(analysis, i, scale, topo))
        if progress is not None:
            progress(i + 1, n)
    shape = getattr(analysis, "face_shape", None)
    width = face_width_units(neutral_face() if shape is None else shape)
    meta = {"version": REST_VERSION, "vertices": topo.n_vertices, "faces": int(len(topo.faces)),
            "landmarks": N_FACE, "frames": n, "width": analysis.width, "height": analysis.height,
            "fps": analysis.fps, "fov_deg": analysis.fov_deg, "shell_scale": list(scale),
            "face_width_units": width, "metres_per_unit": REAL_FACE_WIDTH_M / width,
            "axes": "blender head anchor local (x, -z, y) of head space", "units": "head units"}
    pc2 = folder / PC2_NAME
    write_pc2(pc2, frames)
    rest = folder / REST_NAME
    with io.atomic_write(rest) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, meta=np.array(json.dumps(meta)), vertices=frames[0],
                            faces=topo.faces.astype(np.int32),
                            frame_indices=np.asarray(analysis.frame_indices, np.int64),
                            cam_from_head=np.asarray(analysis.cam_from_head, np.float64),
                            K=np.asarray(analysis.K, np.float64))
    return {"pc2": str(pc2), "rest": str(rest), **meta}


def track_job(job, on_event=None, cancel=None) -> dict:
    """The worker's "track" task: analyse a clip without relighting it (the analysis cached in the output
    folder's DIR/.relight, as a relight caches it, so a later relight of the strip reuses it; the folder's
    lock held meanwhile) and write its head mesh to DIR -> a small report dict.

    job: a `pipeline.RelightJob` (input, output, frames, size, keep_analysis are used). A cached analysis
    may cover more frames than asked for: the mesh then has all of them (`frame_indices` says which).
    Events as for a relight: `started`, `progress` (stage analyze, then mesh), `warning`, then `done` with
    `head_mesh` (the rest mesh) and `cache` (the PC2 file), or `cancelled`.
    """
    import threading

    from relight_core import io, layout, lock, outputs, session

    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    footage = io.open_footage(job.input, frames=tuple(job.frames) if job.frames else None, size=job.size)
    out = outputs.prepare_output(job.output)
    with lock.hold(out):
        emit({"event": "started", "frames": footage.n_frames, "output": str(out)})
        layout.engine_dir(out).mkdir(parents=True, exist_ok=True)
        try:
            analysis, cached = session.load_or_analyze(footage, layout.engine_dir(out), job.keep_analysis,
                                                       emit, cancel)
        except session.Cancelled:
            emit({"event": "cancelled", "frames_done": 0})
            return {"cancelled": True}
        for message in getattr(analysis, "warnings", []) or []:
            emit({"event": "warning", "frame": None, "message": str(message)})
        summary = export_head(analysis, out, progress=lambda done, total: emit(
            {"event": "progress", "stage": "mesh", "done": done, "total": total}))
    emit({"event": "done", "frames": analysis.n_frames, "output": str(out), "report": summary["rest"],
          "head_mesh": summary["rest"], "cache": summary["pc2"], "analysis_cached": cached})
    return {"cancelled": False, "analysis_cached": cached, **summary}
