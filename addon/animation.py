"""Per-frame sampling of what a request needs (lights, World, anchor, camera), cheap on the main thread.

Only what may change is sampled per frame: nothing is evaluated frame by frame when the lights, World,
anchor and camera have no animation, drivers or constraints. Sampling steps the scene through the frames
with the add-on's own preview handlers muted (they would redraw the lit sphere on every step) and reads
plain data only (`scene_lighting.light_snapshot`, camera matrices); turning that into SH, the expensive
part, needs no bpy and runs on a worker thread in a modal run (`request.PendingRequest`).
"""

from __future__ import annotations

import numpy as np

from . import camera_sync, handlers, scene_lighting


def _animated(idblocks) -> bool:
    """True when any of the ID blocks has an action or drivers."""
    for idb in idblocks:
        ad = getattr(idb, "animation_data", None) if idb is not None else None
        if ad is not None and (ad.action is not None or len(ad.drivers) > 0 or len(ad.nla_tracks) > 0):
            return True
    return False


def may_move(obj) -> bool:
    """An object (or a parent) that is animated, driven or constrained (conservative)."""
    chain = []
    while obj is not None and obj not in chain:
        chain.append(obj)
        obj = obj.parent
    return _animated(chain) or any(len(o.constraints) > 0 for o in chain)


def world_animated(scene) -> bool:
    """Whether the World (or the scene, e.g. its exposure) is animated."""
    return _animated([scene, scene.world, getattr(scene.world, "node_tree", None)])


def lighting_animated(scene, anchor) -> bool:
    """Whether the lights, World, anchor or scene (exposure) may change over time."""
    if world_animated(scene):
        return True
    if anchor is not None and may_move(anchor):
        return True
    return any(obj.type == "LIGHT" and (may_move(obj) or _animated([obj.data])) for obj in scene.objects)


def camera_animated(camera, anchor) -> bool:
    """Whether the camera's pose relative to the anchor, or its lens, may change over time."""
    return may_move(camera) or _animated([camera.data]) or (anchor is not None and may_move(anchor))


def sample(scene, frames: list[int], anchor=None, lights: bool = False, camera=None) -> dict:
    """Per timeline frame: {"lights": [light snapshot] (when `lights`), "cam2head": (F, 4, 4) and "fov_deg"
    (when a camera is given)}. Static things are read once at the current frame and repeated. The current
    frame is restored; the add-on's handlers do not run while stepping through the frames."""
    frames = [int(f) for f in frames]
    anim_l = lights and lighting_animated(scene, anchor)
    anim_c = camera is not None and camera_animated(camera, anchor)
    out: dict = {}
    world_fixed = None if world_animated(scene) else scene_lighting.world_record(scene) if lights else None
    snaps, poses = [], []

    def take(all_lights: bool, all_camera: bool) -> None:
        if all_lights:
            snaps.append(scene_lighting.light_snapshot(scene, anchor, world=world_fixed))
        if all_camera:
            poses.append(camera_sync.cam2head(camera, anchor))

    if camera is not None:
        out["fov_deg"] = camera_sync.vertical_fov_deg(camera.data, scene.render)
    if (anim_l or anim_c) and len(frames) > 1:
        current = scene.frame_current, scene.frame_subframe
        with handlers.paused():
            try:
                for f in frames:
                    scene.frame_set(f)
                    take(anim_l, anim_c)
            finally:
                scene.frame_set(current[0], subframe=current[1])
    if lights and not snaps:
        take(True, False)
        snaps *= len(frames)
    if camera is not None and not poses:
        take(False, True)
        poses *= len(frames)
    if lights:
        out["lights"] = snaps
    if camera is not None:
        out["cam2head"] = np.asarray(poses, dtype=np.float64).reshape(len(frames), 4, 4)
    return out
