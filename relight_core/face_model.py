"""The face model: MediaPipe's landmark set, the neutral face shape, mirror pairs and landmark lifting.

Shared by tracking (`track`: head pose against the neutral face) and geometry (`geometry`: the face mesh,
its mirror map, landmarks lifted to camera space). Landmark indices are MediaPipe Face Mesh's 478 (with
irises); shapes are in head space and head units (see ARCHITECTURE.md "Conventions").

MEDIAPIPE_Z_SCALE: see `track`'s module docstring for how it was calibrated.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings as _warnings

import numpy as np

from relight_core import camera as cam

N_LANDMARKS = 478
MEDIAPIPE_Z_SCALE = 1.08  # MediaPipe's relative depth is this much too shallow (module docstring)


# Mostly rigid MediaPipe landmarks (indices into the 478): forehead, glabella and nose bridge, nose,
# eye corners, cheekbones and upper face outline. Mouth, jaw, lids and brows are left out so that
# expression does not move the pose.
RIGID_LANDMARKS = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,            # midline: forehead -> nose tip
    109, 338, 67, 297, 108, 337, 69, 299, 104, 333,      # forehead
    33, 133, 263, 362, 130, 359, 243, 463,               # eye corners
    116, 345, 123, 352, 117, 346, 50, 280, 36, 266,      # cheekbones
    127, 356, 234, 454, 162, 389, 21, 251, 54, 284,      # temples / upper face outline
    98, 327, 129, 358, 64, 294,                          # nose wings
)
RIGHT_EYE_CORNERS = (33, 133)   # subject's right eye (image left in a frontal view)
LEFT_EYE_CORNERS = (362, 263)
MOUTH_CORNERS = (61, 291)
FOREHEAD, CHIN = 10, 152


# Where the head centre sits relative to the face (head units): on the symmetry plane, HEAD_CENTRE_Y
# of the way from the eye line down to the mouth line, HEAD_CENTRE_BEHIND_EYES behind the eye corners.
# 0.4 is where EG3D's head centre projects in its aligned crops (measured on pr_trudeau_frames: the image
# centre, which its cameras look at, sits 0.40 of the way from the eyes to the mouth).
HEAD_CENTRE_Y = 0.4
HEAD_CENTRE_BEHIND_EYES = 0.25


def mediapipe_module():
    """The `mediapipe` package, imported with its native logging quietened (errors only)."""
    # MediaPipe's C++ side (glog/absl, TFLite) logs INFO/WARNING lines to stderr; keep errors only unless
    # the user set these variables themselves
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        import mediapipe as mp
    return mp


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence file descriptor 2 while a MediaPipe graph is built and runs its first frame.

    absl writes "All log messages before absl::InitializeLog()..." and the graph's start-up warnings
    (XNNPACK delegate, feedback tensors, NORM_RECT) straight to fd 2 whatever the log level; they carry
    nothing for the user. Python exceptions raised inside still propagate (after fd 2 is restored).
    Set RELIGHT_NATIVE_LOGS=1 to see everything.
    """
    if os.environ.get("RELIGHT_NATIVE_LOGS"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def landmark_array(face, width: int, height: int) -> np.ndarray:
    """A MediaPipe NormalizedLandmarkList -> (478, 3) float64 (x px, y px, z px-scaled by width and
    MEDIAPIPE_Z_SCALE)."""
    a = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)
    a[:, 0] *= width
    a[:, 1] *= height
    a[:, 2] *= width * MEDIAPIPE_Z_SCALE
    return a


def face_size_px(landmarks: np.ndarray) -> float:
    """Distance in pixels between the eye centres of one face's (478, 2|3) landmarks."""
    lm = np.asarray(landmarks)
    r = lm[list(RIGHT_EYE_CORNERS), :2].mean(axis=0)
    left = lm[list(LEFT_EYE_CORNERS), :2].mean(axis=0)
    return float(np.linalg.norm(left - r))


def procrustes(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None,
                scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted (similarity or rigid) fit: dst ~ s R src + t. src, dst (K, 3) -> (s, R (3,3), t (3,))."""
    w = np.ones(len(src)) if w is None else np.asarray(w, dtype=np.float64)
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    cov = (b * w[:, None]).T @ a
    u, sv, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    s = float((sv * [1.0, 1.0, d]).sum() / (w @ (a * a).sum(axis=1))) if scale else 1.0
    return s, r, md - s * r @ ms


def _adjacency() -> list[set[int]]:
    """Neighbour sets of the 478 landmarks in MediaPipe's tessellation (plus the iris rings)."""
    conn = mediapipe_module().solutions.face_mesh_connections
    nb: list[set[int]] = [set() for _ in range(N_LANDMARKS)]
    for a, b in set(conn.FACEMESH_TESSELATION) | set(conn.FACEMESH_IRISES):
        nb[a].add(b)
        nb[b].add(a)
    return nb


def mirror_pairs(points: np.ndarray, rounds: int = 5) -> np.ndarray:
    """For a roughly frontal (478, 3) face in head-like axes (x across the face), the index of each
    landmark's mirror partner -> (478,) int (midline points pair with themselves).

    A one-to-one assignment of the shape mirrored in x (about its centroid) to the shape, minimising the
    distance minus a bonus for mesh-neighbourhood agreement (the mirror map preserves the tessellation
    graph), which fixes pairs that an asymmetric expression would get wrong.
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    p = np.asarray(points, dtype=np.float64)
    q = p.copy()
    q[:, 0] = 2.0 * p[:, 0].mean() - q[:, 0]
    dist = cdist(q, p)
    spacing = float(np.median(np.sort(cdist(p, p), axis=1)[:, 1]))
    nb = _adjacency()
    adj = np.zeros((len(p), len(p)))
    for i, ns in enumerate(nb):
        adj[i, list(ns)] = 1.0
    deg = np.maximum(adj.sum(axis=1), 1.0)
    cost = dist
    pairs = np.arange(len(p))
    for _ in range(rounds):
        rows, cols = linear_sum_assignment(cost)
        pairs[rows] = cols
        perm = np.zeros_like(adj)
        perm[np.arange(len(p)), pairs] = 1.0
        # overlap[i, j] = neighbours of i whose partner is a neighbour of j, over the larger degree
        overlap = (adj @ perm @ adj.T) / np.maximum(deg[:, None], deg[None, :])
        cost = dist - 5.0 * spacing * overlap
    return pairs


def _symmetrise(p: np.ndarray, iterations: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Make a face shape left/right symmetric -> (symmetric shape (478, 3), mirror pairs (478,))."""
    s = p - p.mean(axis=0)
    pairs = mirror_pairs(s)
    for _ in range(iterations):
        mirrored = s[pairs] * np.array([-1.0, 1.0, 1.0])
        _, r, t = procrustes(mirrored, s)
        s = 0.5 * (s + mirrored @ r.T + t)
        # re-express in axes where the symmetry plane is x = 0
        d = s - s[pairs]
        big = np.linalg.norm(d, axis=1) > 1e-6
        ev = np.linalg.eigh(d[big].T @ d[big])[1][:, -1]
        ev = ev if ev[0] > 0 else -ev
        y = np.array([0.0, 1.0, 0.0]) - ev[1] * ev
        y /= np.linalg.norm(y)
        rot = np.stack([ev, y, np.cross(ev, y)])
        s = (s - s.mean(axis=0)) @ rot.T
        pairs = mirror_pairs(s)
    return s, pairs


@functools.lru_cache(maxsize=1)
def neutral_face() -> np.ndarray:
    """The neutral face shape (478, 3) float64 in head space and head units (see module docstring).

    Derived at run time: MediaPipe Face Mesh (static mode) on scikit-image's astronaut portrait, image
    axes -> (x, -y, -z), symmetrised about its mirror plane, y axis from chin to forehead, scaled to
    `camera.INTEROCULAR` between the eye centres, origin at the head centre (HEAD_CENTRE_*).
    """
    from skimage import data

    img = data.astronaut()
    mp = mediapipe_module()
    with quiet_native_stderr(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                                                max_num_faces=1) as fm:
        res = fm.process(img)
    if not res.multi_face_landmarks:
        raise RuntimeError("MediaPipe found no face on the astronaut image; the installation is broken.")
    lm = landmark_array(res.multi_face_landmarks[0], img.shape[1], img.shape[0])
    p = lm * np.array([1.0, -1.0, -1.0])
    s, _ = _symmetrise(p)
    # y axis: chin -> forehead, orthogonal to x (the mirror normal); z = x cross y (out of the face)
    y = s[FOREHEAD] - s[CHIN]
    y[0] = 0.0
    y /= np.linalg.norm(y)
    rot = np.stack([np.array([1.0, 0.0, 0.0]), y, np.cross([1.0, 0.0, 0.0], y)])
    s = s @ rot.T
    eye_r = s[list(RIGHT_EYE_CORNERS)].mean(axis=0)
    eye_l = s[list(LEFT_EYE_CORNERS)].mean(axis=0)
    s *= cam.INTEROCULAR / np.linalg.norm(eye_l - eye_r)
    eye_mid = s[list(RIGHT_EYE_CORNERS + LEFT_EYE_CORNERS)].mean(axis=0)
    mouth = s[list(MOUTH_CORNERS)].mean(axis=0)
    origin = np.array([0.0, eye_mid[1] + HEAD_CENTRE_Y * (mouth[1] - eye_mid[1]),
                       eye_mid[2] - HEAD_CENTRE_BEHIND_EYES])
    s = s - origin
    s[:, 0] -= s[:, 0].mean()
    return s


def lift_landmarks(landmarks: np.ndarray, cam_from_head: np.ndarray, k: np.ndarray,
                   shape: np.ndarray | None = None) -> np.ndarray:
    """Landmarks (478, 3) px (x, y, MediaPipe z scaled to px) -> cam-space points (478, 3), head units.

    x, y stay exactly on the tracked pixels; each landmark's depth is the mean depth of the posed face
    shape's rigid landmarks (`shape`, default `neutral_face()`) plus MediaPipe's relative depth converted
    to head units at that depth.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    k = cam.k_matrix(k)
    rigid = list(RIGID_LANDMARKS)
    model = neutral_face() if shape is None else np.asarray(shape, dtype=np.float64)
    posed = cam.transform_points(cam_from_head, model[rigid])
    d_ref = float(np.mean(-posed[:, 2]))
    z_ref = float(np.mean(lm[rigid, 2]))
    depth = d_ref + (lm[:, 2] - z_ref) * (d_ref / k[0, 0])
    return cam.unproject(lm[:, :2], depth, k)

