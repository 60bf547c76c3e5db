"""Operators: check engine, add head rig, update preview, relight (modal or synchronous), cancel.

One relight run at a time. In the UI the run is modal: a window-manager timer polls the worker (which
runs in its own process, read by threads), so Blender stays responsive; Esc or the Cancel button sends
`cancel`, the worker finishes its current frame and the finished frames still come back as a strip.
In background mode (`blender -b`) or with `synchronous=True` the same work runs to completion inside
`execute`, printing progress, for render farms.
"""

from __future__ import annotations

import json
import time

import bpy
from bpy.props import BoolProperty, StringProperty

from . import camera_sync, handlers, request, sequencer
from .properties import engine_python, get_prefs
from .worker_client import WorkerJob, check_engine

# The one run in progress: {"job", "queue", "strip", "src", "timer", "scene", "seq_scene", "cancel", ...}
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
    settings.last_output = req["output"]
    if st.finished == "error":
        settings.last_result = f"{strip.name}: error: {st.error}"
        return "ERROR", f"Portrait Relight, strip '{strip.name}': {st.error}"
    files = request.result_files(st, req, src)
    if not files:
        msg = f"{strip.name}: {st.finished}, no frames finished"
        settings.last_result = msg
        return "WARNING", msg
    new = sequencer.add_result_strip(seq_scene, strip, files,
                                     length=src.length if src.frames is None else None)
    if req.get("format") == "exr":
        request.load_exr_for_compositor(f"{strip.name} relit", files[0])
    n_expected = src.length if src.frames is not None else 1
    word = "relit" if st.finished == "done" and len(files) == n_expected else f"{st.finished}, partial"
    msg = f"{strip.name}: {word} {len(files)}/{n_expected} frames -> '{new.name}' (channel {new.channel})"
    if st.warnings:
        msg += f"; {len(st.warnings)} warning(s), first: {st.warnings[0]}"
    settings.last_result = msg
    return ("INFO" if word == "relit" else "WARNING"), msg


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


class PORTRAIT_RELIGHT_OT_update_preview(bpy.types.Operator):
    """Recompute the lit-sphere preview from the current lighting"""

    bl_idname = "portrait_relight.update_preview"
    bl_label = "Update Preview"

    def execute(self, context):
        handlers.refresh_preview(context.scene, force=True)
        return {"FINISHED"}


class PORTRAIT_RELIGHT_OT_export_request(bpy.types.Operator):
    """Write the engine request for the active strip to a JSON file (run it later with
    `<engine python> -m relight_core worker < request.json`)"""

    bl_idname = "portrait_relight.export_request"
    bl_label = "Export Request"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="//relight_request.json")

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


class _RelightBase:
    bl_options = {"REGISTER"}

    synchronous: BoolProperty(name="Synchronous", default=False, options={"SKIP_SAVE"},
                              description="Run to completion before returning (always so in background mode)")

    all_selected = False

    @classmethod
    def poll(cls, context):
        return not _RUN and hasattr(context.scene, "portrait_relight")

    def _strips(self, context) -> list:
        seq_scene = sequencer.sequencer_scene(context)
        if self.all_selected:
            return sequencer.selected_or_active(seq_scene)
        act = sequencer.active_strip(seq_scene)
        return [act] if act is not None else sequencer.selected_or_active(seq_scene)[:1]

    # ---------------------------------------------------------------- synchronous
    def execute(self, context):
        strips = self._strips(context)
        if not strips:
            self.report({"ERROR"}, "Select a movie or image strip in the sequencer first.")
            return {"CANCELLED"}
        scene, seq_scene = context.scene, sequencer.sequencer_scene(context)
        failures = 0
        for strip in strips:
            try:
                req, src = request.build_request(context, strip, seq_scene)
                job = WorkerJob(request.engine(), req)
            except (ValueError, RuntimeError) as exc:
                self.report({"ERROR"}, str(exc))
                failures += 1
                continue
            handlers.refresh_preview(scene)
            print(f"Portrait Relight: {strip.name} -> {req['output']}", flush=True)
            _RUN.update(job=job, strip=strip.name)
            try:
                job.wait(on_event=lambda e, s=scene: _print_event(s, e))
            except KeyboardInterrupt:
                job.cancel()
                job.wait()
            finally:
                _RUN.clear()
            level, msg = finish_strip(scene, seq_scene, strip, src, req, job)
            failures += level == "ERROR"
            self.report({level}, msg)
            print(f"Portrait Relight: {msg}", flush=True)
            if job.state.finished == "cancelled":
                break
        return {"CANCELLED"} if failures == len(strips) else {"FINISHED"}

    # ---------------------------------------------------------------- modal
    def invoke(self, context, event):
        if self.synchronous or bpy.app.background or context.window is None:
            return self.execute(context)
        strips = self._strips(context)
        if not strips:
            self.report({"ERROR"}, "Select a movie or image strip in the sequencer first.")
            return {"CANCELLED"}
        _RUN.clear()
        _RUN.update(queue=[s.name for s in strips], scene=context.scene.name,
                    seq_scene=sequencer.sequencer_scene(context).name, cancel=False, job=None, done=[])
        if not self._start_next(context):
            _RUN.clear()
            return {"CANCELLED"}
        wm = context.window_manager
        _RUN["timer"] = wm.event_timer_add(0.2, window=context.window)
        _RUN["wm"] = wm
        wm.progress_begin(0, 100)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _start_next(self, context) -> bool:
        """Start the next queued strip; False when the queue is empty or nothing could be started."""
        seq_scene = bpy.data.scenes.get(_RUN["seq_scene"])
        strips = sequencer.strips_of(seq_scene) if seq_scene is not None else None
        while _RUN["queue"]:
            name = _RUN["queue"].pop(0)
            strip = strips.get(name) if strips is not None else None
            if strip is None:
                continue
            try:
                req, src = request.build_request(context, strip, seq_scene)
                job = WorkerJob(request.engine(), req)
            except (ValueError, RuntimeError) as exc:
                self.report({"ERROR"}, str(exc))
                context.scene.portrait_relight.last_result = str(exc)
                continue
            _RUN.update(job=job, strip=name, req=req, src=src, started=time.monotonic())
            s = context.scene.portrait_relight
            s.is_running, s.progress, s.status = True, 0.0, f"{name}: starting the engine..."
            return True
        return False

    def modal(self, context, event):
        if not _RUN or _RUN.get("job") is None:
            return self._end(context)
        job: WorkerJob = _RUN["job"]
        if event.type == "ESC" and event.value == "PRESS" or (_RUN.get("cancel") and not job.cancelling):
            _RUN["cancel"] = True
            _RUN["queue"] = []
            job.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        for ev in job.poll():
            if ev.get("event") == "warning":
                self.report({"WARNING"}, f"{_RUN['strip']}: {ev.get('message')}")
        s = context.scene.portrait_relight
        st = job.state
        s.progress = st.fraction
        s.status = (f"{_RUN['strip']}: cancelling..." if job.cancelling else
                    f"{_RUN['strip']}: {st.stage or 'starting'} {st.done}/{st.total or '?'}")
        _status(context, f"Portrait Relight  {s.status}  (Esc to cancel)")
        _RUN["wm"].progress_update(int(100 * s.progress))
        _redraw(context)
        if not job.finished:
            return {"RUNNING_MODAL"}
        seq_scene = bpy.data.scenes.get(_RUN["seq_scene"])
        strips = sequencer.strips_of(seq_scene) if seq_scene is not None else None
        strip = strips.get(_RUN["strip"]) if strips is not None else None
        if strip is not None:
            try:
                level, msg = finish_strip(context.scene, seq_scene, strip, _RUN["src"], _RUN["req"], job)
            except ValueError as exc:
                level, msg = "ERROR", str(exc)
            self.report({level}, msg)
        if not _RUN.get("cancel") and self._start_next(context):
            return {"RUNNING_MODAL"}
        return self._end(context)

    def _end(self, context):
        wm = _RUN.get("wm") or context.window_manager
        if _RUN.get("timer") is not None:
            wm.event_timer_remove(_RUN["timer"])
        wm.progress_end()
        _status(context, None)
        s = context.scene.portrait_relight
        s.is_running, s.status = False, ""
        _RUN.clear()
        _redraw(context)
        return {"FINISHED"}


def _print_event(scene, event: dict) -> None:
    kind = event.get("event")
    if kind == "progress":
        print(f"  {event.get('stage')}: {event.get('done')}/{event.get('total')}", flush=True)
    elif kind == "warning":
        print(f"  warning: {event.get('message')}", flush=True)
    elif kind == "error":
        print(f"  error: {event.get('message')}", flush=True)


class PORTRAIT_RELIGHT_OT_relight(_RelightBase, bpy.types.Operator):
    """Relight the active movie/image strip with the chosen lighting and view; the result is added as a new
    strip above it"""

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
        _RUN["cancel"] = True
        _RUN["queue"] = []
        job = _RUN.get("job")
        if job is not None:
            job.cancel()
        return {"FINISHED"}


CLASSES = (PORTRAIT_RELIGHT_OT_check_engine, PORTRAIT_RELIGHT_OT_add_head_rig,
           PORTRAIT_RELIGHT_OT_update_preview, PORTRAIT_RELIGHT_OT_export_request,
           PORTRAIT_RELIGHT_OT_relight, PORTRAIT_RELIGHT_OT_relight_strips, PORTRAIT_RELIGHT_OT_cancel)


def running_job() -> WorkerJob | None:
    """The worker job in progress (None when idle)."""
    return _RUN.get("job")


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    job = _RUN.get("job")
    if job is not None:
        job.kill()
    timer, wm = _RUN.get("timer"), _RUN.get("wm")
    if timer is not None and wm is not None:
        try:
            wm.event_timer_remove(timer)
            wm.progress_end()
        except (ReferenceError, RuntimeError):
            pass
    _RUN.clear()
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
