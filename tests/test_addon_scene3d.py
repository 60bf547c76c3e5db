"""The tracked head in Blender's 3D scene, as an artist gets it: Track on a fixture clip's movie strip runs
the
real engine worker (its "track" task) and builds the solved camera with the footage behind it and the
deforming head mesh (Mesh Cache modifier on the engine's PC2 cache). Measured independently of the engine's
own projection: Blender evaluates the modifier and the animated camera, `world_to_camera_view` projects the
evaluated vertices, and the result is compared with the engine's tracked landmarks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import active_scene, enable_addon  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.blender, pytest.mark.slow]

FIRST_SOURCE, LENGTH, START = 10, 20, 1  # the strip shows source frames 10..29 from timeline frame 11
CHECK_FRAMES = (11, 20, 30)
INNER_LIPS = (13, 14)


def _engine_python() -> str | None:
    exe = os.environ.get("RELIGHT_ENGINE_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    return exe if Path(exe).exists() else None


@pytest.fixture(scope="module")
def tracked(fixtures_dir, tmp_path_factory):
    """A scene with a movie strip of lp_d0 (source frames 10..29 at timeline 11..30), tracked once."""
    exe = _engine_python()
    if exe is None:
        pytest.skip("no engine Python (.venv/bin/python or $RELIGHT_ENGINE_PYTHON)")
    enable_addon()
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python, prefs.device = exe, "cpu"
    from portrait_relight import sequencer

    out = tmp_path_factory.mktemp("track")
    with active_scene("PR track") as sc:
        strips = sequencer.strips_of(sc, ensure=True)
        strip = strips.new_movie(name="talk", filepath=str(fixtures_dir / "videos" / "lp_d0.mp4"), channel=1,
                                 frame_start=START)
        strip.frame_offset_start = FIRST_SOURCE
        strip.frame_final_duration = LENGTH
        sc.sequence_editor.active_strip = strip
        s = sc.portrait_relight
        s.output_dir = str(out)
        s.size = 512
        assert bpy.ops.portrait_relight.track(synchronous=True) == {"FINISHED"}, s.last_result
        yield sc, strip, out / "talk"
    prefs.engine_python = ""


def projected_landmarks(sc, frame: int) -> np.ndarray:
    """The head mesh's landmark vertices (478, 2) in render pixels at a timeline frame, as Blender sees
    them: modifier-evaluated mesh, world matrices, the scene camera's view."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    sc.frame_set(frame)
    dg = bpy.context.evaluated_depsgraph_get()
    head = bpy.data.objects["Tracked Head"].evaluated_get(dg)
    co = np.empty(len(head.data.vertices) * 3)
    head.data.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)[:478]
    mw = np.array(head.matrix_world)
    world = co @ mw[:3, :3].T + mw[:3, 3]
    w, h = sc.render.resolution_x, sc.render.resolution_y
    ndc = np.array([tuple(world_to_camera_view(sc, sc.camera.evaluated_get(dg), Vector(p))) for p in world])
    return np.stack([ndc[:, 0] * w, (1.0 - ndc[:, 1]) * h], axis=1)


def tracked_landmarks(folder: Path, frame: int, w: int, h: int) -> np.ndarray:
    """The engine's tracked landmarks (478, 2) of a timeline frame from the cached analysis, in (w, h) px."""
    with np.load(folder / "analysis.npz") as z:
        meta = json.loads(str(z["meta"]))
        rows = {int(i): k for k, i in enumerate(z["frame_indices"])}
        lm = z["landmarks"][rows[frame - START]]  # the strip shows source frame f - START at frame f
    return lm[:, :2] * np.array([w / meta["width"], h / meta["height"]])


def reprojection_px(sc, folder: Path) -> list[float]:
    w, h = sc.render.resolution_x, sc.render.resolution_y
    return [float(np.median(np.linalg.norm(projected_landmarks(sc, f) - tracked_landmarks(folder, f, w, h),
                                           axis=1))) for f in CHECK_FRAMES]


def test_track_builds_camera_plate_and_cached_head(tracked):
    sc, strip, folder = tracked
    cam = sc.camera
    assert cam is not None and cam.name == "Tracked Camera"
    assert cam.parent == sc.portrait_relight.anchor
    bg = cam.data.background_images[0]
    assert cam.data.show_background_images and bg.source == "MOVIE_CLIP"
    assert Path(bpy.path.abspath(bg.clip.filepath)).name == "lp_d0.mp4"
    # scene frame 11 shows source frame 10: the clip starts playing (its frame 0) at timeline frame 1
    assert bg.clip.frame_start == strip.frame_final_start - FIRST_SOURCE == 1
    head = bpy.data.objects["Tracked Head"]
    mod = head.modifiers["Head Cache"]
    assert mod.type == "MESH_CACHE" and mod.cache_format == "PC2" and Path(mod.filepath).is_file()
    assert mod.frame_start == strip.frame_final_start
    assert (sc.render.resolution_x, sc.render.resolution_y) == (512, 512)
    assert "tracked 20 frames" in sc.portrait_relight.last_result


def test_mesh_landmarks_land_on_tracked_landmarks(tracked):
    sc, _strip, folder = tracked
    errs = reprojection_px(sc, folder)
    assert max(errs) <= 1.5, errs


def test_head_mesh_animates_with_the_mouth(tracked):
    sc, _strip, _folder = tracked
    dg = bpy.context.evaluated_depsgraph_get()
    opening = []
    for f in range(START + FIRST_SOURCE, START + FIRST_SOURCE + LENGTH):
        sc.frame_set(f)
        mesh = bpy.data.objects["Tracked Head"].evaluated_get(dg).data
        a, b = (np.array(mesh.vertices[i].co) for i in INNER_LIPS)
        opening.append(float(np.linalg.norm(a - b)))
    # lp_d0 opens its mouth over these frames: the inner lips part by several hundredths of a head unit
    assert max(opening) - min(opening) > 0.02, opening


def test_head_solve_at_real_scale(tracked):
    """The other solve (the anchor follows the head, the camera stands still) at real scale: the landmarks
    still land on the track, and the face is about 0.15 m wide in the scene."""
    sc, _strip, folder = tracked
    assert bpy.ops.portrait_relight.track(synchronous=True, solve="HEAD", real_scale=True) == {"FINISHED"}
    anchor = sc.portrait_relight.anchor
    assert sc.camera.name == "Source Camera" and anchor.animation_data is not None
    assert 0.2 < anchor.scale[0] < 0.5
    errs = reprojection_px(sc, folder)
    assert max(errs) <= 1.5, errs
    sc.frame_set(START + FIRST_SOURCE)
    head = bpy.data.objects["Tracked Head"]
    outline = np.array([head.matrix_world @ v.co for v in head.evaluated_get(
        bpy.context.evaluated_depsgraph_get()).data.vertices[:468]])
    width = float(np.ptp(outline @ np.array(anchor.matrix_world)[:3, 0] / anchor.scale[0]))
    assert 0.13 < width < 0.17, width
