"""Talk to a live engine session (`<python> -m relight_core serve`) without ever waiting on it.

No bpy here: the Live Preview (live_preview.py) and the tests drive the same `ServeClient`. The command
line is the worker's (`worker_client.engine_command`) with `serve` in place of `worker`. Requests go out
through a writer thread and replies come in through a reader thread, both via queues, so `send()` and
`poll()` return at once even when the engine is busy or its pipe is full. Closing sends `quit` and lets
a daemon thread terminate, then kill, an engine that does not exit. Protocol: README, "Live session
protocol".
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections import deque

from .worker_client import _clean_env, engine_command

QUIT_GRACE_S = 10.0  # a serve process takes ~2 s to exit after renders (library teardown)
TERMINATE_GRACE_S = 2.0
# Requests that carry an id (the engine echoes it in its replies); cancel, close and quit carry none.
ID_COMMANDS = ("open", "render")


def serve_command(python: str) -> list[str]:
    """The `serve` command line for an engine Python: the worker's command with `serve` for `worker`."""
    cmd = list(engine_command(python))
    if "worker" not in cmd:
        raise RuntimeError(f"The engine command line {cmd} names no 'worker' sub-command to replace.")
    cmd[len(cmd) - 1 - cmd[::-1].index("worker")] = "serve"
    return cmd


class ServeClient:
    """One `serve` process. `send()` queues a request, `poll()` returns the events that have arrived."""

    def __init__(self, python: str, cwd: str | None = None):
        self._events: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self._next_id = 0
        self._closing = False
        self._stdout_closed = threading.Event()
        try:
            self.proc = subprocess.Popen(
                serve_command(python), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1, cwd=cwd, env=_clean_env())
        except OSError as exc:
            raise RuntimeError(f"Could not start the engine with {python}: {exc}; check the engine "
                               "Python in the add-on preferences.") from exc
        for target in (self._read_stdout, self._read_stderr, self._write_stdin):
            threading.Thread(target=target, daemon=True).start()

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

    def _write_stdin(self) -> None:
        assert self.proc.stdin is not None
        while True:
            line = self._outbox.get()
            try:
                if line is None:
                    self.proc.stdin.close()
                    return
                self.proc.stdin.write(line + "\n")
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
        for stop, grace in ((None, QUIT_GRACE_S), (self.proc.terminate, TERMINATE_GRACE_S),
                            (self.proc.kill, None)):
            if stop is not None:
                try:
                    stop()
                except OSError:
                    return
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def terminate(self) -> None:
        """Stop the engine now without waiting (Blender is quitting)."""
        self._closing = True
        if self.running:
            self.proc.terminate()
