"""Run the engine worker (`<python> -m relight_core worker`) as a subprocess and read its JSON events.

No bpy here: the Blender operators (modal and synchronous) and the tests drive the same `WorkerJob`.
Two daemon threads read stdout (JSON-lines events) and stderr (log lines) into a queue, so polling from
a Blender timer never blocks. Cancelling sends `{"cmd": "cancel"}` on stdin; if the worker has not
exited after a grace period it is terminated (SIGTERM, which the worker also treats as cancel), then
killed. Protocol: see the "Worker protocol" section of the project's contracts.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

CANCEL_GRACE_S = 5.0
TERMINATE_GRACE_S = 3.0
FINAL_EVENTS = ("done", "cancelled", "error")


@dataclass
class JobState:
    """What the add-on knows about a running or finished worker job.

    `frames` maps source frame index -> {pass name: file path} for every finished frame.
    """

    total: int = 0
    done: int = 0
    stage: str = ""
    output: str = ""
    report: str = ""
    frames: dict[int, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str = ""
    finished: str = ""  # "", "done", "cancelled", "error"
    returncode: int | None = None

    @property
    def fraction(self) -> float:
        """Progress in [0, 1] (relight stage counts; the analysis stage is shown as the first half)."""
        if self.total <= 0:
            return 0.0
        f = min(1.0, self.done / self.total)
        return 0.5 * f if self.stage == "analyze" else (0.5 + 0.5 * f if self.stage == "relight" else f)


def engine_command(python: str) -> list[str]:
    """The worker command line for an engine Python executable path."""
    return [python, "-m", "relight_core", "worker"]


def _clean_env() -> dict[str, str]:
    """Environment for the engine: Blender's own Python settings must not leak into the engine's."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_engine(python: str, timeout: float = 120.0) -> tuple[bool, str]:
    """Run `<python> -m relight_core --version`; returns (ok, one-line message)."""
    if not python:
        return False, "No engine Python is set; set it in the add-on preferences."
    if not Path(python).exists():
        return False, f"Engine Python {python} does not exist; run tools/setup.sh or fix the preference."
    try:
        res = subprocess.run([python, "-m", "relight_core", "--version"], capture_output=True, text=True,
                             timeout=timeout, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Engine Python {python} could not run: {exc}"
    out = (res.stdout.strip() or res.stderr.strip()).splitlines()
    line = out[-1] if out else ""
    if res.returncode != 0:
        return False, f"{python} has no working relight_core ({line or 'exit ' + str(res.returncode)})."
    return True, f"{line} ({python})"


class WorkerJob:
    """One worker process for one request. Call `poll()` often (non-blocking) or `wait()` (blocking)."""

    def __init__(self, python: str, request: dict, cwd: str | None = None):
        self.request = request
        self.state = JobState(output=str(request.get("output", "")))
        self._events: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._cancel_sent_at: float | None = None
        self._terminated_at: float | None = None
        self._stdout_closed = threading.Event()
        try:
            self.proc = subprocess.Popen(
                engine_command(python), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1, cwd=cwd, env=_clean_env())
        except OSError as exc:
            raise RuntimeError(f"Could not start the engine with {python}: {exc}; check the engine "
                               "Python in the add-on preferences.") from exc
        self._send(json.dumps(request))
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ threads
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self.stderr_tail.append(line)
                continue
            if isinstance(event, dict) and "event" in event:
                self._events.put(event)
        self._stdout_closed.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.strip():
                self.stderr_tail.append(line.rstrip())

    def _send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the worker already exited; its exit status tells the rest

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        """True while the worker process is alive."""
        return self.proc.poll() is None

    @property
    def finished(self) -> bool:
        """True once the process has exited and every event it wrote has been handled."""
        return (not self.running and self._stdout_closed.is_set() and self._events.empty()
                and bool(self.state.finished))

    def cancel(self) -> None:
        """Ask the worker to stop after the current frame (finished frames stay valid)."""
        if self._cancel_sent_at is None and self.running:
            self._send(json.dumps({"cmd": "cancel"}))
            self._cancel_sent_at = time.monotonic()

    @property
    def cancelling(self) -> bool:
        """True once `cancel()` was called."""
        return self._cancel_sent_at is not None

    def _escalate(self) -> None:
        """Terminate, then kill, a worker that ignores the cancel request."""
        now = time.monotonic()
        if self._cancel_sent_at is None or not self.running:
            return
        if self._terminated_at is None and now - self._cancel_sent_at > CANCEL_GRACE_S:
            self.proc.terminate()
            self._terminated_at = now
        elif self._terminated_at is not None and now - self._terminated_at > TERMINATE_GRACE_S:
            self.proc.kill()

    def kill(self) -> None:
        """Stop the worker now (used when the add-on is unregistered or Blender quits)."""
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._finish_state()

    def poll(self) -> list[dict]:
        """Handle all events that have arrived (never blocks); returns them."""
        self._escalate()
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._apply(event)
            events.append(event)
        if not self.running and self._stdout_closed.is_set() and self._events.empty():
            self._finish_state()
        return events

    def wait(self, timeout: float | None = None, on_event=None,
             cancel_after_frames: int | None = None) -> JobState:
        """Block until the job ends (or `timeout` s pass, then cancel); `on_event(event)` sees each event.

        `cancel_after_frames`: send cancel once that many frames are finished (tests, previews).
        """
        start = time.monotonic()
        while not self.finished:
            try:
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                event = None
            if event is not None:
                self._apply(event)
                if on_event is not None:
                    on_event(event)
            if cancel_after_frames is not None and len(self.state.frames) >= cancel_after_frames:
                self.cancel()
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
            self._escalate()
            if not self.running and self._stdout_closed.is_set() and self._events.empty():
                self._finish_state()
        for t in self._threads:
            t.join(timeout=1.0)
        return self.state

    # ------------------------------------------------------------------ state
    def _apply(self, event: dict) -> None:
        s = self.state
        kind = event.get("event")
        if kind == "started":
            s.total = int(event.get("frames") or 0)
            s.output = str(event.get("output") or s.output)
        elif kind == "progress":
            s.stage = str(event.get("stage", ""))
            s.done = int(event.get("done") or 0)
            s.total = int(event.get("total") or s.total)
        elif kind == "warning":
            frame = event.get("frame")
            msg = str(event.get("message", ""))
            s.warnings.append(msg if frame is None else f"frame {frame}: {msg}")
        elif kind == "frame":
            s.frames[int(event["index"])] = {k: str(v) for k, v in (event.get("files") or {}).items()}
        elif kind == "done":
            s.finished = "done"
            s.output = str(event.get("output") or s.output)
            s.report = str(event.get("report") or "")
        elif kind == "cancelled":
            s.finished = "cancelled"
        elif kind == "error":
            s.finished = "error"
            s.error = str(event.get("message") or "the engine reported an error")

    def _finish_state(self) -> None:
        s = self.state
        s.returncode = self.proc.poll()
        if s.finished:
            return
        if self.cancelling:
            s.finished = "cancelled"
            return
        s.finished = "error"
        tail = " | ".join(list(self.stderr_tail)[-3:])
        s.error = (f"The engine stopped unexpectedly (exit {s.returncode})" + (f": {tail}" if tail else "")
                   + "; see the system console for its log.")


def default_engine_python(repo: Path | None) -> str:
    """The engine Python to use when the preference is empty: $RELIGHT_ENGINE_PYTHON, else the repository's
    `.venv` (what tools/setup.sh creates), else ''."""
    env = os.environ.get("RELIGHT_ENGINE_PYTHON", "")
    if env:
        return env
    if repo is not None:
        exe = repo / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        if exe.exists():
            return str(exe)
    return ""
