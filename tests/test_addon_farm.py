"""Export Farm Job in Blender (the PyPI `bpy` module, headless): two strips and a sun that turns over the
timeline -> an Open Job Description bundle whose shot requests carry each strip's per-frame lights."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bpy")
import bpy  # noqa: E402
from test_addon_blender import active_scene, add_image_strip, enable_addon, write_png_frames  # noqa: E402

yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.blender


@pytest.fixture()
def scene():
    enable_addon()
    with active_scene("PR farm") as sc:
        yield sc


def sun_direction(sun, frame: int) -> np.ndarray:
    """The sun's surface-to-light direction (its local +Z) in world space at a timeline frame."""
    bpy.context.scene.frame_set(frame)
    return np.array(sun.matrix_world.to_3x3().col[2])


def test_export_farm_job_from_two_strips(scene, tmp_path):
    sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
    scene.collection.objects.link(sun)
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(-60))
    sun.keyframe_insert("rotation_euler", frame=1)
    sun.rotation_euler = (math.radians(50), 0.0, math.radians(60))
    sun.keyframe_insert("rotation_euler", frame=6)
    frames = [np.full((16, 16, 3), 90 + 10 * i, np.uint8) for i in range(4)]
    a = add_image_strip(scene, write_png_frames(tmp_path / "a", frames, "a"), 1, 1, name="shot A")
    b = add_image_strip(scene, write_png_frames(tmp_path / "b", frames, "b"), 2, 3, name="shot B")
    a.select = b.select = True
    scene.portrait_relight.output_dir = str(tmp_path / "relight")
    bundle = tmp_path / "bundle"

    assert bpy.ops.portrait_relight.export_farm_job(directory=str(bundle), chunk=2) == {"FINISHED"}

    template = yaml.safe_load((bundle / "template.yaml").read_text())
    steps = {s["name"]: s for s in template["steps"]}
    for shot in ("shot_A", "shot_B"):
        assert "dependencies" not in steps[f"Track {shot}"]
        assert steps[f"Relight {shot}"]["dependencies"] == [{"dependsOn": f"Track {shot}"}]
        assert steps[f"Encode {shot}"]["dependencies"] == [{"dependsOn": f"Relight {shot}"}]
        frame = steps[f"Relight {shot}"]["parameterSpace"]["taskParameterDefinitions"][0]
        assert frame["type"] == "CHUNK[INT]" and frame["range"] == f"{{{{Param.Frames_{shot}}}}}"
    params = {p["name"]: p for p in template["parameterDefinitions"]}
    assert params["Frames_shot_A"]["default"] == "0-3" and params["ChunkSize"]["default"] == 2

    # the frames go where a local Relight of the strip writes them
    from portrait_relight import request

    values = {v["name"]: v["value"] for v in yaml.safe_load((bundle / "parameter_values.yaml").read_text())
              ["parameterValues"]}
    assert values == json.loads((bundle / "job_parameters.json").read_text())
    for strip, shot in ((a, "shot_A"), (b, "shot_B")):
        local, _src = request.build_request(bpy.context, strip)
        assert values[f"Output_{shot}"] == str(Path(local["output"]).resolve())
        baked = json.loads((bundle / "shots" / f"{shot}.json").read_text())
        assert baked == json.loads(json.dumps(local))  # exactly what a local relight sends

    # the sun's turn is baked in per frame, evaluated at the timeline frames each strip occupies
    req_a = json.loads((bundle / "shots" / "shot_A.json").read_text())
    req_b = json.loads((bundle / "shots" / "shot_B.json").read_text())
    sh_a, sh_b = np.array(req_a["lighting"]["sh"]), np.array(req_b["lighting"]["sh"])
    assert sh_a.shape == sh_b.shape == (4, 9, 3)
    assert np.abs(sh_a[0, 3] - sh_a[3, 3]).max() > 0.1  # the x (left-right) band changes as the sun turns
    assert np.allclose(sh_b[0], sh_a[2], atol=1e-6)  # timeline frame 3 in both
    keys_b = req_b["lighting"]["key_lights"]
    assert len(keys_b) == 4 and all(len(k) == 1 for k in keys_b)
    for i, frame in enumerate(range(3, 7)):
        assert np.allclose(keys_b[i][0]["direction"], sun_direction(sun, frame), atol=1e-5)

    openjd = Path(sys.executable).with_name("openjd")
    openjd = str(openjd) if openjd.is_file() else shutil.which("openjd")
    if openjd:
        check = subprocess.run([openjd, "check", str(bundle / "template.yaml")], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_export_farm_job_names_a_bad_strip(scene, tmp_path):
    """A strip whose footage is gone: one sentence naming it, nothing written."""
    files = write_png_frames(tmp_path / "c", [np.full((8, 8, 3), 100, np.uint8)] * 2, "c")
    s = add_image_strip(scene, files, name="gone")
    s.select = True
    shutil.rmtree(tmp_path / "c")
    bundle = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="gone"):
        bpy.ops.portrait_relight.export_farm_job(directory=str(bundle))
    assert not (bundle / "template.yaml").exists()
