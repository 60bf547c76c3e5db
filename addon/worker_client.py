"""Run the engine worker as a subprocess and read its JSON events.

No bpy here: the Blender operators (modal and synchronous) and the tests drive the same `WorkerJob`.
An `Engine` says how to start the engine: a Python executable plus, optionally, a folder put first on
its `sys.path` (the extension's installed wheels, or this source checkout). The worker is started with
`-I` (no PYTHONPATH, no user site-packages, not the current directory) through `engine_boot.py`, from a
fixed working directory, in its own process group. Two daemon threads read stdout (JSON-lines events, as
bytes: a line that is not UTF-8 or not a well-formed event ends the job with one error) and stderr (log
lines) into a queue, so polling from a Blender timer never blocks. Cancelling sends `{"cmd": "cancel"}`
on stdin; if the worker has not exited after a grace period its whole process group is terminated
(SIGTERM, which the worker also treats as cancel), then killed. A worker silent for `IDLE_TIMEOUT_S`
is stopped the same way, so the synchronous (farm/background) path cannot hang. Protocol: see the
"Worker protocol" section of the project's contracts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CANCEL_GRACE_S = 5.0
TERMINATE_GRACE_S = 3.0
IDLE_TIMEOUT_S = 900.0  # no event and no log line for this long: the engine is stuck
MAX_WARNINGS = 100  # warnings kept per job; later ones are only counted
MAX_LINE_BYTES = 1 << 20  # one event line; longer is a broken engine
MAX_TEXT = 500  # characters kept of one message
FINAL_EVENTS = ("done", "cancelled", "error")
BOOT = Path(__file__).resolve().with_name("engine_boot.py")


@dataclass(frozen=True)
class Engine:
    """How to start the engine.

    python: the interpreter. path: a folder put first on the engine's sys.path ('' for none): the
    extension's installed wheels ("bundled", with Blender's own Python) or a source checkout
    ("checkout"); an "external" environment has relight_core installed itself.
    """

    python: str
    path: str = ""
    kind: str = "external"

    def __bool__(self) -> bool:
        return bool(self.python)

    def __str__(self) -> str:
        return self.python

    def command(self, *args: str) -> list[str]:
        """The command line running `relight_core <args>` with this engine, isolated (-I)."""
        return [self.python, "-I", "-u", str(BOOT), self.path, *args]

    def describe(self) -> str:
        """Which engine this is, in words."""
        if self.kind == "bundled":
            return f"the extension's bundled engine with Blender's Python ({self.python})"
        if self.kind == "checkout":
            return f"the source checkout {self.path} with {self.python}"
        return f"the external environment {self.python}"


def as_engine(engine: Engine | str) -> Engine:
    """An `Engine` for an `Engine` or a bare Python path (an external environment)."""
    return engine if isinstance(engine, Engine) else Engine(str(engine or ""))


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
    warnings_dropped: int = 0  # warnings beyond MAX_WARNINGS, counted only
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


def engine_command(engine: Engine | str) -> list[str]:
    """The worker command line for an engine (or an engine Python executable path)."""
    return as_engine(engine).command("worker")


def _clean_env() -> dict[str, str]:
    """Environment for the engine: Blender's own Python settings must not leak into the engine's."""
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONSAFEPATH"):
        env.pop(key, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def engine_cwd() -> str:
    """The fixed working directory of every engine process (never Blender's own)."""
    return tempfile.gettempdir()


def _popen_group() -> dict:
    """Popen arguments that give the engine its own process group (so a wrapper's children die too)."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    return {"start_new_session": True}


def start_engine(engine: Engine | str, *args: str, cwd: str | None = None) -> subprocess.Popen:
    """Start `relight_core <args>` (e.g. "worker", "serve") isolated: -I, a fixed working directory, a clean
    environment, its own process group; stdin/stdout/stderr are binary pipes. OSError when it cannot start."""
    pipe = subprocess.PIPE
    return subprocess.Popen(as_engine(engine).command(*args), stdin=pipe, stdout=pipe, stderr=pipe,
                            cwd=cwd or engine_cwd(), env=_clean_env(), **_popen_group())


def signal_group(proc: subprocess.Popen, kill: bool) -> None:
    """SIGTERM (or SIGKILL) an engine's whole process group (`start_engine`): a wrapper script's children
    too."""
    if os.name == "nt":
        args = ["taskkill", "/T", "/PID", str(proc.pid)] + (["/F"] if kill else [])
        subprocess.run(args, capture_output=True, check=False)
        if kill and proc.poll() is None:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is gone already


def check_engine(engine: Engine | str, timeout: float = 120.0) -> tuple[bool, str]:
    """Run the engine's `relight_core --version`; returns (ok, one line: which engine and its version)."""
    engine = as_engine(engine)
    if not engine:
        return False, ("No engine found: install the extension zip for your platform, or set Engine Python "
                       "in the add-on preferences.")
    python = engine.python
    if not Path(python).exists():
        return False, f"Engine Python {python} does not exist; fix the Engine Python preference."
    try:
        res = subprocess.run(engine.command("--version"), capture_output=True, timeout=timeout,
                             env=_clean_env(), cwd=engine_cwd(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"Engine Python {python} could not run: {exc}"
    lines = (res.stdout.decode("utf-8", "replace").strip() or res.stderr.decode("utf-8", "replace").strip()
             ).splitlines()
    line = lines[-1][:MAX_TEXT] if lines else ""
    if res.returncode != 0:
        return False, (f"{engine.describe()} has no working relight_core "
                       f"({line or 'exit ' + str(res.returncode)}).")
    return True, f"{line}: {engine.describe()}"


def _short(text: str) -> str:
    """A message cut to MAX_TEXT characters."""
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


class MalformedEvent(ValueError):
    """The engine wrote something on stdout that is not a well-formed JSON-lines event."""


def parse_event(raw: bytes) -> dict | None:
    """One stdout line (bytes) -> event dict, None for a blank line; MalformedEvent otherwise."""
    if len(raw) >= MAX_LINE_BYTES and not raw.endswith(b"\n"):
        raise MalformedEvent(f"a line longer than {MAX_LINE_BYTES // 1024} KB")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MalformedEvent("bytes that are not UTF-8 text") from None
    if not text:
        return None
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedEvent(f"{_short(text)[:80]!r}, which is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise MalformedEvent(f"{_short(text)[:80]!r}, which is not an event object")
    return event


def pump_events(stream, put: Callable[[dict], None], malformed: str,
                on_line: Callable[[], None] | None = None) -> None:
    """Read an engine's JSON-lines events from `stream` (binary) into put() until it ends; a line that is
    not an event puts one {"event": malformed, "message"} and stops (nothing after a broken line can be
    trusted; the caller stops the engine). on_line() runs for every line read (liveness)."""
    try:
        for raw in iter(lambda: stream.readline(MAX_LINE_BYTES), b""):
            if on_line is not None:
                on_line()
            try:
                event = parse_event(raw)
            except MalformedEvent as exc:
                put({"event": malformed, "message": str(exc)})
                break
            if event is not None:
                put(event)
    except (OSError, ValueError):
        pass  # the pipe was closed under us; the exit status tells the rest


class WorkerJob:
    """One worker process for one request. Call `poll()` often (non-blocking) or `wait()` (blocking).

    `idle_timeout`: seconds without any output (event or log line) after which the engine is stopped
    and the job ends with an error (default IDLE_TIMEOUT_S).
    """

    def __init__(self, engine: Engine | str, request: dict, cwd: str | None = None,
                 idle_timeout: float | None = None):
        self.engine = as_engine(engine)
        self.request = request
        self.state = JobState(output=str(request.get("output", "")))
        self.idle_timeout = IDLE_TIMEOUT_S if idle_timeout is None else idle_timeout
        self._events: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._cancel_sent_at: float | None = None
        self._terminated_at: float | None = None
        self._group_reaped = False
        self._last_output = time.monotonic()
        self._stdout_closed = threading.Event()
        try:
            self.proc = start_engine(self.engine, "worker", cwd=cwd)
        except OSError as exc:
            raise RuntimeError(f"Could not start the engine with {self.engine.python}: {exc}; check the "
                               "Engine Python in the add-on preferences.") from exc
        self._send(json.dumps(request))
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------------ threads
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            pump_events(self.proc.stdout, self._events.put, "_malformed", on_line=self._heard)
        finally:
            self._stdout_closed.set()

    def _heard(self) -> None:
        self._last_output = time.monotonic()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in iter(lambda: self.proc.stderr.readline(MAX_LINE_BYTES), b""):
                self._last_output = time.monotonic()
                line = raw.decode("utf-8", "replace").rstrip()
                if line.strip():
                    self.stderr_tail.append(_short(line))
        except (OSError, ValueError):
            pass

    def _send(self, line: str) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((line + "\n").encode("utf-8"))
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

    def _signal_group(self, kill: bool) -> None:
        signal_group(self.proc, kill)

    def _stop(self) -> None:
        """Terminate the process group now; `_escalate` kills it after TERMINATE_GRACE_S."""
        if self._terminated_at is None:
            self._signal_group(kill=False)
            self._terminated_at = time.monotonic()

    def _escalate(self) -> None:
        """Terminate, then kill, a worker that ignores the cancel request (or was stopped)."""
        now = time.monotonic()
        if not self.running:
            if self._terminated_at is not None and not self._group_reaped:
                self._group_reaped = True
                self._signal_group(kill=True)  # leftovers of a wrapper whose leader already exited
            return
        if self._terminated_at is None and self._cancel_sent_at is not None \
                and now - self._cancel_sent_at > CANCEL_GRACE_S:
            self._stop()
        elif self._terminated_at is not None and now - self._terminated_at > TERMINATE_GRACE_S:
            self._signal_group(kill=True)

    def _check_idle(self) -> None:
        """End a job whose engine has said nothing for `idle_timeout` seconds."""
        if self.state.finished or not self.running or self._terminated_at is not None:
            return
        if time.monotonic() - self._last_output > self.idle_timeout:
            self._fail(f"The engine sent nothing for {self.idle_timeout:.0f} s and was stopped; see the "
                       "system console for its log.")

    def _fail(self, message: str) -> None:
        """End the job with an error now and stop the engine's process group."""
        s = self.state
        if not s.finished:
            s.finished, s.error = "error", message
        self._stop()

    def kill(self) -> None:
        """Stop the worker now (used when the add-on is unregistered or Blender quits)."""
        if self.running:
            self._stop()
            try:
                self.proc.wait(TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(kill=True)
            self.proc.wait()
        self._finish_state()

    def _handle(self, event: dict) -> None:
        """Apply one event; a malformed one ends the job with one error."""
        try:
            self._apply(event)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            self._fail(self._malformed_message(f"a {_short(str(event.get('event')))[:40]!r} event with "
                                               "fields of the wrong type"))

    @staticmethod
    def _malformed_message(what: str) -> str:
        return (f"The engine sent {what} instead of a worker event; the run was stopped. Check Engine in "
                "the add-on preferences, and see the system console for its log.")

    def poll(self) -> list[dict]:
        """Handle all events that have arrived (never blocks); returns them."""
        self._escalate()
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._handle(event)
            events.append(event)
        self._check_idle()
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
                self._handle(event)
                if on_event is not None:
                    on_event(event)
            if cancel_after_frames is not None and len(self.state.frames) >= cancel_after_frames:
                self.cancel()
            if timeout is not None and time.monotonic() - start > timeout:
                self.cancel()
            self._escalate()
            self._check_idle()
            if not self.running and self._stdout_closed.is_set() and self._events.empty():
                self._finish_state()
        for t in self._threads:
            t.join(timeout=1.0)
        return self.state

    # ------------------------------------------------------------------ state
    def _apply(self, event: dict) -> None:
        s = self.state
        kind = event.get("event")
        if s.finished:
            return  # nothing changes a finished job (e.g. lines after an error)
        if kind == "_malformed":
            self._fail(self._malformed_message(str(event.get("message"))))
        elif kind == "started":
            s.total = int(event.get("frames") or 0)
            s.output = str(event.get("output") or s.output)
        elif kind == "progress":
            s.stage = str(event.get("stage", ""))
            s.done = int(event.get("done") or 0)
            s.total = int(event.get("total") or s.total)
        elif kind == "warning":
            if len(s.warnings) >= MAX_WARNINGS:
                s.warnings_dropped += 1
                return
            frame = event.get("frame")
            msg = _short(str(event.get("message", "")))
            s.warnings.append(msg if frame is None else f"frame {int(frame)}: {msg}")
        elif kind == "frame":
            files = event.get("files") or {}
            if not isinstance(files, dict):
                raise TypeError("files")
            s.frames[int(event["index"])] = {str(k): str(v) for k, v in files.items()}
        elif kind == "done":
            s.finished = "done"
            s.output = str(event.get("output") or s.output)
            s.report = str(event.get("report") or "")
        elif kind == "cancelled":
            s.finished = "cancelled"
        elif kind == "error":
            s.finished = "error"
            s.error = _short(str(event.get("message") or "the engine reported an error"))

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


def default_engine(repo: Path | None = None, wheels: Path | None = None, blender_python: str = "") -> Engine:
    """The engine to use when the Engine Python preference is empty, first found of:

    $RELIGHT_ENGINE_PYTHON (with `repo` first on its path when the add-on runs from a checkout);
    Blender's own Python (`blender_python`) with the extension's installed wheels (`wheels`, the
    site-packages folder holding the bundled relight_core); the checkout's `.venv` (tools/setup.sh);
    else an empty Engine (nothing found).
    """
    env = os.environ.get("RELIGHT_ENGINE_PYTHON", "")
    if env:
        return chosen_engine(env, repo)
    if wheels is not None and blender_python:
        return Engine(blender_python, str(wheels), "bundled")
    if repo is not None:
        exe = repo / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
        if exe.exists():
            return Engine(str(exe), str(repo), "checkout")
    return Engine("")


def chosen_engine(python: str, repo: Path | None = None) -> Engine:
    """An engine Python the user chose: run with this checkout's code when the add-on runs from one."""
    return Engine(python, str(repo), "checkout") if repo is not None else Engine(python)


def default_engine_python(repo: Path | None) -> str:
    """The engine Python executable `default_engine` finds without an installed extension ('' if none)."""
    return default_engine(repo).python
