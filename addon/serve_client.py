"""Talk to a live engine session (`relight_core serve`) without ever waiting on it.

No bpy here: the Live Preview (live_preview.py) and the tests drive the same `ServeClient`. The engine
starts as the worker does (`worker_client.start_engine`: isolated, its own process group) with `serve`
for `worker`, and its stdout lines are read as the worker's are (`worker_client.parse_event`). Requests go
out through a writer thread and replies come in through a reader thread, both via queues, so `send()` and
`poll()` return at once even when the engine is busy or its pipe is full. Closing sends `quit` and lets a
daemon thread terminate, then kill, an engine (process group) that does not exit. Protocol: README,
"Live session protocol".
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections import deque

from .worker_client import (
    MAX_LINE_BYTES,
    MAX_TEXT,
    Engine,
    as_engine,
    pump_events,
    signal_group,
    start_engine,
)

QUIT_GRACE_S = 10.0  # a serve process takes ~2 s to exit after renders (library teardown)
TERMINATE_GRACE_S = 2.0
# Requests that carry an id (the engine echoes it in its replies); cancel, close and quit carry none.
ID_COMMANDS = ("open", "render")
MALFORMED = "_malformed"  # the event the reader puts when the engine's output cannot be trusted


class ServeClient:
    """One `serve` process. `send()` queues a request, `poll()` returns the events that have arrived."""

    def __init__(self, engine: Engine | str):
        self.engine = as_engine(engine)
        self._events: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._next_id = 0
        self._closing = False
        self._stdout_closed = threading.Event()
        try:
            self.proc = start_engine(self.engine, "serve")
        except OSError as exc:
            raise RuntimeError(f"Could not start the engine with {self.engine.python}: {exc}; check the "
                               "Engine Python in the add-on preferences.") from exc
        for target in (self._read_stdout, self._read_stderr, self._write_stdin):
            threading.Thread(target=target, daemon=True).start()

    # ------------------------------------------------------------------ threads
    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            pump_events(self.proc.stdout, self._events.put, MALFORMED)
        finally:
            self._stdout_closed.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in iter(lambda: self.proc.stderr.readline(MAX_LINE_BYTES), b""):
                line = raw.decode("utf-8", "replace").rstrip()
                if line.strip():
                    self.stderr_tail.append(line[:MAX_TEXT])
        except (OSError, ValueError):
            pass

    def _write_stdin(self) -> None:
        assert self.proc.stdin is not None
        while True:
            line = self._outbox.get()
            try:
                if line is None:
                    self.proc.stdin.close()
                    return
                self.proc.stdin.write((line + "\n").encode("utf-8"))
                self.proc.stdin.flush()
            except (OSError, ValueError):
                return  # the engine has exited; its exit status tells the rest

    # ------------------------------------------------------------------ requests
    def send(self, cmd: str, **fields) -> int:
        """Queue `{"cmd": cmd, "id": n, **fields}` (no id for cancel/close/quit); returns the id (0: none)."""
        msg: dict = {"cmd": cmd}
        rid = 0
        if cmd in ID_COMMANDS:
            self._next_id += 1
            rid = msg["id"] = self._next_id
        msg.update(fields)
        if not self._closing:
            self._outbox.put(json.dumps(msg))
        return rid

    def poll(self) -> list[dict]:
        """The events that have arrived since the last call, in order (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    @property
    def running(self) -> bool:
        """True while the engine process is alive."""
        return self.proc.poll() is None

    @property
    def ended(self) -> bool:
        """True once the process has exited and all its events were returned by `poll()`."""
        return not self.running and self._stdout_closed.is_set() and self._events.empty()

    @property
    def closing(self) -> bool:
        """True once `close()` was called."""
        return self._closing

    def crash_message(self) -> str:
        """One sentence on an engine that exited on its own (the last log lines, the exit status)."""
        tail = " | ".join(list(self.stderr_tail)[-3:])
        return (f"The live engine stopped unexpectedly (exit {self.proc.poll()})"
                + (f": {tail}" if tail else "") + "; switch Live Preview on to restart it.")

    def close(self) -> None:
        """Ask the engine to quit; a daemon thread terminates, then kills, one that stays (non-blocking)."""
        if self._closing:
            return
        self.send("quit")
        self._closing = True
        self._outbox.put(None)
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        try:
            self.proc.wait(QUIT_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            signal_group(self.proc, kill=False)
        try:
            self.proc.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        signal_group(self.proc, kill=True)  # also what is left of a wrapper whose leader exited

    def terminate(self) -> None:
        """Stop the engine now without waiting (Blender is quitting)."""
        self._closing = True
        signal_group(self.proc, kill=False)
