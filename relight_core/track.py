"""Per-frame face tracking, landmark smoothing, head pose and person matte.

Pipeline per frame (all small data; frames are not kept):

1. MediaPipe Face Mesh (legacy `solutions` API of mediapipe 0.10.21, `refine_landmarks=True` -> 478
   landmarks incl. irises) on the 8-bit sRGB frame; video mode for clips, static mode for single images.
   With several faces the largest (landmark bounding box) is kept and `face_count` records how many.
2. One-Euro smoothing of the landmarks (`OneEuroParams`); `analyze_footage` runs it forward and backward
   over the whole clip (zero lag), `FaceTracker.process` runs it causally for streaming use.
3. Head pose `cam_from_head` (p_cam = R p_head + t, OpenGL cam axes) by PnP of mostly rigid landmarks
   (forehead, nose bridge, eye corners, cheekbones; no mouth, jaw or brows) against `neutral_face()`, a
   neutral face shape in head units that this module derives at run time from MediaPipe's own output on
   scikit-image's astronaut portrait (symmetrised, put into head axes, inter-ocular 0.2 units). The
   intrinsics come from an assumed vertical FOV (`DEFAULT_FOV_DEG` = 30 deg, a 50 mm lens on full frame)
   unless given. The rigid motion is smoothed again (One-Euro on rotation vector and translation).
4. Person matte from MediaPipe selfie segmentation (general model), smoothed over time with a [1, 2, 1]/4
   filter, stored as uint8 with the longer side `MATTE_SIZE` px.

Frames with no face are flagged (`valid` False) and their landmarks and pose are interpolated from the
nearest tracked neighbours; a clip with no face at all raises UserError.

Landmark units (Analysis.landmarks): x, y in pixels of the analysed frame (x right, y down, pixel centres
at +0.5), z is MediaPipe's relative depth (smaller = nearer the camera) scaled by the frame width, i.e. in
pixels too, times MEDIAPIPE_Z_SCALE.

MEDIAPIPE_Z_SCALE: MediaPipe's z is shallower than the faces it tracks, and a face that is too shallow
reads as turned too far by PnP on real footage and looks turned too little when re-projected. Images
alone cannot settle a face's depth scale (for small turns, a deeper face turned less projects the same
as a shallower one turned more), so it was calibrated on two independent references. (1) On
pr_trudeau_frames our yaw over 100 frames against the EG3D cameras (a metric 3DMM fit) has a slope of
1.16 with z as MediaPipe gives it, 1.08 with 1.08 x z, 1.02 with 1.15 x z. (2) Renders of the fixture
clips turned by +-20 deg yaw and +-12 deg pitch, re-tracked: MediaPipe reads the turn x 0.92 (yaw) and
x 0.91 (pitch) on average over the six subjects with z as given, x 1.08 / 1.06 with 1.15 x z, and
x 1.02 / 1.00 with 1.08 x z. Per person the yaw gain still spreads from 0.90 (the astronaut) to 1.14
(lp_d0): one scale cannot fit every face (0.88 to 1.13, x 1.01 on average, since the novel-view
resampling of `d66a885`; it falls as MediaPipe reads a face deeper, see the README).
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from relight_core import camera as cam
from relight_core.errors import UserError
from relight_core.face_model import (
    N_LANDMARKS,
    RIGID_LANDMARKS,
    face_size_px,
    landmark_array,
    lift_landmarks,
    mediapipe_module,
    neutral_face,
    procrustes,
    quiet_native_stderr,
)

DEFAULT_FOV_DEG = 30.0
MATTE_SIZE = 256
HEAD_MATTE_SIZE = 160  # px: side of the stored matte of the head crop (see `head_box`)
HEAD_CROP = 3.0        # head crop side / the larger side of the landmarks' bounding box
HEAD_CROP_MAX = 0.75   # the head is segmented again only when its crop is below this x the longer side
ANALYSIS_VERSION = 2  # 2: landmark z scaled by MEDIAPIPE_Z_SCALE
MAX_FACES = 4




# --------------------------------------------------------------------------------------------- smoothing

@dataclass(frozen=True)
class OneEuroParams:
    """One-Euro filter settings (Casiez et al. 2012).

    min_cutoff: cutoff (Hz) at rest; lower = smoother still head, more lag.
    beta: speed coefficient; the cutoff grows by beta * speed, speed in face widths (inter-ocular
          distances) per second, so the setting does not depend on the image size.
    d_cutoff: cutoff (Hz) of the speed estimate.
    """

    min_cutoff: float = 1.0
    beta: float = 1.0
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over arrays of shape (K, D): K items (landmarks) with D coordinates each.

    The speed that opens the cutoff is per item (norm over D), divided by `scale` (e.g. the face size in
    pixels), so that beta is in scale units per second. `reset()` forgets the state.
    """

    def __init__(self, params: OneEuroParams = OneEuroParams(), fps: float = 25.0) -> None:
        self.params, self.dt = params, 1.0 / max(float(fps), 1e-3)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Filter one sample x (K, D) -> (K, D) float64."""
        x = np.asarray(x, dtype=np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros(x.shape[:-1] + (1,))
            return x.copy()
        p = self.params
        speed = np.linalg.norm(x - self._x, axis=-1, keepdims=True) / self.dt / max(scale, 1e-9)
        a_d = _alpha(p.d_cutoff, self.dt)
        self._dx = a_d * speed + (1.0 - a_d) * self._dx
        a = _alpha(p.min_cutoff + p.beta * self._dx, self.dt)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()


def smooth_sequence(x: np.ndarray, params: OneEuroParams, fps: float, scale: np.ndarray | float = 1.0,
                    zero_phase: bool = True, out: np.ndarray | None = None) -> np.ndarray:
    """One-Euro over a sequence x (N, K, D) -> (N, K, D); forward then backward when zero_phase (no lag).

    scale: per-frame (N,) or constant normaliser of the speed (see `OneEuroFilter`). out: an (N, K, D)
    array to write into (e.g. float32, or a disk-backed map for a long clip), else a new float64 array;
    only one frame of x is converted at a time, so memory does not grow with N beyond `out`.
    """
    n = len(x)
    if out is None:
        out = np.empty(np.shape(x), dtype=np.float64)
    sc = np.broadcast_to(np.asarray(scale, dtype=np.float64), (n,))
    f = OneEuroFilter(params, fps)
    for i in range(n):
        out[i] = f(x[i], float(sc[i]))
    if not zero_phase or n < 2:
        return out
    f.reset()
    for i in range(n - 1, -1, -1):
        # average of a causal and an anti-causal pass: lags cancel to first order
        out[i] = 0.5 * (out[i] + f(x[i], float(sc[i])))
    return out


# --------------------------------------------------------------------------------------------- mediapipe





def to_uint8_srgb(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) float linear (or uint8 sRGB, returned as is) -> contiguous uint8 sRGB for MediaPipe."""
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb[..., :3])
    from relight_core import io

    return np.ascontiguousarray(io.encode_srgb8(np.asarray(rgb, dtype=np.float32)[..., :3]))






def _bbox_area(lm: np.ndarray) -> float:
    span = lm[:, :2].max(axis=0) - lm[:, :2].min(axis=0)
    return float(span[0] * span[1])


# --------------------------------------------------------------------------------------------- neutral face











# --------------------------------------------------------------------------------------------- pose

def solve_pose(landmarks: np.ndarray, k: np.ndarray, previous: np.ndarray | None = None,
               indices: Iterable[int] = RIGID_LANDMARKS, shape: np.ndarray | None = None
               ) -> tuple[np.ndarray, float]:
    """Head pose from one face's landmarks -> (cam_from_head (4, 4), RMS reprojection error in px).

    landmarks: (478, 2|3) pixels; k: (3, 3) intrinsics; previous: a cam_from_head to start from.
    PnP of the rigid landmarks (x, y only) against `shape` (478, 3) head units, default `neutral_face()`.
    """
    import cv2

    idx = list(indices)
    model = (neutral_face() if shape is None else np.asarray(shape))[idx].astype(np.float64)
    img = np.ascontiguousarray(np.asarray(landmarks, dtype=np.float64)[idx, :2])
    flip = np.diag([1.0, -1.0, -1.0])
    if previous is not None:
        r0 = flip @ np.asarray(previous)[:3, :3]
        t0 = flip @ np.asarray(previous)[:3, 3]
        rvec, tvec = cv2.Rodrigues(r0)[0], t0.reshape(3, 1).copy()
        ok, rvec, tvec = cv2.solvePnP(model, img, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    else:
        ok, rvec, tvec = cv2.solvePnP(model, img, k, None, flags=cv2.SOLVEPNP_EPNP)
        ok, rvec, tvec = cv2.solvePnP(model, img, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
    r = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    if t[2] < 0:  # behind the camera: mirror solution of a degenerate start; retry from a frontal guess
        rvec = cv2.Rodrigues(np.diag([1.0, -1.0, -1.0]))[0]
        tvec = np.array([[0.0], [0.0], [k[0, 0] * cam.INTEROCULAR / max(face_size_px(landmarks), 1.0)]])
        ok, rvec, tvec = cv2.solvePnP(model, img, k, None, rvec, tvec, useExtrinsicGuess=True,
                                      flags=cv2.SOLVEPNP_ITERATIVE)
        r, t = cv2.Rodrigues(rvec)[0], tvec.reshape(3)
    proj = cv2.projectPoints(model, cv2.Rodrigues(r)[0], t, k, None)[0].reshape(-1, 2)
    err = float(np.sqrt(np.mean(np.sum((proj - img) ** 2, axis=1))))
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = flip @ r, flip @ t
    return m, err




def adapt_face_shape(landmarks: np.ndarray, poses: np.ndarray, k: np.ndarray, valid: np.ndarray,
                     max_frames: int = 200) -> np.ndarray:
    """This clip's own face shape (478, 3) in head space: the tracked landmarks of valid frames lifted to
    3D, taken into head space by their first-pass poses, averaged (median), then put onto the neutral
    face's frame and scale by a similarity fit of the rigid landmarks (so head space keeps its axes,
    origin and inter-ocular scale). Used for a second, better-fitting pose pass."""
    rows = np.flatnonzero(valid)
    if len(rows) > max_frames:
        rows = rows[np.linspace(0, len(rows) - 1, max_frames).round().astype(int)]
    heads = [cam.transform_points(cam.invert_pose(poses[i]), lift_landmarks(landmarks[i], poses[i], k))
             for i in rows]
    shape = np.median(np.stack(heads), axis=0)
    rigid = list(RIGID_LANDMARKS)
    s, r, t = procrustes(shape[rigid], neutral_face()[rigid], scale=True)
    return s * shape @ r.T + t


def _solve_all(lm: np.ndarray, k: np.ndarray, shape: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    poses = np.zeros((len(lm), 4, 4))
    errs = np.zeros(len(lm), dtype=np.float32)
    prev = None
    for i in range(len(lm)):
        poses[i], errs[i] = solve_pose(lm[i], k, prev, shape=shape)
        prev = poses[i]
    return poses, errs


def smooth_poses(poses: np.ndarray, params: OneEuroParams, fps: float) -> np.ndarray:
    """Zero-phase One-Euro over a pose sequence (N, 4, 4) -> (N, 4, 4) (rotation vectors relative to the
    mean rotation, and translations; speeds in radians and head units per second)."""
    poses = np.asarray(poses, dtype=np.float64)
    if len(poses) < 2:
        return poses.copy()
    ref = cam.orthonormalize(poses[:, :3, :3].mean(axis=0))
    rv = np.stack([cam.matrix_to_rotvec(ref.T @ p[:3, :3]) for p in poses])
    x = np.stack([rv * 5.0, poses[:, :3, 3]], axis=1)  # 5: 0.2 rad ~ a face width of motion
    xs = smooth_sequence(x, params, fps, scale=cam.INTEROCULAR)
    out = poses.copy()
    for i in range(len(poses)):
        out[i, :3, :3] = ref @ cam.rotvec_to_matrix(xs[i, 0] / 5.0)
        out[i, :3, 3] = xs[i, 1]
    return out


# --------------------------------------------------------------------------------------------- tracker

@dataclass
class FrameTrack:
    """One tracked frame: landmarks (478, 3) px (smoothed), raw_landmarks (478, 3) px, face_count,
    cam_from_head (4, 4), reprojection error (px) of the pose fit."""

    landmarks: np.ndarray
    raw_landmarks: np.ndarray
    face_count: int
    cam_from_head: np.ndarray
    pose_error_px: float


class FaceTracker:
    """MediaPipe Face Mesh + causal One-Euro smoothing + head pose, one frame at a time.

    static: True for unrelated images (static mode), False for a clip (video mode: tracks between frames).
    smoothing: One-Euro parameters, or None for raw landmarks. fov_deg: vertical FOV for the intrinsics.
    `reset()` re-creates the MediaPipe solution (its graph needs increasing timestamps) and the filters.
    """

    def __init__(self, static: bool = False, smoothing: OneEuroParams | None = OneEuroParams(),
                 fov_deg: float = DEFAULT_FOV_DEG, fps: float = 25.0, max_faces: int = MAX_FACES) -> None:
        self.static, self.smoothing, self.fov_deg, self.fps = static, smoothing, fov_deg, fps
        self.max_faces = max_faces
        self._mesh = None
        self.reset()

    def reset(self) -> None:
        self.close()
        mp = mediapipe_module()
        with quiet_native_stderr():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=self.static, refine_landmarks=True, max_num_faces=self.max_faces,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)
            # the graph opens its models on its own threads; a blank frame (no face: the next frame runs
            # detection as after a fresh start) waits for that, so their messages fall in this block
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self._started = False
        self._filter = OneEuroFilter(self.smoothing, self.fps) if self.smoothing else None
        self._pose: np.ndarray | None = None

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def detect(self, rgb: np.ndarray) -> tuple[np.ndarray | None, int]:
        """Raw landmarks (478, 3) px of the largest face (or None) and the number of faces found."""
        img = to_uint8_srgb(rgb)
        h, w = img.shape[:2]
        if self._started:
            res = self._mesh.process(img)
        else:  # the graph's start-up messages come with its first frame
            with quiet_native_stderr():
                res = self._mesh.process(img)
            self._started = True
        faces = res.multi_face_landmarks or []
        if not faces:
            return None, 0
        arrays = [landmark_array(f, w, h) for f in faces]
        best = max(arrays, key=_bbox_area)
        return best, len(arrays)

    def process(self, rgb: np.ndarray) -> FrameTrack | None:
        """One frame (H, W, 3) linear float or uint8 sRGB -> FrameTrack, or None when no face is found."""
        raw, count = self.detect(rgb)
        if raw is None:
            return None
        h, w = rgb.shape[:2]
        lm = raw
        if self._filter is not None:
            lm = self._filter(raw, face_size_px(raw))
        k = cam.k_matrix(cam.intrinsics_from_fov(self.fov_deg, w, h))
        pose, err = solve_pose(lm, k, self._pose)
        self._pose = pose
        return FrameTrack(lm.astype(np.float32), raw.astype(np.float32), count, pose, err)


class PersonMatte:
    """MediaPipe selfie segmentation -> soft person matte (h, w) float32 0..1 at the model's output size.

    model_selection 0 = general model (256x256), 1 = landscape model (faster). Stateless apart from the
    MediaPipe graph; temporal smoothing is done over the stored sequence (`analyze_footage`).
    """

    def __init__(self, model_selection: int = 0) -> None:
        self.model_selection = model_selection
        self._seg = None
        self.reset()

    def reset(self) -> None:
        self.close()
        seg = mediapipe_module().solutions.selfie_segmentation
        with quiet_native_stderr():
            self._seg = seg.SelfieSegmentation(model_selection=self.model_selection)
            self._seg.process(np.zeros((64, 64, 3), np.uint8))  # waits for the graph start (see FaceTracker)
        self._started = False

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def process(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) linear float or uint8 -> matte float32 0..1, (H, W) or resized to size=(h, w)."""
        import cv2

        img = to_uint8_srgb(rgb)
        if self._started:
            m = self._seg.process(img).segmentation_mask
        else:  # the graph's start-up messages come with its first frame
            with quiet_native_stderr():
                m = self._seg.process(img).segmentation_mask
            self._started = True
        m = np.clip(np.asarray(m, dtype=np.float32), 0.0, 1.0)
        if size is not None and m.shape != tuple(size):
            m = cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return m


# --------------------------------------------------------------------------------------------- analysis

class ArrayFootage:
    """In-memory frames as footage for `analyze_footage`: a list of (H, W, 3) linear float or uint8 sRGB
    images of one size (uint8 frames are decoded to linear on iteration)."""

    def __init__(self, frames: list[np.ndarray], fps: float = 25.0, name: str = "frames") -> None:
        if not frames:
            raise UserError(f"{name} holds no frames; give at least one image.")
        self.frames, self.fps, self.name = list(frames), float(fps), name
        self.height, self.width = self.frames[0].shape[:2]
        self.frame_indices = list(range(len(self.frames)))
        self.kind = "image" if len(self.frames) == 1 else "sequence"

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def read(self, i: int) -> np.ndarray:
        f = self.frames[i]
        if f.dtype == np.uint8:
            from relight_core import io

            return io.decode_srgb8(f[..., :3])
        return np.asarray(f, dtype=np.float32)

    def __iter__(self):
        for i in range(len(self.frames)):
            yield i, self.read(i)


TRIM_EVERY = 100  # frames between `release_free_heap` calls while tracking


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    except OSError:
        return None


def release_free_heap() -> bool:
    """Hand freed heap memory back to the OS (glibc `malloc_trim`) -> True when done.

    Tracking allocates and frees frame-sized buffers of several sizes on several threads (MediaPipe's and
    ours), and glibc may keep freed memory in its arenas; trimming every `TRIM_EVERY` frames (~1 ms) keeps
    that from adding up over a long clip. A precaution: the growth of ~0.1 MB a frame measured before was
    the per-frame lists that `FrameStore` replaced."""
    libc = _libc()
    if libc is None or not hasattr(libc, "malloc_trim"):
        return False
    libc.malloc_trim(0)
    return True


PAGE_RELEASE_EVERY = 256  # frames of a disk-backed store between `release_pages` calls


def release_pages(*arrays: np.ndarray | None) -> None:
    """Drop the resident pages of disk-backed arrays (`FrameStore`'s np.memmap) from this process: the
    data stays in its file (and the OS's cache), so a long clip's mattes read once are not counted
    against the process (without this, reading every frame's matte once keeps them all resident)."""
    import mmap

    for a in arrays:
        m = getattr(a, "_mmap", None)
        if m is not None and hasattr(m, "madvise"):
            m.madvise(mmap.MADV_DONTNEED)


class FrameStore:
    """Per-frame arrays of one shape and dtype kept in an anonymous temporary file instead of memory, so
    that tracking a long clip does not grow the process (`analyze_footage`): `append` one frame at a
    time, then `array()` maps them back (np.memmap; pages are read on use and can be dropped by the OS).
    The file has no name (`tempfile.TemporaryFile`): it is gone when the last map closes, even after a
    kill. `empty(n)` makes a writable map of n frames (for a filtered copy)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        import tempfile

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.n = 0
        self._file = tempfile.TemporaryFile(prefix="relight-track-")

    def append(self, frame: np.ndarray) -> None:
        """Add one frame (shape `self.shape`)."""
        try:
            self._file.write(np.ascontiguousarray(frame, dtype=self.dtype).reshape(self.shape).tobytes())
        except OSError as exc:
            raise _temp_full(exc) from None
        self.n += 1

    def array(self) -> np.ndarray:
        """The frames appended so far as an (n, *shape) array backed by the file (writable)."""
        self._file.flush()
        if self.n == 0:
            return np.zeros((0, *self.shape), self.dtype)
        return np.memmap(self._file, dtype=self.dtype, mode="r+", shape=(self.n, *self.shape))

    @classmethod
    def empty(cls, n: int, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A writable (n, *shape) array of zeros backed by a new anonymous file."""
        store = cls(shape, dtype)
        try:
            store._file.truncate(n * int(np.prod(shape, dtype=np.int64)) * store.dtype.itemsize)
        except OSError as exc:
            raise _temp_full(exc) from None
        store.n = n
        return store.array()


def _temp_full(exc: OSError) -> UserError:
    import tempfile

    return UserError(f"Could not write the tracking data to the temporary folder {tempfile.gettempdir()} "
                     f"({exc.strerror or type(exc).__name__}); free space there or set TMPDIR to a disk "
                     "that has some.")


@dataclass
class Analysis:
    """The per-frame track of a clip (see module docstring for units).

    landmarks (N, 478, 3) float32 smoothed px; landmarks_raw (N, 478, 3) float32 as MediaPipe gave them
    (zeros where no face); valid (N,) bool; cam_from_head (N, 4, 4) float64; K (3, 3) at (height, width);
    matte (N, h, w) uint8 at reduced resolution; face_count (N,) int; pose_error_px (N,) float32;
    face_shape (478, 3) head units: the face shape the poses were fitted to (None = `neutral_face()`);
    head_matte (N, s, s) uint8 the matte of each frame's head crop, head_box (N, 4) int32 that crop
    (x0, y0, x1, y1) in px, all -1 where the frame has none (None: no frame has one; see `head_box`).
    source: what was analysed (JSON-able): "frames" [first, stop) asked for (a truncated movie yields
    fewer rows), "size" (width, height), "fov_deg", "engine" version, and where known the input's
    "fingerprint" (`fingerprint.py`); a cached analysis is reused only when these match.
    """

    width: int
    height: int
    fps: float
    frame_indices: np.ndarray
    landmarks: np.ndarray
    landmarks_raw: np.ndarray
    valid: np.ndarray
    cam_from_head: np.ndarray
    K: np.ndarray
    fov_deg: float
    matte: np.ndarray
    face_count: np.ndarray
    pose_error_px: np.ndarray
    warnings: list[str] = field(default_factory=list)
    name: str = ""
    version: int = ANALYSIS_VERSION
    face_shape: np.ndarray | None = None
    head_matte: np.ndarray | None = None
    head_box: np.ndarray | None = None
    source: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(len(self.valid))

    def matte_at(self, i: int, height: int, width: int) -> np.ndarray:
        """The person matte of frame i resized to (height, width) float32 0..1 (bilinear)."""
        import cv2

        m = self.matte[i].astype(np.float32) * (1.0 / 255.0)
        if m.shape != (height, width):
            m = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
        if self.head_box is not None and self.head_box[i, 2] > self.head_box[i, 0]:
            _blend_head_matte(m, self.head_matte[i], self.head_box[i], self.width, self.height)
        return m

    def landmarks_at(self, i: int, height: int, width: int) -> np.ndarray:
        """Frame i's smoothed landmarks (478, 3) px scaled to an image of (height, width)."""
        sx, sy = width / float(self.width), height / float(self.height)
        return self.landmarks[i].astype(np.float64) * np.array([sx, sy, sx])

    def K_at(self, height: int, width: int) -> np.ndarray:
        """The (3, 3) intrinsics scaled to an image of (height, width)."""
        s = np.diag([width / float(self.width), height / float(self.height), 1.0])
        return s @ np.asarray(self.K, dtype=np.float64)

    def save(self, path: str) -> None:
        """Write a compressed .npz (versioned; `Analysis.load` reads it). Arrays are streamed into the zip
        in blocks (`np.lib.format.write_array`), so a disk-backed analysis is never loaded whole; a failed
        write (disk full) raises OSError with the file closed."""
        import zipfile

        meta = {"version": self.version, "width": self.width, "height": self.height, "fps": self.fps,
                "fov_deg": self.fov_deg, "warnings": list(self.warnings), "name": self.name,
                "source": self.source}
        arrays = {
            "meta": np.array(json.dumps(meta)), "frame_indices": np.asarray(self.frame_indices, np.int64),
            "landmarks": self.landmarks, "landmarks_raw": self.landmarks_raw,
            "valid": np.asarray(self.valid, bool),
            "cam_from_head": self.cam_from_head.astype(np.float64), "K": np.asarray(self.K, np.float64),
            "matte": self.matte, "face_count": self.face_count.astype(np.int16),
            "pose_error_px": self.pose_error_px.astype(np.float32),
            "face_shape": np.asarray(neutral_face() if self.face_shape is None else self.face_shape,
                                     np.float64)}
        if self.head_box is not None:
            arrays.update(head_matte=self.head_matte, head_box=self.head_box.astype(np.int32))
        dtypes = {"landmarks": np.float32, "landmarks_raw": np.float32, "matte": np.uint8,
                  "head_matte": np.uint8}
        with open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name, value in arrays.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    if name in PER_FRAME_ON_DISK:
                        _write_rows(member, value, dtypes[name])
                        continue
                    arr = np.asarray(value)
                    np.lib.format.write_array(member, arr.astype(dtypes.get(name, arr.dtype), copy=False),
                                              allow_pickle=False)

    @classmethod
    def load(cls, path: str) -> Analysis:
        """Read an analysis written by `save`; UserError when the file is not one or from another version."""
        import zipfile

        try:
            with zipfile.ZipFile(path) as zf:
                arrays = {info.filename[:-4]: _read_member(zf, info) for info in zf.infolist()
                          if info.filename.endswith(".npy")}
            meta = json.loads(str(arrays.pop("meta")))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise UserError(f"{path} is not a readable analysis file ({type(exc).__name__}); run "
                            "`relight-core analyze` again.") from None
        if meta.get("version") != ANALYSIS_VERSION:
            raise UserError(f"{path} is an analysis of version {meta.get('version')}, this engine reads "
                            f"version {ANALYSIS_VERSION}; run `relight-core analyze` again.")
        return cls(width=int(meta["width"]), height=int(meta["height"]), fps=float(meta["fps"]),
                   fov_deg=float(meta["fov_deg"]), warnings=list(meta["warnings"]), name=meta.get("name", ""),
                   source=dict(meta.get("source") or {}), **arrays)


PER_FRAME_ON_DISK = ("matte", "head_matte", "landmarks", "landmarks_raw")  # `_read_member` streams these


def _write_rows(member, value: np.ndarray, dtype) -> None:
    """Write a per-frame array (N, ...) as .npy into a zip member `PAGE_RELEASE_EVERY` frames at a time,
    dropping a disk-backed array's pages after each block (`release_pages`): saving a long clip's
    mattes does not make them all resident."""
    shape = tuple(np.shape(value))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_2_0(member, header)
    for i in range(0, shape[0], PAGE_RELEASE_EVERY):
        member.write(np.ascontiguousarray(value[i:i + PAGE_RELEASE_EVERY], dtype=dtype).tobytes())
        release_pages(value)


def _read_member(zf, info) -> np.ndarray:
    """One .npy member of an analysis zip -> array. The large per-frame arrays (`PER_FRAME_ON_DISK`) are
    decompressed frame by frame into a disk-backed `FrameStore.empty`, so loading the analysis of a long
    clip does not hold its mattes in memory; the others are read whole."""
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject or fortran:
            raise ValueError("unexpected array layout")
        if info.filename[:-4] in PER_FRAME_ON_DISK and len(shape) >= 2 and shape[0] > 0:
            out = FrameStore.empty(shape[0], shape[1:], dtype)
            row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            for i in range(shape[0]):
                out[i] = np.frombuffer(_read_exactly(f, row), dtype).reshape(shape[1:])
                if i % PAGE_RELEASE_EVERY == 0:
                    release_pages(out)
            release_pages(out)
            return out
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(_read_exactly(f, count * dtype.itemsize), dtype, count).reshape(shape).copy()


def _read_exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("the analysis file ends early")
    return data


def _interpolate_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows of values (N, ...) where valid is False by linear interpolation between the nearest
    valid rows (held constant beyond the ends)."""
    out = np.array(values, dtype=np.float64, copy=True)
    good = np.flatnonzero(valid)
    bad = np.flatnonzero(~valid)
    if len(bad) == 0 or len(good) == 0:
        return out
    flat = out.reshape(len(out), -1)
    for j in range(flat.shape[1]):
        flat[bad, j] = np.interp(bad, good, flat[good, j])
    return flat.reshape(out.shape)


def _bridge_poses(poses: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Interpolate (N, 4, 4) poses on invalid frames (rotation vectors about a reference + translation)."""
    if valid.all():
        return poses
    ref = poses[np.flatnonzero(valid)[0], :3, :3]
    rv = np.stack([cam.matrix_to_rotvec(ref.T @ p[:3, :3]) for p in poses])
    rv = _interpolate_invalid(rv, valid)
    t = _interpolate_invalid(poses[:, :3, 3], valid)
    out = poses.copy()
    for i in np.flatnonzero(~valid):
        out[i] = np.eye(4)
        out[i, :3, :3] = ref @ cam.rotvec_to_matrix(rv[i])
        out[i, :3, 3] = t[i]
    return out


def _smooth_matte(matte: np.ndarray, present: np.ndarray | None = None,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Temporal [1, 2, 1] / 4 filter of a (N, h, w) uint8 matte sequence (ends replicated) -> uint8.

    present (N,) bool: the frames that have a matte (default all); a missing neighbour is replaced by
    the frame itself, and missing frames are left as they are. out: where to write (N, h, w) uint8
    (e.g. a disk-backed `FrameStore.empty`), default a new array; three frames are read at a time."""
    n = len(matte)
    if n < 3:
        return matte
    has = np.ones(n, bool) if present is None else np.asarray(present, bool)
    if out is None:
        out = np.empty(matte.shape, np.uint8)
    for i in range(n):
        if i % PAGE_RELEASE_EVERY == 0:
            release_pages(matte, out)
        m = np.asarray(matte[i])
        if not has[i]:
            out[i] = m
            continue
        a = matte[i - 1] if i > 0 and has[i - 1] else m
        c = matte[i + 1] if i < n - 1 and has[i + 1] else m
        out[i] = ((a.astype(np.uint16) + 2 * m.astype(np.uint16) + c + 2) // 4).astype(np.uint8)
    release_pages(matte, out)
    return out


def _interpolate_rows(values: np.ndarray, valid: np.ndarray) -> None:
    """`_interpolate_invalid` in place on (N, ...) rows of any float array (e.g. a disk-backed map):
    memory of a few columns, not of the clip."""
    good = np.flatnonzero(valid)
    bad = np.flatnonzero(~np.asarray(valid, bool))
    if len(bad) == 0 or len(good) == 0:
        return
    for i in bad:
        j = np.searchsorted(good, i)
        lo, hi = good[max(j - 1, 0)], good[min(j, len(good) - 1)]
        t = 0.0 if hi == lo else (i - lo) / float(hi - lo)
        values[i] = (1.0 - t) * np.asarray(values[lo], np.float64) + t * np.asarray(values[hi], np.float64)


def matte_shape(height: int, width: int, size: int = MATTE_SIZE) -> tuple[int, int]:
    """(h, w) of the stored matte: longer side `size`, aspect kept (never larger than the frame)."""
    s = min(1.0, size / max(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def head_box(landmarks: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """The head crop of one face's landmarks (478, 2|3) px in a (height, width) frame -> (x0, y0, x1, y1)
    int32 px (clipped to the frame), or None when the head is too large in the frame for a second
    segmentation to see it any finer.

    The person matte comes from a model that sees the whole frame at 256 px; where the head is small in
    the frame its outline is a few coarse pixels and background seen between jaw and hair is kept
    (it then moves with the head in a novel view). Segmenting a square crop of HEAD_CROP x the face's
    size, centred on it (hair above, neck and collar below), gives the head's outline at up to 4x the
    resolution. Only when the crop is below HEAD_CROP_MAX x the frame's longer side."""
    lm = np.asarray(landmarks, dtype=np.float64)[:, :2]
    lo, hi = lm.min(axis=0), lm.max(axis=0)
    side = HEAD_CROP * float(np.max(hi - lo))
    if side >= HEAD_CROP_MAX * max(width, height) or side < 8:
        return None
    cx, cy = (lo + hi) / 2.0
    box = np.round([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])
    box = np.clip(box, 0, [width, height, width, height]).astype(np.int32)
    return box if box[2] - box[0] >= 8 and box[3] - box[1] >= 8 else None


def _head_window(box: np.ndarray, width: int, height: int, shape: tuple[int, int],
                 feather: float = 0.15) -> np.ndarray:
    """Weight (h, w) float32 of a head matte over its crop `box` (x0, y0, x1, y1) in a (height, width)
    frame, resized to `shape`: 1 inside, falling (C1) to 0 over `feather` x the crop size towards each
    crop edge that lies inside the frame (the model is unsure where the crop cuts through the person)."""
    from relight_core.geometry import smoothstep

    h, w = shape
    ramps = []
    for n, lo_open, hi_open in ((w, box[0] > 0, box[2] < width), (h, box[1] > 0, box[3] < height)):
        u = np.arange(n, dtype=np.float32) + np.float32(0.5)
        f = np.float32(max(feather * n, 1.0))
        r = np.ones(n, np.float32)
        if lo_open:
            r = np.minimum(r, u / f)
        if hi_open:
            r = np.minimum(r, (n - u) / f)
        ramps.append(smoothstep(r))
    return ramps[1][:, None] * ramps[0][None, :]


def _blend_head_matte(matte: np.ndarray, head: np.ndarray, box: np.ndarray, width: int, height: int) -> None:
    """Blend a head crop's matte (s, s) uint8, taken at `box` in the analysed (height, width) frame, into a
    frame matte (H, W) float32 0..1 of any size, in place (`_head_window` weights)."""
    import cv2

    hh, ww = matte.shape
    sx, sy = ww / float(width), hh / float(height)
    x0, y0 = int(round(box[0] * sx)), int(round(box[1] * sy))
    x1, y1 = int(round(box[2] * sx)), int(round(box[3] * sy))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    inset = cv2.resize(head.astype(np.float32) * np.float32(1.0 / 255.0), (x1 - x0, y1 - y0),
                       interpolation=cv2.INTER_LINEAR)
    wgt = _head_window(np.array([x0, y0, x1, y1]), ww, hh, (y1 - y0, x1 - x0))
    region = matte[y0:y1, x0:x1]
    region += wgt * (inset - region)


def analyze_footage(footage, progress: Callable[..., None] | None = None, fov_deg: float | None = None,
                    smoothing: OneEuroParams | None = OneEuroParams(),
                    pose_smoothing: OneEuroParams | None = OneEuroParams(min_cutoff=0.8, beta=2.0),
                    static: bool | None = None, matte: bool = True, adapt_shape: bool = True) -> Analysis:
    """Track a whole clip -> Analysis (streams the frames; keeps only small per-frame data).

    footage: an `io.Footage` (or anything with n_frames, fps, width, height, name, frame_indices and
    iteration yielding (index, rgb linear)). progress(done, total) is called after every frame.
    fov_deg: vertical FOV for the intrinsics, default `DEFAULT_FOV_DEG`. static: MediaPipe static mode;
    default True for a single image, False for clips. adapt_shape: fit the clip's own face shape after a
    first pose pass and solve the poses again against it (`adapt_face_shape`; on pr_trudeau_frames the
    rigid-fit residual drops from 6.8 to 1.2 px). Raises UserError when no frame has a face.
    """
    fov = float(fov_deg) if fov_deg else DEFAULT_FOV_DEG
    if not 1.0 <= fov <= 170.0:
        raise UserError(f"--fov {fov} is out of range; give a vertical field of view of 1..170 degrees.")
    n_total = int(footage.n_frames)
    fps = float(getattr(footage, "fps", 25.0) or 25.0)
    if static is None:
        static = n_total == 1
    tracker = FaceTracker(static=static, smoothing=None, fov_deg=fov, fps=fps)
    seg = PersonMatte() if matte else None
    head_seg = None  # a second segmenter for head crops, started on the first frame that needs one
    w, h = int(footage.width), int(footage.height)
    mh, mw = matte_shape(h, w)
    # per-frame data goes to anonymous files, not lists: memory does not grow with the clip's length
    raw_store = FrameStore((N_LANDMARKS, 3), np.float32)
    matte_store = FrameStore((mh, mw), np.uint8)
    head_store = FrameStore((HEAD_MATTE_SIZE, HEAD_MATTE_SIZE), np.uint8)
    valid_l: list[bool] = []
    counts, indices, boxes = [], [], []
    try:
        for done, (index, rgb) in enumerate(footage, start=1):
            if rgb.shape[:2] != (h, w):
                raise UserError(f"Frame {index} of {footage.name} is {rgb.shape[1]}x{rgb.shape[0]}, the clip "
                                f"is {w}x{h}; use frames of one size.")
            img8 = to_uint8_srgb(rgb)
            raw, count = tracker.detect(img8)
            valid_l.append(raw is not None)
            raw_store.append(np.zeros((N_LANDMARKS, 3)) if raw is None else raw)
            counts.append(count)
            indices.append(int(index))
            if seg is not None:
                matte_store.append(np.round(seg.process(img8, (mh, mw)) * 255.0))
                box = None if raw is None else head_box(raw, w, h)
                boxes.append(np.full(4, -1, np.int32) if box is None else box)
                if box is not None and head_seg is None:
                    head_seg = PersonMatte()
                head_store.append(np.zeros((HEAD_MATTE_SIZE,) * 2) if box is None else np.round(
                    head_seg.process(img8[box[1]:box[3], box[0]:box[2]], (HEAD_MATTE_SIZE,) * 2) * 255.0))
            if done % TRIM_EVERY == 0:
                release_free_heap()
            if progress is not None:
                progress(done, n_total)
    finally:
        tracker.close()
        for s_ in (seg, head_seg):
            if s_ is not None:
                s_.close()
    n = len(valid_l)
    valid = np.array(valid_l, dtype=bool)
    if not valid.any():
        raise UserError(f"No face was found in any of the {n} frame(s) of {footage.name}; use footage with "
                        "a visible face.")
    lm_raw = raw_store.array()
    face = np.array([face_size_px(lm_raw[i]) if valid[i] else np.nan for i in range(n)])
    face = _interpolate_invalid(face, valid)
    filled = FrameStore.empty(n, (N_LANDMARKS, 3), np.float32)
    filled[:] = lm_raw
    _interpolate_rows(filled, valid)
    if smoothing and n > 1:
        lm = smooth_sequence(filled, smoothing, fps, scale=face, out=np.empty(filled.shape, np.float32))
    else:
        lm = np.array(filled)
    del filled
    k = cam.k_matrix(cam.intrinsics_from_fov(fov, w, h))
    poses, errs = _solve_all(lm, k, None)
    shape = None
    if adapt_shape:
        shape = adapt_face_shape(lm, poses, k, valid)
        poses, errs = _solve_all(lm, k, shape)
    poses = _bridge_poses(poses, valid)
    if pose_smoothing and n > 1:
        poses = smooth_poses(poses, pose_smoothing, fps)
    warns: list[str] = list(getattr(footage, "warnings", []) or [])
    counts_a = np.array(counts, dtype=np.int64)
    if (counts_a > 1).any():
        k_multi = int((counts_a > 1).sum())
        warns.append(f"several faces on {k_multi} frame(s) (up to {int(counts_a.max())}); the largest one is "
                     "tracked")
    if not valid.all():
        missing = [indices[i] for i in np.flatnonzero(~valid)]
        shown = ", ".join(str(m) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        warns.append(f"no face on {len(missing)} frame(s) ({shown}); track interpolated from neighbours")
    if matte_store.n:
        matte_arr = _smooth_matte(matte_store.array(), out=FrameStore.empty(n, (mh, mw), np.uint8))
    else:
        matte_arr = np.full((n, mh, mw), 255, np.uint8)
    box_arr = np.stack(boxes) if boxes and any(b[2] > b[0] for b in boxes) else None
    # the crops follow the head, so neighbouring frames' head mattes line up in crop coordinates
    release_free_heap()  # the per-frame work above is done; its freed buffers go back to the OS
    head_arr = None if box_arr is None else _smooth_matte(
        head_store.array(), box_arr[:, 2] > box_arr[:, 0],
        out=FrameStore.empty(n, (HEAD_MATTE_SIZE, HEAD_MATTE_SIZE), np.uint8))
    release_pages(lm_raw, matte_arr, head_arr)
    return Analysis(width=w, height=h, fps=fps, frame_indices=np.array(indices, dtype=np.int64),
                    landmarks=lm, landmarks_raw=lm_raw, valid=valid,
                    cam_from_head=poses, K=k, fov_deg=fov, matte=matte_arr, face_count=counts_a,
                    pose_error_px=errs, warnings=warns, name=str(getattr(footage, "name", "")),
                    face_shape=neutral_face().copy() if shape is None else shape, head_matte=head_arr,
                    head_box=box_arr, source=analysis_source(footage, fov))


def analysis_source(footage, fov_deg: float) -> dict:
    """The `Analysis.source` of tracking `footage` now: frames asked for, size, FOV, engine version and,
    for footage read from files, their content fingerprint ("input", `fingerprint.footage_fingerprint`)."""
    from relight_core import __version__, fingerprint

    idx = list(getattr(footage, "frame_indices", []) or [0])
    src = {"frames": [int(idx[0]), int(idx[-1]) + 1], "size": [int(footage.width), int(footage.height)],
           "fov_deg": float(fov_deg), "engine": __version__, "analysis_version": ANALYSIS_VERSION}
    if getattr(footage, "path", None) is not None and getattr(footage, "kind", None):
        src["input"] = fingerprint.footage_fingerprint(footage)
    return src


def write_analysis(analysis: Analysis, path) -> None:
    """Save an analysis to `path` (.npz) atomically; UserError (one sentence, nothing left behind) when
    the disk is full or the folder is not writable."""
    from pathlib import Path

    from relight_core import io

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with io.atomic_write(path) as tmp:
            analysis.save(str(tmp))
    except OSError as exc:
        raise UserError(f"Could not write {path} ({exc.strerror or type(exc).__name__}); check the folder's "
                        "free space and permissions.") from None
