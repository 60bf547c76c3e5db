"""Sidebar panels ("Portrait Relight" tab) in the Sequencer and in the 3D viewport (same content)."""

from __future__ import annotations

import bpy

from . import live_preview, operators, orbit, scene_lighting, sequencer, takes
from .properties import PASSES

CATEGORY = "Portrait Relight"


def draw_main(layout, context) -> None:
    """Source strip, Relight / Cancel, progress and the last result."""
    settings = context.scene.portrait_relight
    seq_scene = sequencer.sequencer_scene(context)
    act = sequencer.active_strip(seq_scene)
    n_sel = len([s for s in sequencer.media_strips(seq_scene) if s.select])
    box = layout.box()
    if act is not None:
        box.label(text=f"Source: {act.name}", icon="SEQUENCE")
        box.label(text=f"Frames {act.frame_final_start}-{act.frame_final_end - 1}, channel {act.channel}")
    else:
        box.label(text="Select a movie or image strip", icon="INFO")
    if seq_scene != context.scene:
        box.label(text=f"Sequencer scene: {seq_scene.name}")
    if operators.running_job() is not None or settings.is_running:
        layout.progress(factor=settings.progress, type="BAR", text=settings.status or "Running...")
        layout.operator("portrait_relight.cancel", icon="CANCEL")
    else:
        col = layout.column(align=True)
        col.scale_y = 1.3
        col.operator("portrait_relight.relight", icon="LIGHT")
        if n_sel > 1:
            col.operator("portrait_relight.relight_strips", text=f"Relight {n_sel} Selected Strips")
        col.operator("portrait_relight.export_farm_job", icon="NETWORK_DRIVE")
    live_preview.draw_panel(layout, context)
    layout.prop(settings, "frame_range")
    draw_takes(layout, context)
    if settings.last_result:
        col = layout.column(align=True)
        col.label(text="Last result:")
        for part in settings.last_result.split("; "):
            col.label(text=part)
    if settings.status and not settings.is_running:
        layout.label(text=settings.status, icon="ERROR")


def draw_takes(layout, context) -> None:
    """The relit strip of the active strip: its take (switch), its folder, the compositor."""
    result, _source = operators.result_for(context)
    row = layout.row(align=True)
    if result is not None and result.get(sequencer.FOLDER_KEY):
        take = int(result.get(sequencer.TAKE_KEY, 1))
        n = len(takes.list_takes(bpy.path.abspath(result[sequencer.FOLDER_KEY])))
        row.label(text=f"{result.name}: take {take} of {n}", icon="RENDERLAYERS")
        for step, icon in ((-1, "TRIA_LEFT"), (1, "TRIA_RIGHT")):
            sub = row.row(align=True)
            sub.enabled = 1 <= take + step <= n
            sub.operator("portrait_relight.switch_take", text="", icon=icon).take = max(1, take + step)
    row.operator("portrait_relight.open_output", text="", icon="FILE_FOLDER")
    if result is not None and result.elements[0].filename.lower().endswith(".exr"):
        layout.operator("portrait_relight.load_exr_compositor", icon="NODE_COMPOSITING")
    if not bpy.data.filepath:
        layout.label(text="Unsaved file: frames go to the Cache Folder", icon="INFO")


def draw_lighting(layout, context) -> None:
    """Lighting source, head anchor, light space and the lit-sphere preview."""
    s = context.scene.portrait_relight
    layout.prop(s, "lighting_source")
    if s.lighting_source == "PRESET":
        layout.prop(s, "preset")
    elif s.lighting_source == "REFERENCE":
        layout.prop(s, "reference_image")
    elif s.lighting_source == "FILE":
        layout.prop(s, "light_file")
    layout.prop(s, "anchor")
    layout.prop(s, "light_space")
    img = bpy.data.images.get(scene_lighting.PREVIEW_IMAGE)
    row = layout.row()
    if img is not None and img.preview is not None:
        row.template_icon(icon_value=img.preview.icon_id, scale=6.0)
    else:
        row.label(text="No preview yet" if s.lighting_source != "REFERENCE" else
                  "Light estimated from the reference by the engine")
    layout.operator("portrait_relight.update_preview", icon="FILE_REFRESH")


def draw_view(layout, context) -> None:
    """Source camera or scene camera (novel view), and the head rig."""
    s = context.scene.portrait_relight
    layout.prop(s, "view", expand=True)
    if s.view == "SCENE":
        layout.prop(s, "camera")
    layout.operator("portrait_relight.add_head_rig", icon="OUTLINER_OB_EMPTY")
    row = layout.row(align=True)
    row.operator("portrait_relight.follow_head", icon="TRACKER")
    row.prop(s, "follow_head", text="", icon="LINKED")
    layout.operator_menu_enum("portrait_relight.add_orbit_rig", "preset", icon="CON_FOLLOWPATH")
    if bpy.data.objects.get(orbit.ORBIT_NAME) is not None:
        col = layout.column(align=True)
        for prop in ("orbit_yaw", "orbit_pitch", "orbit_roll"):
            col.prop(s, prop)


def draw_output(layout, context) -> None:
    """Passes, format, folder, size and background."""
    s = context.scene.portrait_relight
    layout.prop(s, "output_format")
    if s.output_format == "exr":  # the engine writes every pass into each EXR, as layers
        layout.label(text="Passes: all, as EXR layers", icon="RENDERLAYERS")
    else:
        col = layout.column(heading="Passes", align=True)
        for p in PASSES:
            col.prop(s, f"pass_{p}")
    layout.prop(s, "output_dir")
    layout.prop(s, "size")
    layout.prop(s, "background")


_SECTIONS = (("MAIN", "Portrait Relight", draw_main, None),
             ("LIGHTING", "Lighting", draw_lighting, "MAIN"),
             ("VIEW", "View", draw_view, "MAIN"),
             ("OUTPUT", "Output", draw_output, "MAIN"))
_SPACES = (("SEQUENCE_EDITOR", "SEQ"), ("VIEW_3D", "V3D"))


def _drawer(fn):
    def draw(self, context):
        fn(self.layout, context)

    return draw


def _make_panel(space: str, tag: str, key: str, label: str, fn, parent: str | None) -> type:
    attrs = {
        "bl_idname": f"PORTRAIT_RELIGHT_PT_{tag}_{key.lower()}",
        "bl_label": label,
        "bl_space_type": space,
        "bl_region_type": "UI",
        "bl_category": CATEGORY,
        "poll": classmethod(lambda cls, context: hasattr(context.scene, "portrait_relight")),
        "draw": _drawer(fn),
    }
    if parent is not None:
        attrs["bl_parent_id"] = f"PORTRAIT_RELIGHT_PT_{tag}_{parent.lower()}"
        attrs["bl_options"] = {"DEFAULT_CLOSED"} if key == "OUTPUT" else set()
    return type(attrs["bl_idname"], (bpy.types.Panel,), attrs)


CLASSES = tuple(_make_panel(space, tag, *sec) for space, tag in _SPACES for sec in _SECTIONS)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
