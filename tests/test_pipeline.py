"""The relight pipeline end to end on real portraits: round trip, light direction, flicker, novel views,
resume/cache, output formats. Small sizes and few frames keep CI fast; fixture clips skip when absent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from relight_core import io, layout, lights, pipeline, track
from relight_core.eval import metrics

# MediaPipe Face Mesh landmarks: cheek centres (image sides resolved by x), forehead, lower lip, chin tip
CHEEK_A = (50, 205)
CHEEK_B = (280, 425)
FOREHEAD_MID, LOWER_LIP, CHIN_TIP, EYE_OUTER = 151, 17, 152, (33, 263)


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory, astronaut) -> Path:
    p = tmp_path_factory.mktemp("in") / "astro.png"
    io.write_png(p, io.decode_srgb8(np.asarray(astronaut)))
    return p


def run(inp, out, **kw) -> dict:
    kw.setdefault("resume", False)
    return pipeline.run(pipeline.RelightJob(input=str(inp), output=str(out), **kw))


def rgba_frames(out: Path) -> list[np.ndarray]:
    """The rgba PNGs of a run as display images (H, W, 4) in [0, 1], in frame order."""
    return [cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA).astype(np.float32)
            / 255.0 for p in sorted((out / "rgba").glob("*.png"))]


def directional_sh(direction) -> np.ndarray:
    d = np.asarray(direction, float)
    return np.asarray(lights.sh_from_lights([lights.DirectionalLight(direction=d / np.linalg.norm(d),
                                                                     color=(1, 1, 1), strength=3.0),
                                             lights.WorldColor(color=(1, 1, 1), strength=0.15)]))


def region_luma(img: np.ndarray, centres, radius: int) -> float:
    """Mean luminance of discs of `radius` px around centres [(x, y), ...] of a display image."""
    mask = np.zeros(img.shape[:2], np.uint8)
    for x, y in centres:
        cv2.circle(mask, (int(round(x)), int(round(y))), radius, 1, -1)
    return float((img[..., :3] @ np.array([0.2126, 0.7152, 0.0722]))[mask > 0].mean())


def face_regions(lm: np.ndarray) -> tuple[dict[str, list], int]:
    """Sample points of the left/right cheeks, the forehead and the chin (image sides) and a disc radius."""
    across = lm[EYE_OUTER[1], :2] - lm[EYE_OUTER[0], :2]
    width = float(np.linalg.norm(across))
    side = across / max(width, 1e-6)
    a = [lm[i, :2] for i in CHEEK_A]
    b = [lm[i, :2] for i in CHEEK_B]
    left, right = (a, b) if np.mean([p[0] for p in a]) < np.mean([p[0] for p in b]) else (b, a)
    fore = lm[FOREHEAD_MID, :2]
    chin = 0.3 * lm[LOWER_LIP, :2] + 0.7 * lm[CHIN_TIP, :2]
    regions = {"left": left, "right": right,
               "top": [fore - 0.2 * width * side, fore, fore + 0.2 * width * side],
               "bottom": [chin - 0.15 * width * side, chin, chin + 0.15 * width * side]}
    return regions, max(2, int(0.08 * width))


# --------------------------------------------------------------------------------------------- round trip

def round_trip_psnr(inp: Path, out: Path, **kw) -> list[float]:
    rep = run(inp, out, lighting="input", passes=("rgba",), **kw)
    a = track.Analysis.load(str(layout.analysis_file(out)))
    fo = io.open_footage(inp, frames=kw.get("frames"), size=kw.get("size"))
    psnrs = []
    for k, ((_, src), res) in enumerate(zip(fo, rgba_frames(out), strict=True)):
        m = a.matte_at(k, src.shape[0], src.shape[1]) > 0.5
        psnrs.append(metrics.masked_psnr(metrics.to_display(src), res[..., :3], m))
    assert rep["totals"]["written"] == len(psnrs)
    return psnrs


def test_round_trip_astronaut(tmp_path, astro_png):
    psnr = round_trip_psnr(astro_png, tmp_path / "rt", size=256)
    print(f"astronaut round trip PSNR inside the matte: {psnr[0]:.2f} dB")
    assert psnr[0] >= 35.0, psnr
    # the same through the explicit-light path: the estimated light given back as the target
    report = json.loads((layout.report_file(tmp_path / "rt")).read_text())
    sh = report["frames"][0]["light_in"]
    run(astro_png, tmp_path / "rt2", lighting={"sh": sh}, size=256)
    a, b = rgba_frames(tmp_path / "rt")[0], rgba_frames(tmp_path / "rt2")[0]
    assert metrics.masked_psnr(a[..., :3], b[..., :3]) >= 40.0


def test_round_trip_lp_d18(tmp_path, fixtures_dir):
    psnr = round_trip_psnr(fixtures_dir / "videos" / "lp_d18.mp4", tmp_path / "rt", frames=(0, 8), size=256)
    print(f"lp_d18 round trip PSNR inside the matte: mean {np.mean(psnr):.2f} dB, min {np.min(psnr):.2f} dB")
    assert float(np.mean(psnr)) >= 35.0, psnr


# --------------------------------------------------------------------------------------------- direction

LIGHTS = {"left": (-1.0, -0.35, 0.1), "right": (1.0, -0.35, 0.1), "above": (0.0, -0.35, 1.0),
          "below": (0.0, -0.35, -1.0)}


def direction_checks(inp: Path, out: Path, **kw) -> dict[str, list[bool]]:
    results: dict[str, list[bool]] = {k: [] for k in LIGHTS}
    for name, d in LIGHTS.items():
        run(inp, out, lighting={"sh": directional_sh(d).tolist()}, passes=("rgba",), smoothing=False, **kw)
        a = track.Analysis.load(str(layout.analysis_file(out)))
        for k, img in enumerate(rgba_frames(out)):
            regions, r = face_regions(a.landmarks_at(k, img.shape[0], img.shape[1]))
            left, right, top, bottom = (region_luma(img, regions[n], r)
                                        for n in ("left", "right", "top", "bottom"))
            ok = {"left": left > right, "right": right > left, "above": top > bottom, "below": bottom > top}
            results[name].append(ok[name])
    return results


def test_direction_astronaut(tmp_path, astro_png):
    res = direction_checks(astro_png, tmp_path / "dir", size=256)
    assert all(all(v) for v in res.values()), res


# lp_d20 is lit by hard sun whose cast shadow under the lower lip stays in the albedo (2nd-order SH cannot
# explain cast shadows); a light from below still makes its chin the brighter (by 14% on frame 1 at 256 px)
CLIPS = ["lp_d0.mp4", "lp_d9.mp4", "lp_d18.mp4", "lp_d20.mp4", "vr_4.mp4", "pr_trudeau_frames/cropped"]


@pytest.mark.parametrize("clip", CLIPS)
def test_direction_fixture_clips(tmp_path, fixtures_dir, clip):
    res = direction_checks(fixtures_dir / "videos" / clip, tmp_path / "dir", frames=(0, 2), size=256)
    assert all(all(v) for v in res.values()), res


# --------------------------------------------------------------------------------------------- flicker

def flicker_ratio(inp: Path, out: Path, frames: tuple[int, int], smoothing: bool) -> float:
    """WE(output) / WE(input) along the input's DIS flow, inside the person matte (display values)."""
    light = directional_sh((-0.6, -0.8, 0.4))
    run(inp, out, lighting={"sh": light.tolist()}, frames=frames, size=256, smoothing=smoothing,
        passes=("rgba",))
    fo = io.open_footage(inp, frames=frames, size=256)
    src = [metrics.to_display(f) for _, f in fo]
    res = [f[..., :3] for f in rgba_frames(out)]
    a = track.Analysis.load(str(layout.analysis_file(out)))
    rois = [a.matte_at(k, src[0].shape[0], src[0].shape[1]) for k in range(len(src))]
    flows = metrics.flows_for(src)
    we_in = np.nanmean(metrics.warping_errors(src, flows, rois))
    we_out = np.nanmean(metrics.warping_errors(res, flows, rois))
    return float(we_out / we_in)


@pytest.mark.parametrize("clip", ["lp_d9.mp4", "vr_4.mp4"])
def test_flicker_no_worse_than_the_input(tmp_path, fixtures_dir, clip, record_property):
    inp = fixtures_dir / "videos" / clip
    on = flicker_ratio(inp, tmp_path / "on", (0, 30), smoothing=True)
    layout.engine_dir(tmp_path / "off").mkdir(parents=True)
    shutil.copy(layout.analysis_file(tmp_path / "on"), layout.analysis_file(tmp_path / "off"))
    off = flicker_ratio(inp, tmp_path / "off", (0, 30), smoothing=False)
    record_property("flicker_ratio_smoothing_on", on)
    record_property("flicker_ratio_smoothing_off", off)
    print(f"{clip}: relative warping error {on:.3f} with temporal smoothing, {off:.3f} without")
    assert on <= 1.25


# --------------------------------------------------------------------------------------------- novel view

def retracked_pose_errors(out: Path, report: dict) -> list[float]:
    fo = io.open_footage(out / "rgba")
    a = track.analyze_footage(fo)
    errs = []
    for k, fr in enumerate(report["frames"]):
        if a.valid[k]:
            errs.append(metrics.pose_error_deg(np.asarray(fr["view"]["cam2head"]), a.cam_from_head[k]))
    return errs


def test_novel_view_yaw_is_retracked(tmp_path, fixtures_dir):
    out = tmp_path / "nv"
    rep = run(fixtures_dir / "videos" / "lp_d18.mp4", out, lighting="input", frames=(0, 3),
              camera={"yaw": 20.0}, passes=("rgba",))
    errs = retracked_pose_errors(out, rep)
    print(f"lp_d18 yaw 20: re-tracked pose error {np.round(errs, 2).tolist()} deg")
    assert errs and float(np.median(errs)) <= 3.0, errs


@pytest.mark.parametrize("clip", ["astronaut", "lp_d18.mp4"])
def test_novel_view_yaw_and_pitch(tmp_path, request, clip):
    """yaw 20 / pitch 10. The re-tracked pose error (MediaPipe, median of the first 3 frames, at 512 px) is
    lp_d0 1.1, trudeau 2.3, lp_d18 2.0, lp_d9 2.2, vr_4 3.0 and astronaut 2.9 degrees (this test runs
    lp_d18 at its own 480 px: 2.2). The re-projected
    mesh itself is exact (PnP on its ideal projections: 0.03 degrees); what is left is how MediaPipe reads
    a turned face: over +-20 degrees of yaw it reads the turn x 0.88 on the astronaut and x 1.13 on lp_d0
    (x 1.01 on average, see track.MEDIAPIPE_Z_SCALE), plus a constant 0.4-1.6 degree offset; shifting the
    astronaut view by 0-3 px moves its figure between 2.6 and 4.3 degrees. The bound here is 4.5 degrees
    (the tracker's spread on the astronaut); the figures are printed."""
    if clip == "astronaut":
        inp, frames = request.getfixturevalue("astro_png"), None
    else:
        inp, frames = request.getfixturevalue("fixtures_dir") / "videos" / clip, (0, 3)
    out = tmp_path / "nv"
    rep = run(inp, out, lighting="input", frames=frames, camera={"yaw": 20.0, "pitch": 10.0},
              passes=("rgba",))
    errs = retracked_pose_errors(out, rep)
    print(f"{clip} yaw 20 pitch 10: re-tracked pose error {np.round(errs, 2).tolist()} deg")
    assert errs and float(np.median(errs)) <= 4.5, errs


# --------------------------------------------------------------------------------------------- outputs

def test_resume_reuses_the_analysis_and_skips_finished_frames(tmp_path, astro_png):
    out = tmp_path / "r"
    cam = {"yaw": [-6.0, -2.0, 2.0, 6.0]}
    run(astro_png, out, camera=cam, size=128, resume=True)
    files = sorted((out / "rgba").glob("*.png"))
    assert len(files) == 4
    before = {f.name: f.stat().st_mtime_ns for f in files}
    files[2].unlink()
    rep = run(astro_png, out, camera=cam, size=128, resume=True)
    assert rep["analysis"]["cached"] is True
    assert rep["totals"]["written"] == 1 and rep["totals"]["skipped"] == 3
    after = {f.name: f.stat().st_mtime_ns for f in sorted((out / "rgba").glob("*.png"))}
    assert [n for n in after if after[n] != before.get(n)] == [files[2].name]
    assert len(rep["frames"]) == 4  # the report keeps the earlier frames


def test_resume_renders_again_when_the_settings_changed(tmp_path, astro_png):
    out = tmp_path / "r"
    cam = {"yaw": [-4.0, 4.0]}
    run(astro_png, out, camera=cam, size=128, resume=True)
    first = {f.name: f.read_bytes() for f in (out / "rgba").glob("*.png")}
    events: list[dict] = []
    rep = pipeline.run(pipeline.RelightJob(input=str(astro_png), output=str(out), camera=cam, size=128,
                                           lighting="rembrandt", resume=True), on_event=events.append)
    assert rep["totals"]["written"] == 2 and rep["totals"]["skipped"] == 0
    assert any(e["event"] == "warning" and "other settings" in e["message"] for e in events)
    after = {f.name: f.read_bytes() for f in (out / "rgba").glob("*.png")}
    assert all(after[n] != first[n] for n in first)  # relit under the new light, not kept
    # the same settings again: nothing to do
    rep = run(out=out, inp=astro_png, camera=cam, size=128, lighting="rembrandt", resume=True)
    assert rep["totals"]["written"] == 0 and rep["totals"]["skipped"] == 2
    assert rep["totals"]["fps_end_to_end"] is None  # no rate over no frames


def test_exr_layers_and_transparent_background(tmp_path, astro_png):
    import OpenEXR

    out = tmp_path / "x"
    run(astro_png, out, format="exr", size=128, background="transparent")
    exr = sorted((out / "exr").glob("*.exr"))
    assert len(exr) == 1
    with OpenEXR.File(str(exr[0])) as f:
        names = {n.split(".")[0] for n in f.channels()}
    for layer in ("RGBA", "albedo", "shading", "normal", "depth"):  # the colour is the unprefixed RGBA
        assert layer in names, names
    out2 = tmp_path / "t"
    run(astro_png, out2, size=128, background="transparent", passes=("rgba", "normal", "depth"))
    img = rgba_frames(out2)[0]
    nose = track.Analysis.load(str(layout.analysis_file(out2))).landmarks_at(0, 128, 128)[1]
    assert img[0, 0, 3] == 0.0 and img[int(nose[1]), int(nose[0]), 3] == 1.0  # background / face
    rep = json.loads((layout.report_file(out2)).read_text())
    assert set(rep["totals"]["ms_per_frame"]) >= {"geometry", "intrinsic", "temporal", "render", "write"}
    assert rep["frames"][0]["tracked"] is True and np.asarray(rep["frames"][0]["light_in"]).shape == (9, 3)
