"""The tracked head as animated geometry (relight_core.headmesh): the PC2 format, a closed and outward-wound
head surface, landmark vertices on the tracked pixels through the solved camera, the `head-mesh` command and
the worker's "track" task (analysis without relighting, cached like a relight's)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relight_core import camera as cam
from relight_core import headmesh

REPO = Path(__file__).resolve().parents[1]


def test_pc2_round_trip_and_header(tmp_path):
    frames = np.random.default_rng(0).normal(size=(4, 7, 3)).astype(np.float32)
    path = tmp_path / "a.pc2"
    headmesh.write_pc2(path, frames, start=3.0, rate=0.5)
    raw = path.read_bytes()
    # the layout Blender's Mesh Cache modifier reads: magic, version, points, start, rate, samples
    assert struct.unpack_from("<12siiffi", raw) == (b"POINTCACHE2\0", 1, 7, 3.0, 0.5, 4)
    assert len(raw) == 32 + 4 * 7 * 12
    back, start, rate = headmesh.read_pc2(path)
    assert np.array_equal(back, frames) and (start, rate) == (3.0, 0.5)
    with pytest.raises(ValueError):
        headmesh.write_pc2(tmp_path / "b.pc2", frames[..., :2])


def _edge_use(faces: np.ndarray) -> dict:
    use: dict = {}
    for a, b in np.concatenate([faces[:, :2], faces[:, 1:], faces[:, [2, 0]]]):
        use[(int(a), int(b))] = use.get((int(a), int(b)), 0) + 1
    return use


def test_head_surface_is_closed_and_wound_outward():
    """Face + skull shell + neck: every directed edge used once and its reverse once (closed, consistently
    wound), positive enclosed volume (normals outward), only the irises left loose."""
    from relight_core.track import neutral_face

    topo = headmesh.head_topology()
    verts = headmesh.rest_vertices(neutral_face(), topo)
    assert verts.shape == (topo.n_vertices, 3) and topo.faces.max() == topo.n_vertices - 1
    use = _edge_use(topo.faces)
    assert all(n == 1 for n in use.values())
    assert all((b, a) in use for a, b in use)
    used = np.zeros(topo.n_vertices, bool)
    used[topo.faces.ravel()] = True
    assert np.flatnonzero(~used).tolist() == list(range(468, 478))  # iris points
    v = verts[topo.faces]
    volume = float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)
    assert volume > 0.05  # head units^3: a head of ~0.5 x 0.7 x 0.6 units is ~0.1
    # the skull reaches well behind the face and above the forehead
    assert verts[:, 2].min() < -0.3 and verts[:topo.neck_start, 1].max() > 0.3


@pytest.fixture(scope="module")
def astro_analysis(tmp_path_factory, astronaut):
    """The astronaut as a one-frame clip, analysed once, saved as analysis.npz."""
    from relight_core import io, track

    folder = tmp_path_factory.mktemp("astro")
    img = folder / "astro.png"
    io.write_png(img, io.decode_srgb8(np.asarray(astronaut)))
    analysis = track.analyze_footage(io.open_footage(img))
    analysis.save(str(folder / "analysis.npz"))
    return analysis, folder, img


def test_landmark_vertices_project_onto_the_track(astro_analysis, tmp_path):
    analysis, _folder, _img = astro_analysis
    summary = headmesh.export_head(analysis, tmp_path)
    frames, _, _ = headmesh.read_pc2(summary["pc2"])
    assert frames.shape == (1, summary["vertices"], 3)
    head = cam.blender_local_to_head(frames[0].astype(np.float64))
    px = cam.project(cam.transform_points(analysis.cam_from_head[0], head[:478]), analysis.K)
    err = np.linalg.norm(px - analysis.landmarks[0, :, :2], axis=1)
    assert np.median(err) < 0.01 and err.max() < 0.05
    with np.load(summary["rest"]) as z:
        meta = json.loads(str(z["meta"]))
        assert np.array_equal(z["vertices"], frames[0]) and z["faces"].shape == (summary["faces"], 3)
    assert 0.3 < meta["metres_per_unit"] < 0.4  # the face ~0.15 m wide, ~0.43 head units


def test_shell_fits_the_matte(astro_analysis):
    """Above the eyes (forehead, temples, hair) the fitted skull's silhouette and the person matte overlap
    by most of their union, better than the unfitted ellipsoid's."""
    analysis, _folder, _img = astro_analysis
    topo = headmesh.head_topology()
    faces = topo.faces[np.all(topo.faces < topo.neck_start, axis=1)]
    h, w = analysis.height, analysis.width
    cut = int(np.ceil(headmesh.eye_line(analysis, 0, h, w)))
    matte = analysis.matte_at(0, h, w)[:cut] > 0.5

    def iou(scale) -> float:
        sil = headmesh.silhouette(headmesh.frame_vertices(analysis, 0, scale, topo)[:topo.neck_start], faces,
                                  analysis.cam_from_head[0], analysis.K, h, w)[:cut]
        return np.count_nonzero(sil & matte) / np.count_nonzero(sil | matte)

    fitted = headmesh.fit_shell(analysis)
    print(f"IoU above the eyes: fitted {fitted} {iou(fitted):.3f}, unfitted {iou((1.0, 1.0)):.3f}")
    assert iou(fitted) > 0.85 and iou(fitted) > iou((1.0, 1.0))


def test_head_mesh_command(astro_analysis, tmp_path, capsys):
    from relight_core import cli

    _analysis, folder, _img = astro_analysis
    assert cli.main(["head-mesh", str(folder / "analysis.npz"), "-o", str(tmp_path / "mesh")]) == 0
    assert (tmp_path / "mesh" / "head_mesh.pc2").is_file() and (tmp_path / "mesh" / "head_mesh.npz").is_file()
    assert "m per head unit" in capsys.readouterr().out
    assert cli.main(["head-mesh", str(tmp_path / "none.npz"), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_worker_track_task_writes_the_head_and_an_analysis_a_relight_reuses(astro_analysis, tmp_path):
    _analysis, _folder, img = astro_analysis

    def run() -> list[dict]:
        req = {"version": 1, "task": "track", "input": str(img), "frames": None, "output": str(tmp_path),
               "size": 256}
        res = subprocess.run([sys.executable, "-m", "relight_core", "worker"], cwd=REPO,
                             input=json.dumps(req), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    events = run()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done" and "frame" not in kinds
    assert {e.get("stage") for e in events if e["event"] == "progress"} == {"analyze", "mesh"}
    done = events[-1]
    assert Path(done["head_mesh"]).is_file() and Path(done["cache"]).is_file()
    assert (tmp_path / ".relight" / "analysis.npz").is_file() and not list(tmp_path.glob("rgba"))
    assert done["analysis_cached"] is False
    # a relight of the same strip (the add-on's output folder) reuses what Track analysed
    from relight_core import pipeline

    report = pipeline.run(pipeline.RelightJob(input=str(img), output=str(tmp_path), size=256, device="cpu"))
    assert report["analysis"]["cached"] is True


def test_worker_rejects_an_unknown_task(tmp_path):
    req = {"version": 1, "task": "paint", "input": "x.png", "output": str(tmp_path)}
    res = subprocess.run([sys.executable, "-m", "relight_core", "worker"], cwd=REPO, input=json.dumps(req),
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert json.loads(res.stdout.splitlines()[-1])["message"].startswith("Request task 'paint'")
