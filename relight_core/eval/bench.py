"""Speed benchmark: per-stage timings of the relight pipeline, fps and peak memory.

Method: the clip's first N frames run through `pipeline.run` (fresh output folder each time, so the
tracker really runs) 1 + `runs` times; the first run is a warm-up (imports, model loading, allocator)
and is excluded; every reported number is the MEDIAN over the remaining runs of that run's mean time
per frame. Stages: decode (pass-2 decode), track and matte (pass 1, timed by `analysis_stage_ms`
on the same frames: decode / face mesh / matte separately), geometry, intrinsic, temporal, render,
encode (PNG writing). processing fps = 1000 / (track + matte + geometry + intrinsic + temporal +
render); end-to-end fps = frames / wall time of the whole run (everything, both passes).
Peak memory: the process's peak resident set size (VmHWM from /proc/self/status, else
resource.getrusage ru_maxrss), which counts numpy/torch/MediaPipe native allocations that
tracemalloc cannot see.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STAGES = ("decode", "track", "matte", "geometry", "intrinsic", "temporal", "render", "encode")
PROCESSING = ("track", "matte", "geometry", "intrinsic", "temporal", "render")


def _proc_status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (e.g. "VmHWM:", "VmRSS:") in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (VmHWM, else ru_maxrss)."""
    peak = _proc_status_mb("VmHWM:")
    if peak is not None:
        return peak
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def versions() -> dict[str, Any]:
    """Versions of the interpreter, the engine and its main libraries, and the machine."""
    import importlib.metadata as md

    from relight_core import __version__

    out: dict[str, Any] = {"relight_core": __version__, "python": platform.python_version(),
                           "platform": platform.platform(), "cpu_count": os.cpu_count(),
                           "processor": platform.processor() or platform.machine()}
    for dist in ("numpy", "torch", "opencv-python-headless", "mediapipe", "scikit-image", "scipy",
                 "dlib-bin"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    out["git"] = git_revision()
    try:
        import torch

        out["torch_threads"] = torch.get_num_threads()
        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        out["cuda"] = None
    return out


def git_revision() -> str | None:
    """The engine checkout's commit, with '+dirty' when relight_core/ has uncommitted changes; or None."""
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "relight_core"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")


def analysis_stage_ms(footage) -> dict[str, float]:
    """Pass-1 stages on `footage` timed separately: mean ms per frame of decode, track (face mesh + pose)
    and matte (person segmentation), using the tracker's public pieces."""
    from relight_core import track

    tracker = track.FaceTracker()
    segment = getattr(track, "PersonMatte", None)
    matte = segment() if segment is not None else None
    t_dec = t_trk = t_mat = 0.0
    n = 0
    it = iter(footage)
    while True:
        t0 = time.perf_counter()
        try:
            _, img = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        tracker.process(img)
        t2 = time.perf_counter()
        if matte is not None:
            matte.process(img)
        t3 = time.perf_counter()
        t_dec, t_trk, t_mat, n = t_dec + t1 - t0, t_trk + t2 - t1, t_mat + t3 - t2, n + 1
    for obj in (tracker, matte):
        close = getattr(obj, "close", None)
        if close:
            close()
    n = max(n, 1)
    return {"decode": 1000 * t_dec / n, "track": 1000 * t_trk / n, "matte": 1000 * t_mat / n}


def bench_once(input_path: str, size: int | None, device: str, frames: int, novel_view: bool,
               workdir: str, light: str = "input") -> dict[str, float]:
    """One run of the pipeline on frames [0, frames) under `light` (as `relight --light`) -> {stage: ms
    per frame, 'wall_s', 'frames'}."""
    from relight_core import io, pipeline

    camera = {"yaw": 20.0, "pitch": 5.0} if novel_view else None
    job = pipeline.RelightJob(input=input_path, output=workdir, lighting=light, frames=(0, frames),
                              size=size, device=device, resume=False, camera=camera, keep_analysis=False)
    t0 = time.perf_counter()
    report = pipeline.run(job)
    wall = time.perf_counter() - t0
    totals = report["totals"]
    n = max(int(totals.get("written", frames)), 1)
    st = totals["stage_seconds"]
    analyze_ms = 1000 * float(st.get("analyze", 0.0)) / n
    split = analysis_stage_ms(io.open_footage(input_path, frames=(0, frames), size=size))
    scale = analyze_ms / max(split["decode"] + split["track"] + split["matte"], 1e-9)
    ms = {
        # pass 1 inside the pipeline, apportioned with the separately timed decode/track/matte shares
        "track": split["track"] * scale,
        "matte": split["matte"] * scale,
        "decode": 1000 * float(st.get("decode", 0.0)) / n + split["decode"] * scale,
        "geometry": 1000 * float(st.get("geometry", 0.0)) / n,
        "intrinsic": 1000 * float(st.get("intrinsic", 0.0)) / n,
        "temporal": 1000 * float(st.get("temporal", 0.0)) / n,
        "render": 1000 * float(st.get("render", 0.0)) / n,
        "encode": 1000 * float(st.get("write", 0.0)) / n,
    }
    ms["wall_s"] = wall
    ms["frames"] = n
    return ms


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median over runs of each stage (ms/frame), fps figures and the per-run spread."""
    med = {s: statistics.median(r[s] for r in runs) for s in STAGES}
    proc_ms = sum(med[s] for s in PROCESSING)
    e2e = statistics.median(r["frames"] / r["wall_s"] for r in runs)
    return {"ms_per_frame": med, "processing_ms": proc_ms, "fps_processing": 1000.0 / max(proc_ms, 1e-9),
            "fps_end_to_end": e2e,
            "runs_ms_processing": [sum(r[s] for s in PROCESSING) for r in runs]}


def run_bench(input_path: str, size: int | None = 512, device: str = "cpu", frames: int = 30, runs: int = 3,
              novel_view: bool = False, light: str = "input",
              progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Warm-up + `runs` timed runs -> the result dict (stages, fps, peak memory, versions, settings)."""
    from relight_core import io, session

    footage = io.open_footage(input_path, frames=(0, frames), size=size)
    resolved = session.resolve_device(device)
    results = []
    with tempfile.TemporaryDirectory(prefix="relight-bench-") as tmp:
        for r in range(runs + 1):
            if progress:
                progress(r, runs + 1)
            res = bench_once(input_path, size, device, footage.n_frames, novel_view,
                             os.path.join(tmp, f"run{r}"), light)
            if r > 0:
                results.append(res)
    out = summarise(results)
    out.update({"input": str(Path(input_path).resolve()), "width": footage.width, "height": footage.height,
                "frames": footage.n_frames, "runs": runs, "warmup_runs": 1, "device": resolved,
                "novel_view": novel_view, "light": light, "peak_rss_mb": peak_rss_mb(),
                "versions": versions()})
    return out


def format_table(res: dict[str, Any]) -> str:
    """The result as a Markdown table (stage, ms/frame, share) plus the fps and memory lines."""
    from relight_core.eval.tables import markdown_table

    total = sum(res["ms_per_frame"].values())
    ms = res["ms_per_frame"]
    rows = [{"stage": s, "ms": ms[s], "share": 100 * ms[s] / max(total, 1e-9)} for s in STAGES]
    rows.append({"stage": "processing (track..render)", "ms": res["processing_ms"], "share": None})
    head = (f"{Path(res['input']).name} {res['width']}x{res['height']}, {res['frames']} frames, "
            f"{'novel view' if res['novel_view'] else 'input view'}, light {res.get('light', 'input')}, "
            f"device {res['device']}, "
            f"median of {res['runs']} runs after {res['warmup_runs']} warm-up\n\n")
    tail = (f"\nprocessing: {res['fps_processing']:.2f} fps; end to end (decode..encode, both passes): "
            f"{res['fps_end_to_end']:.2f} fps; peak memory (RSS): {res['peak_rss_mb']:.0f} MiB\n")
    table = markdown_table(rows, ["stage", "ms", "share"], ["stage", "ms/frame", "% of total"], 1)
    return head + table + tail


# --------------------------------------------------------------------------------------------- interactive

def current_rss_mb() -> float:
    """Resident memory of this process now, in MiB (VmRSS; the peak where /proc is absent)."""
    now = _proc_status_mb("VmRSS:")
    return peak_rss_mb() if now is None else now


def _timed_render(clip, index: int, look, out: Path) -> float:
    """One live-preview render as `serve` does it (relight + PNG written) -> milliseconds."""
    from relight_core import outputs

    t = time.perf_counter()
    layers, _ = clip.render(index, look)
    outputs.write_frame({"rgba": out}, layers, "png", stored=True)
    return 1000 * (time.perf_counter() - t)


def run_interactive(input_path: str, size: int | None = 512, renders: int = 20, walk: int = 1000,
                    lights: tuple[str, str] = ("rembrandt", "split"),
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Live-preview latencies of a warm session (`serve`'s path: relight + PNG) -> the result dict.

    lighting_change_ms: the same cached frame under alternating lights; new_frame_ms: the playhead
    stepping forward onto frames not seen yet; novel_view_ms: a cached frame from changing yaw/pitch;
    memory: RSS after a quarter and after all of `walk` renders, which visit frames in a cycle with
    alternating lights (the frame cache is bounded, so it should stay flat). Medians over `renders`.
    """
    import numpy as np

    from relight_core import lighting, session, views

    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="relight-live-") as tmp:
        out = Path(tmp) / "preview.png"
        clip = session.ClipSession(input_path, size=size, cache_dir=tmp)
        t = time.perf_counter()
        say("opening (tracking and the input-light pass) ...")
        clip.open()
        open_s = time.perf_counter() - t
        n = clip.analysis.n_frames
        idx = clip.frame_indices
        plan = views.ViewPlan(None, n)
        looks = [session.Look(lighting.load_target_lighting(name), plan) for name in lights]
        clip.close()  # nothing cached: the "new frame" figures decode and prepare
        _timed_render(clip, idx[0], looks[0], out)  # warm-up (first-call costs)
        say("new frames ...")
        new_frame = [_timed_render(clip, idx[min(1 + i, len(idx) - 1)], looks[0], out)
                     for i in range(min(renders, max(len(idx) - 1, 1)))]
        k = idx[min(1, len(idx) - 1)]
        say("lighting changes ...")
        light_change = [_timed_render(clip, k, looks[i % 2], out) for i in range(renders)]
        say("novel views ...")
        novel = [_timed_render(clip, k, session.Look(looks[0].target, views.ViewPlan(
            {"yaw": float(y), "pitch": 8.0}, n)), out) for y in np.linspace(-20.0, 20.0, renders)]
        say(f"memory over {walk} renders ...")
        rss = []
        for i in range(walk):
            _timed_render(clip, idx[(i * 7) % len(idx)], looks[i % 2], out)
            if i in (walk // 4 - 1, walk - 1):
                rss.append(current_rss_mb())
        cache_mb = clip.cached_mb
        clip.close()
    med = statistics.median
    return {"input": str(Path(input_path).resolve()), "width": clip.footage.width,
            "height": clip.footage.height, "frames": n, "renders": renders, "open_s": open_s,
            "lighting_change_ms": med(light_change), "new_frame_ms": med(new_frame),
            "novel_view_ms": med(novel), "walk": walk, "rss_mb_after_quarter": rss[0],
            "rss_mb_at_end": rss[-1], "cache_mb_at_end": cache_mb,
            "cache_bound_mb": session.DEFAULT_CACHE_MB, "lights": list(lights), "versions": versions()}


def format_interactive(res: dict[str, Any]) -> str:
    """The interactive result as a Markdown table plus the memory line."""
    from relight_core.eval.tables import markdown_table

    rows = [{"what": "lighting change, cached frame", "ms": res["lighting_change_ms"]},
            {"what": "new frame of the analysed clip", "ms": res["new_frame_ms"]},
            {"what": "novel view, cached frame", "ms": res["novel_view_ms"]}]
    head = (f"{Path(res['input']).name} {res['width']}x{res['height']}, {res['frames']} frames, warm "
            f"session, lights {' / '.join(res['lights'])}, median of {res['renders']} renders (relight + PNG "
            f"written); opened in "
            f"{res['open_s']:.1f} s\n\n")
    table = markdown_table(rows, ["what", "ms"], ["live preview", "ms"], 1)
    tail = (f"\nmemory: {res['rss_mb_after_quarter']:.0f} MiB after {res['walk'] // 4} renders, "
            f"{res['rss_mb_at_end']:.0f} MiB "
            f"after {res['walk']} (frame cache {res['cache_mb_at_end']:.0f} MiB, bound "
            f"{res['cache_bound_mb']} MiB)\n")
    return head + table + tail
