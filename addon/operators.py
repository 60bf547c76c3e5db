"""Operators: check engine, add head rig, update preview, relight (modal or synchronous), cancel.

One relight run at a time. In the UI the run is modal: a window-manager timer polls the worker (which
runs in its own process, read by threads), so Blender stays responsive; Esc or the Cancel button sends
`cancel`, the worker finishes its current frame and the finished frames still come back as a strip.
In background mode (`blender -b`) or with `synchronous=True` the same work runs to completion inside
`execute`, printing progress, for render farms.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time

import bpy
import numpy as np
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import camera_sync, compositor, handlers, orbit, request, sequencer, takes
from .properties import BLEND_RELATIVE, clear_run_state, engine_python, get_prefs
from .worker_client import WorkerJob, check_engine

# Requests with up to this many frames of scene lights get their SH at once; longer ones on a thread
INLINE_FRAMES = 48
# The one run in progress: {"run": RelightRun, "timer": modal timer, "wm": its window manager}
_RUN: dict = {}


def _redraw(context) -> None:
    wm = context.window_manager
    for win in getattr(wm, "windows", []):
        for area in win.screen.areas:
            if area.type in {"SEQUENCE_EDITOR", "VIEW_3D", "PREFERENCES"}:
                area.tag_redraw()


def finish_strip(scene, seq_scene, strip, src, req: dict, job: WorkerJob) -> tuple[str, str]:
    """Add the result strip for a finished (done or cancelled) job; returns (report level, message)."""
    st = job.state
    settings = scene.portrait_relight
    settings.last_output = sequencer.blend_path(req["output"])
    if st.finished == "error":
        error = request.blender_words(st.error)
        settings.last_result = f"{strip.name}: error: {error}"
        return "ERROR", f"Portrait Relight, strip '{strip.name}': {error}"
    files = request.result_files(st, req, src)
    if not files:
        msg = f"{strip.name}: {st.finished}, no frames finished"
        settings.last_result = msg
        return "WARNING", msg
    n_expected = request.output_frames(req, src)
    take = takes.take_number(req["output"]) or 0
    new = sequencer.add_result_strip(seq_scene, strip, files, length=src.length if n_expected == 1 else None,
                                     take=take, folder=os.path.dirname(os.path.normpath(req["output"])),
                                     start=src.timeline_start)
    if req.get("format") == "exr":
        sync_compositor(scene, new)
    word = "relit" if st.finished == "done" and len(files) == n_expected else f"{st.finished}, partial"
    msg = (f"{strip.name}: {word} {len(files)}/{n_expected} frames, take {take} -> '{new.name}' "
           f"(channel {new.channel})")
    if not bpy.data.filepath:
        msg += f"; the .blend is not saved: frames are in {req['output']}; save the file first to keep them "\
               "next to it"
    if st.warnings:
        msg += f"; {len(st.warnings)} warning(s)"
    settings.last_result = msg
    return ("INFO" if word == "relit" else "WARNING"), msg


def sync_compositor(scene, result, add: bool = False):
    """Load a relit EXR strip's frames as an image; update (or with `add`, make) its compositor Image node
    so that it plays in step with the strip. Returns the node (None when not added)."""
    first = os.path.join(bpy.path.abspath(result.directory), result.elements[0].filename)
    img = request.load_exr_for_compositor(result.name, first)
    if not add:
        tree = getattr(scene, "compositing_node_group", None) or getattr(scene, "node_tree", None)
        if tree is None or tree.nodes.get(result.name) is None:
            return None
    return compositor.show_in_compositor(scene, result.name, img, first, int(result.frame_start),
                                         len(result.elements))


def _status(context, text: str | None) -> None:
    ws = getattr(context, "workspace", None)
    if ws is not None and hasattr(ws, "status_text_set"):
        ws.status_text_set(text)


class PORTRAIT_RELIGHT_OT_check_engine(bpy.types.Operator):
    """Run the engine's Python with `-m relight_core --version` and report what was found"""

    bl_idname = "portrait_relight.check_engine"
    bl_label = "Check Engine"

    def execute(self, context):
        ok, msg = check_engine(engine_python(context))
        prefs = get_prefs(context)
        if hasattr(prefs, "bl_rna"):
            prefs.engine_status = msg
        self.report({"INFO"} if ok else {"ERROR"}, msg)
        return {"FINISHED"} if ok else {"CANCELLED"}


class PORTRAIT_RELIGHT_OT_add_head_rig(bpy.types.Operator):
    """Add the head anchor Empty and a camera at the canonical view (2.7 units, 18.837 deg vertical FOV)"""

    bl_idname = "portrait_relight.add_head_rig"
    bl_label = "Add Head Rig"
    bl_options = {"REGISTER", "UNDO"}

    proxy: BoolProperty(name="Head Proxy", default=True, description="Add a wireframe head-sized ellipsoid")

    def execute(self, context):
        scene = context.scene
        anchor, cam, _proxy = camera_sync.add_head_rig(scene, with_proxy=self.proxy)
        scene.portrait_relight.anchor = anchor
        if scene.portrait_relight.camera is None:
            scene.portrait_relight.camera = cam
        handlers.refresh_preview(scene, force=True)
        self.report({"INFO"}, f"Added '{anchor.name}' and '{cam.name}'")
        return {"FINISHED"}


def follow_head(context):
    """Key the anchor to the active strip's tracked head; returns (Source Camera, strip source). ValueError
    with one sentence when there is no strip, no rig or no track yet."""
    scene = context.scene
    s = scene.portrait_relight
    strip = sequencer.active_strip(sequencer.sequencer_scene(context))
    if strip is None or s.anchor is None:
        raise ValueError("Select the relit source strip and add a head rig first.")
    src = sequencer.strip_source(strip)
    folder = takes.latest_analysis_folder(request.strip_output(context, strip))
    if folder is None:
        raise ValueError(f"Strip '{strip.name}' has no head track yet; relight it once first.")
    track = camera_sync.load_track(takes.analysis_file(folder))
    cam = camera_sync.follow_tracked_head(scene, s.anchor, track, (src.frames or (0, 1))[0],
                                          src.timeline_start)
    s.follow_head = True
    return cam, src, len(track[0])


class PORTRAIT_RELIGHT_OT_follow_head(bpy.types.Operator):
    """Key the head anchor to the strip's tracked head (needs one relight first) and add a Source Camera"""

    bl_idname = "portrait_relight.follow_head"
    bl_label = "Follow Tracked Head"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        try:
            cam, _src, n = follow_head(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"'{context.scene.portrait_relight.anchor.name}' follows {n} tracked frames; "
                              f"'{cam.name}' added")
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_add_orbit_rig(bpy.types.Operator):
    """Add a camera orbit that starts at the footage's own camera and pivots about the tracked head"""

    bl_idname = "portrait_relight.add_orbit_rig"
    bl_label = "Orbit from Shot"
    bl_options = {"REGISTER", "UNDO"}

    preset: EnumProperty(name="Preset", items=orbit.PRESET_ITEMS, default="TURNTABLE",
                         description="Keys added to the orbit over the strip (editable afterwards)")

    def execute(self, context):
        scene = context.scene
        s = scene.portrait_relight
        try:
            src_cam, src, _n = follow_head(context)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        first, last = src.timeline_start, src.timeline_start + src.length - 1
        current = scene.frame_current, scene.frame_subframe
        with handlers.paused():
            scene.frame_set(first)
            centre = np.array(s.anchor.matrix_world, dtype=np.float64)[:3, 3]
            scene.frame_set(current[0], subframe=current[1])
        _pivot, orb, cam = orbit.build_rig(scene, src_cam, centre)
        n_keys = orbit.add_preset(orb, cam, self.preset, first, last)
        orbit.set_offsets(orb, *(math.degrees(a) for a in (s.orbit_yaw, s.orbit_pitch, s.orbit_roll)))
        s.camera, s.view = cam, "SCENE"
        self.report({"INFO"}, f"'{cam.name}' starts at the source view and orbits the head "
                              f"({n_keys} keys, frames {first}-{last})")
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_update_preview(bpy.types.Operator):
    """Recompute the lit-sphere preview from the current lighting"""

    bl_idname = "portrait_relight.update_preview"
    bl_label = "Update Preview"

    def execute(self, context):
        handlers.refresh_preview(context.scene, force=True)
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_export_request(bpy.types.Operator):
    """Write the engine request of the active strip to a JSON file, to run later with the engine's worker"""

    bl_idname = "portrait_relight.export_request"
    bl_label = "Export Request"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="//relight_request.json",
                             options=BLEND_RELATIVE, description="JSON file to write the request to")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        seq_scene = sequencer.sequencer_scene(context)
        strip = sequencer.active_strip(seq_scene) or next(iter(sequencer.selected_or_active(seq_scene)), None)
        if strip is None:
            self.report({"ERROR"}, "Select a movie or image strip in the sequencer first.")
            return {"CANCELLED"}
        try:
            req, _src = request.build_request(context, strip, seq_scene)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        path = bpy.path.abspath(self.filepath)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(req, fh)
            fh.write("\n")
        handlers.refresh_preview(context.scene)
        self.report({"INFO"}, f"Wrote {path}")
        return {"FINISHED"}


class RelightRun:
    """A queue of strips relit one after another by worker processes; `tick()` advances it without blocking.

    The modal operator calls `tick()` from its timer, the synchronous path in a loop; both therefore share
    one code path. `report(level, message)` receives the messages an operator would report.
    """

    def __init__(self, context, strip_names: list[str], report) -> None:
        self.scene_name = context.scene.name
        self.seq_scene_name = sequencer.sequencer_scene(context).name
        self.queue = list(strip_names)
        self.report = report
        self.job: WorkerJob | None = None
        self.pending: request.PendingRequest | None = None
        self.frame_warnings: dict[str, list[int]] = {}
        self.thread: threading.Thread | None = None
        self.strip_name = ""
        self.req: dict = {}
        self.src = None
        self.cancel_requested = False
        self.errors = 0
        self.finished: list[str] = []

    @property
    def scene(self):
        return bpy.data.scenes.get(self.scene_name)

    @property
    def seq_scene(self):
        return bpy.data.scenes.get(self.seq_scene_name)

    def _strip(self, name: str):
        strips = sequencer.strips_of(self.seq_scene) if self.seq_scene is not None else None
        return strips.get(name) if strips is not None else None

    def start_next(self, context) -> bool:
        """Start preparing the next queued strip (its SH on a thread); False when none is left."""
        self.job = None
        while self.queue and not self.cancel_requested:
            name = self.queue.pop(0)
            strip = self._strip(name)
            if strip is None:
                continue
            try:
                self.pending = request.PendingRequest(context, strip, self.seq_scene)
            except ValueError as exc:
                self._failed(str(exc))
                continue
            self.strip_name = name
            if len({id(x) for x in self.pending.snaps or ()}) <= INLINE_FRAMES:  # cheap: start the worker now
                if not self._start_job(context):
                    continue
            else:
                self.thread = threading.Thread(target=self.pending.compute, daemon=True)
                self.thread.start()
            s = self.scene.portrait_relight
            s.is_running, s.progress = True, 0.0
            if self.job is None:
                s.status = f"{name}: preparing the request..."
            return True
        return False

    def _failed(self, msg: str) -> None:
        msg = request.blender_words(msg)
        self.errors += 1
        self.scene.portrait_relight.last_result = msg
        self.report("ERROR", msg)

    def _start_job(self, context) -> bool:
        """Finish the prepared request and start its worker (False when it could not be started)."""
        pending, self.pending, self.thread = self.pending, None, None
        if pending.snaps is not None and pending.req["lighting"] is None and pending.error is None:
            pending.compute()
        try:
            self.req, self.src = pending.finish(context), pending.src
            takes.prepare_take(self.req, timeline_start=self.src.timeline_start)
            self.job = WorkerJob(request.engine(), self.req)
        except (ValueError, RuntimeError, OSError) as exc:
            self._failed(str(exc))
            return False
        self.scene.portrait_relight.status = f"{self.strip_name}: starting the engine..."
        return True

    def _warning(self, ev: dict) -> None:
        """A frame's warning is collected (reported once per strip with its timeline frames); others now."""
        msg = request.blender_words(str(ev.get("message", "")))
        if ev.get("frame") is None or self.src is None:
            self.report("WARNING", f"{self.strip_name}: {msg}")
            return
        first = self.src.frames[0] if self.src.frames is not None else 0
        self.frame_warnings.setdefault(msg, []).append(self.src.timeline_start + int(ev["frame"]) - first)

    def _report_frame_warnings(self) -> None:
        for msg, frames in self.frame_warnings.items():
            word = "frame" if len(set(frames)) == 1 else "frames"
            self.report("WARNING", f"{self.strip_name}, {word} {request.frame_ranges(frames)}: "
                                   f"{msg.replace(' on this frame', '')}")
        self.frame_warnings = {}

    def cancel(self) -> None:
        """Stop after the current frame; queued strips are dropped."""
        self.cancel_requested = True
        self.queue = []
        if self.job is not None:
            self.job.cancel()

    def tick(self, context) -> bool:
        """Poll the worker, update progress, collect a finished strip, start the next; False when done."""
        if self.pending is not None:
            if self.thread is not None and self.thread.is_alive():
                return True
            if self.cancel_requested or not self._start_job(context):
                self.pending = None
                return self.start_next(context)
        job = self.job
        if job is None:
            return False
        for ev in job.poll():
            if ev.get("event") == "warning":
                self._warning(ev)
            elif ev.get("event") == "progress" and bpy.app.background:
                print(f"  {self.strip_name} {ev.get('stage')}: {ev.get('done')}/{ev.get('total')}",
                      flush=True)
        s = self.scene.portrait_relight
        st = job.state
        s.progress = st.fraction
        s.status = (f"{self.strip_name}: cancelling..." if job.cancelling else
                    f"{self.strip_name}: {st.stage or 'starting'} {st.done}/{st.total or '?'}")
        if not job.finished:
            return True
        self._report_frame_warnings()
        strip = self._strip(self.strip_name)
        if strip is not None:
            try:
                level, msg = finish_strip(self.scene, self.seq_scene, strip, self.src, self.req, job)
            except ValueError as exc:
                level, msg = "ERROR", str(exc)
            self.errors += level == "ERROR"
            self.finished.append(self.strip_name)
            self.report(level, msg)
        if job.state.finished == "cancelled":
            self.cancel_requested = True
        return self.start_next(context)

    def close(self) -> None:
        """Stop any worker still running and clear the panel state; one undo step for the added strips."""
        if self.job is not None and self.job.running:
            self.job.kill()
        sc = self.scene
        if sc is not None:
            sc.portrait_relight.is_running = False
            sc.portrait_relight.status = ""
            sc.portrait_relight.progress = 0.0
        if self.finished and bpy.ops.ed.undo_push.poll():
            names = ", ".join(f"'{n}'" for n in self.finished)
            bpy.ops.ed.undo_push(message=f"Relight {names}")


def run_to_end(run, context) -> None:
    """Tick a run (relight or track) to its end on this thread, for background mode and farms; Ctrl-C
    cancels it cleanly (its finished frames still come back)."""
    try:
        while run.tick(context):
            time.sleep(0.05)
    except KeyboardInterrupt:
        run.cancel()
        while run.tick(context):
            time.sleep(0.05)
    finally:
        run.close()
        _RUN.clear()


def can_run_modal(context) -> bool:
    """A modal run needs a window and Blender's event loop (not `blender -b`)."""
    return not bpy.app.background and context.window is not None


class _RelightBase:
    bl_options = {"REGISTER"}

    synchronous: BoolProperty(name="Synchronous", default=False, options={"SKIP_SAVE"},
                              description="Run to completion before returning (always so in background mode)")

    all_selected = False

    @classmethod
    def poll(cls, context):
        if _RUN:
            cls.poll_message_set("A relight is running; cancel it or wait for it to finish")
            return False
        if not hasattr(context.scene, "portrait_relight"):
            return False
        if not cls._strips(cls, context):
            cls.poll_message_set("Select a movie or image strip in the sequencer (relight results are not "
                                 "sources)")
            return False
        return True

    def _strips(self, context) -> list:
        seq_scene = sequencer.sequencer_scene(context)
        if self.all_selected:
            return sequencer.selected_or_active(seq_scene)
        act = sequencer.active_strip(seq_scene)
        return [act] if act is not None else sequencer.selected_or_active(seq_scene)[:1]

    # ---------------------------------------------------------------- synchronous
    def execute(self, context):
        run = begin_run(self, context, self._strips(context))
        if run is None:
            return {"CANCELLED"}
        run_to_end(run, context)
        return {"CANCELLED"} if run.errors and not run.finished else {"FINISHED"}

    # ---------------------------------------------------------------- modal
    def invoke(self, context, event):
        if self.synchronous or not can_run_modal(context):
            return self.execute(context)
        return start_modal(self, context, self._strips(context))

    def modal(self, context, event):
        return modal_step(context, event)

    def cancel(self, context) -> None:
        """Blender ends the modal operator (File > New / Open, window closed): stop the run cleanly."""
        abort_run()


def _reporter(op):
    """report(level, message) for a RelightRun: the operator's reports, also printed in background mode."""

    def report(level: str, msg: str) -> None:
        op.report({level}, msg)
        if bpy.app.background:
            print(f"Portrait Relight: {msg}", flush=True)

    return report


def begin_run(op, context, strips: list) -> RelightRun | None:
    """Create the run for `strips` and start its first worker (None when nothing could be started)."""
    if not strips:
        op.report({"ERROR"}, "Select a movie or image strip in the sequencer first.")
        return None
    run = RelightRun(context, [s.name for s in strips], _reporter(op))
    _RUN.clear()
    _RUN["run"] = run
    if not run.start_next(context):
        _RUN.clear()
        return None
    return run


def start_modal(op, context, strips: list, add_handler: bool = True) -> set:
    """Start a run driven by a window-manager timer; `op.modal` then calls `modal_step`."""
    if begin_run(op, context, strips) is None:
        return {"CANCELLED"}
    _RUN["op"] = op
    wm = context.window_manager
    _RUN["wm"] = wm
    if add_handler:
        _RUN["timer"] = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(op)
    wm.progress_begin(0, 100)
    return {"RUNNING_MODAL"}


def panel_regions(context) -> list:
    """The open sidebars of Sequencer and 3D viewport areas, where the add-on's panels are."""
    regions = []
    for win in getattr(context.window_manager, "windows", []):
        for area in win.screen.areas:
            if area.type in {"SEQUENCE_EDITOR", "VIEW_3D"}:
                regions += [r for r in area.regions if r.type == "UI" and r.width > 1 and r.height > 1]
    return regions


def pointer_over_panel(context, event) -> bool:
    """Whether the mouse pointer of `event` is over one of the add-on's sidebars."""
    x, y = getattr(event, "mouse_x", None), getattr(event, "mouse_y", None)
    if x is None or y is None:
        return False
    return any(r.x <= x < r.x + r.width and r.y <= y < r.y + r.height for r in panel_regions(context))


def modal_step(context, event) -> set:
    """One modal event: Esc cancels, a timer tick polls the worker and updates progress."""
    run: RelightRun | None = _RUN.get("run")
    if run is None:
        return end_modal(context)
    if event.type == "ESC" and event.value == "PRESS":
        if not pointer_over_panel(context, event) or getattr(context.screen, "is_animation_playing", False):
            return {"PASS_THROUGH"}  # Esc belongs to playback and the editor under the pointer
        run.cancel()
        return {"RUNNING_MODAL"}
    if event.type != "TIMER":
        return {"PASS_THROUGH"}
    running = run.tick(context)
    s = context.scene.portrait_relight
    _status(context, f"Portrait Relight  {s.status}  (Cancel, or Esc over the panel)" if running else None)
    _RUN["wm"].progress_update(int(100 * s.progress))
    _redraw(context)
    return {"RUNNING_MODAL"} if running else end_modal(context)


def abort_run() -> None:
    """Stop a run in progress at once (worker killed, timer removed, run state cleared); no strip is added.
    Used when the file it belongs to goes away and by `unregister`."""
    run: RelightRun | None = _RUN.get("run")
    if run is not None:
        run.finished = []
        try:
            run.close()
        except ReferenceError:  # its scene is already freed
            if run.job is not None and run.job.running:
                run.job.kill()
    timer, wm = _RUN.get("timer"), _RUN.get("wm")
    if timer is not None and wm is not None:
        try:
            wm.event_timer_remove(timer)
            wm.progress_end()
        except (ReferenceError, RuntimeError):
            pass
    _RUN.clear()
    clear_run_state()


@persistent
def _on_load_pre(*_args) -> None:
    abort_run()


@persistent
def _on_load_post(*_args) -> None:
    clear_run_state()


def end_modal(context) -> set:
    """Close the run: stop a worker still alive, remove the timer, clear progress and status."""
    run: RelightRun | None = _RUN.get("run")
    if run is not None:
        run.close()
    wm = _RUN.get("wm") or context.window_manager
    if _RUN.get("timer") is not None:
        wm.event_timer_remove(_RUN["timer"])
    wm.progress_end()
    _status(context, None)
    _RUN.clear()
    _redraw(context)
    return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_relight(_RelightBase, bpy.types.Operator):
    """Relight the active movie or image strip with the chosen lighting and view, as a strip above it"""

    bl_idname = "portrait_relight.relight"
    bl_label = "Relight"


class PORTRAIT_RELIGHT_OT_relight_strips(_RelightBase, bpy.types.Operator):
    """Relight all selected movie/image strips one after another (synchronous=True for farms)"""

    bl_idname = "portrait_relight.relight_strips"
    bl_label = "Relight All Selected Strips"
    all_selected = True


class PORTRAIT_RELIGHT_OT_cancel(bpy.types.Operator):
    """Cancel the running relight (finished frames are kept as a partial strip)"""

    bl_idname = "portrait_relight.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return bool(_RUN)

    def execute(self, context):
        run: RelightRun | None = _RUN.get("run")
        if run is not None:
            run.cancel()
        return {"FINISHED"}


def _open_folder(path: str) -> None:
    """Show a folder in the system's file browser."""
    bpy.ops.wm.path_open(filepath=path)


def result_for(context):
    """(result strip, its source strip or None) for the active strip: the active result strip itself, or
    the result of the active source strip; (None, None) when there is none."""
    seq_scene = sequencer.sequencer_scene(context)
    act = sequencer.active_any(seq_scene)
    if act is None:
        return None, None
    if sequencer.is_result(act):
        return act, sequencer.strips_of(seq_scene).get(act.get(sequencer.SOURCE_KEY, ""))
    return sequencer.result_of(seq_scene, act), act


def take_files(result, take: int) -> tuple[list[str], str]:
    """(frame files in order, take folder) of take `take` of a result strip (ValueError when missing)."""
    strip_dir = bpy.path.abspath(result.get(sequencer.FOLDER_KEY, ""))
    folder = takes.take_folder(strip_dir, take)
    found = takes.frame_files(folder, takes.take_format(folder))
    if not found:
        raise ValueError(f"Take {take} of '{result.name}' has no frames in {folder}.")
    first = min(found)
    files = []
    while first + len(files) in found:
        files.append(found[first + len(files)])
    return files, folder


class PORTRAIT_RELIGHT_OT_switch_take(bpy.types.Operator):
    """Show another take of the active relit strip (its placement, blending and modifiers stay)"""

    bl_idname = "portrait_relight.switch_take"
    bl_label = "Switch Take"
    bl_options = {"REGISTER", "UNDO"}

    take: IntProperty(name="Take", min=1, default=1, description="Take number to show (take_NNN folder)")

    @classmethod
    def poll(cls, context):
        if result_for(context)[0] is None:
            cls.poll_message_set("Select a relit strip (or its source) that has takes")
            return False
        return True

    def execute(self, context):
        result, source = result_for(context)
        try:
            files, folder = take_files(result, self.take)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        info = takes.take_info(folder)
        still = (info.get("look") or {}).get("frames") is None and len(files) == 1 and source is not None
        length = int(source.frame_final_duration) if still else len(files)
        start = info.get("timeline_start")
        new = sequencer.add_result_strip(sequencer.sequencer_scene(context), source or result, files,
                                         length=length, take=self.take,
                                         folder=bpy.path.abspath(result.get(sequencer.FOLDER_KEY, "")),
                                         start=int(result.frame_start) if start is None else int(start))
        if files[0].lower().endswith(".exr"):
            sync_compositor(context.scene, new)
        self.report({"INFO"}, f"'{result.name}' shows take {self.take}")
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_load_exr_compositor(bpy.types.Operator):
    """Put the active relit EXR strip in the compositor as an Image node playing in step with the strip"""

    bl_idname = "portrait_relight.load_exr_compositor"
    bl_label = "Load EXR in Compositor"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        result = result_for(context)[0]
        if result is None or not result.elements[0].filename.lower().endswith(".exr"):
            cls.poll_message_set("Select a relit strip made with the OpenEXR format")
            return False
        return True

    def execute(self, context):
        result, _source = result_for(context)
        sync_compositor(context.scene, result, add=True)
        start = int(result.frame_start)
        self.report({"INFO"}, f"'{result.name}' is in the compositor, frames {start}-"
                              f"{start + len(result.elements) - 1}")
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_open_output(bpy.types.Operator):
    """Open the folder of the shown take of the active relit strip (or the last relight's folder)"""

    bl_idname = "portrait_relight.open_output"
    bl_label = "Open Output Folder"

    def execute(self, context):
        result, _source = result_for(context)
        if result is not None and result.get(sequencer.FOLDER_KEY):
            path = takes.take_folder(bpy.path.abspath(result[sequencer.FOLDER_KEY]),
                                     int(result.get(sequencer.TAKE_KEY, 1)))
        else:
            path = bpy.path.abspath(context.scene.portrait_relight.last_output)
        if not path or not os.path.isdir(path):
            self.report({"ERROR"}, "Nothing was relit here yet; relight a strip first.")
            return {"CANCELLED"}
        _open_folder(os.path.normpath(path))
        return {"FINISHED"}


CLASSES = (
    PORTRAIT_RELIGHT_OT_switch_take, PORTRAIT_RELIGHT_OT_open_output, PORTRAIT_RELIGHT_OT_load_exr_compositor,
    PORTRAIT_RELIGHT_OT_check_engine, PORTRAIT_RELIGHT_OT_add_head_rig, PORTRAIT_RELIGHT_OT_follow_head,
    PORTRAIT_RELIGHT_OT_add_orbit_rig,
    PORTRAIT_RELIGHT_OT_update_preview, PORTRAIT_RELIGHT_OT_export_request, PORTRAIT_RELIGHT_OT_relight,
    PORTRAIT_RELIGHT_OT_relight_strips, PORTRAIT_RELIGHT_OT_cancel,
)


def running_job() -> WorkerJob | None:
    """The worker job in progress (None when idle)."""
    run = _RUN.get("run")
    return run.job if run is not None else None


_LOAD_HANDLERS = ((bpy.app.handlers.load_pre, _on_load_pre), (bpy.app.handlers.load_post, _on_load_post))


def _remove_handler(lst, fn) -> None:
    for h in list(lst):
        name = (getattr(h, "__module__", ""), getattr(h, "__name__", ""))
        if h is fn or name == (fn.__module__, fn.__name__):
            lst.remove(h)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for lst, fn in _LOAD_HANDLERS:
        _remove_handler(lst, fn)
        lst.append(fn)


def unregister() -> None:
    abort_run()
    for lst, fn in _LOAD_HANDLERS:
        _remove_handler(lst, fn)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
