"""Head rig and camera sync: the scene camera's pose relative to the head anchor -> per-frame novel view.

The anchor Empty carries head space: its local X = head x, Z = head y, -Y = head z (contracts), so the
anchor-local frame is the DPR frame of the frontal view. A Blender camera looks along its local -Z with
+Y up, the same axes as the OpenGL camera space the engine uses, so cam2head = C @ (A^-1 @ M_cam) with C
the Blender-local -> head change of axes (`relight_core.camera.blender_local_to_head`).
"""

from __future__ import annotations

import math

import bpy
import numpy as np

from ._core import core_module

ANCHOR_NAME = "Head Anchor"
CAMERA_NAME = "Head Camera"
PROXY_NAME = "Head Proxy"
# Head proxy half-axes in head units (x width, y height, z depth): the face is ~0.5 units wide.
PROXY_RADII = (0.25, 0.37, 0.32)
SENSOR_HEIGHT_MM = 24.0


def canonical_radius() -> float:
    """Distance of the canonical camera from the head centre (head units)."""
    return float(getattr(core_module("camera"), "CANONICAL_RADIUS", 2.7))


def canonical_fov_deg() -> float:
    """Vertical field of view of the canonical camera (degrees)."""
    return float(getattr(core_module("camera"), "CANONICAL_FOV_DEG", 18.837))


def vertical_fov_deg(cam_data, render) -> float:
    """Vertical FOV (degrees) of a perspective Blender camera for the render resolution's aspect,
    following Blender's sensor fit (AUTO fits `sensor_width` to the longer side)."""
    if cam_data.type != "PERSP":
        raise ValueError(f"Camera '{cam_data.name}' is {cam_data.type}; use a perspective camera.")
    xs = float(render.resolution_x) * float(render.pixel_aspect_x)
    ys = float(render.resolution_y) * float(render.pixel_aspect_y)
    lens = float(cam_data.lens)
    fit = cam_data.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if xs >= ys else "VERTICAL"
        sensor = float(cam_data.sensor_width)
    else:
        sensor = float(cam_data.sensor_height if fit == "VERTICAL" else cam_data.sensor_width)
    half = math.atan(sensor / (2.0 * lens))
    if fit == "VERTICAL":
        return math.degrees(2.0 * half)
    return math.degrees(2.0 * math.atan(math.tan(half) * ys / xs))


def _pose(mat) -> np.ndarray:
    """(4, 4) rigid pose from a Blender matrix: scale removed from the rotation columns."""
    m = np.array(mat, dtype=np.float64)
    m[:3, :3] = m[:3, :3] / np.maximum(np.linalg.norm(m[:3, :3], axis=0), 1e-12)
    return m


def cam2head(camera, anchor) -> np.ndarray:
    """(4, 4) camera-to-head pose (OpenGL camera axes) of a Blender camera relative to the anchor.

    The anchor's scale sets the head unit (one anchor-local unit = one head unit)."""
    C = core_module("camera")
    a = np.eye(4) if anchor is None else np.array(anchor.matrix_world, dtype=np.float64)
    rel = np.linalg.inv(a) @ np.array(camera.matrix_world, dtype=np.float64)
    rel = _pose(rel)
    return np.asarray(C.blender_local_to_head(rel), dtype=np.float64)


def _link(obj, scene) -> None:
    coll = scene.collection
    if obj.name not in coll.objects:
        coll.objects.link(obj)


def add_head_rig(scene, with_proxy: bool = True) -> tuple:
    """Create (or reuse) the head anchor Empty at the origin and a camera at the canonical view (radius
    2.7 in front of the face, 18.837 degrees vertical FOV, vertical sensor fit), parented to the anchor;
    optionally a head proxy ellipsoid. Returns (anchor, camera, proxy or None)."""
    anchor = bpy.data.objects.get(ANCHOR_NAME)
    if anchor is None or anchor.type != "EMPTY":
        anchor = bpy.data.objects.new(ANCHOR_NAME, None)
        anchor.empty_display_type = "ARROWS"
        anchor.empty_display_size = 0.3
    _link(anchor, scene)

    cam = bpy.data.objects.get(CAMERA_NAME)
    if cam is None or cam.type != "CAMERA":
        cam = bpy.data.objects.new(CAMERA_NAME, bpy.data.cameras.new(CAMERA_NAME))
    _link(cam, scene)
    cam.data.type = "PERSP"
    cam.data.sensor_fit = "VERTICAL"
    cam.data.sensor_height = SENSOR_HEIGHT_MM
    cam.data.lens = SENSOR_HEIGHT_MM / (2.0 * math.tan(math.radians(canonical_fov_deg()) / 2.0))
    cam.data.clip_start = 0.05
    cam.parent = anchor
    cam.matrix_parent_inverse.identity()
    # Frontal view: head +z (towards the viewer) is anchor -Y; the camera looks along +Y, up +Z.
    cam.location = (0.0, -canonical_radius(), 0.0)
    cam.rotation_mode = "XYZ"
    cam.rotation_euler = (math.pi / 2.0, 0.0, 0.0)
    if scene.camera is None:
        scene.camera = cam

    proxy = add_head_proxy(scene, anchor) if with_proxy else None
    return anchor, cam, proxy


def ellipsoid_mesh(radii: tuple[float, float, float], rings: int = 12, segments: int = 24):
    """Vertices (N, 3) and quad/triangle faces of an ellipsoid in anchor-local axes: radii are head
    (x width, y height, z depth), i.e. Blender local (X, Z, Y)."""
    rx, ry, rz = radii
    verts = [(0.0, 0.0, -ry)]
    for i in range(1, rings):
        theta = math.pi * i / rings - math.pi / 2.0
        for j in range(segments):
            phi = 2.0 * math.pi * j / segments
            verts.append((rx * math.cos(theta) * math.cos(phi), rz * math.cos(theta) * math.sin(phi),
                          ry * math.sin(theta)))
    verts.append((0.0, 0.0, ry))
    faces = []
    top = len(verts) - 1
    for j in range(segments):
        faces.append((0, 1 + (j + 1) % segments, 1 + j))
    for i in range(rings - 2):
        a, b = 1 + i * segments, 1 + (i + 1) * segments
        for j in range(segments):
            jn = (j + 1) % segments
            faces.append((a + j, a + jn, b + jn, b + j))
    last = 1 + (rings - 2) * segments
    for j in range(segments):
        faces.append((last + j, last + (j + 1) % segments, top))
    return np.array(verts), faces


def add_head_proxy(scene, anchor):
    """A wireframe, non-rendering ellipsoid the size of a head, parented to the anchor."""
    obj = bpy.data.objects.get(PROXY_NAME)
    if obj is None or obj.type != "MESH":
        mesh = bpy.data.meshes.new(PROXY_NAME)
        verts, faces = ellipsoid_mesh(PROXY_RADII)
        mesh.from_pydata(verts.tolist(), [], faces)
        mesh.update()
        obj = bpy.data.objects.new(PROXY_NAME, mesh)
    _link(obj, scene)
    obj.parent = anchor
    obj.matrix_parent_inverse.identity()
    obj.location = (0.0, 0.0, 0.0)
    obj.display_type = "WIRE"
    obj.hide_render = True
    obj.hide_select = False
    return obj


# --------------------------------------------------------------------------------------------- follow head

SOURCE_CAMERA_NAME = "Source Camera"
# Blender anchor-local -> head axes (contracts: head (x, y, z) = (bx, bz, -by)), as a 4x4
_HEAD_FROM_ANCHOR = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def load_track(path: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(source frame indices (N,), cam_from_head (N, 4, 4), vertical FOV degrees) from the engine's cached
    analysis (DIR/.relight/analysis.npz, written by the worker). ValueError when it is not readable."""
    import json

    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return (np.asarray(z["frame_indices"], dtype=np.int64),
                    np.asarray(z["cam_from_head"], dtype=np.float64), float(meta["fov_deg"]))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable head track ({exc}); relight the strip once first.") \
            from exc


def anchor_in_camera(cam_from_head: np.ndarray) -> np.ndarray:
    """(..., 4, 4) pose of the anchor (Blender head axes) in the source camera's local frame (OpenGL axes
    = a Blender camera's local axes)."""
    return np.asarray(cam_from_head, dtype=np.float64) @ _HEAD_FROM_ANCHOR


def _quat_from_matrix(r: np.ndarray) -> np.ndarray:
    """(w, x, y, z) unit quaternion of a 3x3 rotation."""
    t = np.trace(r)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        return np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 1e-12))
    q = np.zeros(4)
    q[0] = (r[k, j] - r[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (r[j, i] + r[i, j]) / s
    q[1 + k] = (r[k, i] + r[i, k]) / s
    return q


def _set_pose(obj, m: np.ndarray) -> None:
    """Place an unparented object at a rigid (4, 4) world pose (location + quaternion, unit scale)."""
    obj.rotation_mode = "QUATERNION"
    obj.location = np.asarray(m)[:3, 3].tolist()
    obj.rotation_quaternion = _quat_from_matrix(np.asarray(m)[:3, :3]).tolist()
    obj.scale = (1.0, 1.0, 1.0)


def follow_tracked_head(scene, anchor, track: tuple, first_source: int, timeline_start: int):
    """Make the anchor follow the tracked head: a fixed "Source Camera" (the footage's camera, its FOV) is
    placed so that the anchor keeps its current pose at the first tracked frame, and the anchor gets one
    location/rotation key per tracked frame (timeline frame = timeline_start + index - first_source).
    Returns the source camera. Lights stay where they are, so they now move relative to the head."""
    indices, cam_from_head, fov = track
    if len(indices) == 0:
        raise ValueError("The head track is empty; relight the strip once first.")
    a_cam = anchor_in_camera(cam_from_head)
    a_cam[:, :3, 3] *= float(np.linalg.norm(np.array(anchor.matrix_world)[:3, :3], axis=0).mean())  # units
    rest = _pose(anchor.matrix_world)
    cam_world = rest @ np.linalg.inv(a_cam[0])
    cam = bpy.data.objects.get(SOURCE_CAMERA_NAME)
    if cam is None or cam.type != "CAMERA":
        cam = bpy.data.objects.new(SOURCE_CAMERA_NAME, bpy.data.cameras.new(SOURCE_CAMERA_NAME))
    _link(cam, scene)
    cam.parent = None
    cam.data.sensor_fit = "VERTICAL"
    cam.data.sensor_height = SENSOR_HEIGHT_MM
    cam.data.lens = SENSOR_HEIGHT_MM / (2.0 * math.tan(math.radians(fov) / 2.0))
    _set_pose(cam, cam_world)
    anchor.parent = None
    if anchor.animation_data is not None:
        anchor.animation_data_clear()
    anchor.rotation_mode = "QUATERNION"
    frames = [int(timeline_start + int(idx) - first_source) for idx in indices]
    key_poses(anchor, [cam_world @ m for m in a_cam], frames)
    return cam


def key_poses(obj, poses, frames: list[int]) -> None:
    """Key an object's location and rotation (quaternion mode) to 4x4 poses at timeline frames, keeping
    the quaternion path continuous (no flips between neighbouring keys)."""
    prev = None
    for m, frame in zip(poses, frames, strict=True):
        m = np.asarray(m, dtype=np.float64)
        q = _quat_from_matrix(m[:3, :3])
        if prev is not None and float(np.dot(q, prev)) < 0:
            q = -q
        prev = q
        obj.location = m[:3, 3].tolist()
        obj.rotation_quaternion = q.tolist()
        obj.keyframe_insert("location", frame=frame)
        obj.keyframe_insert("rotation_quaternion", frame=frame)
