"""Checks of the numbers, paths and JSON that enter the engine from a user (CLI options, worker requests,
light and camera files), each ending in one `UserError` sentence that names the field or file.

Numbers are checked where they enter so that nothing downstream renders black frames from a NaN, an
overflowing intensity or a camera that looks away from the head. Messages never quote a file's content
(a misnamed file may hold anything), only its name and what was expected.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from relight_core.errors import UserError

# |SH coefficient| above this overflows float32 shading once multiplied by an albedo and summed over
# nine basis functions; real lights (Blender units, W and W/m^2) stay far below it.
MAX_SH = 1e6
# key light power / strength (W, W/m^2) above this is not a light but an overflow waiting to happen
MAX_LIGHT_POWER = 1e9
# a camera's rotation is taken as orthonormal when |R^T R - I| is below this everywhere (float32 export)
ROTATION_TOLERANCE = 1e-3
# the head centre must lie at least this far (head units; the face is ~0.5 wide) in front of a camera
MIN_HEAD_DISTANCE = 0.3
# the documented orbit range: the novel views are tested up to these angles (README, "Limitations")
ORBIT_LIMITS_DEG = {"yaw": 25.0, "pitch": 15.0, "roll": 15.0}
MAX_JSON_BYTES = 64 << 20   # a camera or light file larger than this is not one
MAX_JSON_DEPTH = 32         # the engine's JSON formats nest 4 deep at most


def path_text(path: Any, what: str) -> str:
    """A path given as text -> the same text; UserError when it is not a non-empty string of valid UTF-8
    (a path with undecodable bytes reaches Python as lone surrogates, which native libraries cannot
    take)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UserError(f"{what} must be a path.")
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError(f"{what} {text.encode('utf-8', 'backslashreplace').decode('ascii', 'replace')} is "
                        "not valid UTF-8; rename it (or its folder) with UTF-8 characters only.") from None
    return text


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), counted without recursion; stops past `limit`."""
    depth, level = 0, [value]
    while level and depth <= limit:
        nxt = []
        for v in level:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        if not nxt:
            break
        depth += 1
        level = nxt
    return depth


def parse_json(text: str | bytes, what: str) -> Any:
    """JSON text -> value; UserError naming `what` when it is not JSON, is nested too deeply, or holds
    NaN/Infinity. The message says where, never what the text holds."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise UserError(f"{what} nests its JSON too deeply; it is not a file this engine wrote or reads.") \
            from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text; give a JSON file.") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON (line {exc.lineno}, column {exc.colno}).") from None
    except ValueError as exc:  # _reject_constant
        raise UserError(f"{what} holds {exc}; give finite numbers.") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise UserError(f"{what} nests its JSON more than {MAX_JSON_DEPTH} levels deep; it is not a file "
                        "this engine reads.")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def read_json_file(path: str | os.PathLike, what: str) -> Any:
    """Read a small JSON file (`parse_json`); UserError when missing, unreadable or too large."""
    p = Path(path_text(path, what))
    try:
        if p.stat().st_size > MAX_JSON_BYTES:
            raise UserError(f"{what} {p} is larger than {MAX_JSON_BYTES >> 20} MB; it is not a camera or "
                            "light file.")
        data = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {p} does not exist.") from None
    except IsADirectoryError:
        raise UserError(f"{what} {p} is a folder; give a JSON file.") from None
    except OSError as exc:
        raise UserError(f"{what} {p} could not be read ({exc.strerror or type(exc).__name__}).") from None
    return parse_json(data, f"{what} {p}")


def finite_array(value: Any, where: str, limit: float | None = None) -> np.ndarray:
    """Numbers (any nesting) -> float64 array; UserError when not numbers, not finite, or any |x| above
    `limit`."""
    if isinstance(value, (str, bytes)) or isinstance(value, bool):
        raise UserError(f"{where} must be numbers.")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where} must be numbers (a list of lists of the same length).") from None
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{where} holds NaN or infinite values; give finite numbers.")
    if limit is not None and arr.size and float(np.max(np.abs(arr))) > limit:
        raise UserError(f"{where} holds values above {limit:g} in magnitude; a light that strong overflows "
                        "the shading. Scale it down.")
    return arr


def finite_number(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    """One finite number in [lo, hi] -> float; UserError naming `where` otherwise (bools are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating, str)):
        raise UserError(f"{where} must be a number.")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where} must be a number.") from None
    if not math.isfinite(x):
        raise UserError(f"{where} must be a finite number, not {value!s}.")
    if (lo is not None and x < lo) or (hi is not None and x > hi):
        raise UserError(f"{where} {x:g} is out of range ({lo:g}..{hi:g}).")
    return x


def sh_coefficients(arr: np.ndarray, where: str) -> np.ndarray:
    """An SH array of any accepted shape -> the same array; UserError when not finite or overflowing."""
    return finite_array(arr, where, MAX_SH)


def cam2head_matrices(m: np.ndarray, where: str = "Camera 'cam2head'") -> None:
    """Check camera-to-head poses (F, 4, 4): finite, last row (0, 0, 0, 1), rotation orthonormal (det +1)
    within `ROTATION_TOLERANCE`, and the head centre at least `MIN_HEAD_DISTANCE` in front of the camera
    (cameras look along their -z). UserError naming the first bad frame."""
    m = np.asarray(m, dtype=np.float64)
    for i, c2h in enumerate(m):
        frame = f"{where} of frame {i}" if len(m) > 1 else where
        if not np.all(np.isfinite(c2h)):
            raise UserError(f"{frame} holds NaN or infinite values.")
        if np.max(np.abs(c2h[3] - (0.0, 0.0, 0.0, 1.0))) > ROTATION_TOLERANCE:
            raise UserError(f"{frame} is not a rigid pose: its last row must be 0 0 0 1.")
        r = c2h[:3, :3]
        if (np.max(np.abs(r.T @ r - np.eye(3))) > ROTATION_TOLERANCE or np.linalg.det(r) < 0.5):
            raise UserError(f"{frame} has a rotation that is not orthonormal (scaled, sheared, mirrored or "
                            "zero); export the camera without scale.")
        head_in_cam = -r.T @ c2h[:3, 3]  # the head centre (head origin) in camera coordinates
        if -head_in_cam[2] < MIN_HEAD_DISTANCE:
            raise UserError(f"{frame} does not look at the head: its centre is behind or too close to the "
                            "camera. Point the camera at the head anchor.")


def orbit_angle_warnings(angles: dict[str, np.ndarray]) -> list[str]:
    """{axis: (N,) degrees} -> warnings for axes that leave the documented orbit range (`ORBIT_LIMITS_DEG`);
    UserError for a value that is not finite."""
    out = []
    for axis, values in angles.items():
        v = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise UserError(f"Camera '{axis}' must be finite degrees.")
        limit = ORBIT_LIMITS_DEG.get(axis)
        if limit is not None and v.size and float(np.max(np.abs(v))) > limit:
            out.append(f"camera {axis} reaches {float(np.max(np.abs(v))):g} degrees, beyond the tested "
                       f"+-{limit:g}; expect stretched or missing parts of the head")
    return out
