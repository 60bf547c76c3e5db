"""Sequencer round trip through the real engine worker: an image strip of astronaut frames goes out, the relit
frames come back as a strip of the same length at the same start frame; cancelling keeps a usable partial
strip and leaves no process behind. Skipped when the worker module or the engine Python is missing."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import active_scene, add_image_strip, enable_addon, write_png_frames  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.blender, pytest.mark.slow]


def _engine_python() -> str | None:
    exe = os.environ.get("RELIGHT_ENGINE_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    return exe if Path(exe).exists() else None


@pytest.fixture()
def engine():
    if not (REPO / "relight_core" / "commands" / "worker.py").is_file() \
            or importlib.util.find_spec("relight_core.pipeline") is None:
        pytest.skip("the engine worker (relight_core.commands.worker) is not in this checkout yet")
    exe = _engine_python()
    if exe is None:
        pytest.skip("no engine Python (.venv/bin/python or $RELIGHT_ENGINE_PYTHON)")
    return exe


@pytest.fixture()
def shot(engine, tmp_path, astronaut):
    """A scene with a sun light and an image strip of astronaut frames (256 px, slight drift per frame)."""
    enable_addon()
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python = engine
    prefs.device = "cpu"
    with active_scene("PR roundtrip") as sc:
        sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "SUN"))
        sun.data.energy = 3.0
        sun.rotation_euler = (0.9, 0.0, 0.6)
        sc.collection.objects.link(sun)
        small = np.asarray(astronaut, dtype=np.float32).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))

        def make(n: int, name: str, start: int):
            frames = [np.roll(small, (k, 2 * k), axis=(0, 1)).round().astype(np.uint8) for k in range(n)]
            files = write_png_frames(tmp_path / name, frames, stem=name)
            return add_image_strip(sc, files, channel=2, start=start, name=name)

        yield sc, make, tmp_path
    prefs.engine_python = ""


def test_strip_round_trip_through_worker(shot):
    sc, make, tmp = shot
    strip = make(5, "astro", start=6)
    strip.frame_offset_start = 1  # the strip shows source frames 1..4 from timeline frame 7
    s = sc.portrait_relight
    s.output_dir = str(tmp / "out")
    s.size = 256
    assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}
    from portrait_relight import sequencer

    new = sequencer.strips_of(sc).get("astro relit")
    assert new is not None, s.last_result
    assert new.frame_final_start == strip.frame_final_start == 7
    assert new.frame_final_duration == strip.frame_final_duration == 4
    assert new.channel == 3
    folder = Path(bpy.path.abspath(new.directory))
    files = [folder / e.filename for e in new.elements]
    assert len(files) == 4 and all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert [f.name for f in files] == [f"astro_{i:06d}.png" for i in range(1, 5)]
    assert "relit 4/4" in s.last_result


def test_cancel_after_two_frames_leaves_partial_strip(shot):
    sc, make, tmp = shot
    from portrait_relight import operators, request

    strip = make(16, "long", start=3)
    s = sc.portrait_relight
    s.output_dir = str(tmp / "cancel")
    s.size = 128
    req, src = request.build_request(bpy.context, strip)
    from portrait_relight.worker_client import WorkerJob

    job = WorkerJob(request.engine(), req)
    state = job.wait(cancel_after_frames=2, timeout=240)
    assert state.finished == "cancelled", (state.error, list(job.stderr_tail)[-5:])
    assert job.proc.poll() is not None  # no running process left
    level, msg = operators.finish_strip(sc, sc, strip, src, req, job)
    done = len(state.frames)
    print(f"cancelled after {done} of 16 frames")
    assert 2 <= done < 16, msg
    from portrait_relight import sequencer

    new = sequencer.strips_of(sc).get("long relit")
    assert new is not None and new.frame_final_start == 3
    assert new.frame_final_duration == len(request.result_files(state, req, src)) >= 2
    folder = Path(bpy.path.abspath(new.directory))
    assert all((folder / e.filename).is_file() for e in new.elements)
    assert level == "WARNING" and "partial" in msg


def test_worker_error_is_reported_not_raised_into_blender(shot):
    sc, make, tmp = shot
    strip = make(1, "bad", start=1)
    sc.portrait_relight.output_dir = str(tmp / "bad_out")
    # corrupt the only frame: the engine must answer with one error event, the operator with a report
    Path(bpy.path.abspath(strip.directory), strip.elements[0].filename).write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match="Portrait Relight"):
        bpy.ops.portrait_relight.relight(synchronous=True)
    assert "error" in sc.portrait_relight.last_result
    assert sys.modules["portrait_relight"].operators.running_job() is None


def test_exr_novel_view_round_trip(shot):
    """Scene Camera view (head rig turned 20 degrees) with multilayer EXR output: the strip holds the EXRs
    and the same frames load as a multilayer image for the compositor."""
    sc, make, tmp = shot
    make(2, "turn", start=1)
    assert bpy.ops.portrait_relight.add_head_rig(proxy=False) == {"FINISHED"}
    s = sc.portrait_relight
    s.camera.location = (2.7 * np.sin(np.radians(20)), -2.7 * np.cos(np.radians(20)), 0.0)
    s.camera.rotation_euler = (np.pi / 2, 0.0, np.radians(20))
    s.view, s.output_format, s.pass_normal = "SCENE", "exr", True
    s.output_dir = str(tmp / "exr_out")
    s.size = 128
    assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}, s.last_result
    from portrait_relight import sequencer

    new = sequencer.strips_of(sc).get("turn relit")
    assert new is not None and new.frame_final_duration == 2
    assert all(e.filename.endswith(".exr") for e in new.elements)
    img = bpy.data.images.get("turn relit")
    assert img is not None and img.source == "SEQUENCE"
    _ = img.size[:]  # loads the header: a multilayer EXR turns the image into type MULTILAYER
    assert img.type == "MULTILAYER"


def test_exr_strip_shows_the_rgba_layer(shot):
    """What the sequencer renders for an EXR result strip should be the rgba layer, not another pass."""
    OpenEXR = pytest.importorskip("OpenEXR")
    sc, make, tmp = shot
    make(1, "lay", start=1)
    s = sc.portrait_relight
    s.output_format, s.pass_normal, s.size = "exr", True, 64
    s.output_dir = str(tmp / "lay_out")
    assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}, s.last_result
    from portrait_relight import sequencer

    new = sequencer.strips_of(sc).get("lay relit")
    for st in sequencer.strips_of(sc):
        st.mute = st != new
    r = sc.render
    sc.view_settings.view_transform = "Standard"
    r.resolution_x = r.resolution_y = 64
    r.use_sequencer, r.image_settings.file_format = True, "OPEN_EXR"
    r.filepath = str(tmp / "seq.exr")
    sc.frame_start = sc.frame_end = 1
    bpy.ops.render.render(write_still=True)
    shown = OpenEXR.File(str(tmp / "seq.exr")).parts[0].channels["RGBA"].pixels[..., :3]
    rgba = OpenEXR.File(str(Path(new.directory, new.elements[0].filename))).parts[0].channels["RGBA"].pixels
    assert np.allclose(shown, rgba[..., :3], atol=2e-2)
