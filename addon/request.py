"""Build the worker request (see the contracts' "Worker protocol") for one sequencer strip, and turn the
worker's results back into a strip."""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import camera_sync, scene_lighting, sequencer, takes
from .properties import engine_python, get_prefs, output_root
from .worker_client import JobState

PROTOCOL_VERSION = 1


def _animated(idblocks) -> bool:
    """True when any of the ID blocks has an action or drivers."""
    for idb in idblocks:
        ad = getattr(idb, "animation_data", None) if idb is not None else None
        if ad is not None and (ad.action is not None or len(ad.drivers) > 0):
            return True
    return False


def _may_move(obj) -> bool:
    """An object (or a parent) that is animated, driven or constrained (conservative)."""
    chain = [obj] + list(getattr(obj, "parent_recursive", []))
    return _animated(chain) or any(len(o.constraints) > 0 for o in chain)


def lighting_animated(scene, anchor) -> bool:
    """Whether the lights, World, anchor or scene (exposure) may change over time."""
    if _animated([scene, scene.world, getattr(scene.world, "node_tree", None)]):
        return True
    if anchor is not None and _may_move(anchor):
        return True
    return any(obj.type == "LIGHT" and (_may_move(obj) or _animated([obj.data])) for obj in scene.objects)


def lighting_spec(context, scene, settings, frames: list[int]) -> dict:
    """The request's "lighting" for the settings' source; for scene lights the SH per timeline frame
    (one (9, 3) when nothing is animated) plus key lights, also stored in `settings.sh`."""
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
    anchor = settings.anchor
    if lighting_animated(scene, anchor) and len(frames) > 1:
        sh, keys = scene_lighting.scene_sh_frames(scene, anchor, frames)
        if np.allclose(sh, sh[:1], rtol=1e-6, atol=1e-9):
            sh = sh[0]
    else:
        one, k = scene_lighting.scene_sh_frames(scene, anchor, frames[:1])
        sh, keys = one[0], k
    first = sh if sh.ndim == 2 else sh[0]
    settings.sh = [float(v) for v in np.asarray(first).ravel()]
    settings.sh_frames = 1 if sh.ndim == 2 else int(sh.shape[0])
    if not np.any(first):
        raise ValueError("The scene has no light at the head anchor (no visible lights, black World); add a "
                         "light or choose another lighting source.")
    per_frame_keys = sh.ndim == 3 and any(k != keys[0] for k in keys)
    key_lights = keys if per_frame_keys else (keys[0] if keys else [])
    return {"sh": np.asarray(sh).tolist(), "key_lights": key_lights}


def camera_spec(scene, settings, frames: list[int]) -> dict | None:
    """The request's "camera": None for the source view, else per-frame cam2head and the FOV."""
    if settings.view != "SCENE":
        return None
    cam = settings.camera or scene.camera
    if cam is None:
        raise ValueError("The Scene Camera view needs a camera: use Add Head Rig or set the scene camera.")
    poses, fov = camera_sync.camera_frames(scene, cam, settings.anchor, frames)
    return {"fov_deg": fov, "cam2head": poses.tolist()}


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


def build_request(context, strip, seq_scene=None) -> tuple[dict, sequencer.StripSource]:
    """(request dict, strip source) for one movie/image strip. Lights and camera come from
    `context.scene`, evaluated at the timeline frames the strip occupies. Raises ValueError."""
    scene = context.scene
    seq_scene = seq_scene or sequencer.sequencer_scene(context)
    settings = scene.portrait_relight
    src = sequencer.strip_source(strip)
    frames = list(range(src.timeline_start, src.timeline_start + src.length))
    req = {
        "version": PROTOCOL_VERSION,
        "input": src.input,
        "frames": list(src.frames) if src.frames is not None else None,
        "output": "",
        "format": settings.output_format,
        "passes": settings.passes(),
        "size": int(settings.size) or None,
        "device": get_prefs(context).device,
        "background": settings.background,
        "light_space": light_space(settings),
        "resume": True,
        "lighting": lighting_spec(context, scene, settings, frames),
        "camera": camera_spec(scene, settings, frames),
    }
    folder = strip_output(context, strip)
    req["output"] = takes.take_folder(folder, takes.choose_take(folder, req))
    return req, src


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
    """Load a multilayer EXR sequence as an image (its layers show in the compositor's Image node)."""
    img = bpy.data.images.get(name)
    if img is None or os.path.normpath(bpy.path.abspath(img.filepath)) != os.path.normpath(first_file):
        img = bpy.data.images.load(first_file, check_existing=True)
        img.name = name
    img.filepath = sequencer.blend_path(first_file)
    img.source = "SEQUENCE"
    img.use_fake_user = True  # kept in the saved .blend even before a compositor node uses it
    return img
