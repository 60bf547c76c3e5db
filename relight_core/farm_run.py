"""Running farm jobs: the tasks of a bundle (`relight-core farm-task track|relight|encode`, what a farm
worker runs) and a whole bundle on one machine through the OpenJD runtime, in parallel processes.

Each task reads its shot's request from the bundle (`shots/<shot>.json`, the worker protocol), with the
input, output folder and frame range taken from the job parameters, and logs in plain lines what it did.
Tasks are idempotent: Track reuses a matching analysis, a Relight chunk skips frames that are already
written with the same settings (a finished chunk is a no-op), Encode rewrites the movie only when a frame
is newer than it. See `relight_core.farm` for the bundle itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from relight_core import farm
from relight_core.errors import UserError

LOGS_DIR = "logs"
MOVIE_SUFFIX = "_relit.mp4"
CHUNK_REPORT_GLOB = "report_*-*.json"

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


# --------------------------------------------------------------------------------------------- requests

def load_shot_request(path: str | Path, input_path: str | None = None, output: str | None = None,
                      frames: str | None = None) -> dict:
    """A shot's request file with the job parameters applied: input, output folder and frame range (an
    OpenJD range 'A-B'); a light file or reference image named relative to the request's folder is
    resolved there. UserError when the file is missing or not a request."""
    path = Path(path)
    try:
        req = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"Request file {path} does not exist; is ShotsDir the bundle's shots/ "
                        "folder?") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"Request file {path} is not readable JSON ({type(exc).__name__}).") from None
    if not isinstance(req, dict):
        raise UserError(f"Request file {path} does not hold a request object.")
    if input_path:
        req["input"] = input_path
    if output:
        req["output"] = output
    if frames:
        req["frames"] = list(farm.parse_openjd_range(frames, "shot's frame range"))
    lighting = req.get("lighting")
    if isinstance(lighting, dict):
        for key in ("file", "reference"):
            if key in lighting and not Path(str(lighting[key])).is_absolute():
                req["lighting"] = {key: str(path.parent / str(lighting[key]))}
    return req


def job_of(req: dict, chunk: tuple[int, int] | None = None, warmup: int | None = None):
    """The `pipeline.RelightJob` of a request, rendering only `chunk` (source frames [a, b)) of its frame
    range with `warmup` frames of warm-up before it."""
    from relight_core.commands.worker import job_from_request

    job = job_from_request(req)
    if chunk is not None:
        job = dataclasses.replace(job, chunk=tuple(chunk))
    if warmup is not None:
        job = dataclasses.replace(job, warmup=int(warmup))
    return job


# --------------------------------------------------------------------------------------------- tasks

def run_track(req: dict, log: Log = _print) -> int:
    """The Track task: the shot's analysis and its input-light track (one light pass over the frames, so
    that every chunk reads the same smoothed input light), made once and kept in the output folder."""
    from relight_core import layout, outputs, session

    job = job_of(req)
    out = outputs.prepare_output(job.output)
    clip = session.ClipSession(job.input, frames=job.frames, size=job.size, cache_dir=layout.engine_dir(out),
                               keep_analysis=True, smoothing=job.smoothing, cache_mb=0)
    f = clip.footage
    a, b = f.frame_indices[0], f.frame_indices[-1] + 1
    log(f"track: {f.name} frames {a}-{b - 1} ({b - a}) at {f.width}x{f.height} -> {out}")
    t = time.perf_counter()
    clip.open(light_pass=False)
    cached, stored = clip.analysis_cached, clip.light.complete
    if not stored:
        clip.open(light_pass=True)  # the analysis is on disk now: this adds the light pass
    analysis = clip.analysis
    if cached and stored:
        log(f"track: the analysis and input light in {out} already match this shot; nothing to do")
    else:
        how = "reused the analysis of" if cached else "analysed"
        log(f"track: {how} {analysis.n_frames} frame(s) (face on {int(analysis.valid.sum())}) and estimated "
            f"their input light in {time.perf_counter() - t:.1f} s -> {layout.analysis_file(out)}")
    for w in analysis.warnings:
        log(f"track: warning: {w}")
    clip.close()
    return 0


class ChunkLog:
    """Event sink of a Relight chunk: one plain line per frame written, warnings, the summary."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def __call__(self, event: dict) -> None:
        kind = event.get("event")
        if kind == "frame":
            files = ", ".join(os.path.basename(p) for p in event["files"].values())
            self.log(f"relight: frame {event['index']} written ({files})")
        elif kind == "warning":
            where = f"frame {event['frame']}: " if event.get("frame") is not None else ""
            self.log(f"relight: warning: {where}{event['message']}")


def run_chunk(req: dict, chunk: str, warmup: int, log: Log = _print) -> int:
    """A Relight task: render source frames `chunk` ('A-B', both included) of the shot, warmed up on the
    `warmup` frames before A (processed, not written). Returns 0, or 1 when cancelled."""
    from relight_core import pipeline

    a, b = farm.parse_openjd_range(chunk, "chunk")
    job = job_of(req, chunk=(a, b), warmup=warmup)
    first = job.frames[0] if job.frames else 0
    if job.frames and not (job.frames[0] <= a and (job.frames[1] < 0 or b <= job.frames[1])):
        raise UserError(f"Chunk {chunk} is outside the shot's frames {job.frames[0]}-{job.frames[1] - 1}.")
    log(f"relight: frames {a}-{b - 1} of {job.input} (shot frames from {first}; warm-up "
        f"{min(warmup, a - first)} frame(s) from {max(first, a - warmup)}) -> {job.output}")
    t = time.perf_counter()
    cancel = threading.Event()
    with _cancel_on_sigterm(cancel):  # the farm's cancel (NOTIFY_THEN_TERMINATE): stop between frames
        report = pipeline.run(job, on_event=ChunkLog(log), cancel=cancel)
    if report.get("cancelled") or report.get("totals", {}).get("cancelled"):
        log("relight: cancelled; the frames written so far are complete")
        return 1
    tot = report["totals"]
    log(f"relight: wrote {tot['written']} frame(s), {tot['skipped']} already done, in "
        f"{time.perf_counter() - t:.1f} s; report {pipeline.report_file(Path(report['output']), job)}")
    return 0


@contextlib.contextmanager
def _cancel_on_sigterm(cancel: threading.Event):
    """While active, SIGTERM sets `cancel` instead of killing the process (main thread only)."""
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def relit_frame_files(out: Path, stem: str, frames: tuple[int, int], fmt: str) -> list[Path]:
    """The colour file of every frame of the shot (rgba PNGs or the multilayer EXRs) in frame order."""
    from relight_core import outputs

    key = "exr" if fmt == "exr" else "rgba"
    return [outputs.frame_paths(out, stem, i, ("rgba",), fmt)[key] for i in range(*frames)]


def _read_colour(path: Path, fmt: str):
    """(H, W, 3) linear RGB of one relit frame, premultiplied by its alpha (transparent -> black)."""
    import numpy as np

    from relight_core import io

    if fmt == "exr":
        img = io.read_exr(path)
        return np.asarray(img[..., :3], dtype=np.float32)
    import cv2

    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise UserError(f"Relit frame {path} could not be read; rerun its Relight chunk.")
    rgb = io.decode_srgb8(cv2.cvtColor(raw[..., :3], cv2.COLOR_BGR2RGB))
    if raw.shape[2] == 4:
        rgb = rgb * (raw[..., 3:4].astype(np.float32) / 255.0)
    return rgb


def merge_chunk_reports(out: Path) -> Path | None:
    """Write OUT/.relight/report.json from the chunks' reports (frames in order, totals summed) -> its
    path."""
    from relight_core import layout
    from relight_core.outputs import write_json

    parts = []
    for p in sorted(layout.engine_dir(out).glob(CHUNK_REPORT_GLOB)):
        try:
            parts.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    if not parts:
        return None
    frames: dict[int, dict] = {}
    for part in parts:
        frames.update({int(f["index"]): f for f in part.get("frames", [])})
    merged = {k: v for k, v in parts[0].items() if k not in ("frames", "totals", "chunk")}
    merged["options"] = {k: v for k, v in merged.get("options", {}).items() if k != "chunk"}
    merged["chunks"] = [p.get("chunk") for p in parts]
    merged["frames"] = [frames[i] for i in sorted(frames)]
    merged["totals"] = {"frames": len(frames),
                        "written": sum(p.get("totals", {}).get("written", 0) for p in parts),
                        "seconds": round(sum(p.get("totals", {}).get("seconds", 0.0) for p in parts), 3)}
    path = layout.report_file(out)
    write_json(path, merged)
    return path


def run_encode(req: dict, log: Log = _print) -> int:
    """The Encode task: OUT/<stem>_relit.mp4 from the shot's relit frames (H.264), and
    OUT/.relight/report.json merged from the chunks' reports. A missing frame is an error naming it; an
    up-to-date movie is kept."""
    from relight_core import io

    job = job_of(req)
    footage = io.open_footage(job.input, frames=job.frames, size=job.size)
    out = Path(job.output).expanduser().resolve()
    frames = (footage.frame_indices[0], footage.frame_indices[-1] + 1)
    files = relit_frame_files(out, footage.name, frames, job.format)
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{len(missing)} relit frame(s) of {footage.name} are missing, the first "
                        f"{missing[0]}; rerun the Relight chunk that holds it.")
    movie = out / f"{footage.name}{MOVIE_SUFFIX}"
    report = merge_chunk_reports(out)
    if movie.is_file() and movie.stat().st_mtime >= max(f.stat().st_mtime for f in files):
        log(f"encode: {movie} is newer than every frame; nothing to do")
        return 0
    t = time.perf_counter()
    n = io.write_mp4(movie, (_read_colour(f, job.format) for f in files), float(footage.fps or 25.0))
    log(f"encode: {n} frame(s) at {footage.fps:g} fps in {time.perf_counter() - t:.1f} s -> {movie}"
        + (f"; report {report}" if report else ""))
    return 0


# --------------------------------------------------------------------------------------------- local run

@dataclasses.dataclass
class Task:
    """One task of a bundle: its step, the task parameters ({} or {"Frame": "8-15"}) and the steps it
    waits for."""

    step: str
    params: dict[str, str]
    depends: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.step + "".join(f" {k}={v}" for k, v in self.params.items())

    @property
    def log_name(self) -> str:
        return farm.safe_name(self.label.replace("=", "_").replace(" ", "_")) + ".log"


def openjd_command() -> list[str]:
    """The `openjd` command line interface (openjd-cli) next to this Python, or on PATH."""
    here = Path(sys.executable).with_name("openjd")
    if here.is_file():
        return [str(here)]
    found = shutil.which("openjd")
    if found:
        return [found]
    raise UserError("The OpenJD runtime is not installed; install it with `pip install openjd-cli`.")


def bundle_parameters(bundle: Path) -> dict[str, str]:
    """The bundle's job parameter values (job_parameters.json)."""
    path = bundle / farm.PARAMETERS_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path} is missing or unreadable; write the bundle again with farm-job.") from None


def plan_tasks(bundle: Path, values: dict[str, str]) -> list[Task]:
    """Every task of the bundle's job, in step order, as the OpenJD model expands it (chunks included)."""
    import yaml
    from openjd.model import (
        StepParameterSpaceIterator,
        create_job,
        decode_job_template,
        preprocess_job_parameters,
    )

    path = bundle / farm.TEMPLATE_NAME
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        template = decode_job_template(template=doc, supported_extensions=["TASK_CHUNKING"])
        params = preprocess_job_parameters(job_template=template, job_parameter_values=values,
                                           job_template_dir=bundle, current_working_dir=Path.cwd())
        job = create_job(job_template=template, job_parameter_values=params)
    except OSError:
        raise UserError(f"{path} does not exist; write the bundle with farm-job first.") from None
    except Exception as exc:  # noqa: BLE001 - the model's validation errors are user errors here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is not a valid job with its parameters: {first}") from None
    tasks = []
    for step in job.steps:
        deps = tuple(d.dependsOn for d in (step.dependencies or []))
        for params in StepParameterSpaceIterator(space=step.parameterSpace):
            tasks.append(Task(step.name, {k: str(v.value) for k, v in params.items()}, deps))
    return tasks


def _run_task(task: Task, bundle: Path, logs: Path, cancel: threading.Event) -> tuple[int, float]:
    """Run one task with `openjd run` (its own session) -> (exit status, seconds); output to its log."""
    cmd = [*openjd_command(), "run", str(bundle / farm.TEMPLATE_NAME), "--step", task.step,
           "-p", f"file://{bundle / farm.PARAMETERS_JSON}", "--no-run-dependencies"]
    for k, v in task.params.items():
        cmd += ["--task-param", f"{k}={v}"]
    t = time.perf_counter()
    with open(logs / task.log_name, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(bundle))
        while proc.poll() is None:
            if cancel.wait(0.2):
                proc.terminate()
        return proc.wait(), time.perf_counter() - t


def rerun_command(bundle: Path, task: Task) -> str:
    """The command that runs `task` alone (after its dependencies are done)."""
    import shlex

    parts = ["openjd", "run", str(bundle / farm.TEMPLATE_NAME), "--step", task.step,
             "-p", f"file://{bundle / farm.PARAMETERS_JSON}"]
    for k, v in task.params.items():
        parts += ["--task-param", f"{k}={v}"]
    return " ".join(shlex.quote(p) for p in parts)


def run_bundle(bundle: str | Path, workers: int = 2, log: Log = _print) -> int:
    """Run every task of a bundle on this machine with the OpenJD runtime, each in its own `openjd run`
    session, up to `workers` at a time; a task starts when every step it depends on has finished.
    Logs go to BUNDLE/logs/. Returns 0 when all tasks succeeded, else 1 (the failed tasks are listed
    with the command that reruns each alone; tasks that depend on them are not started)."""
    bundle = Path(bundle).expanduser().resolve()
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1.")
    tasks = plan_tasks(bundle, bundle_parameters(bundle))
    logs = bundle / LOGS_DIR
    logs.mkdir(exist_ok=True)
    remaining = {step: sum(t.step == step for t in tasks) for step in {t.step for t in tasks}}
    failed_steps: set[str] = set()
    pending = list(tasks)
    running: dict[Future, Task] = {}
    failures: list[Task] = []
    cancel = threading.Event()
    done_count = 0
    log(f"farm: {len(tasks)} task(s) in {len(remaining)} step(s), {workers} at a time; logs in {logs}")

    def blocked(task: Task) -> bool:
        return any(d in failed_steps for d in task.depends)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            while pending or running:
                for task in [t for t in pending if blocked(t)]:
                    pending.remove(task)
                    failed_steps.add(task.step)
                    log(f"farm: skipped {task.label}: a step it depends on failed")
                ready = [t for t in pending if all(remaining.get(d, 0) == 0 for d in t.depends)]
                for task in ready[:max(0, workers - len(running))]:
                    pending.remove(task)
                    log(f"farm: started {task.label}")
                    running[pool.submit(_run_task, task, bundle, logs, cancel)] = task
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    task = running.pop(fut)
                    rc, seconds = fut.result()
                    done_count += 1
                    if rc == 0:
                        remaining[task.step] -= 1
                        log(f"farm: [{done_count}/{len(tasks)}] {task.label}: done in {seconds:.1f} s")
                    else:
                        failed_steps.add(task.step)
                        failures.append(task)
                        log(f"farm: [{done_count}/{len(tasks)}] {task.label}: FAILED (exit {rc}); log "
                            f"{logs / task.log_name}")
        except KeyboardInterrupt:
            cancel.set()
            raise
    if failures:
        log(f"farm: {len(failures)} task(s) failed; rerun one alone with:")
        for task in failures:
            log(f"  {rerun_command(bundle, task)}")
        return 1
    log(f"farm: all {len(tasks)} task(s) done")
    return 0
