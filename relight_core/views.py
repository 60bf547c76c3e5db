"""View planning: which camera each output frame is rendered from.

A camera spec is None (the input view), {"yaw", "pitch", "roll"} (degrees, one value, "START:END" or one
per frame: an orbit of the input camera about the head centre) or {"fov_deg", "cam2head"} (absolute: one
4x4 camera-to-head matrix or one per frame). `ViewPlan` resolves it per output frame.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from relight_core.errors import UserError


def _orbit_delta(yaw: float, pitch: float, roll: float, pivot: np.ndarray) -> np.ndarray:
    """New camera pose (4x4) in the input camera's frame: the camera orbits `pivot` (cam space).

    Rotation Q = Ry(yaw) @ Rx(-pitch) @ Rz(roll) (degrees): positive yaw moves the camera toward +x (image
    right), positive pitch moves it up (it looks down on the head); position = pivot - Q pivot.
    """
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(-p), -math.sin(-p)], [0, math.sin(-p), math.cos(-p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    q = ry @ rx @ rz
    m = np.eye(4)
    m[:3, :3] = q
    m[:3, 3] = pivot - q @ pivot
    return m


def _per_frame(values: Any, n: int, name: str) -> np.ndarray:
    """One value, 'START:END' (linear over the frames) or one value per frame -> (n,) float64."""
    if isinstance(values, str):
        try:
            a, b = (float(v) for v in values.split(":"))
        except ValueError:
            raise UserError(f"Camera '{name}' value '{values}' is not a number or START:END.") from None
        if not (math.isfinite(a) and math.isfinite(b)):
            raise UserError(f"Camera '{name}' must be finite degrees, not '{values}'.")
        return np.linspace(a, b, n) if n > 1 else np.array([a])
    try:
        arr = np.atleast_1d(np.asarray(values if values is not None else 0.0, dtype=np.float64))
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"Camera '{name}' must be degrees: one number or one per frame.") from None
    if arr.size == 1:
        return np.full(n, float(arr[0]))
    if arr.size != n:
        raise UserError(f"Camera '{name}' has {arr.size} values for {n} frames; give one or one per frame.")
    return arr


def is_input_camera(new_from_input: np.ndarray, kk: tuple, k_in: tuple, distance: float) -> bool:
    """True when a camera (pose relative to the input camera, 4x4, and intrinsics (fx, fy, cx, cy) px)
    is the input camera (k_in) to within 0.01 degrees, 1e-4 of the head's distance and 0.1 px: its
    frame is the input view, rendered without re-projecting the surface."""
    r = new_from_input[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(r)) - 1.0) / 2.0))))
    moved = float(np.linalg.norm(new_from_input[:3, 3]))
    focal = max(abs(kk[0] - k_in[0]), abs(kk[1] - k_in[1]))
    centre = max(abs(kk[2] - k_in[2]), abs(kk[3] - k_in[3]))
    return angle < 0.01 and moved < 1e-4 * max(distance, 1e-6) and focal < 0.1 and centre < 0.1


class ViewPlan:
    """Per output frame k: the view (None = input view) as new_from_input 4x4 and intrinsics.

    The numbers are checked here, where they enter (`validate`): orbit angles finite, absolute cameras
    rigid, finite and looking at the head; `warnings` lists orbits beyond the documented range."""

    def __init__(self, camera: dict | None, n: int) -> None:
        from relight_core import validate

        self.kind = "input"
        self.n = n
        self.warnings: list[str] = []
        if not camera:
            return
        if not isinstance(camera, dict):
            raise UserError("Camera must be {\"yaw\", \"pitch\", \"roll\"} or {\"fov_deg\", \"cam2head\"}.")
        if "cam2head" in camera:
            try:
                m = np.asarray(camera["cam2head"], dtype=np.float64)
            except (TypeError, ValueError, OverflowError):
                raise UserError("Camera 'cam2head' must be a 4x4 matrix or one per frame.") from None
            self.fov = validate.finite_number(camera.get("fov_deg", 18.837), "Camera fov_deg", 1.0, 170.0)
            if m.shape == (4, 4):
                m = m[None]
            if m.ndim != 3 or m.shape[1:] != (4, 4) or len(m) not in (1, n):
                raise UserError(f"Camera 'cam2head' has shape {m.shape}; give a 4x4 or {n} of them.")
            validate.cam2head_matrices(m)
            self.kind, self.cam2head = "absolute", m
            return
        self.yaw = _per_frame(camera.get("yaw"), n, "yaw")
        self.pitch = _per_frame(camera.get("pitch"), n, "pitch")
        self.roll = _per_frame(camera.get("roll"), n, "roll")
        angles = {"yaw": self.yaw, "pitch": self.pitch, "roll": self.roll}
        self.warnings = validate.orbit_angle_warnings(angles)
        if np.all(self.yaw == 0) and np.all(self.pitch == 0) and np.all(self.roll == 0):
            return
        self.kind = "orbit"

    def view(self, k: int, cam_from_head: np.ndarray, k_in: tuple, hw: tuple[int, int]
             ) -> tuple[np.ndarray, tuple, np.ndarray] | None:
        """(new_from_input 4x4, (fx, fy, cx, cy), cam2head 4x4) for frame k, or None for the input view."""
        if self.kind == "input":
            return None
        c2h_in = np.linalg.inv(cam_from_head)
        if self.kind == "orbit":
            delta = _orbit_delta(self.yaw[k], self.pitch[k], self.roll[k], cam_from_head[:3, 3])
            return np.linalg.inv(delta), k_in, c2h_in @ delta
        c2h = self.cam2head[min(k, len(self.cam2head) - 1)]
        h, w = hw
        fy = 0.5 * h / math.tan(math.radians(self.fov) / 2)
        kk = (fy, fy, w / 2.0, h / 2.0)
        new_from_input = np.linalg.inv(c2h) @ c2h_in
        if is_input_camera(new_from_input, kk, k_in, float(np.linalg.norm(cam_from_head[:3, 3]))):
            return None  # the source camera itself (e.g. an orbit's first frame): no re-projection
        return new_from_input, kk, c2h

    def describe(self, k: int, c2h: np.ndarray | None) -> dict:
        if self.kind == "orbit":
            return {"kind": "orbit", "yaw": float(self.yaw[k]), "pitch": float(self.pitch[k]),
                    "roll": float(self.roll[k]),
                    "cam2head": None if c2h is None else np.round(c2h, 6).tolist()}
        if self.kind == "absolute":
            return {"kind": "absolute", "fov_deg": self.fov,
                    "cam2head": None if c2h is None else np.round(c2h, 6).tolist()}
        return {"kind": "input"}


def sequence_length(camera: dict | None) -> int:
    """How many frames a camera spec describes (per-frame lists; 1 for constants)."""
    if not camera or not isinstance(camera, dict):
        return 1
    n = 1
    for key in ("yaw", "pitch", "roll", "cam2head"):
        v = camera.get(key)
        if v is None:
            continue
        arr = np.asarray(v, dtype=object if key != "cam2head" else np.float64)
        if key == "cam2head":
            n = max(n, len(arr) if arr.ndim == 3 else 1)
        else:
            n = max(n, int(np.atleast_1d(arr).size))
    return n


def intrinsics(analysis, h: int, w: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the analysis scaled to (h, w)."""
    k = np.asarray(analysis.K, dtype=np.float64)
    sx, sy = w / float(analysis.width), h / float(analysis.height)
    return float(k[0, 0] * sx), float(k[1, 1] * sy), float(k[0, 2] * sx), float(k[1, 2] * sy)

