"""Orbit rig from the shot: a camera that starts exactly at the footage's own camera and orbits the head.

Built on Follow Tracked Head (the anchor keyed to the tracked head, the fixed *Source Camera*):

    Orbit Pivot (Empty)   at the head centre on the strip's first frame, turned like the Source Camera
      Orbit (Empty)       rotation mode ZXY: rotation = Ry(yaw) Rx(-pitch) Rz(roll) in the camera's axes,
                          the engine's orbit convention (yaw > 0 toward image right, pitch > 0 from above)
        Orbit Camera      where the Source Camera is, same lens

With every angle at 0 the Orbit Camera *is* the Source Camera, so the Scene Camera view renders the source
view; presets key the Orbit Empty (yaw, pitch) or the camera's distance, and the panel's still offsets go in
the Orbit Empty's delta rotation, on top of the keys.
"""

from __future__ import annotations

import math

import bpy
import numpy as np

PIVOT_NAME = "Orbit Pivot"
ORBIT_NAME = "Orbit"
CAMERA_NAME = "Orbit Camera"

# preset -> (channel, [(fraction of the strip, value)]); angles in degrees, "dolly" = distance factor
PRESETS = {
    "TURNTABLE": ("yaw", [(0.0, 0.0), (0.25, 25.0), (0.75, -25.0), (1.0, 0.0)]),
    "ARC": ("pitch", [(0.0, 0.0), (0.25, 15.0), (0.75, -15.0), (1.0, 0.0)]),
    "PUSH_IN": ("dolly", [(0.0, 1.0), (1.0, 0.8)]),
}
PRESET_ITEMS = [
    ("TURNTABLE", "Turntable", "Yaw 0 -> +25 -> -25 -> 0 degrees around the head over the strip"),
    ("ARC", "Arc", "Pitch 0 -> +15 (from above) -> -15 -> 0 degrees over the strip"),
    ("PUSH_IN", "Push-In", "A slow dolly to 80 % of the distance to the head over the strip"),
    ("NONE", "Still", "No keys: set the yaw, pitch and roll offsets by hand"),
]


def _object(name: str, data=None, scene=None):
    obj = bpy.data.objects.get(name)
    if obj is None:
        obj = bpy.data.objects.new(name, data)
    if scene is not None and obj.name not in scene.collection.objects:
        scene.collection.objects.link(obj)
    return obj


def build_rig(scene, source_camera, head_centre: np.ndarray):
    """(pivot, orbit, camera): the rig placed so that the Orbit Camera equals `source_camera` (its world
    pose and lens) with all angles 0, pivoting about `head_centre` (world, (3,))."""
    src = np.array(source_camera.matrix_world, dtype=np.float64)
    rot = src[:3, :3] / np.linalg.norm(src[:3, :3], axis=0)
    pivot = _object(PIVOT_NAME, None, scene)
    pivot.empty_display_type, pivot.empty_display_size = "SPHERE", 0.1
    pivot.parent = None
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rot, np.asarray(head_centre, dtype=np.float64)
    pivot.matrix_world = m.T.tolist()  # a nested sequence is read column by column
    orbit = _object(ORBIT_NAME, None, scene)
    orbit.empty_display_type, orbit.empty_display_size = "ARROWS", 0.15
    orbit.parent = pivot
    orbit.matrix_parent_inverse.identity()
    if orbit.animation_data is not None:
        orbit.animation_data_clear()
    orbit.location = (0.0, 0.0, 0.0)
    orbit.rotation_mode = "ZXY"
    orbit.rotation_euler = (0.0, 0.0, 0.0)
    orbit.delta_rotation_euler = (0.0, 0.0, 0.0)
    cam_data = bpy.data.cameras.get(CAMERA_NAME) or bpy.data.cameras.new(CAMERA_NAME)
    for attr in ("type", "lens", "sensor_fit", "sensor_width", "sensor_height", "shift_x", "shift_y",
                 "clip_start", "clip_end"):
        setattr(cam_data, attr, getattr(source_camera.data, attr))
    cam = _object(CAMERA_NAME, cam_data, scene)
    cam.parent = orbit
    cam.matrix_parent_inverse.identity()
    if cam.animation_data is not None:
        cam.animation_data_clear()
    cam.rotation_mode = "XYZ"
    cam.rotation_euler = (0.0, 0.0, 0.0)
    cam.scale = (1.0, 1.0, 1.0)
    cam.location = (rot.T @ (src[:3, 3] - np.asarray(head_centre, dtype=np.float64))).tolist()
    return pivot, orbit, cam


def add_preset(orbit, camera, preset: str, first: int, last: int) -> int:
    """Key `preset` over timeline frames [first, last] (Bezier keys the animator can edit); returns the
    number of keys added. The first key is the rest pose, so the orbit's first frame is the source view."""
    if preset == "NONE":
        return 0
    channel, keys = PRESETS[preset]
    rest = np.array(camera.location, dtype=np.float64)
    span = max(last - first, 1)
    for frac, value in keys:
        frame = first + round(frac * span)
        if channel == "dolly":
            camera.location = (rest * value).tolist()
            camera.keyframe_insert("location", frame=frame)
        else:
            index, sign = (1, 1.0) if channel == "yaw" else (0, -1.0)  # euler (x=-pitch, y=yaw, z=roll)
            orbit.rotation_euler[index] = sign * math.radians(value)
            orbit.keyframe_insert("rotation_euler", index=index, frame=frame)
    if channel == "dolly":
        camera.location = rest.tolist()
    else:
        orbit.rotation_euler = (0.0, 0.0, 0.0)
    return len(keys)


def set_offsets(orbit, yaw_deg: float, pitch_deg: float, roll_deg: float) -> None:
    """A still yaw/pitch/roll offset (degrees) on top of the keys (the Orbit Empty's delta rotation)."""
    orbit.delta_rotation_euler = (math.radians(-pitch_deg), math.radians(yaw_deg), math.radians(roll_deg))
