"""Nothing stale, nothing lost (issue 15): resume, the cached analysis and concurrent runs never serve
frames of other content or settings. Each case compares the frames with a clean run where the bug was
stale output. Small synthetic clips (the astronaut moving across the frame) keep it fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from relight_core import cli, io, layout, lights, lock, pipeline, track
from relight_core.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE = 96


def write_clip(folder: Path, astronaut: np.ndarray, n: int = 4, shift: int = 0, ext: str = "png") -> Path:
    """An image-sequence folder of n frames: the astronaut's head moving right by 3 px a frame."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        crop = astronaut[20:276, 100 + 3 * k + shift:356 + 3 * k + shift]
        cv2.imwrite(str(folder / f"f_{k:04d}.{ext}"), cv2.resize(crop, (SIZE, SIZE))[:, :, ::-1])
    return folder


def relight(inp: Path, out: Path, events: list | None = None, **kw) -> dict:
    kw.setdefault("size", SIZE)
    job = pipeline.RelightJob(input=str(inp), output=str(out), **kw)
    return pipeline.run(job, on_event=None if events is None else events.append)


def frames(out: Path) -> dict[str, bytes]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes()
            for p in sorted((out / "rgba").glob("*.png"))}


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "seq", np.asarray(astronaut))


def test_engine_files_live_in_a_hidden_folder(tmp_path, clip):
    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text('{"mine": true}')
    rep = relight(clip, out)
    assert json.loads((out / "report.json").read_text()) == {"mine": True}  # the user's file is untouched
    for f in (layout.report_file(out), layout.analysis_file(out), layout.manifest_file(out)):
        assert f.is_file(), f
    assert not layout.lock_file(out).exists()  # released at the end
    assert len(rep["frames"]) == 4


def test_a_frame_overwritten_in_a_sequence_renders_again(tmp_path, astronaut, clip):
    """Same names, same sizes, same mtimes: only the content says that frame 2 changed."""
    seq = write_clip(tmp_path / "seq", np.asarray(astronaut), ext="bmp")  # uncompressed: sizes stay equal
    out = tmp_path / "o"
    relight(seq, out, resume=True)
    victim = seq / "f_0002.bmp"
    st = victim.stat()
    cv2.imwrite(str(victim), cv2.flip(cv2.imread(str(victim)), 1))  # the mirrored frame
    assert victim.stat().st_size == st.st_size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    rep = relight(seq, out, resume=True)
    assert rep["analysis"]["cached"] is False and rep["totals"]["written"] == 4
    clean = tmp_path / "clean"
    relight(seq, clean)
    assert frames(out) == frames(clean)


def test_a_light_file_replaced_by_one_of_the_same_size_and_mtime(tmp_path, clip):
    light = tmp_path / "key.txt"
    light.write_text("1.0 0.5 0.0 0.0 0 0 0 0 0\n")
    out = tmp_path / "o"
    relight(clip, out, lighting=str(light), resume=True)
    st = light.stat()
    light.write_text("1.0 -.5 0.0 0.0 0 0 0 0 0\n")  # the same length; the light comes from the other side
    os.utime(light, ns=(st.st_atime_ns, st.st_mtime_ns))
    rep = relight(clip, out, lighting=str(light), resume=True)
    assert rep["totals"]["written"] == 4
    clean = tmp_path / "clean"
    relight(clip, clean, lighting=str(light))
    assert frames(out) == frames(clean)


def test_an_analysis_of_other_footage_is_not_used(tmp_path, astronaut, clip):
    """`analyze A -o DIR` then `relight B --out DIR` tracks B."""
    other = write_clip(tmp_path / "other", np.asarray(astronaut), shift=40)
    out = tmp_path / "o"
    a = track.analyze_footage(io.open_footage(other, size=SIZE))
    track.write_analysis(a, layout.analysis_file(out))
    events: list[dict] = []
    rep = relight(clip, out, events)
    assert rep["analysis"]["cached"] is False
    assert any(e["event"] == "warning" and "other footage" in e["message"] for e in events)
    clean = tmp_path / "clean"
    relight(clip, clean)
    assert frames(out) == frames(clean)
    # and an analysis made ahead of time for the same footage and size is used
    out2 = tmp_path / "o2"
    track.write_analysis(track.analyze_footage(io.open_footage(clip, size=SIZE)), layout.analysis_file(out2))
    assert relight(clip, out2)["analysis"]["cached"] is True


def test_another_size_tracks_again(tmp_path, clip):
    out = tmp_path / "o"
    relight(clip, out, size=SIZE)
    rep = relight(clip, out, size=SIZE - 16)
    assert rep["analysis"]["cached"] is False
    assert track.Analysis.load(str(layout.analysis_file(out))).source["size"] == [SIZE - 16, SIZE - 16]


def test_resume_trusts_only_complete_frames(tmp_path, clip):
    out = tmp_path / "o"
    relight(clip, out, resume=True)
    clean = frames(out)
    rgba = sorted((out / "rgba").glob("*.png"))
    rgba[1].write_bytes(b"")                                   # emptied
    rgba[2].write_bytes(rgba[2].read_bytes()[:100])           # cut short
    stale = out / "rgba" / ".f_000003.tmp99999.png"           # a killed run's temporary
    stale.write_bytes(b"partial")
    rep = relight(clip, out, resume=True)
    assert rep["totals"]["written"] == 2 and rep["totals"]["skipped"] == 2
    assert not stale.exists()
    assert frames(out) == clean
    assert [f["index"] for f in rep["frames"]] == [0, 1, 2, 3]


def test_frames_of_other_settings_are_not_kept_after_mixed_runs(tmp_path, clip):
    """Frames 0-1 under one light, then 0-3 under another: all four show the second light."""
    out = tmp_path / "o"
    relight(clip, out, lighting="rembrandt", frames=(0, 2), resume=True)
    events: list[dict] = []
    rep = relight(clip, out, events, lighting="split", resume=True)
    assert rep["totals"]["written"] == 4
    clean = tmp_path / "clean"
    relight(clip, clean, lighting="split")
    assert frames(out) == frames(clean)
    assert any(e["event"] == "warning" and "other settings" in e["message"] for e in events)


def test_one_writer_per_output_folder(tmp_path, clip, capsys):
    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = layout.lock_file(out)
        path.parent.mkdir()
        path.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                    "started": lock._start_time(holder.pid), "time": time.time()}))
        with pytest.raises(UserError, match="in use by another run"):
            relight(clip, out)
        assert not (out / "rgba").exists() and path.is_file()
        code = cli.main(["relight", str(clip), "--out", str(out), "--size", str(SIZE)])
        errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("relight-core: error:")]
        assert code == 2 and len(errors) == 1 and "in use" in errors[0]
    finally:
        holder.kill()
        holder.wait()
    rep = relight(clip, out)  # its owner is gone: the lock is stale and taken over
    assert rep["totals"]["written"] == 4 and not path.exists()


def test_a_lock_of_a_reused_pid_is_stale(tmp_path):
    """A lock naming a live pid that started at another time (the pid was reused) is taken over."""
    path = layout.lock_file(tmp_path)
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "1",
                                "time": time.time()}))
    me = lock.acquire(path, tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release(path, me)
    assert not path.exists()


def test_a_truncated_movie_warns_once_and_is_not_tracked_again(tmp_path, astronaut):
    import imageio_ffmpeg

    movie = tmp_path / "t.mp4"
    w = imageio_ffmpeg.write_frames(str(movie), (SIZE, SIZE), fps=25, codec="libx264", quality=7,
                                    macro_block_size=1, ffmpeg_log_level="error",
                                    output_params=["-movflags", "+faststart", "-g", "1"])
    w.send(None)
    a = np.asarray(astronaut)
    for k in range(12):
        w.send(np.ascontiguousarray(cv2.resize(a[20:276, 100 + 3 * k:356 + 3 * k], (SIZE, SIZE))))
    w.close()
    data = movie.read_bytes()
    movie.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "o"
    events: list[dict] = []
    rep = relight(movie, out, events)
    warned = [e["message"] for e in events if e["event"] == "warning" and "claims 12 frames" in e["message"]]
    assert len(warned) == 1 and "ends after frame" in warned[0]
    last = int(warned[0].split("ends after frame ")[1].split(";")[0])
    assert rep["totals"]["written"] == last + 1
    rep2 = relight(movie, out, resume=True)
    assert rep2["analysis"]["cached"] is True and rep2["totals"]["written"] == 0


def test_large_inputs_are_processed_at_4096(tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((64, 5000, 3), np.uint8))
    f = io.open_footage(big)
    assert (f.width, f.height) == (4096, 52) and "4096" in f.warnings[0]
    assert io.open_footage(big, size=5000).width == 5000 and not io.open_footage(big, size=5000).warnings


def test_presets_and_lights_still_load(clip):
    assert lights.load_lighting("rembrandt").n_frames == 1


# --------------------------------------------------------------------------------------------- kills

def frame_pixels(out: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.int16)
            for p in sorted((out / "rgba").glob("*.png"))}


def comparable(report: dict) -> list[dict]:
    """A report's frames without the timings."""
    return [{k: v for k, v in f.items() if k != "ms"} for f in report["frames"]]


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, fixtures_dir):
    """A 60-frame relight killed with SIGKILL at 5 random moments (tracking, rendering, writing), resumed
    each time, then finished: every frame and the report equal an uninterrupted run's."""
    clip = fixtures_dir / "videos" / "lp_d18.mp4"
    argv = [sys.executable, "-m", "relight_core", "relight", str(clip), "--frames", "0:60", "--size", "160",
            "--light", "rembrandt"]
    subprocess.run([*argv, "--out", str(tmp_path / "ref")], cwd=REPO, check=True, capture_output=True,
                   timeout=600)
    out = tmp_path / "killed"
    rng = np.random.default_rng(15)
    # the first kill lands while tracking (no frame yet), the others once a random number of frames exist
    targets = [0, *(int(rng.integers(lo, lo + 12)) for lo in (2, 16, 30, 44))]
    kills = []
    for target in targets:
        p = subprocess.Popen([*argv, "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        t0 = time.perf_counter()
        while p.poll() is None:
            on_disk = len(list((out / "rgba").glob("*.png"))) if (out / "rgba").is_dir() else 0
            if (target == 0 and time.perf_counter() - t0 > 1.0 + 3.0 * rng.random()) or \
                    (target and on_disk >= target):
                p.kill()  # SIGKILL: no cleanup of any kind
                break
            time.sleep(0.02)
        p.wait()
        kills.append((target, len(list((out / "rgba").glob("*.png"))) if (out / "rgba").is_dir() else 0))
    res = subprocess.run([*argv, "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    ref, got = frame_pixels(tmp_path / "ref"), frame_pixels(out)
    assert sorted(got) == sorted(ref) and len(ref) == 60
    worst = max(int(np.abs(got[n] - ref[n]).max()) for n in ref)
    differ = sum(1 for n in ref if not np.array_equal(got[n], ref[n]))
    print(f"kills (target, frames on disk): {kills}; {differ} of 60 frames differ, largest difference "
          f"{worst}/255")
    assert worst <= 2, (kills, worst)
    assert not list(out.rglob(".*.tmp*")) and not layout.lock_file(out).exists()
    rep_ref = json.loads(layout.report_file(tmp_path / "ref").read_text())
    rep = json.loads(layout.report_file(out).read_text())
    a, b = comparable(rep_ref), comparable(rep)
    assert [f["index"] for f in b] == [f["index"] for f in a] == list(range(60))
    for fa, fb in zip(a, b, strict=True):
        np.testing.assert_allclose(fb["light_in"], fa["light_in"], atol=1e-5)
        rest = [{k: v for k, v in f.items() if k != "light_in"} for f in (fa, fb)]
        assert rest[0] == rest[1]
