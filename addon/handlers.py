"""Keeps the lit-sphere preview in step with the lighting (depsgraph and frame-change handlers).

The handlers recompute the (cheap) SH of the current lighting source and rewrite the preview image only
when the SH changed, so writing the image (which itself triggers a depsgraph update) cannot loop.
`register()` / `unregister()` add and remove exactly the handlers this module owns.
"""

from __future__ import annotations

import contextlib
import os

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import scene_lighting

_last: dict = {"sh": None, "scene": None}
_busy = {"on": False}


def current_sh(scene) -> np.ndarray | None:
    """(9, 3) SH of the scene's selected lighting source at the current frame (None: not known in
    Blender, e.g. a reference image whose light the engine estimates)."""
    from ._core import core_module

    s = scene.portrait_relight
    if s.lighting_source == "SCENE":
        return scene_lighting.scene_sh(scene, s.anchor)[0]
    spec = None
    if s.lighting_source == "PRESET" and s.preset and s.preset != "NONE":
        spec = s.preset
    elif s.lighting_source == "FILE" and s.light_file:
        spec = bpy.path.abspath(s.light_file)
        if not os.path.isfile(spec):
            return None
    if spec is None:
        return None
    seq = core_module("lights").load_lighting(spec)
    sh = np.asarray(seq.sh_at(0), dtype=np.float64)
    return np.repeat(sh[:, None], 3, axis=1) if sh.ndim == 1 else sh


def refresh_preview(scene, force: bool = False) -> bool:
    """Recompute the preview; returns True when the image was rewritten."""
    if scene is None or not hasattr(scene, "portrait_relight") or _busy["on"]:
        return False
    _busy["on"] = True
    try:
        try:
            sh = current_sh(scene)
        except Exception as exc:  # noqa: BLE001 - a handler must never raise into Blender
            scene_lighting_error(scene, exc)
            sh = None
        if sh is not None and scene.portrait_relight.status.startswith("Lighting:"):
            scene.portrait_relight.status = ""
        last = _last["sh"]
        same = (sh is None and last is None) or (
            sh is not None and last is not None and np.allclose(sh, last, rtol=1e-6, atol=1e-9))
        if same and not force and bpy.data.images.get(scene_lighting.PREVIEW_IMAGE) is not None:
            return False
        scene_lighting.update_preview_image(sh)
        _last["sh"] = None if sh is None else np.array(sh)
        _last["scene"] = _scene_key(scene)
        return True
    finally:
        _busy["on"] = False


def scene_lighting_error(scene, exc: Exception) -> None:
    """Show a lighting problem in the panel status instead of raising from a handler."""
    try:
        msg = f"Lighting: {exc}"
        if scene.portrait_relight.status != msg:  # writing only on change: no depsgraph update loop
            scene.portrait_relight.status = msg
    except (AttributeError, RuntimeError):
        pass


@contextlib.contextmanager
def paused():
    """No preview refresh inside the block (e.g. while the Live Preview sets the current frame again to
    read the lights: the lit sphere follows the real change through its own handlers)."""
    was = _busy["on"]
    _busy["on"] = True
    try:
        yield
    finally:
        _busy["on"] = was


def _scene_key(scene) -> tuple:
    """What of the scene itself the preview depends on: its exposure and which World it uses."""
    return (scene.name, float(scene.view_settings.exposure), getattr(scene.world, "name", None))


def _chain(obj) -> list:
    out = []
    while obj is not None and obj not in out:
        out.append(obj)
        obj = obj.parent
    return out


def touches_lighting(scene, updates) -> bool:
    """Whether depsgraph updates concern what the preview uses: a light (object or data), the World (or
    its node tree), the head anchor (or its parents), the scene's exposure or World. Edits to anything
    else, and the preview image's own rewrite, cost nothing."""
    s = scene.portrait_relight
    if s.lighting_source != "SCENE":
        return False
    anchor_chain = _chain(s.anchor)
    world = scene.world
    for u in updates:
        idb = getattr(u.id, "original", u.id)
        if isinstance(idb, (bpy.types.Light, bpy.types.World)):
            return True
        if isinstance(idb, bpy.types.Object) and (idb.type == "LIGHT" or idb in anchor_chain):
            return True
        if isinstance(idb, bpy.types.NodeTree) and world is not None and idb == world.node_tree:
            return True
        if isinstance(idb, bpy.types.Scene) and idb == scene and _scene_key(scene) != _last["scene"]:
            return True
    return False


@persistent
def _on_depsgraph(scene, depsgraph) -> None:
    if _busy["on"] or not hasattr(scene, "portrait_relight"):
        return
    if touches_lighting(scene, depsgraph.updates):
        refresh_preview(scene)


@persistent
def _on_frame(scene, depsgraph=None) -> None:
    """On a frame change only animated scene lighting can change the preview."""
    from .animation import lighting_animated

    if _busy["on"] or not hasattr(scene, "portrait_relight"):
        return
    s = scene.portrait_relight
    if s.lighting_source == "SCENE" and lighting_animated(scene, s.anchor):
        refresh_preview(scene)


@persistent
def _on_load(_dummy=None, _dummy2=None) -> None:
    _last["sh"] = _last["scene"] = None


_HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, _on_depsgraph),
    (bpy.app.handlers.frame_change_post, _on_frame),
    (bpy.app.handlers.load_post, _on_load),
)


def registered_handlers() -> list:
    """This module's handler functions currently installed (tests check none is left after unregister)."""
    return [fn for lst, fn in _HANDLERS for h in lst if getattr(h, "__name__", "") == fn.__name__
            and getattr(h, "__module__", "") == fn.__module__]


def register() -> None:
    _last["sh"] = None
    for lst, fn in _HANDLERS:
        remove_handler(lst, fn)
        lst.append(fn)


def unregister() -> None:
    for lst, fn in _HANDLERS:
        remove_handler(lst, fn)
    _last["sh"] = None


def remove_handler(lst, fn) -> None:
    """Remove `fn` and any stale copy of it from an earlier load of this module (same qualified name)."""
    for h in list(lst):
        name = (getattr(h, "__module__", ""), getattr(h, "__name__", ""))
        if h is fn or name == (fn.__module__, fn.__name__):
            lst.remove(h)
