"""An artist's session with the add-on, driven through its real operators, timers and handlers (bpy headless),
against a small fake engine that speaks the worker protocol (it resizes to the request's Size and renders a
still once per camera pose, as the engine does). Each test is one numbered item of issue 14: animated key
lights, the result strip over its source, a still orbit, results that never feed themselves, takes and
output folders, re-running keeps the artist's edits, save / reopen / undo, relative paths."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import add_image_strip, enable_addon, write_png_frames  # noqa: E402

pytestmark = pytest.mark.blender

FAKE_ENGINE = r'''#!{python}
"""Fake engine: `<this> -m relight_core worker`; copies (resized) input frames as the relit frames."""
import json, os, re, sys, threading, time
import cv2

if sys.argv[1:] == ["-m", "relight_core", "--version"]:
    print("relight-core 0.0-fake"); sys.exit(0)
req = json.loads(sys.stdin.readline())
cancel = threading.Event()

def watch():
    for line in sys.stdin:
        if "cancel" in line:
            cancel.set(); return

threading.Thread(target=watch, daemon=True).start()
emit = lambda **e: print(json.dumps(e), flush=True)
delay = float(os.environ.get("FAKE_DELAY", "0.0"))
if os.environ.get("FAKE_ERROR"):
    emit(event="error", message=os.environ["FAKE_ERROR"]); sys.exit(2)
no_face = {int(i) for i in os.environ.get("FAKE_NOFACE", "").split(",") if i}
src = req["input"]
key = lambda n: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", n)]
files = [os.path.join(src, n) for n in sorted(os.listdir(src), key=key)] if os.path.isdir(src) else [src]
still = not os.path.isdir(src)
first, last = req["frames"] or [0, 1]
if still:  # a still renders once per camera pose / light frame, as the engine does
    cam = req.get("camera") or {}
    sh = (req.get("lighting") or {}).get("sh")
    n = max(1, len(cam.get("cam2head") or []), len(sh) if sh and isinstance(sh[0][0], list) else 1)
    first, last = 0, n
stem = os.path.basename(src.rstrip("/")) if os.path.isdir(src) else os.path.splitext(os.path.basename(src))[0]
fmt = req.get("format", "png")
out = os.path.join(req["output"], "rgba" if fmt == "png" else "exr")
os.makedirs(out, exist_ok=True)
emit(event="started", frames=last - first, output=req["output"])
for k, i in enumerate(range(first, last)):
    if cancel.is_set():
        emit(event="cancelled", frames_done=k); sys.exit(1)
    time.sleep(delay)
    img = cv2.imread(files[0 if still else i], cv2.IMREAD_COLOR)
    if req.get("size"):
        h, w = img.shape[:2]
        s = req["size"] / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    dst = os.path.join(out, f"{stem}_{i:06d}.{fmt}")
    if fmt == "exr":
        lin = ((img.astype("float32") / 255.0) ** 2.2)
        cv2.imwrite(dst, lin)
    else:
        cv2.imwrite(dst, img)
    if i in no_face:
        emit(event="warning", frame=i,
             message="no face tracked on this frame; pose and matte interpolated from neighbours")
    emit(event="progress", stage="relight", done=k + 1, total=last - first)
    emit(event="frame", index=i, files={"rgba" if fmt == "png" else "exr": dst})
with open(os.path.join(req["output"], "request_seen.json"), "w") as fh:
    json.dump(req, fh)
emit(event="done", frames=last - first, output=req["output"], report="")
'''


def _fake_python(folder: Path) -> Path:
    exe = folder / "fake_python"
    exe.write_text(FAKE_ENGINE.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def new_session():
    """File > New (empty): what an artist starts from; the add-on stays enabled."""
    enable_addon()
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.window.scene
    ws = bpy.context.workspace
    if hasattr(ws, "sequencer_scene"):
        ws.sequencer_scene = sc
    return sc


@pytest.fixture()
def studio(tmp_path, monkeypatch):
    """A fresh file with the fake engine set as the engine Python, 1920x1080, a sun light."""
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    monkeypatch.setenv("OPENCV_IO_ENABLE_OPENEXR", "1")
    sc = new_session()
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python = str(_fake_python(tmp_path))
    prefs.cache_dir = str(tmp_path / "cache")
    sc.render.resolution_x, sc.render.resolution_y = 1920, 1080
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    sun.rotation_euler = (0.8, 0.0, 0.5)
    sc.collection.objects.link(sun)
    yield sc
    from portrait_relight import operators

    operators.abort_run()
    prefs.engine_python = ""
    prefs.cache_dir = ""
    bpy.ops.wm.read_homefile(use_empty=True)


def pattern(w: int, h: int, k: int = 0) -> np.ndarray:
    """(h, w, 3) uint8: a grey gradient with a bright square whose position moves with k."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([40 + 100 * x / w, 40 + 100 * y / h, np.full_like(x, 60.0)], axis=-1)
    x0, y0 = w // 3 + 4 * k, h // 3
    img[y0:y0 + h // 5, x0:x0 + h // 5] = 250.0
    return img.round().astype(np.uint8)


def clip(sc, folder: Path, name: str = "clip", n: int = 4, w: int = 480, h: int = 270, start: int = 1,
         channel: int = 1, fit: str = "FIT"):
    """An image strip of n pattern frames added as an artist would (Scale to Fit by default)."""
    from portrait_relight import sequencer

    files = write_png_frames(folder, [pattern(w, h, k) for k in range(n)], stem=name.replace(" ", "_"))
    strips = sequencer.strips_of(sc, ensure=True)
    s = strips.new_image(name=name, filepath=str(files[0]), channel=channel, frame_start=start,
                         fit_method=fit)
    for f in files[1:]:
        s.elements.append(f.name)
    for other in strips:
        other.select = False
    s.select = True
    sc.sequence_editor.active_strip = s
    return s


def strips(sc) -> dict:
    from portrait_relight import sequencer

    return {s.name: s for s in sequencer.strips_of(sc)}


def relight(**kw) -> set:
    return bpy.ops.portrait_relight.relight(synchronous=True, **kw)


def result_of(sc, name: str):
    return strips(sc).get(f"{name} relit")


def files_of(strip) -> list[Path]:
    folder = Path(bpy.path.abspath(strip.directory))
    return [folder / e.filename for e in strip.elements]


# ------------------------------------------------------------------------------ 1. animated key lights


def _engine_lighting(spec: dict):
    """The engine's own parser of a request's lighting (lighting.py after the engine split)."""
    import importlib

    import relight_core

    split = (Path(relight_core.__file__).parent / "lighting.py").is_file()
    return importlib.import_module("relight_core.lighting" if split else "relight_core.pipeline") \
        .load_target_lighting(spec)


def test_animated_sun_and_follow_head_key_lights_reach_the_engine(studio, tmp_path):
    """A keyframed sun (rotation and colour) and a spot, with the anchor keyed as Follow Tracked Head does:
    the request has one key-light list per frame and the engine's request parser accepts it, giving each
    frame its own sun direction."""
    sc = studio
    sun = sc.objects["Sun"]
    sun.rotation_euler = (0.3, 0.0, 0.0)
    sun.keyframe_insert("rotation_euler", frame=1)
    sun.data.color = (1.0, 1.0, 1.0)
    sun.data.keyframe_insert("color", frame=1)
    sun.rotation_euler = (1.2, 0.0, 0.9)
    sun.keyframe_insert("rotation_euler", frame=4)
    sun.data.color = (1.0, 0.5, 0.2)
    sun.data.keyframe_insert("color", frame=4)
    spot = bpy.data.objects.new("Spot", bpy.data.lights.new("Spot", "SPOT"))
    spot.location = (0.5, -1.5, 0.5)
    spot.data.shadow_soft_size = 0.05
    sc.collection.objects.link(spot)
    bpy.ops.portrait_relight.add_head_rig(proxy=False)
    s = sc.portrait_relight
    anchor = s.anchor
    for f, yaw in ((1, 0.0), (4, 0.4)):
        anchor.rotation_euler = (0.0, 0.0, yaw)
        anchor.keyframe_insert("rotation_euler", frame=f)
    s.follow_head = True
    clip(sc, tmp_path / "f", n=4)
    req_path = tmp_path / "r.json"
    assert bpy.ops.portrait_relight.export_request(filepath=str(req_path)) == {"FINISHED"}
    lighting = json.loads(req_path.read_text())["lighting"]
    keys = lighting["key_lights"]
    assert len(keys) == 4 and all(isinstance(k, list) and len(k) == 2 for k in keys)
    suns = [next(k for k in frame if k["type"] == "directional") for frame in keys]
    assert not np.allclose(suns[0]["direction"], suns[3]["direction"], atol=1e-3)
    assert suns[3]["color"] == pytest.approx([1.0, 0.5, 0.2], abs=1e-4)
    seq = _engine_lighting(lighting)
    for k in (0, 3):
        got = [kl for kl in seq.key_lights_at(k) if type(kl).__name__ == "DirectionalLight"]
        assert len(got) == 1
        assert np.allclose(np.asarray(got[0].direction) / np.linalg.norm(got[0].direction),
                           np.asarray(suns[k]["direction"]) / np.linalg.norm(suns[k]["direction"]), atol=1e-6)


# ------------------------------------------------------------------------------ 2. strip placement


def _render_sequencer(sc, path: Path, show) -> np.ndarray:
    """Render the sequencer (only strip `show` unmuted) to PNG; (H, W, 3) float pixels, row 0 top."""
    for st in strips(sc).values():
        st.mute = st.name != show.name
    r = sc.render
    r.use_sequencer, r.use_compositing = True, False
    r.film_transparent = True
    sc.view_settings.view_transform = "Standard"
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    r.filepath = str(path)
    sc.frame_set(int(show.frame_final_start))
    bpy.ops.render.render(write_still=True, scene=sc.name)
    img = bpy.data.images.load(str(path))
    w, h = img.size
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)
    out = px.reshape(h, w, img.channels)[::-1].copy()
    bpy.data.images.remove(img)
    for st in strips(sc).values():
        st.mute = False
    return out


def _bright_centroid(img: np.ndarray) -> np.ndarray:
    grey = img[..., :3].mean(axis=2)
    m = grey > grey.max() - 0.05
    ys, xs = np.nonzero(m)
    assert len(xs) > 50
    return np.array([xs.mean(), ys.mean()])


def test_result_strip_lies_exactly_over_its_source(studio, tmp_path):
    """1920x1080 scene, a 480x270 clip Scaled to Fit, moved, rotated, cropped, flipped, blended 'Alpha Over'
    at 0.8, Non-Color: relit at Size 240 the result strip copies all of it and is scaled back to the source's
    footprint; rendered alone it covers the same pixels as the source rendered alone (bright-square centroid
    within 1 px, same footprint)."""
    sc = studio
    src = clip(sc, tmp_path / "f", n=2)
    assert src.transform.scale_x == pytest.approx(4.0)
    t = src.transform
    t.offset_x, t.offset_y, t.rotation, t.origin = 120.0, -40.0, math.radians(8.0), (0.4, 0.6)
    src.crop.min_x, src.crop.max_y = 20, 10
    src.use_flip_x = True
    src.blend_type, src.blend_alpha = "ALPHA_OVER", 0.8
    src.colorspace_settings.name = "Non-Color"
    sc.portrait_relight.size = 240
    assert relight() == {"FINISHED"}
    new = result_of(sc, "clip")
    assert new is not None, sc.portrait_relight.last_result
    assert new.elements[0].orig_width in (0, 240)
    nt = new.transform
    assert nt.rotation == pytest.approx(t.rotation) and tuple(nt.origin) == pytest.approx((0.4, 0.6))
    # the pivot sits at (origin - 0.5) x media size: half-size media moves the offset by half of that
    assert (nt.offset_x, nt.offset_y) == pytest.approx((120.0 + 0.5 * -0.1 * 480, -40.0 + 0.5 * 0.1 * 270))
    assert nt.scale_x == pytest.approx(8.0) and nt.scale_y == pytest.approx(8.0)
    assert (new.crop.min_x, new.crop.max_y) == (10, 5)
    assert new.use_flip_x and not new.use_flip_y
    assert (new.blend_type, new.blend_alpha) == ("ALPHA_OVER", pytest.approx(0.8))
    assert new.colorspace_settings.name == "Non-Color"
    a = _render_sequencer(sc, tmp_path / "src.png", src)
    b = _render_sequencer(sc, tmp_path / "res.png", new)
    err = np.abs(_bright_centroid(a) - _bright_centroid(b))
    covered_a, covered_b = a[..., 3] > 0.5, b[..., 3] > 0.5
    iou = (covered_a & covered_b).sum() / (covered_a | covered_b).sum()
    print(f"centroid offset {err} px; footprint IoU {iou:.4f}")
    assert err.max() < 1.0 and iou > 0.99


# ------------------------------------------------------------------------------ 3. a still with an orbit


def test_still_photo_with_camera_orbit_comes_back_as_the_whole_orbit(studio, tmp_path):
    sc = studio
    files = write_png_frames(tmp_path / "photo", [pattern(64, 64)], stem="portrait")
    still = add_image_strip(sc, files[:1], start=1, name="photo")
    still.frame_final_duration = 6
    bpy.ops.portrait_relight.add_head_rig(proxy=False)
    s = sc.portrait_relight
    s.view = "SCENE"
    pivot = bpy.data.objects.new("Pivot", None)
    sc.collection.objects.link(pivot)
    pivot.parent = s.anchor
    s.camera.parent = pivot
    for f, yaw in ((1, 0.0), (6, 0.4)):
        pivot.rotation_euler = (0.0, 0.0, yaw)
        pivot.keyframe_insert("rotation_euler", frame=f)
    assert relight() == {"FINISHED"}
    new = result_of(sc, "photo")
    assert new is not None and new.frame_final_start == 1 and new.frame_final_duration == 6
    names = [e.filename for e in new.elements]
    assert names == [f"portrait_0000_{i:06d}.png" for i in range(6)]
    assert "6/6" in s.last_result


# ------------------------------------------------------------------------- 4. results never feed themselves


def test_results_are_not_selected_and_never_relit_again(studio, tmp_path):
    sc = studio
    a = clip(sc, tmp_path / "a", name="a", n=2)
    assert relight() == {"FINISHED"}
    ra = result_of(sc, "a")
    assert not ra.select and a.select and sc.sequence_editor.active_strip == a
    for st in strips(sc).values():
        st.select = True
    assert bpy.ops.portrait_relight.relight_strips(synchronous=True) == {"FINISHED"}
    assert set(strips(sc)) == {"a", "a relit"}
    # even made active, a result strip is not a source
    sc.sequence_editor.active_strip = ra
    for st in strips(sc).values():
        st.select = st == ra
    assert not bpy.ops.portrait_relight.relight.poll()


# ------------------------------------------------------------------------------ 5. output folders and takes


def test_one_folder_per_scene_strip_and_take(studio, tmp_path, monkeypatch):
    """Strips 'shot 1' and 'shot_1', and a second scene with a strip on the same clip, write to separate
    folders under //relight/<scene>/<strip>/; a changed light makes take_002 (take_001 stays intact); the
    strip switches between takes; Open Output Folder opens the take's folder."""
    from portrait_relight import operators, panels

    sc = studio
    (tmp_path / "proj").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "proj" / "shot.blend"))
    sc = bpy.context.window.scene
    a = clip(sc, tmp_path / "proj" / "a", name="shot 1", n=2)
    assert relight() == {"FINISHED"}
    b = clip(sc, tmp_path / "proj" / "a", name="shot_1", n=2, start=10)
    assert relight() == {"FINISHED"}
    fa, fb = (Path(bpy.path.abspath(result_of(sc, n).directory)) for n in ("shot 1", "shot_1"))
    assert fa != fb and fa.parent.parent != fb.parent.parent
    root = tmp_path / "proj" / "relight"
    assert fa.name == "rgba" and fa.parent.name == "take_001" and fa.parents[2].parent == root
    assert fa.parents[2].name.startswith(sc.name.replace(" ", "_")[:5])

    other = bpy.data.scenes.new("Alt")
    bpy.context.window.scene = other
    if hasattr(bpy.context.workspace, "sequencer_scene"):
        bpy.context.workspace.sequencer_scene = other
    sun = bpy.data.objects.new("Sun2", bpy.data.lights.new("Sun2", "SUN"))
    other.collection.objects.link(sun)
    clip(other, tmp_path / "proj" / "a", name="shot 1", n=2)
    assert relight() == {"FINISHED"}
    fc = Path(bpy.path.abspath(result_of(other, "shot 1").directory))
    assert fc.parents[2] != fa.parents[2] and fc.parents[2].name == "Alt"
    bpy.context.window.scene = sc
    if hasattr(bpy.context.workspace, "sequencer_scene"):
        bpy.context.workspace.sequencer_scene = sc

    sc.sequence_editor.active_strip = a
    for st in strips(sc).values():
        st.select = st == a
    first = files_of(result_of(sc, "shot 1"))
    before = [p.read_bytes() for p in first]
    assert relight() == {"FINISHED"}  # unchanged: the same take, resumed
    assert files_of(result_of(sc, "shot 1")) == first
    sc.objects["Sun"].data.energy = 5.0
    assert relight() == {"FINISHED"}
    res = result_of(sc, "shot 1")
    second = files_of(res)
    assert second[0].parent.parent.name == "take_002" and [p.read_bytes() for p in first] == before
    assert res.get("portrait_relight_take") == 2
    sc.sequence_editor.active_strip = res
    assert bpy.ops.portrait_relight.switch_take(take=1) == {"FINISHED"}
    assert files_of(result_of(sc, "shot 1")) == first
    drawn = _Layout()
    panels.draw_main(drawn, bpy.context)
    assert "shot 1 relit: take 1 of 2" in drawn.labels
    assert drawn.ops.count("portrait_relight.switch_take") == 2
    opened = []
    monkeypatch.setattr(operators, "_open_folder", opened.append)
    assert bpy.ops.portrait_relight.open_output() == {"FINISHED"}
    assert Path(opened[0]) == first[0].parent.parent
    assert b.name == "shot_1"


class _Layout:
    """A UILayout stand-in that records labels and operators (operator() returns its properties)."""

    def __init__(self):
        self.labels: list[str] = []
        self.ops: list[str] = []
        self.props: list[str] = []

    def label(self, text="", **_kw):
        self.labels.append(text)

    def prop(self, _data, name, **_kw):
        self.props.append(name)

    def operator(self, idname, **_kw):
        self.ops.append(idname)
        return type("Props", (), {})()

    def __getattr__(self, name):
        return lambda *a, **k: self


# ------------------------------------------------------------------------------ 6. re-running keeps edits


def test_rerun_updates_the_result_strip_in_place(studio, tmp_path):
    sc = studio
    src = clip(sc, tmp_path / "f", n=3)
    assert relight() == {"FINISHED"}
    res = result_of(sc, "clip")
    res.channel = 5
    res.blend_type, res.blend_alpha = "ADD", 0.5
    res.transform.offset_x = 33.0
    res.modifiers.new("Grade", "BRIGHT_CONTRAST")
    sc.sequence_editor.active_strip = src
    sc.objects["Sun"].data.energy = 3.0
    assert relight() == {"FINISHED"}
    assert [n for n in strips(sc) if n.endswith("relit")] == ["clip relit"]
    res = result_of(sc, "clip")
    assert res.channel == 5 and res.blend_type == "ADD" and res.blend_alpha == pytest.approx(0.5)
    assert res.transform.offset_x == 33.0 and [m.name for m in res.modifiers] == ["Grade"]
    assert files_of(res)[0].parent.parent.name == "take_002" and res.frame_final_duration == 3


# ------------------------------------------------------------------------------ 7. save, reopen, new, undo


class _Event:
    def __init__(self, type_: str, value: str = "NOTHING"):
        self.type, self.value = type_, value


class _Op:
    """Stands in for the operator instance (bpy cannot invoke operators without an event loop)."""

    def __init__(self):
        self.reports: list[tuple[str, str]] = []

    def report(self, levels, msg):
        self.reports.append((next(iter(levels)), msg))


@pytest.mark.parametrize("how", ["open", "new"])
def test_file_saved_mid_run_reopens_with_a_working_relight(studio, tmp_path, monkeypatch, how):
    from portrait_relight import operators

    monkeypatch.setenv("FAKE_DELAY", "0.3")
    sc = studio
    src = clip(sc, tmp_path / "f", n=12)
    assert operators.start_modal(_Op(), bpy.context, [src], add_handler=False) == {"RUNNING_MODAL"}
    operators.modal_step(bpy.context, _Event("TIMER"))
    proc = operators.running_job().proc
    assert sc.portrait_relight.is_running
    blend = tmp_path / "mid.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    if how == "open":
        bpy.ops.wm.open_mainfile(filepath=str(blend))
    else:
        bpy.ops.wm.read_homefile(use_empty=True)
    assert operators._RUN == {} and operators.running_job() is None
    end = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert proc.poll() is not None  # the worker was stopped, not left running
    if how == "open":
        sc = bpy.context.window.scene
        s = sc.portrait_relight
        assert not s.is_running and s.progress == 0.0 and s.status == ""
        sc.sequence_editor.active_strip = strips(sc)["clip"]
        assert bpy.ops.portrait_relight.relight.poll()
        monkeypatch.setenv("FAKE_DELAY", "0.0")
        assert relight() == {"FINISHED"}
        assert result_of(sc, "clip").frame_final_duration == 12


def test_operator_cancel_closes_the_run(studio, tmp_path, monkeypatch):
    """Blender calls a modal operator's cancel() when the window goes away (File > New/Open)."""
    from portrait_relight import operators

    monkeypatch.setenv("FAKE_DELAY", "0.3")
    src = clip(studio, tmp_path / "f", n=8)
    op = _Op()
    assert operators.start_modal(op, bpy.context, [src], add_handler=False) == {"RUNNING_MODAL"}
    proc = operators.running_job().proc
    operators.PORTRAIT_RELIGHT_OT_relight.cancel(op, bpy.context)
    assert operators._RUN == {} and not studio.portrait_relight.is_running
    proc.wait(timeout=10)


def test_undo_removes_the_result_strip_and_redo_brings_it_back(studio, tmp_path):
    sc = studio
    clip(sc, tmp_path / "f", n=3)
    bpy.ops.ed.undo_push(message="Add clip")
    assert relight() == {"FINISHED"}
    assert set(strips(bpy.context.window.scene)) == {"clip", "clip relit"}
    bpy.ops.ed.undo()
    sc = bpy.context.window.scene
    assert set(strips(sc)) == {"clip"} and "Sun" in sc.objects
    bpy.ops.ed.redo()
    sc = bpy.context.window.scene
    assert set(strips(sc)) == {"clip", "clip relit"}
    assert result_of(sc, "clip").frame_final_duration == 3


# ------------------------------------------------------------------------------ 8. relative paths


def test_paths_survive_moving_the_project(studio, tmp_path, capfd):
    from portrait_relight import sequencer

    sc = studio
    proj = tmp_path / "proj"
    proj.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(proj / "shot.blend"))
    sc = bpy.context.window.scene
    s = sc.portrait_relight
    src = clip(sc, proj / "footage", n=2)
    src.directory = bpy.path.relpath(src.directory)
    s.output_format = "exr"
    assert relight() == {"FINISHED"}
    res = result_of(sc, "clip")
    assert res.directory.startswith("//")
    img = bpy.data.images.get("clip relit")
    assert img is not None and img.filepath.startswith("//")
    assert s.last_output.startswith("//")
    bpy.ops.wm.save_mainfile()
    moved = tmp_path / "moved"
    shutil.move(str(proj), str(moved))
    bpy.ops.wm.open_mainfile(filepath=str(moved / "shot.blend"))
    sc = bpy.context.window.scene
    res = result_of(sc, "clip")
    assert all(p.is_file() for p in files_of(res))
    assert Path(bpy.path.abspath(bpy.data.images["clip relit"].filepath)).is_file()
    assert sequencer.strip_source(strips(sc)["clip"]).input.startswith(str(moved))
    for prop in ("output_dir", "reference_image", "light_file", "last_output"):
        rna = sc.portrait_relight.bl_rna.properties[prop]
        assert getattr(rna, "is_path_supports_blend_relative", True), prop  # the flag exists in 4.5+
    assert "does not support blend relative" not in capfd.readouterr().err


def test_unsaved_file_says_where_its_frames_go(studio, tmp_path):
    sc = studio
    clip(sc, tmp_path / "f", n=2)
    assert relight() == {"FINISHED"}
    msg = sc.portrait_relight.last_result
    assert "not saved" in msg and str(tmp_path / "cache") in msg


# ------------------------------------------------------------------------------ 10. no UI freeze


@pytest.mark.slow  # ~6 s: the SH of 1,000 frames with an area light, on the worker thread
def test_preparing_a_1000_frame_request_keeps_the_main_thread_free(studio, tmp_path, monkeypatch):
    """A 1,000-frame strip with an orbiting camera, the anchor keyed on every frame (as Follow Tracked Head
    does), an animated sun, an area and a point light: the main thread spends under a second (its own CPU
    time, measured) from Relight until the worker runs; the preview handlers do not run while the frames
    are stepped through; the request carries 1,000 per-frame lights and views."""
    from portrait_relight import handlers, operators

    sc = studio
    n = 1000
    files = write_png_frames(tmp_path / "photo", [pattern(32, 32)], stem="still")
    strip = add_image_strip(sc, files, start=1, name="long")
    strip.frame_final_duration = n
    bpy.ops.portrait_relight.add_head_rig(proxy=False)
    s = sc.portrait_relight
    s.view = "SCENE"
    pivot = bpy.data.objects.new("Pivot", None)
    sc.collection.objects.link(pivot)
    pivot.parent = s.anchor
    s.camera.parent = pivot
    for f, yaw in ((1, 0.0), (n, 0.5)):
        pivot.rotation_euler = (0.0, 0.0, yaw)
        pivot.keyframe_insert("rotation_euler", frame=f)
    for f in range(1, n + 1):
        s.anchor.location = (0.001 * f, 0.0, 0.0)
        s.anchor.rotation_euler = (0.0, 0.0, 0.0004 * f)
        s.anchor.keyframe_insert("location", frame=f)
        s.anchor.keyframe_insert("rotation_euler", frame=f)
    sun = sc.objects["Sun"]
    for f, e in ((1, 1.0), (n, 4.0)):
        sun.data.energy = e
        sun.data.keyframe_insert("energy", frame=f)
    for kind, loc in (("AREA", (1.0, -1.5, 1.0)), ("POINT", (-1.0, -1.0, 0.5))):
        ob = bpy.data.objects.new(kind, bpy.data.lights.new(kind, kind))
        ob.location = loc
        sc.collection.objects.link(ob)
    calls = []
    real = handlers.current_sh
    monkeypatch.setattr(handlers, "current_sh", lambda scene: calls.append(1) or real(scene))

    main = 0.0
    t = time.thread_time()
    assert operators.start_modal(_Op(), bpy.context, [strip], add_handler=False) == {"RUNNING_MODAL"}
    main += time.thread_time() - t
    assert calls == []  # stepping through 1,000 frames did not run the preview handlers
    end = time.monotonic() + 120
    while operators.running_job() is None and operators._RUN and time.monotonic() < end:
        time.sleep(0.02)
        t = time.thread_time()
        operators.modal_step(bpy.context, _Event("TIMER"))
        main += time.thread_time() - t
    req = operators.running_job().request
    print(f"main thread {main:.3f} s for {n} frames")
    assert main < 1.0
    assert np.asarray(req["lighting"]["sh"]).shape == (n, 9, 3) and len(req["lighting"]["key_lights"]) == n
    assert len(req["camera"]["cam2head"]) == n
    operators.abort_run()  # the worker's 1,000 frames are not the point here


# ------------------------------------------------------------------------------ 11. cheap handlers


def _preview_pixels() -> np.ndarray:
    img = bpy.data.images["Portrait Relight Lit Sphere"]
    px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(img.size[1], img.size[0], 4)


def test_preview_handlers_react_only_to_what_the_preview_uses(studio, monkeypatch):
    """Editing a mesh, the camera or playing frames of a static scene costs no SH evaluation; moving the
    light, the anchor, the World or the exposure updates the preview; the preview is exposure-normalised
    (four times the light: the same picture) and shows the side the light comes from."""
    from portrait_relight import handlers

    sc = studio
    bpy.ops.portrait_relight.add_head_rig(proxy=False)
    cube = bpy.data.objects.new("Prop", bpy.data.meshes.new("Prop"))
    sc.collection.objects.link(cube)
    bpy.context.view_layer.update()
    calls = []
    real = handlers.current_sh
    monkeypatch.setattr(handlers, "current_sh", lambda scene: calls.append(1) or real(scene))

    def after(change) -> int:
        calls.clear()
        change()
        bpy.context.view_layer.update()
        return len(calls)

    assert after(lambda: setattr(cube, "location", (1.0, 2.0, 3.0))) == 0
    assert after(lambda: setattr(sc.portrait_relight.camera, "location", (0.1, -2.7, 0.0))) == 0
    assert after(lambda: [sc.frame_set(f) for f in range(2, 12)]) == 0
    sun = sc.objects["Sun"]
    assert after(lambda: setattr(sun, "rotation_euler", (1.2, 0.0, -0.6))) >= 1
    assert after(lambda: setattr(sc.portrait_relight.anchor, "rotation_euler", (0.0, 0.0, 0.3))) >= 1
    assert after(lambda: setattr(sc.view_settings, "exposure", 1.0)) >= 1
    sun.data.energy = 1.0
    sun.keyframe_insert("rotation_euler", frame=1)
    sun.rotation_euler = (0.2, 0.0, 0.0)
    sun.keyframe_insert("rotation_euler", frame=20)
    assert after(lambda: sc.frame_set(10)) >= 1  # animated light: each played frame

    # the light from image right (head +x = anchor +X): the right half of the sphere is brighter
    sun.animation_data_clear()
    sun.rotation_euler = (0.0, math.radians(90.0), 0.0)  # local -Z (emission) -> world -X: light from +X
    bpy.context.view_layer.update()
    a = _preview_pixels()
    sun.data.energy = 4.0
    bpy.context.view_layer.update()
    b = _preview_pixels()
    assert np.allclose(a, b, atol=1e-5) and a[..., :3].max() == pytest.approx(0.8, abs=1e-4)
    w = a.shape[1]
    assert a[:, w // 2:, :3].mean() > 2.0 * a[:, :w // 2, :3].mean()


# ------------------------------------------------------------------------------ 9. compositor in step


def _render_compositor(sc, path: Path, frame: int) -> np.ndarray:
    """Render the compositor alone at `frame` to PNG; (H, W, 3) float, row 0 top."""
    r = sc.render
    r.use_sequencer, r.use_compositing = False, True
    r.engine = "BLENDER_WORKBENCH"
    r.resolution_percentage = 100
    r.image_settings.file_format = "PNG"
    r.filepath = str(path)
    sc.view_settings.view_transform = "Standard"
    sc.frame_set(frame)
    bpy.ops.render.render(write_still=True, scene=sc.name)
    img = bpy.data.images.load(str(path))
    w, h = img.size
    px = np.empty(w * h * img.channels, np.float32)
    img.pixels.foreach_get(px)
    out = px.reshape(h, w, img.channels)[::-1, :, :3].copy()
    bpy.data.images.remove(img)
    return out


def test_exr_in_the_compositor_plays_in_step_with_the_trimmed_strip(studio, tmp_path):
    """A trimmed strip (source frames 2..4 at timeline 12..14) relit to EXR: 'Load EXR in Compositor' makes
    an Image node whose frame at timeline t is the EXR rendered for t (the moving square's position in the
    compositor render matches that source frame within 1 px)."""
    sc = studio
    w, h = 96, 54
    src = clip(sc, tmp_path / "f", n=6, w=w, h=h, start=10, fit="ORIGINAL")
    src.frame_offset_start, src.frame_offset_end = 2, 1
    sc.portrait_relight.output_format = "exr"
    assert relight() == {"FINISHED"}
    res = result_of(sc, "clip")
    assert res.frame_final_start == 12 and res.frame_final_duration == 3
    sc.sequence_editor.active_strip = res
    assert bpy.ops.portrait_relight.load_exr_compositor() == {"FINISHED"}
    bpy.ops.portrait_relight.add_head_rig(proxy=False)  # a camera for the render
    sc.render.resolution_x, sc.render.resolution_y = w, h
    for t in (12, 13, 14):
        img = _render_compositor(sc, tmp_path / f"comp_{t}.png", t)
        k = t - 12 + 2
        want = _bright_centroid(pattern(w, h, k).astype(np.float32) / 255.0)
        got = _bright_centroid(img)
        print(t, got, want)
        assert np.abs(got - want).max() < 1.0


# ------------------------------------------------------------------------------ 12. small things


def test_relight_says_why_it_is_disabled(studio, tmp_path):
    sc = studio
    src = clip(sc, tmp_path / "f", n=2)
    src.select = False
    sc.sequence_editor.active_strip = None
    assert not bpy.ops.portrait_relight.relight.poll()
    with pytest.raises(RuntimeError, match="Select a movie or image strip"):
        bpy.ops.portrait_relight.relight(synchronous=True)


def test_every_property_has_a_tooltip_and_operators_one_line_descriptions(studio):
    s = studio.portrait_relight
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    for rna in (s.bl_rna, prefs.bl_rna):
        for p in rna.properties:
            if p.identifier not in {"rna_type", "name", "bl_idname"}:
                assert p.description.strip(), f"{rna.identifier}.{p.identifier} has no tooltip"
    ops = [getattr(bpy.ops.portrait_relight, n).get_rna_type() for n in dir(bpy.ops.portrait_relight)]
    assert len(ops) >= 10
    for op in ops:
        d = op.description
        assert d and "\n" not in d and len(d) <= 160 and "  " not in d, (op.identifier, d)
        for p in op.properties:
            if p.identifier != "rna_type":
                assert p.description.strip(), f"{op.identifier}.{p.identifier} has no tooltip"


def test_esc_outside_the_panel_is_left_to_blender(studio, tmp_path, monkeypatch):
    """Esc with the pointer outside the add-on's sidebar passes through (playback, other tools keep it) and
    the run goes on; Esc over the sidebar, or the Cancel button, cancels."""
    from portrait_relight import operators

    monkeypatch.setenv("FAKE_DELAY", "0.2")
    src = clip(studio, tmp_path / "f", n=10)
    assert operators.start_modal(_Op(), bpy.context, [src], add_handler=False) == {"RUNNING_MODAL"}
    end = time.monotonic() + 30
    while len(operators.running_job().state.frames) < 2 and time.monotonic() < end:
        time.sleep(0.05)
        operators.modal_step(bpy.context, _Event("TIMER"))
    esc = _Event("ESC", "PRESS")
    esc.mouse_x = esc.mouse_y = -100  # nowhere near the sidebar
    assert operators.modal_step(bpy.context, esc) == {"PASS_THROUGH"}
    run = operators._RUN["run"]
    assert not run.cancel_requested
    sidebar = operators.panel_regions(bpy.context)
    if sidebar:
        r = sidebar[0]
        esc.mouse_x, esc.mouse_y = r.x + r.width // 2, r.y + r.height // 2
        assert operators.modal_step(bpy.context, esc) == {"RUNNING_MODAL"} and run.cancel_requested
    else:
        assert bpy.ops.portrait_relight.cancel() == {"FINISHED"} and run.cancel_requested
    ret = {"RUNNING_MODAL"}
    while ret == {"RUNNING_MODAL"} and time.monotonic() < end:
        time.sleep(0.05)
        ret = operators.modal_step(bpy.context, _Event("TIMER"))
    assert 2 <= result_of(studio, "clip").frame_final_duration < 10


@pytest.mark.parametrize("mode", ["CURRENT", "PREVIEW"])
def test_relight_current_frame_or_preview_range_only(studio, tmp_path, mode):
    sc = studio
    src = clip(sc, tmp_path / "clip", n=10, start=5)
    src.frame_offset_start = 1  # timeline 6..14 shows source frames 1..9
    sc.frame_set(9)
    sc.use_preview_range = True
    sc.frame_preview_start, sc.frame_preview_end = 8, 11
    sc.portrait_relight.frame_range = mode
    assert relight() == {"FINISHED"}
    res = result_of(sc, "clip")
    first, n = (9, 1) if mode == "CURRENT" else (8, 4)
    assert res.frame_final_start == first and res.frame_final_duration == n
    shown = range(first - 5, first - 5 + n)  # source frame = timeline frame - 5
    assert [e.filename for e in res.elements] == [f"clip_{i:06d}.png" for i in shown]


def test_no_face_warnings_once_per_run_in_timeline_frames(studio, tmp_path, monkeypatch):
    from portrait_relight import operators

    monkeypatch.setenv("FAKE_NOFACE", "2,3,4,7")
    src = clip(studio, tmp_path / "f", n=9, start=101)
    src.frame_offset_start = 1  # source frame i is at timeline frame 101 + i
    op = _Op()
    assert operators.start_modal(op, bpy.context, [src], add_handler=False) == {"RUNNING_MODAL"}
    ret, end = {"RUNNING_MODAL"}, time.monotonic() + 30
    while ret == {"RUNNING_MODAL"} and time.monotonic() < end:
        time.sleep(0.02)
        ret = operators.modal_step(bpy.context, _Event("TIMER"))
    warnings = [m for lvl, m in op.reports if lvl == "WARNING"]
    assert len(warnings) == 1, op.reports
    assert "frames 103-105, 108" in warnings[0] and "no face" in warnings[0]


def test_engine_messages_speak_blenders_words(studio, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ERROR", "Device 'cuda' was asked for but no CUDA GPU is available; use --device "
                                     "cpu or auto.")
    clip(studio, tmp_path / "f", n=2)
    with pytest.raises(RuntimeError) as err:
        relight()
    assert "--" not in str(err.value) and "Device" in str(err.value) and "preferences" in str(err.value)


def test_pass_toggles_are_hidden_for_exr(studio, tmp_path):
    """The engine writes every pass into each EXR as a layer: the panel hides the pass toggles for EXR and
    the request asks for all passes (so toggling them cannot make a new take of identical files)."""
    from portrait_relight import panels, request

    sc = studio
    src = clip(sc, tmp_path / "f", n=2)
    s = sc.portrait_relight
    for fmt, visible in (("png", True), ("exr", False)):
        s.output_format = fmt
        seen = _Layout()
        panels.draw_output(seen, bpy.context)
        assert ("pass_albedo" in seen.props) == visible
    s.pass_albedo = True
    req, _ = request.build_request(bpy.context, src)
    s.pass_albedo = False
    assert request.build_request(bpy.context, src)[0]["passes"] == req["passes"] == list(
        sys.modules["portrait_relight"].properties.PASSES)
