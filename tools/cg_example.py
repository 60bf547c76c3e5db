"""Render docs/cg_composite_astronaut.png: the 3D compositing workflow on scikit-image's astronaut.

Track (the engine's head mesh and solved camera), a CG sphere between a sun and the head, a CG cube behind
the head, Set Up CG Composite, Cycles. Panels: the plate | the composite | the tracked head mesh (Cycles,
plain grey) over the plate. Run with the engine's Python (it has bpy):
    .venv/bin/python tools/cg_example.py [OUT.png]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(out: Path) -> None:
    import importlib

    import bpy
    from mathutils import Vector
    from skimage import data

    addon_utils = importlib.import_module("addon_utils")  # on the path once bpy is imported

    os.chdir(REPO)  # the worker runs this checkout's relight_core
    tmp = Path(tempfile.mkdtemp(prefix="pr_cg_"))
    (tmp / "addons").mkdir()
    (tmp / "addons" / "portrait_relight").symlink_to(REPO / "addon", target_is_directory=True)
    sys.path.insert(0, str(tmp / "addons"))
    addon_utils.enable("portrait_relight", default_set=True)
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python, prefs.device = sys.executable, "cpu"
    from portrait_relight import sequencer

    img = bpy.data.images.new("astro", 512, 512)
    rgba = np.ones((512, 512, 4), np.float32)
    rgba[..., :3] = data.astronaut()[::-1] / 255.0
    img.pixels.foreach_set(rgba.ravel())
    img.filepath_raw, img.file_format = str(tmp / "astronaut.png"), "PNG"
    img.save()
    sc = bpy.context.scene
    for ob in list(sc.objects):
        bpy.data.objects.remove(ob)
    strip = sequencer.strips_of(sc, ensure=True).new_image("astronaut", str(tmp / "astronaut.png"), 1, 1)
    sc.sequence_editor.active_strip = strip
    sc.portrait_relight.output_dir = str(tmp / "out")
    assert bpy.ops.portrait_relight.track(synchronous=True) == {"FINISHED"}
    sc.frame_set(1)

    to_light = Vector((-0.55, -0.45, 0.7)).normalized()  # anchor-local: upper left, in front
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy, sun.data.angle = 3.0, 0.05
    sun.rotation_mode = "QUATERNION"
    sun.rotation_quaternion = Vector((0, 0, 1)).rotation_difference(to_light)
    sc.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.4
    sc.world = world

    def add(name: str, mesh, location, colour) -> None:
        obj = bpy.data.objects.new(name, mesh)
        obj.location = location
        mat = bpy.data.materials.new(name)
        mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = colour
        mesh.materials.append(mat)
        sc.collection.objects.link(obj)

    import bmesh

    def prim(kind: str, **kw):
        bm = bmesh.new()
        (bmesh.ops.create_uvsphere if kind == "sphere" else bmesh.ops.create_cube)(bm, **kw)
        mesh = bpy.data.meshes.new(kind)
        bm.to_mesh(mesh)
        bm.free()
        for p in mesh.polygons:
            p.use_smooth = True
        return mesh

    add("CG Sphere", prim("sphere", u_segments=48, v_segments=24, radius=0.1),
        Vector((0.0, -0.35, 0.05)) + 0.6 * to_light, (0.8, 0.75, 0.2, 1.0))
    add("CG Cube", prim("cube", size=0.45), (0.45, 0.5, 0.15), (0.1, 0.3, 0.9, 1.0))
    assert bpy.ops.portrait_relight.setup_cg_composite() == {"FINISHED"}
    sc.cycles.samples, sc.cycles.use_denoising = 64, True
    sc.render.image_settings.file_format = "PNG"

    def render(path: Path) -> np.ndarray:
        sc.render.filepath = str(path)
        bpy.ops.render.render(write_still=True)
        im = bpy.data.images.load(str(path))
        a = np.array(im.pixels[:], np.float32).reshape(im.size[1], im.size[0], 4)[::-1, :, :3]
        bpy.data.images.remove(im)
        return a

    composite = render(tmp / "composite.png")
    for name in ("CG Sphere", "CG Cube"):
        bpy.data.objects[name].hide_render = True
    plate = render(tmp / "plate.png")
    head = bpy.data.objects["Tracked Head"]
    head.is_shadow_catcher = False
    mat = bpy.data.materials.new("Grey")
    head.data.materials.append(mat)
    mesh_view = render(tmp / "mesh.png")
    sheet = np.concatenate([plate, composite, mesh_view], axis=1)
    im = bpy.data.images.new("sheet", sheet.shape[1], sheet.shape[0])
    px = np.ones(sheet.shape[:2] + (4,), np.float32)
    px[..., :3] = sheet[::-1]
    im.pixels.foreach_set(px.ravel())
    im.filepath_raw, im.file_format = str(out), "PNG"
    im.save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "cg_composite_astronaut.png")
