"""The streaming orchestrator: footage in -> relit frames and passes out, with progress events.

Pass 1 (analysis): the tracker runs over the clip once (landmarks, pose, matte: small per-frame data);
the result is cached as DIR/analysis.npz (with DIR/analysis.json naming the input) and reused when it
matches the input and the frame range, at any size of the same aspect (it scales to the frame), so
`relight-core analyze INPUT -o DIR/analysis.npz` ahead of time works too. Pass 2 (relight), one frame at
a time, constant memory:
geometry -> input light (intrinsic) -> temporal stabilisation -> render -> write (atomic).

Exposure ("intensity"): by default ("match") the target light is scaled by one constant per run so that
its mean irradiance over camera-facing normals equals that of the input light estimated on the first
frame of the range: a preset then relights at about the input's exposure, and a light that changes over
time keeps its own relative changes. "absolute" uses the target light in physical units (Blender's: a sun of
strength E W/m^2, ...), as a Blender render of the same albedo would show it: a diffuse surface of albedo
rho lit by irradiance E has radiance rho * E / pi, while the engine's image model is albedo x shade(), so
the target SH (and key lights) are scaled by 1/pi (`ABSOLUTE_SCALE`). The input light is then expressed for
a skin albedo of luminance `intrinsic.SKIN_ALBEDO_LUMA`.

Resume: a run skips frames whose files exist only when DIR/settings.json (`render_settings`: input, light,
camera, size, background, light space, intensity, smoothing) says they were made the same way; otherwise
it warns and renders every frame again.

Events (dicts, the worker protocol in the README): started, progress (stage analyze|relight), warning,
frame, done, cancelled. Cancelling (an Event, SIGTERM or Ctrl-C) stops between frames: every file that
exists is complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relight_core import lighting, outputs, session, views
from relight_core.errors import UserError

PASSES = outputs.PASSES
EventSink = Callable[[dict], None]


@dataclasses.dataclass
class RelightJob:
    """One relight request (the worker's JSON request, or the CLI's options).

    lighting: a preset name or light-file path (str), "input" (the estimated input light: identity relight,
    e.g. for novel views only), a dict as in the worker protocol, or a `lights.LightSequence`.
    camera: None (input view), {"yaw": [...], "pitch": [...], "roll": [...]} (degrees, one value or one per
    frame; an orbit of the INPUT camera about the head centre, positive yaw = camera toward head +x,
    positive pitch = camera above) or {"fov_deg": f, "cam2head": 4x4 or [4x4 per frame]} (absolute).
    chunk: source frames [a, b) of `frames` to write (a farm chunk). The rest of `frames` is the shot's
    context: its analysis and input-light track (made over the whole range, by a light pass if not stored),
    the exposure of its first frame, per-frame lights and cameras counted from its first frame. The
    report is DIR/report_<a>-<b-1>.json, so that chunks can run at once.
    warmup: frames before each stretch to write (a chunk, or what a resumed run has left) that are
    processed without being written, so that the albedo's temporal filter starts as in one pass.
    """

    input: str
    output: str
    lighting: Any = "input"
    frames: tuple[int, int] | None = None
    size: int | None = None
    format: str = "png"
    passes: tuple[str, ...] = ("rgba",)
    device: str = "auto"
    background: str = "keep"
    light_space: str = "world"
    resume: bool = True
    camera: dict | None = None
    intensity: str = "match"
    smoothing: bool = True
    keep_analysis: bool = True
    chunk: tuple[int, int] | None = None
    warmup: int = 3


# --------------------------------------------------------------------------------------------- validation

def _validate(job: RelightJob) -> None:
    bad = [p for p in job.passes if p not in PASSES]
    if bad or not job.passes:
        raise UserError(f"Unknown pass(es) {', '.join(bad) or '(none)'}; choose from {', '.join(PASSES)}.")
    if job.format not in ("png", "exr"):
        raise UserError(f"Format '{job.format}' is not png or exr.")
    if job.background not in ("keep", "transparent"):
        raise UserError(f"Background '{job.background}' is not keep or transparent.")
    if job.light_space not in ("world", "head"):
        raise UserError(f"Light space '{job.light_space}' is not world or head.")
    if job.intensity not in ("match", "absolute"):
        raise UserError(f"Intensity '{job.intensity}' is not match or absolute.")
    if job.chunk is not None and not (len(job.chunk) == 2 and 0 <= job.chunk[0] < job.chunk[1]):
        raise UserError(f"Chunk {job.chunk} is not a frame range [first, last_exclusive).")
    if int(job.warmup) < 0:
        raise UserError(f"Warm-up {job.warmup} is negative; give 0 or more frames.")
    if job.size is not None and not 16 <= int(job.size) <= 8192:
        raise UserError(f"Size {job.size} is out of range; give the longer side in pixels (16..8192).")




# --------------------------------------------------------------------------------------------- streaming

def _prefetch(iterable, timings: dict | None = None, depth: int = 2):
    """Iterate `iterable` on a background thread, `depth` items ahead (frame decoding overlaps the
    processing of the previous frame; OpenCV releases the GIL while decoding). The time spent producing
    items is added to timings["decode"]."""
    import queue

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            source = iter(iterable)
            while True:
                t = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    break
                if timings is not None:
                    timings["decode"] += time.perf_counter() - t
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    threading.Thread(target=work, name="relight-decoder", daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _frame_done(emit: EventSink, idx: int, files: dict[str, Path], done: int, total: int,
                written: list) -> Callable[[], None]:
    def call() -> None:
        written.append(idx)
        emit({"event": "frame", "index": idx, "files": {name: str(p) for name, p in files.items()}})
        emit({"event": "progress", "stage": "relight", "done": done, "total": total})
    return call


# --------------------------------------------------------------------------------------------- the run

def run(job: RelightJob, on_event: EventSink | None = None, cancel: threading.Event | None = None) -> dict:
    """Run a relight job -> the report (also written to DIR/report.json).

    on_event receives the protocol events; cancel (threading.Event) stops the run between frames
    (a "cancelled" event is sent and the report says so). Raises UserError for bad input.
    """
    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    t_start = time.perf_counter()
    _validate(job)
    session.tune_allocator()
    with session.single_threaded_libraries((os.cpu_count() or 1) <= 4):
        return _run(job, emit, cancel, t_start)


def _run(job: RelightJob, emit: EventSink, cancel: threading.Event, t_start: float) -> dict:
    """`run` once the allocator and thread settings are made."""
    device = session.resolve_device(job.device)
    out_path = Path(job.output).expanduser().resolve()
    # the batch reads every frame once, in order: nothing to cache
    clip = session.ClipSession(job.input, frames=tuple(job.frames) if job.frames else None, size=job.size,
                               cache_dir=out_path, keep_analysis=job.keep_analysis, smoothing=job.smoothing,
                               cache_mb=0)
    footage = clip.footage
    target = lighting.load_target_lighting(job.lighting, size=512)
    still = footage.kind == "image"
    n_out = footage.n_frames
    if still:
        n_out = max(n_out, views.sequence_length(job.camera), int(getattr(target, "n_frames", 1) or 1))
    plan = views.ViewPlan(job.camera, n_out)
    existed = out_path.exists()
    out = outputs.prepare_output(job.output)
    try:
        return _run_frames(job, clip, target, plan, out, n_out, still, device, emit, cancel, t_start)
    except UserError:
        frames_made = any(f.is_file() and not f.name.startswith(("analysis.", "input_light_"))
                          for f in out.rglob("*"))
        if not existed and not frames_made:  # a folder this run created, holding nothing of value
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_frames(job: RelightJob, clip: session.ClipSession, target, plan: views.ViewPlan, out: Path,
                n_out: int, still: bool, device: str, emit: EventSink, cancel: threading.Event,
                t_start: float) -> dict:
    """Pass 1 and pass 2 of `run` once the inputs are validated and the output folder exists."""
    footage = clip.footage
    stem = footage.name
    emit({"event": "started", "frames": n_out, "output": str(out)})

    timings = session.new_timings()
    report: dict[str, Any] = {"input": str(Path(job.input).expanduser().resolve()), "output": str(out),
                              "device": device, "compute": "cpu: numpy/OpenCV, torch for z-buffer scatters "
                              "(no GPU kernels yet)", "options": _job_options(job), "frames": []}
    report_path = report_file(out, job)
    settings = outputs.as_json(render_settings(job, footage))
    resume = job.resume and _settings_unchanged(out, settings, footage, job, emit)
    old_frames = _previous_report_frames(report_path) if resume else {}
    try:
        clip.open(emit, cancel, light_pass=job.chunk is not None)
    except session.Cancelled:
        emit({"event": "cancelled", "frames_done": 0})
        return {"cancelled": True, "frames_done": 0}
    analysis = clip.analysis
    timings["analyze"] = 0.0 if clip.analysis_cached else time.perf_counter() - t_start
    report["analysis"] = {"cached": clip.analysis_cached,
                          "warnings": list(getattr(analysis, "warnings", []) or [])}
    for wmsg in report["analysis"]["warnings"]:
        emit({"event": "warning", "frame": None, "message": str(wmsg)})

    out_indices = footage.frame_indices if not still else list(range(n_out))
    outputs.write_json(out / SETTINGS_FILE, settings)  # before the first frame is written
    in_chunk = [job.chunk is None or job.chunk[0] <= i < job.chunk[1] for i in out_indices]
    if not any(in_chunk):
        raise UserError(f"Chunk {job.chunk[0]}:{job.chunk[1]} holds none of the frames "
                        f"{out_indices[0]}:{out_indices[-1] + 1} of {stem}.")
    # frames outside the chunk count as done: never written, at most processed to warm up
    done_flags = [not c or (resume and all(p.is_file() for p in outputs.frame_paths(
                      out, stem, i, job.passes, job.format).values()))
                  for i, c in zip(out_indices, in_chunk, strict=True)]
    first_light = clip.light.first_light()
    analyse_only = warm_up_frames(done_flags, int(job.warmup), exposure_known=first_light is not None)

    look = session.Look(target, plan, job.passes if job.format == "png" else outputs.PASSES,
                        job.light_space, job.intensity, job.background)
    if first_light is not None:
        look.fix_exposure(first_light, np.asarray(analysis.cam_from_head[0], dtype=np.float64))
    per_frame: dict[int, dict] = dict(old_frames)
    written: list[int] = []
    t_pass2 = time.perf_counter()
    writer = outputs.FrameWriter(job.format, timings)
    try:
        cancelled = _relight_frames(job, clip, look, writer, out, stem, n_out, still, out_indices, done_flags,
                                    analyse_only, per_frame, written, timings, emit, cancel)
    finally:
        writer.close()
    if not cancelled:
        clip.save_light_track()
    pass2_s = time.perf_counter() - t_pass2
    frames_written = len(written)
    processed = max(frames_written, 1)
    total_s = time.perf_counter() - t_start
    report["frames"] = [per_frame[i] for i in sorted(per_frame)]
    report["exposure_scale"] = look.scale
    if job.chunk is not None:
        report["chunk"] = list(job.chunk)
    report["totals"] = {
        "frames": sum(in_chunk), "written": frames_written, "cancelled": cancelled,
        "skipped": sum(d and c for d, c in zip(done_flags, in_chunk, strict=True)),
        "seconds": round(total_s, 3),
        "stage_seconds": {s: round(v, 4) for s, v in timings.items()},
        "ms_per_frame": {s: round(1000 * v / processed, 2) for s, v in timings.items() if s != "analyze"},
        # null when every frame was already done: a rate over no frames means nothing
        "fps_processing": round(processed / max(sum(timings[s] for s in session.PROCESSING_STAGES), 1e-9), 2)
        if frames_written else None,
        "fps_end_to_end": round(processed / max(pass2_s, 1e-9), 2) if frames_written else None,
        "pass2_seconds": round(pass2_s, 3),
    }
    outputs.write_json(report_path, report)
    if cancelled:
        emit({"event": "cancelled", "frames_done": frames_written})
    else:
        emit({"event": "done", "frames": frames_written, "output": str(out), "report": str(report_path)})
    return report


def _relight_frames(job: RelightJob, clip: session.ClipSession, look: session.Look,
                    writer: outputs.FrameWriter, out: Path, stem: str, n_out: int, still: bool,
                    out_indices: list, done_flags: list, analyse_only: list, per_frame: dict, written: list,
                    timings: dict, emit: EventSink, cancel: threading.Event) -> bool:
    """Pass 2 over the frames, through the session's per-frame steps (prepare, stabilise, render) in
    order; returns True when cancelled."""
    from relight_core import temporal

    analysis = clip.analysis
    stabilizer = temporal.FlowStabilizer(strength=0.6 if job.smoothing else 0.0)
    work = [k for k in range(n_out) if not done_flags[k] or analyse_only[k]]
    if not work:
        return False
    k0, k1 = (work[0], work[-1] + 1) if not still else (0, n_out)
    it = _prefetch(_frames_between(clip, job, out_indices, k0, k1), timings) if not still \
        else iter(clip.footage)
    img, state, last = None, None, None
    for k in range(k0, k1):
        if cancel.is_set():
            return True
        t0 = time.perf_counter()
        if not still or img is None:
            try:
                source_index, img = next(it)
            except StopIteration:
                break
            state = None
        timings["decode"] += time.perf_counter() - t0
        idx = out_indices[k]
        if done_flags[k] and not analyse_only[k]:
            emit({"event": "progress", "stage": "relight", "done": k + 1, "total": n_out})
            continue
        if last is not None and k != last + 1 and not still:
            stabilizer.reset()  # after a gap the albedo filter starts afresh (then warms up)
        last = k
        before = {st: timings[st] for st in session.PROCESSING_STAGES}
        if state is None:  # a still image is prepared once for all its output frames
            state = session.prepare_frame(analysis, clip.row(source_index), img, clip.light, timings)
            look.fix_exposure(state.light_in, state.cam_from_head)
            t = time.perf_counter()
            state.stable_albedo = stabilizer(state.albedo, img, state.alpha > 0.02) if not still \
                else state.albedo
            timings["temporal"] += time.perf_counter() - t
        if done_flags[k]:
            emit({"event": "progress", "stage": "relight", "done": k + 1, "total": n_out})
            continue
        layers, info = look.render(state, state.stable_albedo, k, analysis, timings)
        frame_ms = {st: round(1000 * (timings[st] - before[st]), 2) for st in session.PROCESSING_STAGES}
        files = outputs.frame_paths(out, stem, idx, job.passes, job.format)
        tracked = bool(np.asarray(analysis.valid)[state.row])
        warnings = [] if state.light_estimated else \
            ["too little skin visible to estimate the input light; kept the previous"]
        if not tracked:
            warnings.append("no face tracked on this frame; pose and matte interpolated from neighbours")
        for wmsg in warnings:
            emit({"event": "warning", "frame": idx, "message": wmsg})
        faces = getattr(analysis, "face_count", None)
        per_frame[idx] = {"index": idx, "tracked": tracked,
                          "faces": 1 if faces is None else int(np.asarray(faces)[state.row]),
                          "light_in": np.round(state.light_in, 5).tolist(),
                          "view": look.views.describe(k, info.get("cam2head")),
                          "warnings": warnings, "ms": frame_ms}
        writer.submit(files, layers, _frame_done(emit, idx, files, k + 1, n_out, written))
    return False


def warm_up_frames(done: list[bool], warmup: int, exposure_known: bool) -> list[bool]:
    """Which done frames (not written) are processed anyway: the `warmup` frames before every frame to
    write, and the first frame when the "match" exposure is not known without it; none when every frame
    is done."""
    need = [not d for d in done]
    if not any(need):
        return [False] * len(done)
    return [d and ((k == 0 and not exposure_known) or any(need[k + 1:k + 1 + warmup]))
            for k, d in enumerate(done)]


def _frames_between(clip: session.ClipSession, job: RelightJob, out_indices: list, k0: int, k1: int):
    """The footage's frames k0..k1-1 of the run (decoding starts at k0: a late chunk does not decode the
    frames before its warm-up)."""
    from relight_core import io

    if (k0, k1) == (0, len(out_indices)):
        return clip.footage
    return io.open_footage(job.input, frames=(out_indices[k0], out_indices[k1 - 1] + 1), size=job.size)


SETTINGS_FILE = "settings.json"


def report_file(out: Path, job: RelightJob) -> Path:
    """DIR/report.json, or DIR/report_<a>-<b-1>.json for a chunk (chunks that run at once write their own;
    the farm's Encode task merges them into report.json)."""
    if job.chunk is None:
        return out / "report.json"
    return out / f"report_{job.chunk[0]:06d}-{job.chunk[1] - 1:06d}.json"


def render_settings(job: RelightJob, footage) -> dict:
    """What decides the pixels of the output frames -> a JSON-able dict: the input (path, size, mtime), the
    lighting (a light or reference file also by size and mtime, so an edited file counts as a change), the
    camera, size, background, light space, intensity and smoothing. Passes, format, frame range, device
    and resume are not in it: frames of another range, pass or format are other files."""
    return {"version": 1, "input": session.input_signature(footage)["id"],
            "lighting": _lighting_key(job.lighting), "camera": job.camera, "size": job.size,
            "background": job.background, "light_space": job.light_space, "intensity": job.intensity,
            "smoothing": job.smoothing}


def _lighting_key(spec: Any) -> Any:
    """A lighting spec as a comparable JSON-able value (files by path, size and mtime; light objects by
    their SH per frame)."""
    if hasattr(spec, "sh_at"):
        n = int(getattr(spec, "n_frames", 1) or 1)
        shs = np.asarray([spec.sh_at(k) for k in range(n)], dtype=np.float64)
        return {"object": type(spec).__name__, "sh": hashlib.sha1(shs.tobytes()).hexdigest()}
    if isinstance(spec, dict):
        return {k: (_lighting_key(v) if k in ("file", "reference") else v) for k, v in spec.items()}
    p = Path(str(spec)).expanduser()
    if p.is_file():
        st = p.stat()
        return {"file": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}
    return spec


def _settings_unchanged(out: Path, settings: dict, footage, job: RelightJob, emit: EventSink) -> bool:
    """True when DIR/settings.json holds `settings` (as written by `_as_json`), i.e. finished frames there
    would come out the same; otherwise False, with a warning that every frame is rendered again when DIR
    holds settings or frames of an earlier run."""
    try:
        old = json.loads((out / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        old = None
    if old == settings:
        return True
    first = outputs.frame_paths(out, footage.name, footage.frame_indices[0] if footage.kind != "image" else 0,
                        job.passes, job.format)
    if old is not None or any(p.is_file() for p in first.values()):
        emit({"event": "warning", "frame": None,
              "message": f"the settings differ from those that made the frames in {out}; every frame is "
                         "rendered again"})
    return False




def _job_options(job: RelightJob) -> dict:
    d = dataclasses.asdict(job)
    if not isinstance(d.get("lighting"), (str, dict, type(None))):
        d["lighting"] = getattr(job.lighting, "name", type(job.lighting).__name__)
    if isinstance(d.get("lighting"), dict) and "sh" in d["lighting"]:
        d["lighting"] = {"sh": "(inline)", "key_lights": d["lighting"].get("key_lights")}
    if isinstance(d.get("camera"), dict):
        d["camera"] = {k: ("(per frame)" if isinstance(v, list) and len(v) > 3 else v)
                       for k, v in d["camera"].items()}
    d["passes"] = list(job.passes)
    return d


def _previous_report_frames(path: Path) -> dict[int, dict]:
    try:
        data = json.loads(path.read_text())
        return {int(f["index"]): f for f in data.get("frames", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}






