"""The streaming orchestrator: footage in -> relit frames and passes out, with progress events.

Pass 1 (analysis): the tracker runs over the clip once (landmarks, pose, matte: small per-frame data);
the result is cached as DIR/.relight/analysis.npz (`layout`) and reused only when it was made from the
same bytes, at the same size, and covers the frames (`session.analysis_mismatch`), so `relight-core
analyze INPUT -o DIR` ahead of time works too. Pass 2 (relight), one frame at a time, constant memory:
geometry -> input light (intrinsic) -> temporal stabilisation -> render -> write (atomic).

Exposure ("intensity"): by default ("match") the target light is scaled by one constant per run so that
its mean irradiance over camera-facing normals equals that of the input light estimated on the first
frame of the range: a preset then relights at about the input's exposure, and a light that changes over
time keeps its own relative changes. "absolute" uses the target light in physical units (Blender's: a sun of
strength E W/m^2, ...), as a Blender render of the same albedo would show it: a diffuse surface of albedo
rho lit by irradiance E has radiance rho * E / pi, while the engine's image model is albedo x shade(), so
the target SH (and key lights) are scaled by 1/pi (`ABSOLUTE_SCALE`). The input light is then expressed for
a skin albedo of luminance `intrinsic.SKIN_ALBEDO_LUMA`.

One run writes into DIR at a time (`lock.hold`: a second one stops with one sentence). Resume: a run
skips a frame only when the manifest (`manifest.Manifest`, DIR/.relight/manifest.jsonl, a line per
finished frame) says it was made with the same `render_settings` (input and light files by content,
camera, size, first frame, background, light space, intensity, smoothing) and its files are there with
the sizes recorded; everything else is rendered again. The `RESUME_WARMUP` frames before a resumed
stretch are processed (not written) so the temporal filters are settled, and the input light continues
from the manifest's recorded estimates, so resumed frames match an uninterrupted run (README). The
report (DIR/.relight/report.json) is rebuilt from the manifest: it lists every finished frame.

Events (dicts, the worker protocol in the README): started, progress (stage analyze|relight), warning,
frame, done, cancelled. Cancelling (an Event, SIGTERM or Ctrl-C) stops between frames: every file that
exists is complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relight_core import layout, lighting, lock, manifest, outputs, session, track, views
from relight_core.errors import UserError

PASSES = outputs.PASSES
# frames processed (not written) before a resumed stretch: the albedo filter's memory decays as 0.6^n,
# 0.6^12 = 0.002 (README, "Resume": the largest difference measured against an uninterrupted run)
RESUME_WARMUP = 12
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
    warmup: int = RESUME_WARMUP


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
    """Run a relight job -> the report (also written to DIR/.relight/report.json).

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
                               cache_dir=layout.engine_dir(out_path), keep_analysis=job.keep_analysis,
                               smoothing=job.smoothing, cache_mb=0)
    footage = clip.footage
    target = lighting.load_target_lighting(job.lighting, size=512)
    still = footage.kind == "image"
    n_out = footage.n_frames
    if still:
        n_out = max(n_out, views.sequence_length(job.camera), int(getattr(target, "n_frames", 1) or 1))
    plan = views.ViewPlan(job.camera, n_out)
    existed = out_path.exists()
    out = outputs.prepare_output(job.output)
    with lock.hold(out, _lock_name(job)):
        try:
            return _run_frames(job, clip, target, plan, out, n_out, still, device, emit, cancel, t_start)
        except UserError:
            frames_made = any(f.is_file() and layout.ENGINE_DIR not in f.relative_to(out).parts
                              for f in out.rglob("*"))
            if not existed and not frames_made:  # a folder this run created, holding nothing of value
                import shutil

                shutil.rmtree(out, ignore_errors=True)
            raise


def _lock_name(job: RelightJob) -> str:
    """The lock a run holds in DIR/.relight: the folder's, or a chunk's own (farm chunks of one shot write
    disjoint frames into one folder at once; a chunk twice is still refused)."""
    return "lock" if job.chunk is None else f"lock_{job.chunk[0]:06d}-{job.chunk[1] - 1:06d}"


def remove_stale_temporaries(out: Path) -> int:
    """Delete the temporary files (`io.atomic_write`'s `.NAME.tmpPID.EXT`) that killed runs left in DIR
    -> how many. A file whose process still runs is kept: a farm chunk may be writing it."""
    import re

    pattern = re.compile(r"^\..+\.tmp(\d+)")
    n = 0
    for f in out.rglob(".*.tmp*"):
        m = pattern.match(f.name)
        if f.is_file() and m and not lock.process_alive(int(m.group(1))):
            f.unlink(missing_ok=True)
            n += 1
    return n


def _run_frames(job: RelightJob, clip: session.ClipSession, target, plan: views.ViewPlan, out: Path,
                n_out: int, still: bool, device: str, emit: EventSink, cancel: threading.Event,
                t_start: float) -> dict:
    """Pass 1 and pass 2 of `run` once the inputs are validated and the output folder exists."""
    footage = clip.footage
    stem = footage.name
    emit({"event": "started", "frames": n_out, "output": str(out)})

    timings = session.new_timings()
    report: dict[str, Any] = {"input": str(Path(job.input).expanduser().resolve()), "output": str(out),
                              "device": device, "compute": "cpu: numpy/OpenCV (no GPU kernels yet)",
                              "options": _job_options(job), "frames": []}
    report_path = report_file(out, job)
    remove_stale_temporaries(out)
    out_indices = footage.frame_indices if not still else list(range(n_out))
    in_chunk = [job.chunk is None or job.chunk[0] <= i < job.chunk[1] for i in out_indices]
    if not any(in_chunk):
        raise UserError(f"Chunk {job.chunk[0]}:{job.chunk[1]} holds none of the frames "
                        f"{out_indices[0]}:{out_indices[-1] + 1} of {stem}.")
    settings = outputs.as_json(render_settings(job, footage, out_indices[0]))
    sid = manifest.settings_id(settings)
    book = manifest.Manifest(out, layout.manifest_file(out))
    book.compact()
    files_of = [outputs.frame_paths(out, stem, i, job.passes, job.format) for i in out_indices]
    trusted = [book.trusted(i, sid, f) if job.resume and c else None
               for i, f, c in zip(out_indices, files_of, in_chunk, strict=True)]
    _warn_other_settings(book, [i for i, c in zip(out_indices, in_chunk, strict=True) if c], sid,
                         [e for e, c in zip(trusted, in_chunk, strict=True) if c], out, emit)
    try:
        clip.open(emit, cancel, light_pass=job.chunk is not None)
    except session.Cancelled:
        emit({"event": "cancelled", "frames_done": 0})
        return {"cancelled": True, "frames_done": 0}
    analysis = clip.analysis
    timings["analyze"] = 0.0 if clip.analysis_cached else time.perf_counter() - t_start
    report["analysis"] = {"cached": clip.analysis_cached,
                          "warnings": list(getattr(analysis, "warnings", []) or [])}
    for wmsg in report["analysis"]["warnings"] + plan.warnings:
        emit({"event": "warning", "frame": None, "message": str(wmsg)})

    outputs.write_json(layout.engine_dir(out) / SETTINGS_FILE, {"id": sid, "settings": settings})
    # frames outside the chunk count as done: never written, at most processed to warm up
    done_flags = [e is not None or not c for e, c in zip(trusted, in_chunk, strict=True)]
    first_light = clip.light.first_light()
    analyse_only = warm_up_frames(done_flags, int(job.warmup), exposure_known=first_light is not None)

    look = session.Look(target, plan, job.passes if job.format == "png" else outputs.PASSES,
                        job.light_space, job.intensity, job.background)
    if first_light is not None:
        look.fix_exposure(first_light, np.asarray(analysis.cam_from_head[0], dtype=np.float64))
    per_frame: dict[int, dict] = {}
    written: list[int] = []
    t_pass2 = time.perf_counter()
    writer = outputs.FrameWriter(job.format, timings)
    try:
        cancelled = _relight_frames(job, clip, look, writer, out, stem, n_out, still, out_indices, done_flags,
                                    trusted, analyse_only, per_frame, written, timings, emit, cancel,
                                    _recorder(book, sid))
    finally:
        writer.close()
    if not cancelled:
        clip.save_light_track()
    pass2_s = time.perf_counter() - t_pass2
    frames_written = len(written)
    processed = max(frames_written, 1)
    total_s = time.perf_counter() - t_start
    # every finished frame of the range, this run's and earlier ones' (rebuilt from the manifest)
    report["frames"] = [e["report"] for e in (book.trusted(i, sid, f) for i, f in
                                              zip(out_indices, files_of, strict=True)) if e is not None]
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
                    out_indices: list, done_flags: list, trusted: list, analyse_only: list, per_frame: dict,
                    written: list, timings: dict, emit: EventSink, cancel: threading.Event,
                    record: Callable) -> bool:
    """Pass 2 over the frames, through the session's per-frame steps (prepare, stabilise, render) in
    order; returns True when cancelled. done_flags[k]: frame k is not to be written (finished, or outside
    the chunk); analyse_only[k]: it is processed anyway (warm-up). trusted[k]: frame k's manifest entry
    when it is finished (its recorded input light keeps the light's smoothing going when the clip's light
    track is not known), else None. record(index, files, light_raw, report) runs on the writer thread once
    a frame's files exist."""
    from relight_core import temporal

    analysis = clip.analysis
    stabilizer = temporal.FlowStabilizer(strength=0.6 if job.smoothing else 0.0)
    work = [k for k in range(n_out) if not done_flags[k] or analyse_only[k]]
    if not work:
        return False
    # without the clip's whole light track, the light follows every frame from the first (replayed from
    # the manifest where finished), so decoding starts there
    k0 = work[0] if clip.light.complete else 0
    k0, k1 = (k0, work[-1] + 1) if not still else (0, n_out)
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
        if k % track.PAGE_RELEASE_EVERY == 0:  # a long clip's mattes, read once, do not stay resident
            track.release_pages(*(getattr(analysis, name) for name in track.PER_FRAME_ON_DISK))
        if done_flags[k] and not analyse_only[k]:
            if trusted[k] is not None and not still and not clip.light.complete:
                _replay_light(clip.light, clip.row(source_index), trusted[k])
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
        light_raw = np.array(clip.light.raw[state.row])
        done = _frame_done(emit, idx, files, k + 1, n_out, written)
        writer.submit(files, layers, _then(lambda i=idx, f=files, r=light_raw: record(i, f, r, per_frame[i]),
                                           done))
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
    """DIR/.relight/report.json, or DIR/.relight/report_<a>-<b-1>.json for a chunk (chunks that run at once
    write their own; the farm's Encode task merges them into report.json)."""
    if job.chunk is None:
        return layout.report_file(out)
    return layout.engine_dir(out) / f"report_{job.chunk[0]:06d}-{job.chunk[1] - 1:06d}.json"


def render_settings(job: RelightJob, footage, first: int = 0) -> dict:
    """What decides the pixels of the output frames -> a JSON-able dict: the input (by content,
    `fingerprint`), the lighting (a light or reference file by content too), the camera, the working
    size, the range's first frame (the "match" exposure and the temporal filters start there),
    background, light space, intensity, smoothing and the engine version. Passes, format, device and
    resume are not in it: frames of another pass or format are other files."""
    from relight_core import __version__

    return {"version": 2, "engine": __version__, "input": session.input_signature(footage)["id"],
            "lighting": _lighting_key(job.lighting), "camera": job.camera,
            "size": [footage.width, footage.height], "first": int(first), "background": job.background,
            "light_space": job.light_space, "intensity": job.intensity, "smoothing": job.smoothing}


def _recorder(book: manifest.Manifest, sid: str) -> Callable:
    def record(index: int, files: dict[str, Path], light_raw: np.ndarray, report: dict) -> None:
        book.append(index, sid, files, light_raw, report)
    return record


def _then(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        first()
        second()
    return call


def _replay_light(track, row: int, entry: dict) -> None:
    """Feed a finished frame's recorded input-light estimate into the clip's light track (in order), as
    rendering it would have: the smoothed light of the frames after it comes out the same."""
    raw = entry.get("light_raw")
    est = None if raw is None else np.asarray(raw, dtype=np.float32)
    if est is not None and est.shape != (9, 3):
        est = None
    track.light(row, lambda: est)


def _warn_other_settings(book: manifest.Manifest, out_indices: list, sid: str, trusted: list, out: Path,
                         emit: EventSink) -> None:
    """One warning when frames of this range in DIR were made with other settings (they are redone)."""
    other = sum(1 for i, e in zip(out_indices, trusted, strict=True)
                if e is None and i in book.entries and book.entries[i].get("settings") != sid)
    if other:
        emit({"event": "warning", "frame": None,
              "message": f"{other} frame(s) in {out} were made with other settings; they are rendered again"})


def _lighting_key(spec: Any) -> Any:
    """A lighting spec as a comparable JSON-able value: light and reference files and presets by their
    content (`fingerprint`: a file replaced by another of the same size and mtime is a change), light
    objects by their SH per frame."""
    from relight_core import fingerprint, lights

    if hasattr(spec, "sh_at"):
        n = int(getattr(spec, "n_frames", 1) or 1)
        shs = np.asarray([spec.sh_at(k) for k in range(n)], dtype=np.float64)
        return {"object": type(spec).__name__, "sh": hashlib.sha1(shs.tobytes()).hexdigest()}
    if isinstance(spec, dict):
        return {k: (_lighting_key(v) if k in ("file", "reference", "preset") else v) for k, v in spec.items()}
    content = fingerprint.spec_fingerprint(str(spec))
    if content is not None:
        return {"file": str(Path(str(spec)).expanduser().resolve()), "content": content}
    preset = lights.presets_dir() / f"{spec}.json"
    if lights.PRESET_NAME.fullmatch(str(spec)) and preset.is_file():
        return {"preset": str(spec), "content": fingerprint.file_fingerprint(preset)}
    return spec


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
