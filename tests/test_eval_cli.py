"""`relight-core bench` / `evaluate`: options, user errors, table aggregation, and a tiny real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from relight_core import cli
from relight_core.eval import bench, evaluate, report, tables

# --------------------------------------------------------------------------------------------- options


def test_parser_knows_bench_and_evaluate():
    parser = cli.build_parser()
    a = parser.parse_args(["bench", "clip.mp4", "--size", "256", "--runs", "2", "--novel-view"])
    assert (a.size, a.runs, a.novel_view, a.device, a.frames, a.light) == (256, 2, True, "auto", 30, "input")
    a = parser.parse_args(["evaluate", "a.mp4", "b", "--lights", "l0.txt", "l1.txt", "--views", "0/0",
                           "20,-20/10", "--out", "o", "--frames", "12"])
    assert a.clips == ["a.mp4", "b"] and a.lights == ["l0.txt", "l1.txt"] and a.frames == 12
    views = [evaluate.parse_view(v) for w in a.views for v in w.split(",")]
    assert views == [(0.0, 0.0), (20.0, 0.0), (-20.0, 10.0)]


def test_user_errors_exit_2_with_one_sentence(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "missing.mp4"), "--lights", "x.txt", "--out",
                     str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "missing.mp4 does not exist" in err and "Traceback" not in err
    assert cli.main(["evaluate", "a.mp4", "--lights", "x", "--views", "left", "--out", "o"]) == 2
    assert "YAW/PITCH" in capsys.readouterr().err
    assert cli.main(["bench", "a.mp4", "--runs", "0"]) == 2
    assert "--runs" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- aggregation


def _fake_run(clip: str, light: str, view, variant: str, le: float, tilt: float) -> dict:
    est = np.zeros((9, 3))
    est[0], est[3] = 1.0, tilt  # an X (image-right) term: normalised shading 1 + tilt * 2/sqrt(3) * x
    return {"clip": clip, "light": light, "view": list(view), "variant": variant, "LE": le, "ID": 0.2,
            "WE": 1e-3, "WE_rel": 1.5, "tSSIM": 0.95, "pose_deg": 2.0, "time_s": 0.1,
            "le": np.full(4, le), "we": np.full(3, 1e-3), "tssim": np.full(3, 0.95), "est_world": [est, est]}


def test_tables_aggregate_like_the_paper(tmp_path):
    runs = [_fake_run("a", "l0", (0.0, 0.0), "full", 0.1, 0.0),
            _fake_run("a", "l0", (20.0, 0.0), "full", 0.3, 0.2),
            _fake_run("b", "l0", (0.0, 0.0), "full", 0.2, 0.1),
            _fake_run("a", "l0", (0.0, 0.0), "no temporal stabilisation", 0.5, 0.1)]
    results = {"config": {"views": [[0.0, 0.0], [20.0, 0.0]]},
               "clips": [{"clip": c, "roundtrip_psnr_db": 30.0, "input_we_curve": np.full(3, 5e-4)}
                         for c in ("a", "b")]}
    t = report.build_tables(results, runs)
    rows = {r["name"]: r for r in t["views"]}
    assert rows["a"]["LE"] == pytest.approx(0.2) and rows["b"]["LE"] == pytest.approx(0.2)
    # LI of clip a / light l0 pools both views' estimates: X terms (0, 0, .2, .2) -> std .1 * 2/sqrt(3) |x|,
    # mean over the front normals with E|x| = 4 / (3 pi)
    assert rows["a"]["LI"] == pytest.approx(0.1 * 2 / np.sqrt(3) * 4 / (3 * np.pi), rel=0.01)
    assert rows["b"]["LI"] == pytest.approx(0.0, abs=1e-12)
    assert rows["mean (all)"]["runs"] == 3
    assert [r["name"] for r in t["input"]] == ["a", "b", "mean (all)"]
    assert t["input"][0]["roundtrip_psnr_db"] == 30.0
    abl = {r["name"]: r for r in t["ablation"]}
    assert set(abl) == {"full", "no temporal stabilisation"}
    assert abl["full"]["LE"] == pytest.approx(0.15) and abl["no temporal stabilisation"]["LE"] == 0.5
    report.write_all(tmp_path, results, runs)
    md = (tmp_path / "table_views.md").read_text()
    assert md.splitlines()[0].startswith("| clip | LE") and "| a | 0.2000 |" in md
    data = json.loads((tmp_path / "results.json").read_text())
    assert "tables" in data and (tmp_path / "plots" / "a.png").stat().st_size > 1000


def test_markdown_cells_and_json_nan():
    assert tables.fmt(float("nan")) == "–" and tables.fmt(0.00012) == "1.200e-04" and tables.fmt(3) == "3"
    assert tables._jsonable({"x": np.float32(math.inf), "y": np.arange(2)}) == {"x": None, "y": [0, 1]}


def test_bench_memory_and_versions():
    assert bench.peak_rss_mb() > 10
    v = bench.versions()
    assert v["numpy"] and v["python"]
    runs = [{s: 10.0 * (i + 1) for s in bench.STAGES} | {"wall_s": 1.0 * (i + 1), "frames": 10}
            for i in range(3)]
    s = bench.summarise(runs)
    assert s["ms_per_frame"]["render"] == 20.0  # median of 10, 20, 30
    assert s["fps_processing"] == pytest.approx(1000 / (20.0 * len(bench.PROCESSING)))
    assert s["fps_end_to_end"] == pytest.approx(5.0)


# --------------------------------------------------------------------------------------------- real runs


@pytest.mark.fixtures
@pytest.mark.slow
def test_evaluate_and_bench_on_real_frames(fixtures_dir, tmp_path, capsys):
    pytest.importorskip("relight_core.geometry")
    clip = fixtures_dir / "videos" / "pr_trudeau_frames" / "cropped"
    light = fixtures_dir / "lights" / "dpr" / "rotate_light_00.txt"
    out = tmp_path / "ev"
    rc = cli.main(["evaluate", str(clip), "--lights", str(light), "--views", "0/0", "20/0", "--frames", "3",
                   "--size", "128", "--out", str(out), "--id-every", "2"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text())
    full = [r for r in data["runs"] if r["variant"] == "full"]
    assert len(full) == 2 and all(r["frames"] == 3 for r in full)
    assert data["versions"]["numpy"] and data["clips"][0]["roundtrip_psnr_db"] > 15
    assert any(math.isfinite(r["LE"]) for r in full if r["LE"] is not None)
    assert (out / "table_views.md").is_file() and (out / "table_ablation.md").is_file()
    assert (out / "plots" / "pr_trudeau_frames.png").is_file()
    capsys.readouterr()
    rc = cli.main(["bench", str(clip), "--frames", "2", "--runs", "1", "--size", "128", "--device", "cpu",
                   "--light", "rembrandt", "--json", str(tmp_path / "b.json")])
    assert rc == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert set(b["ms_per_frame"]) == set(bench.STAGES) and b["fps_processing"] > 0 and b["peak_rss_mb"] > 0
    assert b["light"] == "rembrandt"
    assert "processing:" in capsys.readouterr().out


def test_ablation_sphere_fit_and_patch_is_undone():
    from relight_core.eval import ablation

    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 3))
    d[:, 2] = np.abs(d[:, 2])  # a cap, like a face
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    c, r = ablation.fit_sphere(np.array([0.1, -0.2, -2.0]) + 0.3 * d)
    np.testing.assert_allclose(c, [0.1, -0.2, -2.0], atol=1e-9)
    assert r == pytest.approx(0.3)
    geometry = pytest.importorskip("relight_core.geometry")
    original = geometry.build_geometry
    with ablation.geometry_variant("flat"):
        assert geometry.build_geometry is not original
    assert geometry.build_geometry is original


def test_view_rotation_input_view_is_identity_and_orbit_is_its_inverse():
    a, b = np.radians(20.0), np.radians(-8.0)
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    cfh = np.eye(4)
    cfh[:3, :3], cfh[:3, 3] = rx, (0.1, 0.0, -2.7)  # a head pitched down, in front of the camera
    r0 = evaluate.new_from_input_rotation(np.linalg.inv(cfh), cfh)
    np.testing.assert_allclose(r0, np.eye(3), atol=1e-12)
    delta = np.eye(4)
    delta[:3, :3] = ry  # the new camera = the input camera turned by ry (its pose in the input camera)
    r = evaluate.new_from_input_rotation(np.linalg.inv(cfh) @ delta, cfh)
    np.testing.assert_allclose(r, ry.T, atol=1e-12)
