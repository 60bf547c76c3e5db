"""Camera models, head space, the canonical view and pose maths (numpy only; importable in Blender).

Frames (see ARCHITECTURE.md):

- Camera space ("cam", OpenGL): +x image right, +y image up, +z toward the viewer; the camera looks
  along -z, so a visible point has z < 0.
- Head space: origin at the head centre, +x toward image right for a frontal face (the subject's left),
  +y up, +z out of the face. Units are EG3D-like: the face is about 0.5 units wide, the distance between
  the eye centres is `INTEROCULAR` = 0.2 units.
- DPR's SH frame: +X image right, +Z up, +Y into the screen. For a camera, DPR = (x, -z, y) of cam space;
  for the frontal view DPR = (x, -z, y) of head space.
- Blender head anchor (an Empty): local X = head x, local Z = head y, local -Y = head z; its local frame
  is therefore the DPR frame of the frontal view. Blender cameras look along local -Z with +Y up, i.e.
  they use OpenGL camera axes, so a camera matrix relative to the anchor converts by a change of basis only.
- OpenCV/EG3D camera axes: +x right, +y down, +z forward (= OpenGL axes with y and z negated).

Orbit angles (`orbit_cam2head`), all in degrees, about the head centre:

- yaw > 0 moves the camera toward head +x (the subject's LEFT-hand side, image right in the frontal
  view); the face then appears turned toward image left. yaw is a right-handed rotation about head +y.
- pitch > 0 moves the camera up (toward head +y): it looks down at the head.
- roll > 0 turns the camera counter-clockwise about its viewing axis (right-handed about camera +z), so
  the picture content turns clockwise.

cam2head = [Ry(yaw) Rx(-pitch) Rz(roll) | Ry(yaw) Rx(-pitch) (0, 0, radius)].

Intrinsics are (fx, fy, cx, cy) in pixels with pixel centres at +0.5 and row 0 at the top, so the image
centre is (W/2, H/2). The FOV used everywhere is the VERTICAL field of view.

Note on EG3D: EG3D stores normalised intrinsics with focal 4.2634 and names the canonical FOV 18.837 deg,
but its `FOV_to_intrinsics` divides by sqrt(2): the true vertical FOV of those intrinsics is 13.37 deg.
`CANONICAL_FOV_DEG` follows this project's contract (18.837 deg vertical); `EG3D_FOCAL` is provided for
reading EG3D camera files exactly.
"""

from __future__ import annotations

import math

import numpy as np

CANONICAL_RADIUS = 2.7
CANONICAL_FOV_DEG = 18.837
INTEROCULAR = 0.2  # head units between the two eye centres (mean of each eye's corners)
EG3D_FOCAL = 4.2634  # EG3D's normalised focal length (fx / width) of FFHQ cameras

# OpenGL <-> OpenCV camera axes (its own inverse).
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])

# Change of basis: head coordinates of a vector given in Blender head-anchor local coordinates.
_HEAD_FROM_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
# DPR coordinates of a vector given in head (or cam) coordinates: (x, -z, y).
_DPR_FROM_HEAD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


# --------------------------------------------------------------------------------------------- rotations

def rot_x(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by `deg` degrees about +x."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by `deg` degrees about +y."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    """(3, 3) right-handed rotation by `deg` degrees about +z."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> float:
    """Angle in degrees of the relative rotation between two (3, 3) rotations."""
    r = np.asarray(r_a, dtype=np.float64)[:3, :3].T @ np.asarray(r_b, dtype=np.float64)[:3, :3]
    return math.degrees(math.acos(float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation vector (3,) in radians (axis * angle) -> (3, 3) rotation."""
    rv = np.asarray(rv, dtype=np.float64)
    a = float(np.linalg.norm(rv))
    if a < 1e-12:
        return np.eye(3)
    k = rv / a
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * (kx @ kx)


def matrix_to_rotvec(r: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> rotation vector (3,) in radians (inverse of `rotvec_to_matrix`)."""
    r = np.asarray(r, dtype=np.float64)
    c = float(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    a = math.acos(c)
    if a < 1e-9:
        return np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / 2.0
    if a > math.pi - 1e-6:
        # axis from the symmetric part: R = 2 k k^T - I
        m = (r + np.eye(3)) / 2.0
        k = m[int(np.argmax(np.diag(m)))]
        k = k / np.linalg.norm(k)
        return k * a
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2.0 * math.sin(a))
    return w * a


def orthonormalize(r: np.ndarray) -> np.ndarray:
    """Nearest rotation (det +1) to a (3, 3) matrix, by SVD."""
    u, _, vt = np.linalg.svd(np.asarray(r, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


# --------------------------------------------------------------------------------------------- views

def orbit_cam2head(yaw_deg: float, pitch_deg: float, roll_deg: float = 0.0,
                   radius: float = CANONICAL_RADIUS) -> np.ndarray:
    """Camera on a sphere of `radius` head units around the head centre, looking at it -> cam2head (4, 4).

    yaw 0, pitch 0, roll 0 is the frontal camera at head (0, 0, radius) with camera axes = head axes.
    Signs: see the module docstring (yaw > 0 toward head +x, pitch > 0 camera above the head).
    """
    rot = rot_y(yaw_deg) @ rot_x(-pitch_deg)
    m = np.eye(4)
    m[:3, :3] = rot @ rot_z(roll_deg)
    m[:3, 3] = rot @ np.array([0.0, 0.0, float(radius)])
    return m


def cam2head_to_yaw_pitch_roll(m: np.ndarray) -> tuple[float, float, float]:
    """Inverse of `orbit_cam2head` for the rotation part: (4, 4) or (3, 3) -> (yaw, pitch, roll) degrees.

    Uses only the camera orientation (the viewing axis and the up vector), not where the camera is.
    """
    r = np.asarray(m, dtype=np.float64)[:3, :3]
    back = r[:, 2]  # camera +z (toward the viewer) in head space = Ry(yaw) Rx(-pitch) e_z
    pitch = math.degrees(math.asin(float(np.clip(back[1], -1.0, 1.0))))
    yaw = math.degrees(math.atan2(back[0], back[2]))
    rz = (rot_y(yaw) @ rot_x(-pitch)).T @ r
    roll = math.degrees(math.atan2(rz[1, 0], rz[0, 0]))
    return yaw, pitch, roll


def look_at(eye: np.ndarray, target: np.ndarray = (0.0, 0.0, 0.0), up: np.ndarray = (0.0, 1.0, 0.0)
            ) -> np.ndarray:
    """OpenGL camera at `eye` looking at `target` with `up` roughly up -> cam2world (4, 4)."""
    eye = np.asarray(eye, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, eye
    return m


def canonical_cam2head() -> np.ndarray:
    """The canonical (EG3D "tri-plane") view: frontal, radius 2.7, looking at the head centre -> (4, 4)."""
    return orbit_cam2head(0.0, 0.0, 0.0, CANONICAL_RADIUS)


def eg3d_cam2world_to_cam2head(m: np.ndarray) -> np.ndarray:
    """An EG3D camera (cam2world 4x4 with OpenCV camera axes, or its 25-number row) -> cam2head (4, 4).

    EG3D's world has +x image right, +y up, +z out of the face, which is head space; only the camera axes
    change (OpenCV -> OpenGL).
    """
    a = np.asarray(m, dtype=np.float64).reshape(-1)
    return a[:16].reshape(4, 4) @ GL_FROM_CV


def invert_pose(m: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform (rotation + translation)."""
    m = np.asarray(m, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = m[:3, :3].T
    out[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return out


# --------------------------------------------------------------------------------------------- intrinsics

def intrinsics_from_fov(fov_deg: float, width: int, height: int) -> tuple[float, float, float, float]:
    """Vertical FOV (degrees) and image size (pixels) -> (fx, fy, cx, cy) pixels, square pixels, centred."""
    fy = 0.5 * float(height) / math.tan(math.radians(fov_deg) / 2.0)
    return fy, fy, 0.5 * float(width), 0.5 * float(height)


def fov_from_intrinsics(fy: float, height: int) -> float:
    """Focal length fy and image height (pixels) -> vertical FOV in degrees."""
    return math.degrees(2.0 * math.atan(0.5 * float(height) / float(fy)))


def k_matrix(intr: tuple[float, float, float, float] | np.ndarray) -> np.ndarray:
    """(fx, fy, cx, cy) or a (3, 3) matrix -> (3, 3) K."""
    a = np.asarray(intr, dtype=np.float64)
    if a.shape == (3, 3):
        return a
    fx, fy, cx, cy = a.reshape(4)
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def project(points_cam: np.ndarray, k: np.ndarray | tuple) -> np.ndarray:
    """Cam-space points (..., 3) (OpenGL, z < 0 in front) -> pixel coordinates (..., 2) (x right, y down).

    k: (3, 3) or (fx, fy, cx, cy). u = cx + fx x / -z, v = cy - fy y / -z.
    """
    km = k_matrix(k)
    p = np.asarray(points_cam, dtype=np.float64)
    d = -p[..., 2]
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    u = km[0, 2] + km[0, 0] * p[..., 0] / d
    v = km[1, 2] - km[1, 1] * p[..., 1] / d
    return np.stack([u, v], axis=-1)


def unproject(pixels: np.ndarray, depth: np.ndarray, k: np.ndarray | tuple) -> np.ndarray:
    """Pixels (..., 2) and depth (...) = -z -> cam-space points (..., 3); inverse of `project`."""
    km = k_matrix(k)
    px = np.asarray(pixels, dtype=np.float64)
    d = np.asarray(depth, dtype=np.float64)
    x = (px[..., 0] - km[0, 2]) / km[0, 0] * d
    y = -(px[..., 1] - km[1, 2]) / km[1, 1] * d
    return np.stack([x, y, -d], axis=-1)


def transform_points(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) transform to points (..., 3)."""
    m = np.asarray(m, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


# --------------------------------------------------------------------------------------------- frames

def head_to_dpr(v: np.ndarray) -> np.ndarray:
    """Head-space vectors (..., 3) -> DPR frame (X, Y, Z) = (x, -z, y) (frontal view)."""
    v = np.asarray(v)
    return np.stack([v[..., 0], -v[..., 2], v[..., 1]], axis=-1)


def dpr_to_head(v: np.ndarray) -> np.ndarray:
    """DPR frame (..., 3) -> head space (x, y, z) = (X, Z, -Y); inverse of `head_to_dpr`."""
    v = np.asarray(v)
    return np.stack([v[..., 0], v[..., 2], -v[..., 1]], axis=-1)


def cam_to_dpr(v: np.ndarray) -> np.ndarray:
    """Cam-space vectors (..., 3) -> the camera's DPR frame (x, -z, y)."""
    return head_to_dpr(v)


def dpr_to_cam(v: np.ndarray) -> np.ndarray:
    """The camera's DPR frame (..., 3) -> cam space; inverse of `cam_to_dpr`."""
    return dpr_to_head(v)


def _change_basis(m_or_v: np.ndarray, a: np.ndarray) -> np.ndarray:
    x = np.asarray(m_or_v, dtype=np.float64)
    if x.shape == (4, 4):
        b = np.eye(4)
        b[:3, :3] = a
        return b @ x
    return x @ a.T


def blender_local_to_head(m_or_v: np.ndarray) -> np.ndarray:
    """Blender head-anchor local coordinates -> head space: (x, y, z) = (bx, bz, -by).

    Accepts vectors/points (..., 3) or a (4, 4) pose expressed in the anchor's local frame (e.g. the scene
    camera's matrix relative to the anchor, `anchor.matrix_world.inverted() @ cam.matrix_world`), which
    becomes cam2head (Blender cameras already use OpenGL camera axes).
    """
    return _change_basis(m_or_v, _HEAD_FROM_BLENDER)


def head_to_blender_local(m_or_v: np.ndarray) -> np.ndarray:
    """Head space -> Blender head-anchor local coordinates: (bx, by, bz) = (x, -z, y).

    Vectors (..., 3) or a (4, 4) pose (cam2head -> camera matrix relative to the anchor).
    """
    return _change_basis(m_or_v, _HEAD_FROM_BLENDER.T)
