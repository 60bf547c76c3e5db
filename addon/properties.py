"""Scene settings of the add-on (`scene.portrait_relight`) and the add-on preferences."""

from __future__ import annotations

import math
import os
import sys
import tempfile

import bpy
from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from ._core import core_module, installed_wheels_dir, repo_root
from .worker_client import Engine, chosen_engine, default_engine

PASSES = ("rgba", "albedo", "shading", "normal", "depth", "specular", "shadow", "P", "matte", "id")
_preset_items_cache: list = []


def _preset_items(_self, _context) -> list:
    """Enum items of the lighting presets shipped with the engine (kept alive in a module list)."""
    try:
        names = list(core_module("lights").list_presets())
    except Exception:  # noqa: BLE001 - a broken presets folder must not break the UI
        names = []
    _preset_items_cache[:] = [(n, n.replace("_", " ").title(), f"Lighting preset '{n}'") for n in names] or [
        ("NONE", "(no presets found)", "The engine's presets folder is empty or missing")]
    return _preset_items_cache


def _is_camera(_self, obj) -> bool:
    return obj.type == "CAMERA"


# Run state lives here, not in the .blend: a file saved mid-run must reopen idle (scene name -> values).
_TRANSIENT: dict[str, dict] = {}


def _transient(key: str, default):
    """get/set functions of a run-state property: RNA properties with Python get/set are never saved."""

    def get(self):
        return _TRANSIENT.get(self.id_data.name, {}).get(key, default)

    def set_(self, value) -> None:
        _TRANSIENT.setdefault(self.id_data.name, {})[key] = value

    return {"get": get, "set": set_}


def clear_run_state() -> None:
    """Forget every scene's running flag, progress and status (a file was loaded, or the run ended)."""
    _TRANSIENT.clear()


# path properties that may hold '//' paths (relative to the .blend) say so (Blender 4.5+ warns otherwise)
BLEND_RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()


def _orbit_offsets(self, _context) -> None:
    from . import orbit

    rig = bpy.data.objects.get(orbit.ORBIT_NAME)
    if rig is not None:
        angles = (self.orbit_yaw, self.orbit_pitch, self.orbit_roll)
        orbit.set_offsets(rig, *(math.degrees(a) for a in angles))


def _refresh_preview(_self, context) -> None:
    from . import handlers

    handlers.refresh_preview(context.scene, force=True)


def _toggle_live(self, context) -> None:
    from . import live_preview

    live_preview.toggle(self, context)


def _live_changed(_self, _context) -> None:
    from . import live_preview

    live_preview.mark_dirty()


class PortraitRelightSettings(bpy.types.PropertyGroup):
    """Per-scene settings, the last request's light and the state of the running job."""

    anchor: PointerProperty(name="Head Anchor", type=bpy.types.Object,
                            description="Empty that carries head space (made by Add Head Rig); lights and "
                                        "the camera are taken relative to it. Empty: the world origin")
    camera: PointerProperty(name="Camera", type=bpy.types.Object, poll=_is_camera,
                            description="Camera for the Scene Camera view; empty: the scene's camera")
    lighting_source: EnumProperty(
        name="Lighting", default="SCENE", update=_refresh_preview,
        description="Where the target lighting comes from",
        items=[("SCENE", "Scene Lights", "Sun, point, spot, area lights and the World, at the head anchor"),
               ("PRESET", "Preset", "A lighting preset shipped with the engine"),
               ("REFERENCE", "Reference Image", "Match the lighting of a reference photo of a face"),
               ("FILE", "Light File", "A light file (.txt DPR coefficients, .npy or .json)")])
    preset: EnumProperty(name="Preset", items=_preset_items, update=_refresh_preview,
                         description="Lighting preset shipped with the engine")
    reference_image: StringProperty(name="Reference", subtype="FILE_PATH", options=BLEND_RELATIVE,
                                    description="Photo of a face whose lighting to copy")
    light_file: StringProperty(name="Light File", subtype="FILE_PATH", update=_refresh_preview,
                               options=BLEND_RELATIVE, description="SH light file (.txt, .npy or .json)")
    light_space: EnumProperty(
        name="Light Space", default="world",
        description="Whether the light stays with the set or turns with the head",
        items=[("world", "World", "Light fixed to the set: when the head turns its shading changes"),
               ("head", "Head", "Light fixed to the head")])
    view: EnumProperty(
        name="View", default="SOURCE",
        description="Camera of the relit frames: the footage's own, or a new one from the scene",
        items=[("SOURCE", "Source Camera", "Keep the footage's own camera"),
               ("SCENE", "Scene Camera", "Re-render from the scene camera's pose relative to the head "
                                         "anchor, per frame")])
    follow_head: BoolProperty(
        name="Anchor Follows Head", default=False,
        description="The anchor is keyed to the tracked head (Follow Tracked Head): lights are sent in the "
                    "head's frame (light space Head), so lights fixed in the scene act as fixed on set")
    orbit_yaw: FloatProperty(name="Yaw", subtype="ANGLE", default=0.0, update=_orbit_offsets,
                             description="Still offset of the orbit: the camera turns toward image right")
    orbit_pitch: FloatProperty(name="Pitch", subtype="ANGLE", default=0.0, update=_orbit_offsets,
                               description="Still offset of the orbit: the camera rises and looks down")
    orbit_roll: FloatProperty(name="Roll", subtype="ANGLE", default=0.0, update=_orbit_offsets,
                              description="Still offset of the orbit: the camera rolls about its view axis")
    pass_rgba: BoolProperty(name="RGBA", default=True, description="Relit image with alpha")
    pass_albedo: BoolProperty(name="Albedo", default=False,
                              description="Surface colour without lighting (linear; an EXR layer or PNGs)")
    pass_shading: BoolProperty(name="Shading", default=False,
                               description="The target lighting on the face alone (linear)")
    pass_normal: BoolProperty(name="Normal", default=False,
                              description="Surface normals of the head in the output camera (0..1)")
    pass_depth: BoolProperty(name="Depth", default=False,
                             description="Distance from the output camera in head units")
    pass_specular: BoolProperty(name="Specular", default=False,
                                description="The key lights' highlights alone (linear; beauty = albedo x "
                                            "shading + specular)")
    pass_shadow: BoolProperty(name="Key Shadow", default=False,
                              description="Where the key lights are blocked (0 shadowed .. 1 lit)")
    pass_P: BoolProperty(name="Position", default=False,
                         description="Camera-space position of each pixel in head units (16-bit PNG)")
    pass_matte: BoolProperty(name="Person Matte", default=False, description="The person's alpha matte")
    pass_id: BoolProperty(name="ID Mattes", default=False,
                          description="Region index per pixel: skin, eyes, brows, lips, rest of the head")
    output_format: EnumProperty(
        name="Format", default="png", description="File format of the relit frames and passes",
        items=[("png", "PNG", "8-bit sRGB PNG per pass and frame"),
               ("exr", "OpenEXR Multilayer", "One linear EXR per frame with all passes as layers")])
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", default="//relight/",
                               options=BLEND_RELATIVE,
                               description="Folder for the relit frames: <folder>/<scene>/<strip>/take_NNN/. "
                                           "'//' is the .blend's folder (unsaved files: the Cache Folder)")
    size: IntProperty(name="Size", default=0, min=0, soft_max=4096,
                      description="Longer side of the output in pixels; 0 keeps the footage size")
    frame_range: EnumProperty(
        name="Frames", default="ALL", description="Which frames of the strip to relight",
        items=[("ALL", "Whole Strip", "Every frame the strip shows"),
               ("CURRENT", "Current Frame", "Only the frame under the playhead (a quick look)"),
               ("PREVIEW", "Preview Range", "Only the frames inside the timeline's preview range")])
    background: EnumProperty(
        name="Background", default="keep", description="What the relit frames show around the person",
        items=[("keep", "Keep", "Keep the footage background"),
               ("transparent", "Transparent", "Alpha 0 outside the person")])

    live_preview: BoolProperty(
        name="Live Preview", default=False, options={"SKIP_SAVE"}, update=_toggle_live,
        description="Relight the frame under the playhead while lights, camera or frame change, shown over "
                    "the active strip in the sequencer preview (a long-lived engine session)")
    live_size: EnumProperty(
        name="Preview Size", default="HALF", update=_live_changed,
        description="Working size of the Live Preview's frames",
        items=[("HALF", "1/2", "Half the strip's size (faster)"), ("FULL", "1/1", "The strip's full size")])
    live_pass: EnumProperty(
        name="Show", default="rgba", update=_live_changed,
        description="What the Live Preview shows over the strip",
        items=[("rgba", "Relit", "The relit image"), ("albedo", "Albedo", "The estimated albedo"),
               ("shading", "Shading", "The target shading"),
               ("normal", "Normal", "Surface normals as colour")])

    # state (not user settings); the run state is never saved (see _TRANSIENT)
    is_running: BoolProperty(name="Running", description="A relight of this scene is running",
                             **_transient("is_running", False))
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR",
                            description="Progress of the running relight", **_transient("progress", 0.0))
    status: StringProperty(name="Status", description="What the running relight is doing, or a lighting "
                                                      "problem", **_transient("status", ""))
    last_result: StringProperty(name="Last Result", default="", description="Outcome of the last relight")
    last_output: StringProperty(name="Last Output", default="", subtype="DIR_PATH", options=BLEND_RELATIVE,
                                description="Take folder of the last relight")
    sh: FloatVectorProperty(name="SH", size=27, default=(0.0,) * 27,
                            description="Irradiance SH (9 x RGB, DPR order) of the last request, first frame")
    sh_frames: IntProperty(name="SH Frames", default=0, description="Frames of SH in the last request")

    def passes(self) -> list[str]:
        """Requested pass names (rgba always included); every pass for EXR, which holds them all as layers
        (the pass toggles are hidden then)."""
        if self.output_format == "exr":
            return list(PASSES)
        return [p for p in PASSES if p == "rgba" or getattr(self, f"pass_{p}")]


class PortraitRelightPreferences(bpy.types.AddonPreferences):
    """Engine location, device and cache folder."""

    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH", default="",
        description="Optional: Python executable of an external environment with relight_core installed "
                    "(e.g. a CUDA machine). Empty: the engine bundled with the extension, run with "
                    "Blender's own Python (from a source checkout: <repo>/.venv)")
    device: EnumProperty(name="Device", default="auto", description="Where the engine computes",
                         items=[("auto", "Auto", "CUDA when available, else CPU"),
                                ("cpu", "CPU", "Always the CPU"), ("cuda", "CUDA", "NVIDIA GPU")])
    cache_dir: StringProperty(name="Cache Folder", subtype="DIR_PATH", default="",
                              description="Output folder for unsaved .blend files; empty: the system temp")
    engine_status: StringProperty(name="Engine", default="", options={"SKIP_SAVE"},
                                  description="What Check Engine found")

    def draw(self, context) -> None:
        layout = self.layout
        layout.prop(self, "engine_python")
        if not self.engine_python:
            found = engine_python(context)
            layout.label(text=f"Using {found.describe() if found else 'nothing found; set the path above'}",
                         icon="INFO")
        layout.prop(self, "device")
        layout.prop(self, "cache_dir")
        row = layout.row()
        row.operator("portrait_relight.check_engine", icon="CHECKMARK")
        if self.engine_status:
            row.label(text=self.engine_status)


class _DefaultPrefs:
    """Stand-in preferences when the add-on is registered without the add-on system (defaults)."""

    engine_python = ""
    device = "auto"
    cache_dir = ""
    engine_status = ""


def get_prefs(context=None):
    """This add-on's preferences (defaults when it was registered by hand, e.g. in a script)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    return addon.preferences if addon is not None and addon.preferences is not None else _DefaultPrefs()


def engine_python(context=None) -> Engine:
    """The engine to run: the Engine Python preference (an external environment), else the engine bundled
    with the extension run by Blender's own Python (`worker_client.default_engine` says the order)."""
    p = get_prefs(context).engine_python
    if p:
        return chosen_engine(bpy.path.abspath(p), repo_root())
    return default_engine(repo_root(), installed_wheels_dir(), sys.executable)


def output_root(settings, context=None) -> str:
    """Absolute output folder: the scene setting; '//' paths need a saved .blend, else the cache folder."""
    out = settings.output_dir or "//relight/"
    if out.startswith("//") and not bpy.data.filepath:
        base = bpy.path.abspath(get_prefs(context).cache_dir) if get_prefs(context).cache_dir else \
            os.path.join(tempfile.gettempdir(), "portrait_relight")
        return os.path.normpath(os.path.join(base, out[2:]))
    return os.path.normpath(bpy.path.abspath(out))


CLASSES = (PortraitRelightSettings, PortraitRelightPreferences)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.portrait_relight = PointerProperty(type=PortraitRelightSettings)


def unregister() -> None:
    del bpy.types.Scene.portrait_relight
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
