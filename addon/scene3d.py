"""The tracked head and its camera as scene data: the Track operator and what it builds.

Track (`portrait_relight.track`) runs the engine's analysis of the active strip without relighting it (the
worker's "track" task: progress, Esc / Cancel, the analysis cached in the strip's output folder as a
relight caches it) and then builds, in the current scene:

- the head anchor (made when missing), unscaled (head units: eye centres 0.2 apart) or, with Real Scale,
  scaled so that the face is about 0.15 m wide (`metres_per_unit` of the head mesh), so that point and
  area light falloff in a real-scale set matches;
- the solved camera: "Tracked Camera", a child of the still anchor, keyed per frame from the track
  (Solve: Camera), or the anchor keyed to the moving head seen by a still "Source Camera" (Solve: Head,
  `camera_sync.follow_tracked_head`); its lens is the analysis' vertical field of view, and the scene's
  render size the footage's, so the mesh's landmark vertices land on the tracked landmarks;
- the strip's footage as the camera's background (a MovieClip, frame-aligned with the strip);
- "Tracked Head": the rest mesh of `head_mesh.npz` (face + skull shell + neck, anchor-local axes) with a
  Mesh Cache modifier playing `head_mesh.pc2`, one sample per strip frame from the strip's first frame.

Timeline frame of source frame s: timeline_start + s - first_source (as `sequencer.strip_source`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import bpy
import numpy as np
from bpy.props import BoolProperty, EnumProperty, PointerProperty

from . import camera_sync, operators, panels, request, sequencer
from ._core import core_module
from .worker_client import WorkerJob

HEAD_NAME = "Tracked Head"
METRES_KEY = "portrait_relight_metres_per_unit"
TRACKED_CAMERA_NAME = "Tracked Camera"
CACHE_MODIFIER = "Head Cache"
PC2_NAME, REST_NAME = "head_mesh.pc2", "head_mesh.npz"
IMAGE_EXTS = sequencer.IMAGE_EXTS


SOLVE_ITEMS = [("CAMERA", "Camera", "The head anchor stays still and the camera moves around it"),
               ("HEAD", "Head", "The camera stands still and the head anchor follows the tracked head")]
REAL_SCALE_HELP = ("Scale the head anchor to metres (the face about 0.15 m wide), so light falloff matches a "
                   "real-scale set; off: head units (eye centres 0.2 apart)")


class Scene3DSettings(bpy.types.PropertyGroup):
    """Per-scene choices of the 3D Scene panel (`scene.portrait_relight_3d`)."""

    solve: EnumProperty(name="Solve", default="CAMERA", items=SOLVE_ITEMS,
                        description="What moves in the tracked scene: the camera or the head")
    real_scale: BoolProperty(name="Real Scale", default=False, description=REAL_SCALE_HELP)


@dataclass
class HeadMesh:
    """What `relight_core.headmesh.export_head` wrote: rest mesh (anchor-local axes, head units), the
    camera track and the metadata (image size, FOV, metres per head unit, ...)."""

    vertices: np.ndarray
    faces: np.ndarray
    frame_indices: np.ndarray
    cam_from_head: np.ndarray
    meta: dict
    pc2: str

    @property
    def fov_deg(self) -> float:
        return float(self.meta["fov_deg"])


def load_head_mesh(folder: str) -> HeadMesh:
    """Read DIR/head_mesh.npz (+ the path of DIR/head_mesh.pc2); ValueError with one sentence when missing."""
    rest, pc2 = os.path.join(folder, REST_NAME), os.path.join(folder, PC2_NAME)
    try:
        with np.load(rest, allow_pickle=False) as z:
            return HeadMesh(np.asarray(z["vertices"], np.float64), np.asarray(z["faces"], np.int64),
                            np.asarray(z["frame_indices"], np.int64),
                            np.asarray(z["cam_from_head"], np.float64), json.loads(str(z["meta"])), pc2)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{rest} is not a readable head mesh ({exc}); run Track again.") from exc


# --------------------------------------------------------------------------------------------- scene data

def ensure_anchor(scene):
    """The scene's head anchor (settings), else the rig's 'Head Anchor', else a new Empty at the origin."""
    s = scene.portrait_relight
    anchor = s.anchor or bpy.data.objects.get(camera_sync.ANCHOR_NAME)
    if anchor is None or anchor.type != "EMPTY":
        anchor = bpy.data.objects.new(camera_sync.ANCHOR_NAME, None)
        anchor.empty_display_type = "ARROWS"
        anchor.empty_display_size = 0.3
    if anchor.name not in scene.collection.objects and scene not in anchor.users_scene:
        scene.collection.objects.link(anchor)
    s.anchor = anchor
    return anchor


def set_head_scale(anchor, head: HeadMesh, real_scale: bool) -> float:
    """Scale the anchor: 1 (head units) or metres per head unit (face ~0.15 m wide) -> the scale."""
    m = float(head.meta["metres_per_unit"]) if real_scale else 1.0
    anchor.scale = (m, m, m)
    anchor[METRES_KEY] = float(head.meta["metres_per_unit"])  # what real scale would be, for the panel
    if anchor.parent is None:  # matrix_world follows only at the next depsgraph update; the solve reads it
        anchor.matrix_world = anchor.matrix_basis.copy()
    return m


def import_head_mesh(scene, anchor, head: HeadMesh, cache_start: int):
    """(Re)create "Tracked Head" from the rest mesh, parented to the anchor, with a Mesh Cache modifier
    playing the PC2 cache from timeline frame `cache_start` (sample k at cache_start + k)."""
    old = bpy.data.objects.get(HEAD_NAME)
    if old is not None:
        mesh_old = old.data if old.type == "MESH" else None
        bpy.data.objects.remove(old)
        if mesh_old is not None and mesh_old.users == 0:
            bpy.data.meshes.remove(mesh_old)
    mesh = bpy.data.meshes.new(HEAD_NAME)
    mesh.from_pydata(head.vertices.tolist(), [], head.faces.tolist())
    mesh.shade_smooth()
    mesh.update()
    obj = bpy.data.objects.new(HEAD_NAME, mesh)
    scene.collection.objects.link(obj)
    obj.parent = anchor
    obj.matrix_parent_inverse.identity()
    mod = obj.modifiers.new(CACHE_MODIFIER, "MESH_CACHE")
    mod.cache_format = "PC2"
    mod.filepath = head.pc2
    mod.time_mode = "FRAME"
    mod.play_mode = "SCENE"
    mod.frame_start = float(cache_start)
    mod.frame_scale = 1.0
    mod.interpolation = "LINEAR"
    obj["portrait_relight_landmarks"] = int(head.meta.get("landmarks", 478))
    return obj


def _lens_for_fov(cam_data, fov_deg: float) -> None:
    cam_data.type = "PERSP"
    cam_data.sensor_fit = "VERTICAL"
    cam_data.sensor_height = camera_sync.SENSOR_HEIGHT_MM
    cam_data.lens = camera_sync.SENSOR_HEIGHT_MM / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
    cam_data.clip_start = 0.01
    cam_data.clip_end = 1000.0


def solve_camera(scene, anchor, head: HeadMesh, timeline_start: int, first_source: int):
    """"Tracked Camera": a child of the still anchor keyed at every strip frame to the tracked view
    (anchor-local pose = the head-space camera pose in Blender axes); the anchor's animation is cleared."""
    C = core_module("camera")
    cam = bpy.data.objects.get(TRACKED_CAMERA_NAME)
    if cam is None or cam.type != "CAMERA":
        cam = bpy.data.objects.new(TRACKED_CAMERA_NAME, bpy.data.cameras.new(TRACKED_CAMERA_NAME))
    if scene not in cam.users_scene:
        scene.collection.objects.link(cam)
    _lens_for_fov(cam.data, head.fov_deg)
    if anchor.animation_data is not None:
        anchor.animation_data_clear()
    cam.parent = anchor
    cam.matrix_parent_inverse.identity()
    if cam.animation_data is not None:
        cam.animation_data_clear()
    cam.rotation_mode = "QUATERNION"
    cam.scale = (1.0, 1.0, 1.0)
    camera_sync.key_poses(cam, [C.head_to_blender_local(np.linalg.inv(cfh)) for cfh in head.cam_from_head],
                          [int(timeline_start + int(idx) - first_source) for idx in head.frame_indices])
    return cam


def plate_start_frame(timeline_start: int, first_source: int) -> int:
    """MovieClip.frame_start that shows source frame `first_source` (0-based, of a movie, or the index in
    a consecutively numbered image sequence loaded from its first file) at `timeline_start`."""
    return int(timeline_start) - int(first_source)


def first_image(folder: str) -> str:
    """The first image file of a folder in the engine's (natural) order."""
    names = sorted((n for n in os.listdir(folder) if Path(n).suffix.lower() in IMAGE_EXTS
                    and not n.startswith(".")), key=sequencer._natural_key)
    if not names:
        raise ValueError(f"Folder {folder} holds no images.")
    return os.path.join(folder, names[0])


def load_plate(path: str, timeline_start: int, first_source: int):
    """The footage (movie file, image folder or one image) as a frame-aligned MovieClip."""
    file = first_image(path) if os.path.isdir(path) else path
    clip = bpy.data.movieclips.load(file, check_existing=True)
    clip.frame_start = plate_start_frame(timeline_start, first_source)
    clip.frame_offset = 0
    return clip


def attach_plate(cam, clip) -> None:
    """Show a MovieClip behind everything in the camera's view (one background, replaced)."""
    data = cam.data
    data.show_background_images = True
    bg = data.background_images[0] if len(data.background_images) else data.background_images.new()
    bg.source = "MOVIE_CLIP"
    bg.clip = clip
    bg.alpha = 1.0
    bg.display_depth = "BACK"
    bg.frame_method = "FIT"
    bg.clip_user.use_render_undistorted = False


def build_tracked_scene(scene, src: sequencer.StripSource, folder: str, solve: str = "CAMERA",
                        real_scale: bool = False) -> tuple:
    """Anchor, solved camera with the plate, animated head mesh for a tracked strip -> (anchor, camera,
    head object). solve: "CAMERA" (camera moves around the still anchor) or "HEAD" (the anchor follows
    the head, the camera stands still). Sets the scene camera and the render size to the footage's."""
    head = load_head_mesh(folder)
    first = (src.frames or (0, 1))[0]
    anchor = ensure_anchor(scene)
    set_head_scale(anchor, head, real_scale)
    s = scene.portrait_relight
    if solve == "HEAD":
        cam = camera_sync.follow_tracked_head(scene, anchor, (head.frame_indices, head.cam_from_head,
                                                              head.fov_deg), first, src.timeline_start)
        _lens_for_fov(cam.data, head.fov_deg)
        s.follow_head = True
    else:
        cam = solve_camera(scene, anchor, head, src.timeline_start, first)
        s.follow_head = False
    attach_plate(cam, load_plate(src.input, src.timeline_start, first))
    # sample k of the cache is source frame frame_indices[k]; a cached analysis may start before the strip
    obj = import_head_mesh(scene, anchor, head, src.timeline_start + int(head.frame_indices[0]) - first)
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = int(head.meta["width"]), int(head.meta["height"])
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    return anchor, cam, obj


# --------------------------------------------------------------------------------------------- the run

def track_request(context, strip) -> tuple[dict, sequencer.StripSource]:
    """The worker request of the "track" task for a strip (ValueError when it cannot be sent)."""
    src = sequencer.strip_source(strip)
    req = {"version": request.PROTOCOL_VERSION, "task": "track", "input": src.input,
           "frames": list(src.frames) if src.frames is not None else None,
           "output": request.strip_output(context, strip),
           "size": int(context.scene.portrait_relight.size) or None}
    return req, src


class TrackRun:
    """One Track run, driven like a relight run (`operators.modal_step` calls `tick`, Esc / Cancel call
    `cancel`, `close` stops the worker); builds the scene data when the worker is done."""

    def __init__(self, context, strip, solve: str, real_scale: bool, report) -> None:
        self.scene_name = context.scene.name
        self.strip_name, self.solve, self.real_scale, self.report = strip.name, solve, real_scale, report
        self.req, self.src = track_request(context, strip)
        self.job: WorkerJob | None = WorkerJob(request.engine(), self.req)
        self.errors = 0
        self.result: tuple | None = None
        s = context.scene.portrait_relight
        s.is_running, s.progress, s.status = True, 0.0, f"{strip.name}: starting the engine..."

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()

    def tick(self, context) -> bool:
        """Poll the worker and update progress; on its end build the scene data. False when finished."""
        job = self.job
        if job is None:
            return False
        for ev in job.poll():
            if ev.get("event") == "warning":
                self.report("WARNING", f"{self.strip_name}: {ev.get('message')}")
        scene = bpy.data.scenes.get(self.scene_name)
        s = scene.portrait_relight
        st = job.state
        s.progress = st.fraction
        s.status = (f"{self.strip_name}: cancelling..." if job.cancelling else
                    f"{self.strip_name}: track {st.stage or 'starting'} {st.done}/{st.total or '?'}")
        if not job.finished:
            return True
        self.job = None
        self._finish(scene, st)
        return False

    def _finish(self, scene, st) -> None:
        s = scene.portrait_relight
        if st.finished != "done":
            self.errors += st.finished == "error"
            msg = f"{self.strip_name}: track {st.finished}" + (f": {st.error}" if st.error else "")
            s.last_result = msg
            self.report("ERROR" if st.finished == "error" else "WARNING", msg)
            return
        try:
            self.result = build_tracked_scene(scene, self.src, st.output, self.solve, self.real_scale)
        except ValueError as exc:
            self.errors += 1
            s.last_result = str(exc)
            self.report("ERROR", str(exc))
            return
        anchor, cam, head = self.result
        scale = "real scale, " if self.real_scale else ""
        msg = (f"{self.strip_name}: tracked {st.total} frames -> '{cam.name}', '{head.name}' ({scale}anchor "
               f"scale {anchor.scale[0]:.3f})")
        s.last_result = msg
        self.report("INFO", msg)

    def close(self) -> None:
        if self.job is not None and self.job.running:
            self.job.kill()
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is not None:
            scene.portrait_relight.is_running = False
            scene.portrait_relight.status = ""


class PORTRAIT_RELIGHT_OT_track(bpy.types.Operator):
    """Track the active strip's head and bring it into the scene: solved camera, head mesh, head anchor"""

    bl_idname = "portrait_relight.track"
    bl_label = "Track Head"
    bl_options = {"REGISTER"}

    solve: EnumProperty(name="Solve", default="CAMERA", items=SOLVE_ITEMS,
                        description="What moves in the tracked scene: the camera or the head")
    real_scale: BoolProperty(name="Real Scale", default=False, description=REAL_SCALE_HELP)
    synchronous: BoolProperty(name="Synchronous", default=False, options={"SKIP_SAVE"},
                              description="Run to completion before returning (always so in background mode)")

    @classmethod
    def poll(cls, context):
        return not operators._RUN and hasattr(context.scene, "portrait_relight")

    def _begin(self, context) -> TrackRun | None:
        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        if strip is None:
            self.report({"ERROR"}, "Select a movie or image strip in the sequencer first.")
            return None
        try:
            run = TrackRun(context, strip, self.solve, self.real_scale, operators._reporter(self))
        except (ValueError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return None
        operators._RUN.clear()
        operators._RUN["run"] = run
        return run

    def execute(self, context):
        run = self._begin(context)
        if run is None:
            return {"CANCELLED"}
        operators.run_to_end(run, context)
        return {"FINISHED"} if run.result is not None else {"CANCELLED"}

    def invoke(self, context, event):
        if self.synchronous or not operators.can_run_modal(context):
            return self.execute(context)
        if self._begin(context) is None:
            return {"CANCELLED"}
        wm = context.window_manager
        operators._RUN.update(op=self, wm=wm, timer=wm.event_timer_add(0.2, window=context.window))
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        return operators.modal_step(context, event)


def head_size_text(anchor) -> str:
    """What one anchor unit is: head units (eye centres 0.2 apart) or metres (real scale)."""
    if anchor is None:
        return "No head anchor yet"
    scale = float(anchor.scale[0])
    real = float(anchor.get(METRES_KEY, 0.0))
    if real and abs(scale - real) < 1e-6:
        return f"Real scale: 1 head unit = {scale:.3f} m, face about 0.15 m wide"
    return f"Head units (eye centres 0.2 apart), anchor scale {scale:g}"


def draw_scene3d(layout, context) -> None:
    """The 3D Scene panel: Track (solve, real scale) and the compositing set-ups."""
    s3 = getattr(context.scene, "portrait_relight_3d", None)
    if s3 is None:
        return
    layout.prop(s3, "solve", expand=True)
    layout.prop(s3, "real_scale")
    layout.label(text=head_size_text(context.scene.portrait_relight.anchor), icon="EMPTY_ARROWS")
    op = layout.operator("portrait_relight.track", icon="TRACKING")
    op.solve, op.real_scale = s3.solve, s3.real_scale
    for idname, icon in EXTRA_BUTTONS:
        layout.operator(idname, icon=icon)


EXTRA_BUTTONS: list[tuple[str, str]] = []  # (operator idname, icon) added by other modules (compositing)
CLASSES = (Scene3DSettings, PORTRAIT_RELIGHT_OT_track) + tuple(
    panels._make_panel(space, tag, "SCENE3D", "3D Scene", draw_scene3d, "MAIN")
    for space, tag in panels._SPACES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.portrait_relight_3d = PointerProperty(type=Scene3DSettings)


def unregister() -> None:
    del bpy.types.Scene.portrait_relight_3d
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
