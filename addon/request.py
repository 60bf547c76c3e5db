"""Build the worker request (see the contracts' "Worker protocol") for one sequencer strip, and turn the
worker's results back into a strip."""

from __future__ import annotations

import os
import re

import bpy
import numpy as np

from . import animation, scene_lighting, sequencer, takes
from .properties import engine_python, get_prefs, output_root
from .worker_client import JobState

PROTOCOL_VERSION = 1


def file_lighting_spec(settings) -> dict | None:
    """The request's "lighting" for a preset, reference image or light file; None for scene lights (their
    SH per frame is computed by `PendingRequest.compute`)."""
    src = settings.lighting_source
    if src == "PRESET":
        if not settings.preset or settings.preset == "NONE":
            raise ValueError("No lighting preset is selected; pick one in the Lighting panel.")
        return {"preset": settings.preset}
    if src in {"REFERENCE", "FILE"}:
        prop = "reference_image" if src == "REFERENCE" else "light_file"
        path = bpy.path.abspath(getattr(settings, prop))
        if not getattr(settings, prop) or not os.path.isfile(path):
            raise ValueError(f"{prop.replace('_', ' ').capitalize()} '{path}' does not exist; choose a file "
                             "in the Lighting panel.")
        return {"reference" if src == "REFERENCE" else "file": os.path.normpath(path)}
    return None


def scene_lighting_spec(snaps: list[dict]) -> dict:
    """{"sh": (9, 3) or per frame (F, 9, 3), "key_lights": one list, or one list per frame} of the scene
    lights' snapshots. No bpy (runs on a worker thread). ValueError when there is no light at all."""
    sh, keys = scene_lighting.snapshots_sh(snaps)
    if np.allclose(sh, sh[:1], rtol=1e-6, atol=1e-9):
        sh = sh[0]
    if not np.any(sh if sh.ndim == 2 else sh[0]):
        raise ValueError("The scene has no light at the head anchor (no visible lights, black World); add a "
                         "light or choose another lighting source.")
    per_frame_keys = len(keys) > 1 and any(k != keys[0] for k in keys)
    key_lights = keys if per_frame_keys else (keys[0] if keys else [])
    return {"sh": np.asarray(sh).tolist(), "key_lights": key_lights}


def lighting_spec(context, scene, settings, frames: list[int]) -> dict:
    """The request's "lighting" at timeline `frames`, synchronously (the Live Preview asks for one frame);
    scene lights also update `settings.sh`."""
    spec = file_lighting_spec(settings)
    if spec is not None:
        return spec
    spec = scene_lighting_spec(animation.sample(scene, frames, anchor=settings.anchor, lights=True)["lights"])
    sh = np.asarray(spec["sh"])
    settings.sh = [float(v) for v in (sh if sh.ndim == 2 else sh[0]).ravel()]
    settings.sh_frames = 1 if sh.ndim == 2 else int(sh.shape[0])
    return spec


def camera_spec(scene, settings, frames: list[int]) -> dict | None:
    """The request's "camera" at timeline `frames`: None for the source view, else per-frame cam2head and
    the FOV."""
    cam = _camera(scene, settings)
    if cam is None:
        return None
    sampled = animation.sample(scene, frames, anchor=settings.anchor, camera=cam)
    return {"fov_deg": sampled["fov_deg"], "cam2head": sampled["cam2head"].tolist()}


def _camera(scene, settings):
    """The camera of the Scene Camera view (None for the source view)."""
    if settings.view != "SCENE":
        return None
    cam = settings.camera or scene.camera
    if cam is None:
        raise ValueError("The Scene Camera view needs a camera: use Add Head Rig or set the scene camera.")
    return cam


def light_space(settings) -> str:
    """The request's "light_space": "head" when the anchor follows the tracked head (scene lights), else the
    setting."""
    if settings.follow_head and settings.lighting_source == "SCENE":
        return "head"
    return settings.light_space


def strip_output(context, strip) -> str:
    """The folder of a strip's takes: <output root>/<scene>/<strip> (names made safe and collision-free;
    the scene is the one whose lights and settings are used)."""
    return takes.strip_folder(output_root(context.scene.portrait_relight, context), context.scene.name,
                              strip.name)


def restrict_frames(src: sequencer.StripSource, mode: str, scene) -> sequencer.StripSource:
    """The part of a strip to relight: all of it, the frame under the playhead, or the preview range.
    ValueError when the strip shows nothing there."""
    if mode == "ALL":
        return src
    if mode == "CURRENT":
        lo = hi = int(scene.frame_current)
        where = f"at frame {lo}"
    else:
        if not scene.use_preview_range:
            raise ValueError("The timeline has no preview range; set one (Ctrl+P in the timeline) or relight "
                             "the whole strip.")
        lo, hi = int(scene.frame_preview_start), int(scene.frame_preview_end)
        where = f"in the preview range {lo}-{hi}"
    start, end = max(lo, src.timeline_start), min(hi + 1, src.timeline_start + src.length)
    if end <= start:
        raise ValueError(f"Strip '{src.name}' shows no frame {where}; move the playhead or the range over "
                         "it.")
    off = start - src.timeline_start
    frames = None if src.frames is None else (src.frames[0] + off, src.frames[0] + off + end - start)
    return sequencer.StripSource(src.input, frames, start, end - start, src.name)


_BLENDER_WORDS = (
    (re.compile(r"use --device (\w+) or (\w+)"), r"set Device to \1 or \2 in the add-on preferences"),
    (re.compile(r"(choose )?another folder with --out"), "choose another Output folder in the Output panel"),
    (re.compile(r"--size (\d+)"), r"Size \1 (Output panel)"),
    (re.compile(r"--fov ([\d.]+)"), r"the camera's field of view \1"),
    (re.compile(r"--out\b"), "the Output folder"),
    (re.compile(r"--device\b"), "the Device preference"),
    (re.compile(r"--size\b"), "Size"),
    (re.compile(r"--(yaw|pitch|roll)\b"), "the camera orbit"),
    (re.compile(r"--light\b"), "the Lighting panel"),
)


def blender_words(message: str) -> str:
    """An engine message with its command-line words replaced by the add-on's (panels, preferences)."""
    for pattern, words in _BLENDER_WORDS:
        message = pattern.sub(words, message)
    return message


def frame_ranges(frames: list[int]) -> str:
    """'3, 7-9, 12' for sorted frame numbers."""
    out, run = [], []
    for f in sorted(set(frames)):
        if run and f != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(f)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


class PendingRequest:
    """A request being prepared: `__init__` reads Blender (main thread, cheap: per-frame sampling only
    where something is animated), `compute()` does the SH maths (no bpy; a modal run calls it on a worker
    thread so the UI never waits on it), `finish(context)` completes the request on the main thread."""

    def __init__(self, context, strip, seq_scene=None) -> None:
        scene = context.scene
        settings = scene.portrait_relight
        self.scene_name = scene.name
        self.src = restrict_frames(sequencer.strip_source(strip), settings.frame_range, scene)
        frames = list(range(self.src.timeline_start, self.src.timeline_start + self.src.length))
        cam = _camera(scene, settings)
        lighting = file_lighting_spec(settings)
        sampled = animation.sample(scene, frames, anchor=settings.anchor, lights=lighting is None, camera=cam)
        self.snaps = sampled.get("lights")
        self.error: Exception | None = None
        self.req = {
            "version": PROTOCOL_VERSION,
            "input": self.src.input,
            "frames": list(self.src.frames) if self.src.frames is not None else None,
            "output": "",
            "format": settings.output_format,
            "passes": settings.passes(),
            "size": int(settings.size) or None,
            "device": get_prefs(context).device,
            "background": settings.background,
            "light_space": light_space(settings),
            "resume": True,
            "lighting": lighting,
            "camera": None if cam is None else {"fov_deg": sampled["fov_deg"],
                                                "cam2head": sampled["cam2head"].tolist()},
        }
        self.strip_dir = strip_output(context, strip)

    def compute(self) -> None:
        """The SH per frame of scene lights (thread-safe; an error is kept for `finish`)."""
        try:
            if self.snaps is not None:
                self.req["lighting"] = scene_lighting_spec(self.snaps)
        except Exception as exc:  # noqa: BLE001 - re-raised on the main thread by finish()
            self.error = exc

    def finish(self, context) -> dict:
        """The complete request (main thread): the take folder chosen, the panel's SH updated."""
        if self.error is not None:
            raise self.error
        lighting = self.req["lighting"]
        if self.snaps is not None:
            sh = np.asarray(lighting["sh"])
            settings = bpy.data.scenes[self.scene_name].portrait_relight
            settings.sh = [float(v) for v in (sh if sh.ndim == 2 else sh[0]).ravel()]
            settings.sh_frames = 1 if sh.ndim == 2 else int(sh.shape[0])
        self.req["output"] = takes.take_folder(self.strip_dir, takes.choose_take(self.strip_dir, self.req))
        return self.req


def build_request(context, strip, seq_scene=None) -> tuple[dict, sequencer.StripSource]:
    """(request dict, strip source) for one movie/image strip, synchronously. Lights and camera come from
    `context.scene`, evaluated at the timeline frames the strip occupies. Raises ValueError."""
    pending = PendingRequest(context, strip, seq_scene)
    pending.compute()
    return pending.finish(context), pending.src


def engine() -> str:
    """The engine Python (ValueError when none is configured)."""
    py = engine_python()
    if not py:
        raise ValueError("No engine Python is configured; set it in Preferences > Add-ons > Portrait Relight "
                         "(tools/setup.sh creates <repo>/.venv).")
    return py


def output_frames(request: dict, src: sequencer.StripSource) -> int:
    """How many frames a request makes: the strip's frames, or for a still the number of camera poses or
    light frames (a still with an orbit comes back as the whole orbit, as the engine renders it)."""
    if src.frames is not None:
        return src.frames[1] - src.frames[0]
    cam = request.get("camera") or {}
    sh = (request.get("lighting") or {}).get("sh")
    n_light = len(sh) if sh is not None and np.ndim(sh) == 3 else 1
    return max(1, len(cam.get("cam2head") or ()), n_light)


def result_files(state: JobState, request: dict, src: sequencer.StripSource) -> list[str]:
    """Files for the result strip, in source order: the contiguous run of finished frames from the first
    requested frame (rgba PNGs, or the multilayer EXRs). Frames from events first, then files on disk
    (a resumed run may skip frames that were already there)."""
    fmt = request.get("format", "png")
    found: dict[int, str] = {}
    for idx, files in state.frames.items():
        path = files.get("rgba") if fmt == "png" else (files.get("exr") or next(
            (p for p in files.values() if p.lower().endswith(".exr")), None))
        if path and os.path.isfile(path):
            found[idx] = path
    for idx, path in takes.frame_files(request["output"], fmt).items():
        found.setdefault(idx, path)
    first = src.frames[0] if src.frames is not None else 0
    files = []
    for i in range(first, first + output_frames(request, src)):
        if i not in found:
            break
        files.append(found[i])
    return files


def load_exr_for_compositor(name: str, first_file: str):
    """Load (or repoint) the multilayer EXR sequence image `name` (its layers show in the compositor's
    Image node), stored relative to a saved .blend."""
    img = bpy.data.images.get(name)
    if img is None:
        img = bpy.data.images.load(first_file, check_existing=False)
        img.name = name
    elif os.path.normpath(bpy.path.abspath(img.filepath)) != os.path.normpath(first_file):
        img.filepath = first_file
    img.filepath = sequencer.blend_path(first_file)
    img.source = "SEQUENCE"
    img.use_fake_user = True  # kept in the saved .blend even before a compositor node uses it
    return img
