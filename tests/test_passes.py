"""The compositor's pass set (relight_core.passes) from a real relight of the astronaut with a key light:
P projects back to its own pixel, Pref sits on the tracked face, the ID mattes are disjoint and add up to
the matte, and the beauty rebuilt from albedo x shading + specular matches the RGBA inside the person, in
numpy and in Blender's compositor (the add-on's Set Up Compositor)."""

from __future__ import annotations

import numpy as np
import pytest

from relight_core import camera as cam
from relight_core import passes

pytestmark = pytest.mark.slow
KEY = {"type": "directional", "direction": [-0.6, -0.5, 0.6], "color": [1, 1, 1], "strength": 3.0}


def read_channels(path) -> dict[str, np.ndarray]:
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        return {n: np.asarray(c.pixels, dtype=np.float64) for n, c in f.channels().items()}


@pytest.fixture(scope="module")
def relit(tmp_path_factory, astronaut):
    """The astronaut relit at 256 px (dim SH + one key light) to one multilayer EXR with every pass."""
    from relight_core import io, pipeline, track

    folder = tmp_path_factory.mktemp("passes")
    img = folder / "astro.png"
    io.write_png(img, io.decode_srgb8(np.asarray(astronaut)))
    sh = np.zeros((9, 3))
    sh[0] = 0.6
    job = pipeline.RelightJob(input=str(img), output=str(folder / "out"), format="exr", size=256,
                              device="cpu",
                              lighting={"sh": sh.tolist(), "key_lights": [KEY]})
    pipeline.run(job)
    exr = next((folder / "out" / "exr").glob("*.exr"))
    analysis = track.Analysis.load(str(folder / "out" / ".relight" / "analysis.npz"))
    return read_channels(exr), analysis, exr, img


@pytest.fixture(scope="module")
def relit_view(relit, tmp_path_factory):
    """The same relight seen from a novel view (orbit yaw 15 degrees) -> (channels, report view)."""
    import json

    from relight_core import pipeline

    _ch, _analysis, _exr, img = relit
    out = tmp_path_factory.mktemp("passes_view") / "out"
    sh = np.zeros((9, 3))
    sh[0] = 0.6
    pipeline.run(pipeline.RelightJob(input=str(img), output=str(out), format="exr", size=256, device="cpu",
                                     lighting={"sh": sh.tolist(), "key_lights": [KEY]},
                                     camera={"yaw": 15.0, "pitch": 0.0, "roll": 0.0}))
    report = json.loads((out / ".relight" / "report.json").read_text())
    return read_channels(next((out / "exr").glob("*.exr"))), report["frames"][0]["view"]


def _vec(ch: dict, name: str) -> np.ndarray:
    return np.stack([ch[f"{name}.{c}"] for c in "XYZ"], axis=-1)


def test_position_projects_back_and_sits_on_the_face(relit):
    ch, analysis, _exr, _img = relit
    h, w = ch["R"].shape
    k = analysis.K_at(h, w)
    p = _vec(ch, "P")
    has = p[..., 2] < 0
    assert has.sum() > 0.2 * h * w
    ys, xs = np.nonzero(has)
    err = np.linalg.norm(cam.project(p[has], k) - np.stack([xs + 0.5, ys + 0.5], axis=-1), axis=1)
    assert err.max() < 0.5
    # Pref at the pixels of the nose tip, chin and eye corners: the tracked landmarks lifted into head space
    from relight_core.face_model import lift_landmarks

    lm = analysis.landmarks_at(0, h, w)
    pose = analysis.cam_from_head[0]
    head = cam.transform_points(np.linalg.inv(pose), lift_landmarks(lm, pose, k, analysis.face_shape))
    pref = _vec(ch, "Pref")
    for i in (1, 152, 33, 263):
        x, y = (int(v) for v in lm[i, :2])
        assert np.linalg.norm(pref[y, x] - head[i]) < 0.03, i


def test_novel_view_positions_stick_to_the_head(relit, relit_view):
    """From a novel view: P still projects back onto its pixel (the view's camera), and Pref at the pixels
    where the nose tip, chin and eye corners now appear is where the source view put them in head space."""
    _ch, analysis, _exr, _img = relit
    ch, view = relit_view
    h, w = ch["R"].shape
    k = analysis.K_at(h, w)
    p = _vec(ch, "P")
    has = p[..., 2] < 0
    ys, xs = np.nonzero(has)
    err = np.linalg.norm(cam.project(p[has], k) - np.stack([xs + 0.5, ys + 0.5], axis=-1), axis=1)
    assert err.max() < 0.5
    from relight_core.face_model import lift_landmarks

    lm = analysis.landmarks_at(0, h, w)
    pose = analysis.cam_from_head[0]
    head = cam.transform_points(np.linalg.inv(pose), lift_landmarks(lm, pose, k, analysis.face_shape))
    seen = cam.project(cam.transform_points(np.linalg.inv(np.array(view["cam2head"])), head), k)
    pref = _vec(ch, "Pref")
    for i in (1, 152, 33, 263):
        x, y = (int(v) for v in seen[i])
        assert np.linalg.norm(pref[y, x] - head[i]) < 0.03, i
    ids = np.stack([ch[f"id_{r}.Y"] for r in passes.ID_REGIONS], axis=-1)
    assert ((ids > 0).sum(axis=-1) <= 1).all() and np.abs(ids.sum(axis=-1) - ch["matte.Y"]).max() < 1e-6


def test_id_mattes_are_disjoint_and_cover_the_person(relit):
    ch, _analysis, _exr, _img = relit
    ids = np.stack([ch[f"id_{r}.Y"] for r in passes.ID_REGIONS], axis=-1)
    assert ((ids > 0).sum(axis=-1) <= 1).all()
    assert np.abs(ids.sum(axis=-1) - ch["matte.Y"]).max() < 1e-6
    person = ch["matte.Y"] > 0.5
    for region in passes.ID_REGIONS:  # every region is there
        assert (ch[f"id_{region}.Y"][person] > 0.5).sum() > 20, region


def test_beauty_rebuilt_from_the_passes(relit):
    ch, _analysis, _exr, _img = relit
    inside = ch["matte.Y"] >= 0.999
    rgb = np.stack([ch[c] for c in "RGB"], axis=-1)
    beauty = np.stack([ch[f"albedo.{c}"] * ch[f"shading.{c}"] + ch[f"specular.{c}"] for c in "RGB"], axis=-1)
    assert inside.sum() > 10000
    # RGBA, albedo and shading are stored as half floats (11 bits: about 1e-3 relative for a product)
    assert (np.abs(beauty - rgb) / np.maximum(np.abs(rgb), 1.0))[inside].max() < 2e-3
    assert ch["specular.R"][inside].max() > 0.05  # the key light's highlights are in it


def test_key_light_shadow_pass(relit):
    ch, _analysis, _exr, _img = relit
    shadow = ch["shadow.Y"][ch["matte.Y"] > 0.5]
    assert shadow.min() >= 0.0 and shadow.max() <= 1.0
    assert 0.002 < (shadow < 0.5).mean() < 0.3 and np.median(shadow) > 0.99  # cast shadows only


def test_png_passes_encode_their_values(tmp_path):
    from relight_core import outputs

    rng = np.random.default_rng(1)
    n = rng.normal(size=(4, 5, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    p = rng.uniform(-3, 3, size=(4, 5, 3)).astype(np.float32)
    ids = np.zeros((4, 5, 5), np.float32)
    ids[0, 0, 1] = ids[1, 1, 4] = 1.0
    layers = {"N": n, "P": p, "id": ids, "shadow": rng.uniform(size=(4, 5)).astype(np.float32)}
    files = outputs.frame_paths(tmp_path, "f", 0, tuple(layers), "png")
    for f in files.values():
        f.parent.mkdir(parents=True)
    outputs.write_frame(files, layers, "png")
    import cv2

    def read16(path) -> np.ndarray:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64) / 65535.0
        return a[..., ::-1] if a.ndim == 3 else a

    assert np.abs(read16(files["N"]) * 2 - 1 - n).max() < 1e-4
    assert np.abs((read16(files["P"]) - 0.5) * 16.0 - p).max() < 1e-3
    index = cv2.imread(str(files["id"]), cv2.IMREAD_UNCHANGED)
    assert index[0, 0] == 2 and index[1, 1] == 5 and index[2, 2] == 0  # eyes, rest, background


def test_compositor_rebuilds_the_beauty(relit, tmp_path):
    """The add-on's Set Up Compositor on the relit strip's EXR: Blender's compositor output (albedo x
    shading + specular) equals the engine's RGBA inside the person within 1e-3."""
    bpy = pytest.importorskip("bpy")
    from test_addon_blender import active_scene, add_image_strip, enable_addon

    ch, _analysis, exr, img = relit
    enable_addon()
    from portrait_relight import sequencer

    with active_scene("PR passes") as sc:
        src = add_image_strip(sc, [img], channel=1, start=1, name="astro")
        sequencer.add_result_strip(sc, src, [str(exr)])
        sc.sequence_editor.active_strip = src
        assert bpy.ops.portrait_relight.setup_pass_compositor() == {"FINISHED"}
        cam_obj = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
        sc.collection.objects.link(cam_obj)
        sc.camera = cam_obj
        sc.render.engine = "BLENDER_WORKBENCH"
        sc.render.use_sequencer = False
        h, w = ch["R"].shape
        sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = w, h, 100
        sc.render.image_settings.file_format = "OPEN_EXR"
        sc.render.image_settings.color_depth = "32"
        sc.render.filepath = str(tmp_path / "beauty.exr")
        sc.frame_set(1)
        bpy.ops.render.render(write_still=True)
        out = read_channels(tmp_path / "beauty.exr")
    rgb = np.stack([ch[c] for c in "RGB"], axis=-1)
    rebuilt = np.stack([out[c] for c in "RGB"], axis=-1)
    inside = ch["matte.Y"] >= 0.999
    assert (np.abs(rebuilt - rgb) / np.maximum(np.abs(rgb), 1.0))[inside].max() < 2e-3  # half floats
    assert np.abs(out["A"] - ch["matte.Y"]).max() < 1e-3
