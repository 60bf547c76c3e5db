"""Identity metric: dlib face-recognition embeddings (optional extra `identity`).

ID = || e(input) - e(output) ||_2, the Euclidean distance between dlib's 128-D face descriptors
(ResNet `dlib_face_recognition_resnet_model_v1`, faces found by dlib's HOG frontal detector, aligned
with the 68-point shape predictor). Lower is better; dlib's own same-person threshold is 0.6.
(The paper reports MagFace cosine similarity, higher = better; that network is not available here.)

The model files ship in the `face-recognition-models` package; they are found by path (its
`__init__` imports pkg_resources, which may be missing), so importing this module never fails: use
`available()` / `unavailable_reason()` and skip the metric with that message when it is absent.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

MODEL_FILES = {
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "landmarks": "shape_predictor_68_face_landmarks.dat",
}


def model_dir() -> Path | None:
    """The face_recognition_models/models folder, located without importing the package; or None."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if all((d / f).is_file() for f in MODEL_FILES.values()):
            return d
    return None


def unavailable_reason() -> str | None:
    """None when the ID metric can run, else one sentence saying what to install."""
    if importlib.util.find_spec("dlib") is None:
        return "identity metric skipped: dlib is not installed (pip install dlib-bin face-recognition-models)"
    if model_dir() is None:
        return ("identity metric skipped: the face-recognition-models package with its .dat files is not "
                "installed (pip install face-recognition-models)")
    return None


def available() -> bool:
    """Whether dlib and its model files are present."""
    return unavailable_reason() is None


class FaceEmbedder:
    """dlib face detector + 68-point aligner + ResNet descriptor; `embed(img)` -> (128,) or None."""

    def __init__(self, upsample: int = 1, jitter: int = 0) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        import dlib

        d = model_dir()
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(d / MODEL_FILES["landmarks"]))
        self._net = dlib.face_recognition_model_v1(str(d / MODEL_FILES["recognition"]))
        self.upsample = upsample
        self.jitter = jitter

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """(H, W, 3) display RGB (uint8, or float in [0, 1]) -> (128,) descriptor of the largest face.

        None when no face is detected.
        """
        img = np.asarray(image)
        if img.dtype != np.uint8:
            img = np.clip(img.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = np.ascontiguousarray(img[..., :3])
        dets = self._detector(img, self.upsample)
        if len(dets) == 0:
            return None
        box = max(dets, key=lambda r: r.width() * r.height())
        shape = self._shape(img, box)
        return np.asarray(self._net.compute_face_descriptor(img, shape, self.jitter), dtype=np.float64)


def id_distance(e_a: np.ndarray | None, e_b: np.ndarray | None) -> float:
    """Euclidean distance of two descriptors (128,); NaN when either face was not found."""
    if e_a is None or e_b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(e_a) - np.asarray(e_b)))
