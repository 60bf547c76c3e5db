"""The Blender add-on inside the `bpy` module (headless): registration, scene lighting -> SH, the lit-sphere
preview, camera sync, strip helpers. The engine worker is not needed here (see test_addon_roundtrip.py)."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402  (ships with bpy)

REPO = Path(__file__).resolve().parents[1]
PKG = "portrait_relight"

pytestmark = pytest.mark.blender


def enable_addon():
    """Enable the add-on from the source tree (addon/ linked as `portrait_relight`); returns the module."""
    if PKG not in sys.modules:
        d = Path(tempfile.mkdtemp(prefix="pr_addons_"))
        (d / PKG).symlink_to(REPO / "addon", target_is_directory=True)
        sys.path.insert(0, str(d))

    def fail(exc):
        raise exc

    mod = addon_utils.enable(PKG, default_set=True, handle_error=fail)
    assert mod is not None and PKG in bpy.context.preferences.addons
    return sys.modules[PKG]


@pytest.fixture()
def addon():
    return enable_addon()


@contextlib.contextmanager
def active_scene(name: str):
    """A fresh empty scene made active in the window (the sequencer scene in 5.0 too); removed after."""
    sc = bpy.data.scenes.new(name)
    old = bpy.context.window.scene
    bpy.context.window.scene = sc
    ws = bpy.context.workspace
    old_seq = getattr(ws, "sequencer_scene", None)
    if hasattr(ws, "sequencer_scene"):
        ws.sequencer_scene = sc
    try:
        yield sc
    finally:
        if hasattr(ws, "sequencer_scene"):
            ws.sequencer_scene = old_seq
        bpy.context.window.scene = old
        bpy.data.scenes.remove(sc)


@pytest.fixture()
def scene(addon):
    """A fresh empty scene made active in the window (the sequencer scene in 5.0 too)."""
    with active_scene("PR test") as sc:
        yield sc


def core(name):
    import importlib

    return importlib.import_module(f"relight_core.{name}")


def write_png_frames(folder: Path, frames: list[np.ndarray], stem: str = "frame") -> list[Path]:
    """Write (H, W, 3) uint8 sRGB frames as PNGs through bpy (no imaging library needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(frames):
        h, w = rgb.shape[:2]
        img = bpy.data.images.new(f"pr_tmp_{i}", w, h, alpha=False)
        rgba = np.ones((h, w, 4), dtype=np.float32)
        rgba[..., :3] = rgb[::-1].astype(np.float32) / 255.0
        img.pixels.foreach_set(rgba.ravel())
        p = folder / f"{stem}_{i:04d}.png"
        img.filepath_raw = str(p)
        img.file_format = "PNG"
        img.save()
        bpy.data.images.remove(img)
        paths.append(p)
    return paths


def add_image_strip(sc, files: list[Path], channel: int = 1, start: int = 1, name: str = "clip"):
    from portrait_relight import sequencer

    strips = sequencer.strips_of(sc, ensure=True)
    s = strips.new_image(name=name, filepath=str(files[0]), channel=channel, frame_start=start)
    for f in files[1:]:
        s.elements.append(f.name)
    sc.sequence_editor.active_strip = s
    return s


def look_rotation(forward_world: np.ndarray) -> np.ndarray:
    """3x3 rotation whose local -Z points along `forward_world` (a Blender light's emission)."""
    f = forward_world / np.linalg.norm(forward_world)
    z = -f
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([0.0, 1.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def set_matrix(obj, m: np.ndarray) -> None:
    from mathutils import Matrix

    obj.matrix_world = Matrix(m.tolist())


# ------------------------------------------------------------------------------------------ registration


def test_register_unregister_twice_leaves_nothing(addon):
    from portrait_relight import handlers, operators

    for _ in range(2):
        addon_utils.disable(PKG, default_set=True)
        assert not hasattr(bpy.types.Scene, "portrait_relight")
        assert not hasattr(bpy.types, "PORTRAIT_RELIGHT_PT_SEQ_main")
        assert handlers.registered_handlers() == []
        assert operators.running_job() is None
        enable_addon()
        assert hasattr(bpy.types.Scene, "portrait_relight")
        assert hasattr(bpy.types, "PORTRAIT_RELIGHT_PT_V3D_main")
        assert len(handlers.registered_handlers()) == 3
        assert "portrait_relight" in dir(bpy.ops)
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert prefs.device == "auto"


def test_imports_stay_numpy_only():
    """The add-on imports only bpy (and Blender's drawing modules), numpy, the standard library and
    relight_core's numpy-only modules."""
    import ast

    allowed = {"bpy", "gpu", "gpu_extras", "blf", "numpy", "__future__"} | set(sys.stdlib_module_names)
    for path in (REPO / "addon").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] in allowed, f"{path.name} imports {m}"
    src = "\n".join(p.read_text() for p in (REPO / "addon").glob("*.py"))
    assert "relight_core.io" not in src and "relight_core.pipeline" not in src


# ------------------------------------------------------------------------------------------ lighting


def test_scene_lights_sh_matches_relight_core(scene, tmp_path):
    """Sun + point light + World colour, anchor moved and turned, exposure 0.5: the SH stored by the
    operator equals relight_core.lights.sh_from_lights on the same lights in the anchor frame."""
    L = core("lights")
    anchor = bpy.data.objects.new("Anchor", None)
    scene.collection.objects.link(anchor)
    a = np.eye(4)
    ang = math.radians(35.0)
    a[:3, :3] = np.array([[math.cos(ang), -math.sin(ang), 0], [math.sin(ang), math.cos(ang), 0], [0, 0, 1]])
    a[:3, 3] = (0.4, -1.0, 1.6)
    set_matrix(anchor, a)

    sun_dir_local = np.array([0.5, -0.6, 0.62])  # surface -> light, anchor (= DPR) frame
    sun_dir_local /= np.linalg.norm(sun_dir_local)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.data.energy, sun.data.color, sun.data.angle = 2.5, (1.0, 0.9, 0.8), 0.05
    m = np.eye(4)
    m[:3, :3] = a[:3, :3] @ look_rotation(-sun_dir_local)
    set_matrix(sun, m)
    pt_local = np.array([-1.2, -1.5, 0.4])
    pt = bpy.data.objects.new("Point", bpy.data.lights.new("Point", "POINT"))
    pt.data.energy, pt.data.color, pt.data.shadow_soft_size = 400.0, (0.6, 0.7, 1.0), 0.1
    m = np.eye(4)
    m[:3, 3] = (a @ np.append(pt_local, 1.0))[:3]
    set_matrix(pt, m)
    for o in (sun, pt):
        scene.collection.objects.link(o)
    world = bpy.data.worlds.new("W")
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    bg = world.node_tree.nodes["Background"]
    bg.inputs["Color"].default_value = (0.1, 0.2, 0.3, 1.0)
    bg.inputs["Strength"].default_value = 1.5
    scene.world = world
    scene.view_settings.exposure = 0.5
    bpy.context.view_layer.update()

    files = write_png_frames(tmp_path / "frames", [np.full((32, 32, 3), 128, np.uint8)] * 3)
    add_image_strip(scene, files)
    s = scene.portrait_relight
    s.anchor = anchor
    s.output_dir = str(tmp_path / "out")
    req_path = tmp_path / "req.json"
    assert bpy.ops.portrait_relight.export_request(filepath=str(req_path)) == {"FINISHED"}

    expected = np.asarray(L.sh_from_lights([
        L.DirectionalLight(direction=sun_dir_local, color=(1.0, 0.9, 0.8), strength=2.5, angle=0.05),
        L.PointLight(position=pt_local, color=(0.6, 0.7, 1.0), power=400.0, radius=0.1),
        L.WorldColor(color=(0.1, 0.2, 0.3), strength=1.5)]), dtype=np.float64) * 2.0 ** 0.5
    stored = np.array(s.sh).reshape(9, 3)
    err = np.abs(stored - expected).max() / np.abs(expected).max()
    print(f"SH max relative error {err:.2e}")
    assert err < 1e-5
    req = json.loads(req_path.read_text())
    assert np.allclose(np.array(req["lighting"]["sh"]), stored, rtol=1e-6, atol=1e-7)
    types = sorted(k["type"] for k in req["lighting"]["key_lights"])
    assert types == ["directional", "point"]
    key_sun = next(k for k in req["lighting"]["key_lights"] if k["type"] == "directional")
    assert np.allclose(key_sun["direction"], sun_dir_local, atol=1e-6)
    assert req["frames"] == [0, 3] and req["camera"] is None and req["input"] == str(tmp_path / "frames")

    # the lit-sphere preview exists: a Lambertian sphere (albedo 0.8) seen along +Y, +X right, +Z up,
    # Blender rows bottom-up; check two pixels against sh.shade on the stored SH
    img = bpy.data.images.get("Portrait Relight Lit Sphere")
    assert img is not None
    n = img.size[0]
    px = np.empty(n * n * 4, np.float32)
    img.pixels.foreach_get(px)
    px = px.reshape(n, n, 4)
    assert px[0, 0, 3] == 0.0
    shade = core("sh").shade
    scale = None  # the preview is exposure-normalised: one common factor
    for row, col in ((n // 2, n // 2), (int(0.75 * n), int(0.8 * n)), (int(0.3 * n), int(0.2 * n))):
        x, z = (col + 0.5) / n * 2 - 1, (row + 0.5) / n * 2 - 1
        normal = np.array([x, -math.sqrt(1 - x * x - z * z), z])
        want = 0.8 * shade(normal, stored) / math.pi
        scale = px[row, col, 0] / want[0] if scale is None else scale
        assert px[row, col, 3] == 1.0
        assert np.allclose(px[row, col, :3], scale * want, rtol=1e-4, atol=1e-6)


def test_preview_follows_light_changes_and_animation(scene, tmp_path):
    """The depsgraph handler rewrites the preview when a light changes; animated lights give per-frame SH."""
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    scene.collection.objects.link(sun)
    sun.data.energy = 1.0
    bpy.context.view_layer.update()
    img = bpy.data.images.get("Portrait Relight Lit Sphere")
    assert img is not None

    def total():
        px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
        img.pixels.foreach_get(px)
        return float(px.reshape(-1, 4)[:, :3].sum())

    from portrait_relight import handlers

    before, sh_before = total(), handlers._last["sh"].copy()
    sun.data.energy = 4.0
    bpy.context.view_layer.update()
    assert np.allclose(handlers._last["sh"], 4.0 * sh_before, rtol=1e-6)
    assert total() == pytest.approx(before, rel=1e-3)  # exposure-normalised preview

    sun.data.energy = 1.0
    sun.data.keyframe_insert("energy", frame=1)
    sun.data.energy = 3.0
    sun.data.keyframe_insert("energy", frame=4)
    files = write_png_frames(tmp_path / "f", [np.full((16, 16, 3), 100, np.uint8)] * 4)
    add_image_strip(scene, files, start=1)
    scene.portrait_relight.output_dir = str(tmp_path / "out")
    assert bpy.ops.portrait_relight.export_request(filepath=str(tmp_path / "r.json")) == {"FINISHED"}
    sh = np.array(json.loads((tmp_path / "r.json").read_text())["lighting"]["sh"])
    assert sh.shape == (4, 9, 3)
    assert sh[3, 0, 0] == pytest.approx(3.0 * sh[0, 0, 0], rel=1e-4)
    assert scene.portrait_relight.sh_frames == 4


# ------------------------------------------------------------------------------------------ camera


def test_head_rig_is_the_canonical_view(scene):
    C = core("camera")
    assert bpy.ops.portrait_relight.add_head_rig() == {"FINISHED"}
    s = scene.portrait_relight
    assert s.anchor is not None and s.camera is not None and scene.camera == s.camera
    from portrait_relight import camera_sync

    bpy.context.view_layer.update()
    m = camera_sync.cam2head(s.camera, s.anchor)
    assert np.allclose(m, C.orbit_cam2head(0.0, 0.0), atol=1e-5)
    for rx, ry in ((1920, 1080), (1080, 1920)):
        scene.render.resolution_x, scene.render.resolution_y = rx, ry
        assert camera_sync.vertical_fov_deg(s.camera.data, scene.render) == pytest.approx(18.837, abs=1e-3)
    assert bpy.data.objects.get("Head Proxy").parent == s.anchor


def test_keyframed_orbit_gives_per_frame_yaw(scene, tmp_path):
    """Camera keyframed from yaw 0 to 30 degrees over 10 frames around the anchor: per-frame yaw in the
    request within 0.5 degrees."""
    C = core("camera")
    bpy.ops.portrait_relight.add_head_rig(proxy=False)
    s = scene.portrait_relight
    cam, anchor = s.camera, s.anchor
    # turn the anchor too: the view must be taken relative to it
    anchor.location = (0.3, 0.2, 1.5)
    anchor.rotation_euler = (0.0, 0.0, math.radians(20.0))
    pivot = bpy.data.objects.new("Orbit", None)
    scene.collection.objects.link(pivot)
    pivot.parent = anchor
    cam.parent = pivot
    # positive yaw per relight_core.camera: find the pivot turn direction that matches orbit_cam2head(+30)
    target = C.orbit_cam2head(30.0, 0.0)[:3, 3]
    sign = 1.0 if target[0] * math.sin(math.radians(30.0)) > 0 else -1.0
    pivot.rotation_euler = (0, 0, 0)
    pivot.keyframe_insert("rotation_euler", index=2, frame=1)
    pivot.rotation_euler = (0, 0, sign * math.radians(30.0))
    pivot.keyframe_insert("rotation_euler", index=2, frame=10)
    ad = pivot.animation_data
    for fc in _fcurves(ad):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"
    s.view = "SCENE"
    files = write_png_frames(tmp_path / "f", [np.full((16, 16, 3), 90, np.uint8)] * 10)
    add_image_strip(scene, files, start=1)
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    scene.collection.objects.link(sun)
    s.output_dir = str(tmp_path / "out")
    assert bpy.ops.portrait_relight.export_request(filepath=str(tmp_path / "r.json")) == {"FINISHED"}
    cam_req = json.loads((tmp_path / "r.json").read_text())["camera"]
    assert cam_req["fov_deg"] == pytest.approx(18.837, abs=1e-3)
    poses = np.array(cam_req["cam2head"])
    assert poses.shape == (10, 4, 4)
    errs = []
    for k, m in enumerate(poses):
        yaw, pitch, roll = C.cam2head_to_yaw_pitch_roll(m)
        errs.append(abs(yaw - 30.0 * k / 9.0))
        assert abs(pitch) < 0.5 and abs(roll) < 0.5
    print(f"max yaw error {max(errs):.4f} deg")
    assert max(errs) < 0.5


def _fcurves(ad):
    """F-curves of an animation data block (4.5 action.fcurves; 5.0 layered actions)."""
    act = ad.action
    if hasattr(act, "fcurves") and len(getattr(act, "fcurves", [])):
        return list(act.fcurves)
    out = []
    for layer in getattr(act, "layers", []):
        for strip in layer.strips:
            for bag in strip.channelbags:
                out += list(bag.fcurves)
    return out


# ------------------------------------------------------------------------------------------ strips


def test_strip_source_offsets_and_free_channel(scene, tmp_path):
    from portrait_relight import sequencer

    files = write_png_frames(tmp_path / "seq", [np.full((8, 8, 3), i * 20, np.uint8) for i in range(8)])
    strip = add_image_strip(scene, files, channel=2, start=10)
    strip.frame_offset_start = 2
    strip.frame_offset_end = 1
    src = sequencer.strip_source(strip)
    assert src.frames == (2, 7) and src.timeline_start == 12 and src.length == 5
    blocker = add_image_strip(scene, files[:3], channel=3, start=11, name="blocker")
    assert sequencer.free_channel_above(scene, strip, 12, 17) == 4
    blocker.channel = 6
    new = sequencer.add_result_strip(scene, strip, [str(f) for f in files[2:7]])
    assert new.name == "clip relit" and new.channel == 3
    assert new.frame_final_start == 12 and new.frame_final_duration == 5
    again = sequencer.add_result_strip(scene, strip, [str(f) for f in files[2:7]])
    assert again.channel == 3 and len([s for s in sequencer.strips_of(scene) if s.name == "clip relit"]) == 1


def test_retimed_strip_is_refused_with_one_sentence(scene, tmp_path):
    """A retimed strip shows media frames at other timeline frames than the API can tell; it is refused.
    bpy 5.0.1 crashes adding retiming keys without an editor, so the keys are put on a proxy of a real
    strip; a strip without keys (the normal case) is checked on the real one."""
    from portrait_relight import sequencer

    files = write_png_frames(tmp_path / "seq", [np.full((8, 8, 3), i * 20, np.uint8) for i in range(4)])
    strip = add_image_strip(scene, files, channel=2, start=1)
    assert len(strip.retiming_keys) == 0 and sequencer.strip_source(strip).frames == (0, 4)

    class Retimed:
        retiming_keys = (object(), object())

        def __getattr__(self, name):
            return getattr(strip, name)

    with pytest.raises(ValueError, match="is retimed") as err:
        sequencer.strip_source(Retimed())
    assert str(err.value).count(". ") == 0 and str(err.value).startswith(f"Strip '{strip.name}'")


@pytest.mark.parametrize("mapping_z_deg, expected", [(0.0, (0.0, -1.0, 0.0)), (90.0, (-1.0, 0.0, 0.0))])
def test_environment_texture_orientation(scene, tmp_path, mapping_z_deg, expected):
    """A World Environment Texture with one bright patch at Blender world +X (image centre), anchor turned
    90 degrees about Z: the light must come from anchor -Y (the front); a Mapping node turned +90 degrees
    about Z moves it to anchor -X."""
    S, L = core("sh"), core("lights")
    w, h = 64, 32
    img = bpy.data.images.new("env", w, h, float_buffer=True)
    px = np.full((h, w, 4), 0.01, np.float32)
    px[..., 3] = 1.0
    px[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2, :3] = 50.0
    img.pixels.foreach_set(px.ravel())
    world = bpy.data.worlds.new("EnvW")
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    nt = world.node_tree
    env = nt.nodes.new("ShaderNodeTexEnvironment")
    env.image = img
    nt.links.new(env.outputs["Color"], nt.nodes["Background"].inputs["Color"])
    if mapping_z_deg:
        mapping = nt.nodes.new("ShaderNodeMapping")
        coords = nt.nodes.new("ShaderNodeTexCoord")
        nt.links.new(coords.outputs["Generated"], mapping.inputs["Vector"])
        nt.links.new(mapping.outputs["Vector"], env.inputs["Vector"])
        mapping.inputs["Rotation"].default_value = (0.0, 0.0, math.radians(mapping_z_deg))
    scene.world = world
    anchor = bpy.data.objects.new("Anchor", None)
    scene.collection.objects.link(anchor)
    anchor.rotation_euler = (0.0, 0.0, math.radians(90.0))
    bpy.context.view_layer.update()
    from portrait_relight import scene_lighting

    lights, _keys = scene_lighting.scene_lights(scene, anchor)
    assert len(lights) == 1 and isinstance(lights[0], L.EnvironmentMap)
    sh, _ = scene_lighting.scene_sh(scene, anchor)
    d = S.dominant_direction(sh)
    angle = math.degrees(math.acos(np.clip(np.dot(d, expected), -1, 1)))
    assert angle < 10.0, (d, expected)


def test_preset_lighting_source(scene, tmp_path):
    """A preset: the enum lists relight_core's presets, the preview shows its SH, the request names it."""
    L = core("lights")
    names = L.list_presets()
    if not names:
        pytest.skip("no lighting presets in this checkout")
    s = scene.portrait_relight
    from portrait_relight import handlers, properties

    items = [it[0] for it in properties._preset_items(s, bpy.context)]
    assert items == names
    s.lighting_source = "PRESET"
    s.preset = names[0]
    sh = handlers.current_sh(scene)
    assert np.allclose(sh, L.load_lighting(names[0]).sh_at(0))
    files = write_png_frames(tmp_path / "f", [np.full((8, 8, 3), 70, np.uint8)] * 2)
    add_image_strip(scene, files)
    s.output_dir = str(tmp_path / "out")
    assert bpy.ops.portrait_relight.export_request(filepath=str(tmp_path / "r.json")) == {"FINISHED"}
    assert json.loads((tmp_path / "r.json").read_text())["lighting"] == {"preset": names[0]}


class _CheckingLayout:
    """A UILayout stand-in: every prop must exist on its data, every operator must be registered."""

    def __init__(self, seen):
        self.seen = seen

    def prop(self, data, name, **_kw):
        assert name in data.bl_rna.properties, name
        self.seen.append(name)

    def operator(self, idname, **_kw):
        mod, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, mod), op), idname
        self.seen.append(idname)

    def __getattr__(self, name):  # row(), column(), box(), label(), progress(), template_icon(), ...
        def any_call(*_a, **_kw):
            return self

        return any_call


def test_panels_draw_with_registered_props_and_operators(scene, tmp_path):
    from portrait_relight import panels

    files = write_png_frames(tmp_path / "f", [np.full((8, 8, 3), 50, np.uint8)] * 2)
    add_image_strip(scene, files)
    s = scene.portrait_relight
    seen_all: set = set()
    for source in ("SCENE", "PRESET", "REFERENCE", "FILE"):
        for view in ("SOURCE", "SCENE"):
            s.lighting_source, s.view = source, view
            seen = []
            for fn in (panels.draw_main, panels.draw_lighting, panels.draw_view, panels.draw_output):
                fn(_CheckingLayout(seen), bpy.context)
            assert "portrait_relight.relight" in seen and "output_format" in seen
            seen_all |= set(seen)
    assert {"preset", "reference_image", "light_file", "camera", "portrait_relight.add_head_rig"} <= seen_all
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    seen = []
    stand_in = type("P", (), {"layout": _CheckingLayout(seen), "bl_rna": prefs.bl_rna, **{
        k: getattr(prefs, k) for k in ("engine_python", "device", "cache_dir", "engine_status")}})()
    type(prefs).draw(stand_in, bpy.context)
    assert {"engine_python", "device", "cache_dir", "portrait_relight.check_engine"} <= set(seen)


def test_spot_and_area_lights_match_relight_core(scene):
    """Spot (cone, blend, radius) and rectangular area light with a scaled object, anchor scaled x2: the
    scene SH equals relight_core.lights on the same lights in anchor units."""
    L = core("lights")
    from portrait_relight import scene_lighting

    anchor = bpy.data.objects.new("Anchor", None)
    scene.collection.objects.link(anchor)
    anchor.scale = (2.0, 2.0, 2.0)  # one head unit = 2 Blender units
    anchor.location = (1.0, 0.0, 0.5)

    spot_pos = np.array([0.3, -1.0, 0.8])  # anchor frame
    spot = bpy.data.objects.new("Spot", bpy.data.lights.new("Spot", "SPOT"))
    spot.data.energy, spot.data.spot_size, spot.data.spot_blend = 300.0, math.radians(50), 0.3
    spot.data.shadow_soft_size = 0.2  # Blender units -> 0.1 head units
    rot_s = look_rotation(-spot_pos + np.array([0.05, 0.0, 0.0]))
    area_pos = np.array([-0.9, -0.7, 0.2])
    area = bpy.data.objects.new("Area", bpy.data.lights.new("Area", "AREA"))
    area.data.energy, area.data.shape, area.data.size, area.data.size_y = 150.0, "RECTANGLE", 0.6, 0.3
    rot_a = look_rotation(-area_pos)
    for obj, pos, rot, scale in ((spot, spot_pos, rot_s, 1.0), (area, area_pos, rot_a, 1.5)):
        m = np.eye(4)
        m[:3, :3] = rot * 2.0 * scale
        m[:3, 3] = np.array([1.0, 0.0, 0.5]) + 2.0 * pos
        set_matrix(obj, m)
        scene.collection.objects.link(obj)
    bpy.context.view_layer.update()
    sh, keys = scene_lighting.scene_sh(scene, anchor)
    expected = np.asarray(L.sh_from_lights([
        L.SpotLight(position=spot_pos, direction=-rot_s[:, 2], power=300.0, spot_size=math.radians(50),
                    spot_blend=0.3, radius=0.1 * 1.0),
        L.AreaLight(position=area_pos, rotation=rot_a, shape="RECTANGLE", size=0.6 * 1.5, size_y=0.3 * 1.5,
                    power=150.0)]))
    assert np.abs(sh - expected).max() / np.abs(expected).max() < 1e-6
    assert [k["type"] for k in keys] == ["point"]  # the small spot is also a key light


def test_follow_tracked_head(scene, tmp_path):
    """A head track (the engine's analysis.npz: the head turns 0..24 degrees and drifts) keys the anchor so
    that, seen from the fixed Source Camera, it reproduces cam_from_head per frame; the request then uses
    light space 'head' with per-frame SH = the fixed sun rotated into each frame's head axes."""
    C, S = core("camera"), core("sh")
    n = 5
    cfh = np.stack([np.eye(4)] * n)
    for k in range(n):
        cfh[k, :3, :3] = C.rot_y(6.0 * k) @ C.rot_x(2.0 * k)
        cfh[k, :3, 3] = (0.05 * k, -0.02 * k, -3.0)
    files = write_png_frames(tmp_path / "f", [np.full((8, 8, 3), 60, np.uint8)] * n)
    strip = add_image_strip(scene, files, start=4)
    s = scene.portrait_relight
    s.output_dir = str(tmp_path / "out")
    from portrait_relight import request

    # the engine's own files of take 1: <out>/<scene>/<strip>/take_001/.relight (relight_core.layout)
    out = Path(request.strip_output(bpy.context, strip)) / "take_001" / ".relight"
    out.mkdir(parents=True)
    meta = json.dumps({"version": 1, "fov_deg": 14.0})
    np.savez_compressed(out / "analysis.npz", meta=np.array(meta), frame_indices=np.arange(n),
                        cam_from_head=cfh)
    assert bpy.ops.portrait_relight.add_head_rig(proxy=False) == {"FINISHED"}
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.rotation_euler = (0.7, 0.2, -0.5)
    scene.collection.objects.link(sun)
    scene.sequence_editor.active_strip = strip
    assert bpy.ops.portrait_relight.follow_head() == {"FINISHED"}
    assert s.follow_head
    src_cam = bpy.data.objects["Source Camera"]
    assert src_cam.data.angle_y == pytest.approx(math.radians(14.0), abs=1e-4)
    h4 = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])
    rots = []
    for k in range(n):
        scene.frame_set(4 + k)
        rel = np.linalg.inv(np.array(src_cam.matrix_world)) @ np.array(s.anchor.matrix_world)
        assert np.allclose(rel @ np.linalg.inv(h4), cfh[k], atol=1e-5)
        rots.append(np.array(s.anchor.matrix_world)[:3, :3])
    s.view = "SOURCE"
    assert bpy.ops.portrait_relight.export_request(filepath=str(tmp_path / "r.json")) == {"FINISHED"}
    req = json.loads((tmp_path / "r.json").read_text())
    assert req["light_space"] == "head"
    sh = np.array(req["lighting"]["sh"])
    assert sh.shape == (n, 9, 3)
    for k in range(n):
        assert np.allclose(sh[k], S.rotate_sh(sh[0], rots[k].T @ rots[0]), atol=1e-6)
