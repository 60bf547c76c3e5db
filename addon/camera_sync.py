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


def camera_frames(scene, camera, anchor, frames: list[int]) -> tuple[np.ndarray, float]:
    """Per timeline frame cam2head (F, 4, 4) and the vertical FOV (degrees, at the first frame).
    The current frame is restored afterwards."""
    current = scene.frame_current, scene.frame_subframe
    poses, fov = [], None
    try:
        for f in frames:
            scene.frame_set(int(f))
            poses.append(cam2head(camera, anchor))
            if fov is None:
                fov = vertical_fov_deg(camera.data, scene.render)
    finally:
        scene.frame_set(current[0], subframe=current[1])
    fov = canonical_fov_deg() if fov is None else fov
    return np.asarray(poses).reshape(len(frames), 4, 4), float(fov)


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
