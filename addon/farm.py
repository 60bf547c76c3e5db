"""Export Farm Job: the selected strips as an Open Job Description job bundle (AWS Deadline Cloud's job
format; `deadline bundle submit BUNDLE`, or `relight-core farm-job`'s local run).

Each strip's request is built exactly as a local Relight builds it (`request.build_request`: lights and
cameras per frame, evaluated at the timeline frames the strip occupies), so the farm renders what a local
relight would, into the same output folder: the frames come back where *Relight* looks for them, and a
later Relight of the unchanged strip finds them done and loads them as its result strip.
"""

from __future__ import annotations

import bpy
from bpy.props import IntProperty, StringProperty

from . import _core, request, sequencer

DEFAULT_BUNDLE = "//farm_job/"


def export_bundle(context, strips: list, bundle: str, chunk: int, warmup: int, engine: str) -> str:
    """Write the bundle for `strips` -> the template's path. ValueError (or the engine's UserError) names
    what is wrong with a strip."""
    farm = _core.core_module("farm")
    seq_scene = sequencer.sequencer_scene(context)
    requests = []
    for strip in strips:
        req, src = request.build_request(context, strip, seq_scene)
        if src.frames is None:
            raise ValueError(f"Strip '{strip.name}' is a single image; a farm job chunks clips, so relight "
                             "it with Relight instead.")
        requests.append(req)
    names = farm.unique_names(s.name for s in strips)
    shots = [farm.Shot(n, r) for n, r in zip(names, requests, strict=True)]
    path = farm.write_bundle(bpy.path.abspath(bundle), shots, chunk=chunk, warmup=warmup, engine=engine,
                             name=f"Portrait Relight: {bpy.path.basename(bpy.data.filepath) or 'untitled'}",
                             relative_outputs=False)
    return str(path)


class PORTRAIT_RELIGHT_OT_export_farm_job(bpy.types.Operator):
    """Write the selected strips as a render-farm job (Open Job Description bundle for AWS Deadline Cloud)"""

    bl_idname = "portrait_relight.export_farm_job"
    bl_label = "Export Farm Job"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Bundle Folder", subtype="DIR_PATH", default=DEFAULT_BUNDLE,
                              description="Folder to write the job bundle (template.yaml, shots/) into")
    chunk: IntProperty(name="Frames per Task", default=50, min=1, max=150,
                       description="How many frames one farm task relights")
    warmup: IntProperty(name="Warm-up Frames", default=12, min=0, max=100,
                        description="Frames before each task's chunk that it processes without writing, so "
                                    "that chunks look exactly like one pass")
    engine: StringProperty(name="Engine Command", default="relight-core",
                           description="How a farm worker runs the engine, e.g. /opt/relight/.venv/bin/"
                                       "relight-core")

    @classmethod
    def poll(cls, context):
        if not hasattr(context.scene, "portrait_relight"):
            return False
        if not sequencer.selected_or_active(sequencer.sequencer_scene(context)):
            cls.poll_message_set("Select one or more movie or image strips in the sequencer.")
            return False
        return True

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        strips = sequencer.selected_or_active(sequencer.sequencer_scene(context))
        try:
            path = export_bundle(context, strips, self.directory, self.chunk, self.warmup, self.engine)
        except (ValueError, _core.user_error()) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        folder = bpy.path.abspath(self.directory)
        self.report({"INFO"}, f"Wrote a farm job for {len(strips)} strip(s) to {path}; submit it with "
                              f"'deadline bundle submit {folder}'")
        return {"FINISHED"}


CLASSES = (PORTRAIT_RELIGHT_OT_export_farm_job,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
