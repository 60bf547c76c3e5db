"""The whole Blender round trip as an artist does it, with the real engine (one slow test).

A 1920x1080 scene, a 480 px fixture clip Scaled to Fit, a first relight (the engine tracks the head),
Follow Tracked Head, an animated sun and an area light, relight, save, move the project folder, reopen,
change the light and switch to EXR, relight (a new take), undo, redo, Load EXR in Compositor, then render
frame 20 of the sequencer and of the compositor to PNG and compare both with the engine's own frame 20:
they must line up within 1 px (phase correlation) and agree in colour.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_session import new_session, result_of, strips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.blender, pytest.mark.slow]
SIZE = 128  # the engine's working size (longer side)
N = 20  # frames of the clip the strip shows


def _engine_python() -> str | None:
    for exe in (os.environ.get("RELIGHT_ENGINE_PYTHON"), str(REPO / ".venv" / "bin" / "python"),
                str(REPO.parent / "main" / ".venv" / "bin" / "python")):
        if exe and Path(exe).exists():
            return exe
    return None


def _srgb(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _render(sc, path: Path, frame: int, sequencer: bool) -> np.ndarray:
    """Render frame `frame` of the sequencer or of the compositor to PNG; (H, W, 3) float sRGB, row 0 top."""
    r = sc.render
    r.use_sequencer, r.use_compositing = sequencer, not sequencer
    r.engine = "BLENDER_WORKBENCH"
    r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
    r.filepath = str(path)
    sc.view_settings.view_transform = "Standard"
    sc.frame_set(frame)
    bpy.ops.render.render(write_still=True, scene=sc.name)
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    """Length of the translation between two (H, W, 3) images (phase correlation, pixels)."""
    import cv2

    (dx, dy), _ = cv2.phaseCorrelate(a.mean(axis=2).astype(np.float64), b.mean(axis=2).astype(np.float64))
    return float(np.hypot(dx, dy))


def test_artist_session_end_to_end(fixtures_dir, tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    import cv2

    clip = fixtures_dir / "videos" / "lp_d18.mp4"  # 480x480
    exe = _engine_python()
    if not clip.is_file() or exe is None:
        pytest.skip("needs the lp_d18 fixture clip and an engine Python")
    sc = new_session()
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python, prefs.device = exe, "cpu"
    try:
        proj = tmp_path / "proj"
        proj.mkdir()
        bpy.ops.wm.save_as_mainfile(filepath=str(proj / "shot.blend"))
        sc = bpy.context.window.scene
        sc.render.resolution_x, sc.render.resolution_y = 1920, 1080
        from portrait_relight import sequencer

        src = sequencer.strips_of(sc, ensure=True).new_movie(name="shot", filepath=str(clip), channel=1,
                                                            frame_start=1, fit_method="FIT")
        src.frame_final_duration = N
        sc.sequence_editor.active_strip, src.select = src, True
        s = sc.portrait_relight
        s.size = SIZE
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.data.energy, sun.rotation_euler = 3.0, (0.9, 0.0, 0.5)
        sc.collection.objects.link(sun)
        assert bpy.ops.portrait_relight.add_head_rig(proxy=False) == {"FINISHED"}
        assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}, s.last_result

        # Follow Tracked Head, an animated sun and an area light
        assert bpy.ops.portrait_relight.follow_head() == {"FINISHED"}
        sun.keyframe_insert("rotation_euler", frame=1)
        sun.rotation_euler = (0.9, 0.0, -0.5)
        sun.keyframe_insert("rotation_euler", frame=N)
        area = bpy.data.objects.new("Area", bpy.data.lights.new("Area", "AREA"))
        area.data.energy, area.location = 40.0, (-1.0, -1.5, 0.8)
        sc.collection.objects.link(area)
        assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}, s.last_result
        res = result_of(sc, "shot")
        assert res.get("portrait_relight_take") == 2 and res.directory.startswith("//")

        # save, move the project, reopen
        bpy.ops.wm.save_mainfile()
        moved = tmp_path / "moved"
        shutil.move(str(proj), str(moved))
        bpy.ops.wm.open_mainfile(filepath=str(moved / "shot.blend"))
        sc = bpy.context.window.scene
        s = sc.portrait_relight
        res = result_of(sc, "shot")
        assert all((Path(bpy.path.abspath(res.directory)) / e.filename).is_file() for e in res.elements)
        assert not s.is_running and bpy.ops.portrait_relight.relight.poll()

        # change the light, EXR output: a new take, next to the others in the moved folder
        sc.objects["Area"].data.energy = 80.0
        s.output_format = "exr"
        bpy.ops.ed.undo_push(message="Brighter area light")
        assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}, s.last_result
        res = result_of(sc, "shot")
        assert res.get("portrait_relight_take") == 3
        assert Path(bpy.path.abspath(res.directory)).is_relative_to(moved / "relight")
        bpy.ops.ed.undo()
        sc = bpy.context.window.scene
        assert result_of(sc, "shot").get("portrait_relight_take") == 2
        bpy.ops.ed.redo()
        sc = bpy.context.window.scene
        res = result_of(sc, "shot")
        assert res.get("portrait_relight_take") == 3 and res.elements[0].filename.endswith(".exr")

        sc.sequence_editor.active_strip = res
        assert bpy.ops.portrait_relight.load_exr_compositor() == {"FINISHED"}
        exr = Path(bpy.path.abspath(res.directory)) / res.elements[N - 1].filename
        assert exr.name.endswith(f"_{N - 1:06d}.exr")
        rgba = OpenEXR.File(str(exr)).parts[0].channels["RGBA"].pixels.astype(np.float32)
        engine = _srgb(rgba[..., :3] * rgba[..., 3:4])  # over black, as both renders show it
        h, w = engine.shape[:2]

        for st in strips(sc).values():
            st.mute = st.name != res.name
        seq = _render(sc, tmp_path / "seq_20.png", N, sequencer=True)
        side = 1080  # Scale to Fit: the square clip covers the frame height, centred
        x0 = (1920 - side) // 2
        crop = seq[:, x0:x0 + side]
        up = cv2.resize(engine, (side, side), interpolation=cv2.INTER_LINEAR)
        seq_shift = _shift(crop, up)
        seq_err = float(np.abs(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA) - engine).mean())

        sc.render.resolution_x, sc.render.resolution_y = w, h
        comp = _render(sc, tmp_path / "comp_20.png", N, sequencer=False)
        comp_shift = _shift(comp, engine)
        comp_err = float(np.abs(comp - engine).mean())
        print(f"frame {N}: sequencer shift {seq_shift:.3f} px (1080 px scale), mean |diff| {seq_err:.4f}; "
              f"compositor shift {comp_shift:.3f} px, mean |diff| {comp_err:.4f}")
        assert seq_shift < 1.0 and comp_shift < 1.0
        assert seq_err < 0.03 and comp_err < 0.03
    finally:
        prefs.engine_python = ""
        bpy.ops.wm.read_homefile(use_empty=True)
