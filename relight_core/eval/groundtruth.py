"""Ground-truth relighting benchmark: a textured face rendered by Cycles under light A and light B.

The engine's own metrics re-estimate light with the engine's own geometry and cannot see its faults.
Here a renderer is the judge: the astronaut's tracked face mesh (the 478 landmarks lifted to 3D by the
tracker, its triangles closed over the eyes and mouth, `geometry.face_surface`), textured with the photo
itself as albedo (UV = each landmark's pixel), is rendered by Blender's Cycles (the PyPI `bpy` module,
imported only inside these functions) from the tracked camera under the physical lights of two lighting
presets (`presets/lighting/<name>.json`, their "lights": area softboxes and a world colour, in metres
around the head; the face is scaled to metres with `skin.MM_PER_HEAD_UNIT`). The engine relights the
render under A to B (`relight <A.png> --light <B>`, at the same size), and is compared with Cycles'
render under B inside the face (the render's alpha, eroded 3 px):

- PSNR (dB) of the display images after one least-squares gain (the engine matches the input's exposure,
  Cycles renders absolute light; the gain takes out only that global scale);
- the lit side's direction error (degrees): the angle between the image-plane vectors from the face
  mask's centroid to the luminance-weighted centroid of each image (where the light falls).

Run: `python -m relight_core.eval.groundtruth OUT_DIR [--a soft-front] [--b rembrandt] [--size 256]
[--samples 32] [--engine-root DIR]` (engine-root: run another checkout's engine on the same renders,
e.g. the previous commit, for before/after figures). Writes OUT_DIR/groundtruth.json and the images.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from relight_core.errors import UserError

BACKGROUND = 0.5  # display grey behind the rendered face (the engine needs a plate to composite over)
EXPOSURE = 0.8  # a white surface facing the preset's brightest light renders at this display value
SKIN_ROUGHNESS = 0.5  # Principled BSDF roughness of the skin material
SKIN_SSS_RADIUS = (1.0, 0.37, 0.2)  # per-channel mean free path (relative): red scatters furthest
SKIN_SSS_SCALE_M = 0.004  # ... x this, metres (skin's red mean free path is a few millimetres)
CROP = (slice(16, 304), slice(96, 384))  # the astronaut photo around her head (288 x 288 of 512 x 512)


def face_asset(size: int) -> dict[str, np.ndarray]:
    """The astronaut's tracked face at size x size -> {"vertices" (V, 3) metres in Blender's world (the
    DPR frame: +X right, +Z up, camera at the origin looking along +Y), "tris" (T, 3), "uv" (V, 2),
    "texture" (size, size, 3) uint8 sRGB, "head" (3,) the head centre (metres), "fx" (px)}."""
    from skimage import data

    from relight_core import geometry, skin, track

    photo = cv2.resize(data.astronaut()[CROP], (size, size), interpolation=cv2.INTER_AREA)
    ana = track.analyze_footage(track.ArrayFootage([photo]))
    geo = geometry.build_geometry(ana, 0, size, size)
    verts = np.asarray(geo.vertices, dtype=np.float64)
    tris, _ = geometry.face_surface(verts)
    k = np.asarray(geo.K, dtype=np.float64)
    px = (verts[:, :2] / -verts[:, 2:3]) * np.array([k[0, 0], -k[1, 1]]) + k[:2, 2]
    uv = np.stack([px[:, 0] / size, 1.0 - px[:, 1] / size], axis=1)
    metres = skin.MM_PER_HEAD_UNIT / 1000.0
    world = metres * np.stack([verts[:, 0], -verts[:, 2], verts[:, 1]], axis=1)  # cam (OpenGL) -> DPR
    cfh = np.asarray(ana.cam_from_head[0], dtype=np.float64)
    head = metres * np.array([cfh[0, 3], -cfh[2, 3], cfh[1, 3]])
    return {"vertices": world, "tris": np.asarray(tris), "uv": uv, "texture": photo, "head": head,
            "fx": np.float64(k[0, 0]), "cx": np.float64(k[0, 2]), "cy": np.float64(k[1, 2])}


def preset_lights(name: str) -> list[dict[str, Any]]:
    """The physical lights ("lights") of a lighting preset, as written by presets/make_presets.py, their
    power scaled by the preset's "intensity" (which brings its brightest irradiance to 1) x pi x EXPOSURE,
    so that a white surface facing it renders at about EXPOSURE."""
    from relight_core import lights

    path = lights.presets_dir() / f"{name}.json"
    if not path.is_file():
        raise UserError(f"There is no lighting preset {name!r} in {path.parent}; give one of its names.")
    preset = json.loads(path.read_text())
    items = preset.get("lights")
    if not items:
        raise UserError(f"Preset {path} has no physical 'lights' to render; use one made by make_presets.py.")
    gain = float(preset.get("intensity", 1.0)) * math.pi * EXPOSURE
    out = []
    for it in items:
        it = dict(it)
        for f in ("power", "strength"):
            if f in it:
                it[f] = float(it[f]) * gain
        out.append(it)
    return out


def render_cycles(asset: dict[str, np.ndarray], light_items: list[dict[str, Any]], size: int, samples: int,
                  path: Path) -> np.ndarray:
    """Render the face asset under the lights with Cycles (CPU) -> RGBA (size, size, 4) float32 display
    values in 0..1 (Standard view transform: sRGB), also written to `path` (PNG)."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 1
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "16"
    _add_face(asset)
    _add_camera(scene, asset, size)
    _add_lights(scene, light_items, asset["head"])
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 65535.0


def _add_face(asset: dict[str, np.ndarray]) -> None:
    import bpy

    mesh = bpy.data.meshes.new("face")
    mesh.from_pydata(asset["vertices"].tolist(), [], asset["tris"].tolist())
    layer = mesh.uv_layers.new(name="uv")
    loops = np.asarray(asset["tris"]).reshape(-1)
    layer.data.foreach_set("uv", asset["uv"][loops].astype(np.float32).reshape(-1))
    for poly in mesh.polygons:
        poly.use_smooth = True
    obj = bpy.data.objects.new("face", mesh)
    bpy.context.scene.collection.objects.link(obj)
    tex_path = Path(bpy.app.tempdir or ".") / "relight_groundtruth_albedo.png"
    cv2.imwrite(str(tex_path), cv2.cvtColor(asset["texture"], cv2.COLOR_RGB2BGR))
    image = bpy.data.images.load(str(tex_path))
    image.colorspace_settings.name = "sRGB"
    image.pack()
    mat = bpy.data.materials.new("skin")
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    bsdf = nodes["Principled BSDF"]
    node = nodes.new("ShaderNodeTexImage")
    node.image = image
    mat.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = SKIN_ROUGHNESS
    bsdf.inputs["IOR"].default_value = 1.4
    bsdf.inputs["Subsurface Weight"].default_value = 1.0  # skin: random-walk subsurface scattering
    bsdf.inputs["Subsurface Radius"].default_value = SKIN_SSS_RADIUS
    bsdf.inputs["Subsurface Scale"].default_value = SKIN_SSS_SCALE_M
    obj.data.materials.append(mat)


def _add_camera(scene, asset: dict[str, np.ndarray], size: int) -> None:
    import bpy

    cam = bpy.data.cameras.new("cam")
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = 36.0
    cam.lens = float(asset["fx"]) / size * 36.0
    cam.shift_x = (size / 2.0 - float(asset["cx"])) / size * -1.0
    cam.shift_y = (float(asset["cy"]) - size / 2.0) / size * -1.0
    cam.clip_start = 0.01
    obj = bpy.data.objects.new("cam", cam)
    obj.location = (0.0, 0.0, 0.0)
    obj.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along +Y, +Z up: the DPR frame's camera
    scene.collection.objects.link(obj)
    scene.camera = obj


def _add_lights(scene, items: list[dict[str, Any]], head: np.ndarray) -> None:
    import bpy
    from mathutils import Matrix

    for i, it in enumerate(items):
        kind = str(it.get("type")).lower()
        colour = tuple(float(c) for c in it.get("color", (1, 1, 1)))[:3]
        if kind == "world":
            world = bpy.data.worlds.new("world")
            world.use_nodes = True
            bg = world.node_tree.nodes["Background"]
            bg.inputs["Color"].default_value = colour + (1.0,)
            bg.inputs["Strength"].default_value = float(it.get("strength", 1.0))
            scene.world = world
        elif kind == "area":
            data = bpy.data.lights.new(f"area{i}", type="AREA")
            data.shape = str(it.get("shape", "SQUARE"))
            data.size = float(it.get("size", 1.0))
            data.size_y = float(it.get("size_y", data.size))
            data.energy = float(it.get("power", 100.0))
            data.color = colour
            obj = bpy.data.objects.new(f"area{i}", data)
            rot = np.asarray(it["rotation"], dtype=np.float64).reshape(3, 3)
            m = np.eye(4)
            m[:3, :3] = rot
            m[:3, 3] = np.asarray(it["position"], dtype=np.float64) + head
            obj.matrix_world = Matrix(m.tolist())
            scene.collection.objects.link(obj)
        else:
            raise ValueError(f"light type {kind!r} of a preset is not rendered by the benchmark")


def over_grey(rgba: np.ndarray) -> np.ndarray:
    """RGBA display (H, W, 4) over the BACKGROUND grey -> RGB display (H, W, 3)."""
    a = rgba[..., 3:4]
    return rgba[..., :3] * a + BACKGROUND * (1.0 - a)


def gain_psnr(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, peak 1) of display images (H, W, 3) inside mask (H, W) bool after the least-squares gain
    g minimising |g out - ref|^2 there."""
    o, r = out[mask].reshape(-1), ref[mask].reshape(-1)
    g = float(o @ r / max(o @ o, 1e-12))
    mse = float(np.mean((g * o - r) ** 2))
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def lit_side_error_deg(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Angle (deg) between where the light falls in two display images (H, W, 3): the vectors from the
    mask's centroid to the luminance-weighted centroid inside the mask (H, W) bool."""
    ys, xs = np.nonzero(mask)
    c = np.array([xs.mean(), ys.mean()])

    def lit(img: np.ndarray) -> np.ndarray:
        lum = img[ys, xs] @ np.array([0.2126, 0.7152, 0.0722])
        w = np.maximum(lum - lum.mean(), 0.0)
        return np.array([xs @ w, ys @ w]) / max(w.sum(), 1e-12) - c

    a, b = lit(out), lit(ref)
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def relight_with_engine(src: Path, light: str, out_dir: Path, size: int, engine_root: Path | None
                        ) -> np.ndarray:
    """The engine's relit display image (H, W, 3) of src under `light`, run as the command line (from
    engine_root's checkout when given) -> float32 0..1."""
    import os

    cmd = [sys.executable, "-m", "relight_core", "relight", str(src.resolve()), "--light", light, "--out",
           str(out_dir.resolve()), "--size", str(size), "--no-resume"]
    env = dict(os.environ)
    if engine_root is not None:
        env.pop("PYTHONPATH", None)
    cwd = str(engine_root) if engine_root else None
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no message)"]
        raise UserError(f"The engine failed on the benchmark's render {src.name}: {lines[-1]}")
    png = sorted((out_dir / "rgba").glob("*.png"))[0]
    img = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    return cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32) / peak


def run(out_dir: Path, light_a: str = "soft-front", light_b: str = "rembrandt", size: int = 256,
        samples: int = 32, engine_root: Path | None = None) -> dict[str, Any]:
    """Render A and B (cached in out_dir), relight A -> B with the engine, score it -> the figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    renders = {}
    asset = None
    for tag, name in (("a", light_a), ("b", light_b)):
        path = out_dir / f"cycles_{tag}_{name}_{size}_{samples}.png"
        if path.is_file():
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            renders[tag] = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA).astype(np.float32) / 65535.0
        else:
            asset = asset or face_asset(size)
            renders[tag] = render_cycles(asset, preset_lights(name), size, samples, path)
    src = out_dir / f"input_{light_a}.png"
    grey_a = (over_grey(renders["a"]) * 255 + 0.5).astype(np.uint8)
    cv2.imwrite(str(src), cv2.cvtColor(grey_a, cv2.COLOR_RGB2BGR))
    ref = over_grey(renders["b"])
    mask = cv2.erode((renders["b"][..., 3] > 0.99).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    tag = "engine" if engine_root is None else Path(engine_root).name
    relit = relight_with_engine(src, light_b, out_dir / f"relit_{tag}", size, engine_root)
    result = {"light_a": light_a, "light_b": light_b, "size": size, "samples": samples, "engine": tag,
              "face_pixels": int(mask.sum()),
              "psnr_db": round(gain_psnr(relit, ref, mask), 2),
              "psnr_input_as_is_db": round(gain_psnr(over_grey(renders["a"]), ref, mask), 2),
              "lit_side_error_deg": round(lit_side_error_deg(relit, ref, mask), 1)}
    (out_dir / f"groundtruth_{tag}.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m relight_core.eval.groundtruth",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--a", default="soft-front", help="preset lighting the input render")
    ap.add_argument("--b", default="rembrandt", help="preset to relight to (and to render as the truth)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--engine-root", type=Path, default=None, help="run the engine from this checkout")
    args = ap.parse_args(argv)
    try:
        print(json.dumps(run(args.out, args.a, args.b, args.size, args.samples, args.engine_root), indent=1))
    except UserError as e:
        print(f"groundtruth: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
