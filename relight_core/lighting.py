"""Target lighting of a run or a preview: what the relit frames are lit by, per output frame.

A lighting spec is "input" (keep the estimated input light), a preset name, a light file, a reference
portrait (its estimated light is transferred), a worker-protocol dict ({"preset"}, {"file"},
{"reference"}, {"sh", "key_lights"}) or an object with `sh_at(k)`, `key_lights_at(k)` and `n_frames`
(`lights.LightSequence`, `SHSequence`). `load_target_lighting` turns any of them into such an object.

Key lights in JSON: a list of lights for every frame, or a list with one list of lights per frame
(an animated sun from Blender): [[frame 0's lights], [frame 1's lights], ...].

Exposure: `ABSOLUTE_SCALE` and `render_exposure` (the "match" mode) are explained in `pipeline`'s module
docstring.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from relight_core.errors import UserError

ABSOLUTE_SCALE = 1.0 / math.pi  # physical irradiance -> the engine's image model (see module docstring)


class SHSequence:
    """A light sequence over explicit SH: shs (N, 9, 3); key_lights: one list for all frames, or one
    list per frame. Frames past the end hold the last light."""

    def __init__(self, shs: np.ndarray, key_lights: list | None = None) -> None:
        self.shs = np.asarray(shs, dtype=np.float64)
        self.keys = key_lights or []
        self.per_frame_keys = bool(self.keys) and all(isinstance(k, list) for k in self.keys)
        self.n_frames = len(self.shs)
        self.name = "sh"

    def sh_at(self, frame: int) -> np.ndarray:
        return self.shs[min(max(frame, 0), self.n_frames - 1)]

    def key_lights_at(self, frame: int) -> list:
        if self.per_frame_keys:
            return self.keys[min(max(frame, 0), len(self.keys) - 1)]
        return self.keys


def key_lights_from_json(items: Any) -> list:
    """JSON key lights -> `lights` objects: a list of light dicts (every frame) -> a list of lights, or a
    list of per-frame lists -> a list of lists. UserError names the malformed light (and its frame); the
    numbers are checked as in light files (`lights.key_lights_from_dicts`: finite, not overflowing)."""
    from relight_core import lights

    if items is None:
        return []
    if not isinstance(items, list):
        raise UserError("Lighting 'key_lights' must be a list of lights or one list of lights per frame.")
    if items and all(isinstance(it, list) for it in items):
        return [lights.key_lights_from_dicts(frame_items, f"Lighting 'key_lights' frame {f}")
                for f, frame_items in enumerate(items)]
    return lights.key_lights_from_dicts(items, "Lighting 'key_lights'")


def sh_array(value: Any, where: str) -> np.ndarray:
    """Inline SH (9,), (9, 3), (N, 9) or (N, 9, 3) -> (N, 9, 3) float64; UserError when not finite numbers
    or overflowing (`validate.sh_coefficients`)."""
    from relight_core import validate

    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{where} is not a list of numbers; give 9 [r, g, b] triples.") from None
    validate.sh_coefficients(arr, where)
    if arr.shape == (9,):
        arr = np.repeat(arr[:, None], 3, axis=1)
    if arr.shape == (9, 3):
        return arr[None]
    if arr.ndim == 2 and arr.shape[1] == 9:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[1:] == (9, 3):
        return arr
    raise UserError(f"{where} has shape {arr.shape}; give 9 [r, g, b] triples or one such list per frame.")


def reference_light(path: str, size: int | None = 512) -> np.ndarray:
    """Light transfer: the estimated (smoothing-free) input light (9, 3) of a reference portrait image."""
    from relight_core import geometry, intrinsic, io, track

    footage = io.open_footage(path, size=size)
    analysis = track.analyze_footage(footage)
    if not bool(np.any(analysis.valid)):
        raise UserError(f"No face was found in the reference image {path}; use a portrait photo.")
    _, img = next(iter(footage))
    geo = geometry.build_geometry(analysis, 0, footage.height, footage.width)
    est = intrinsic.estimate_input_light(img, intrinsic.cam_to_dpr_normals(geo.normals), geo.labels)
    if est is None:
        raise UserError(f"Too little skin is visible in the reference image {path} to estimate its light.")
    return est[0].astype(np.float64)


def load_target_lighting(spec: Any, size: int | None = 512):
    """A lighting spec -> an object with `sh_at(k)`, `key_lights_at(k)`, `n_frames`, or None for "input".

    spec: "input" | preset name | light-file path | worker dict ({"preset"}, {"file"}, {"reference"},
    {"sh", "key_lights"}) | an object that already has `sh_at`.
    """
    if hasattr(spec, "sh_at"):
        return spec
    if isinstance(spec, dict):
        if "sh" in spec:
            return SHSequence(sh_array(spec["sh"], "Lighting 'sh'"),
                              key_lights_from_json(spec.get("key_lights")))
        if "reference" in spec:
            return SHSequence(reference_light(str(spec["reference"]), size)[None], [])
        if "preset" in spec:
            from relight_core import lights

            return lights.load_preset(str(spec["preset"]))  # a name only: it cannot leave the presets folder
        if "file" in spec:
            spec = str(spec["file"])
        else:
            raise UserError("Lighting must be one of {\"preset\"}, {\"file\"}, {\"reference\"} or {\"sh\"}.")
    spec = str(spec)
    if spec == "input":
        return None
    from relight_core import lights

    p = Path(spec)
    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr"):
        if not p.is_file():
            raise UserError(f"Reference image {spec} does not exist.")
        return SHSequence(reference_light(spec, size)[None], [])
    return lights.load_lighting(spec)


def render_exposure(light_in: np.ndarray, target_cam: np.ndarray) -> float:
    """The per-run exposure scale of the "match" intensity mode (see the module docstring)."""
    from relight_core import render

    return render.exposure_scale(light_in, target_cam)


def scaled_light(light, scale: float):
    if scale == 1.0:
        return light
    fields = {f.name for f in dataclasses.fields(light)} if dataclasses.is_dataclass(light) else set()
    for attr in ("strength", "power"):
        if attr in fields:
            return dataclasses.replace(light, **{attr: getattr(light, attr) * scale})
    return light


def default_light() -> np.ndarray:
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 1.0
    return sh

