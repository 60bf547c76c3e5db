"""`relight-core serve`: a long-lived engine session for live preview, speaking JSON lines.

Protocol (README, "Live session protocol"): one JSON object per stdin line, with a `cmd`; events are JSON
lines on stdout (flushed per line); everything else goes to stderr. Every event about a request carries
its `id` (any JSON value the client chose; null when it gave none).

- `open` {input, frames: [first, last_exclusive] | null, size: N | null, fov: degrees | null,
  cache: folder | null}: opens a clip (closing one that was open): tracks it once, or loads the analysis
  kept in `cache` (the folder a relight of that clip writes to; the analysis and input-light track are
  shared with it), then estimates the input light over the clip. Events: `progress` (stage analyze |
  light, done, total), then `opened` (frames, first, fps, width, height, cached).
- `render` {frame: source frame index, lighting (as the worker's), light_space, intensity, view: "input"
  | {yaw, pitch, roll} | {fov_deg, cam2head}, size, passes, background, output: PNG path}: relights one
  frame -> `rendered` (frame, files: {pass: path}, ms: per stage and total, cached). With several passes
  each file gets its pass name before the extension (preview.albedo.png). Files are written atomically.
- `cancel`: stops an `open` in progress (-> `cancelled`) and drops pending renders.
- `close`: forgets the clip (-> `closed`); `quit`: exits with status 0 (so does the end of stdin).

Renders that arrive while one is being rendered replace older pending ones (latest wins; each one
replaced gets a `dropped` event), so a light being dragged never builds a queue. A bad request gets one
`error` event (message: one sentence) and the session stays usable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from typing import Any

from relight_core.commands import event_stream

NAME = "serve"
HELP = "Keep a clip open and relight single frames on request (JSON lines on stdin/stdout), for live preview."

MAX_LINE = 1 << 22  # a request longer than this (4 MiB) is refused without being parsed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`serve` takes no options: requests come on stdin."""


class Inbox:
    """Requests read from stdin by a thread: control commands in order, renders latest-wins.

    `cancel` is also acted on at once (it sets `cancel_event`), since the main thread may be busy tracking.
    """

    def __init__(self, emit) -> None:
        self.emit = emit
        self.cond = threading.Condition()
        self.controls: deque[dict] = deque()
        self.render: dict | None = None
        self.closed = False
        self.cancel_event = threading.Event()

    def put(self, req: dict) -> None:
        with self.cond:
            cmd = req.get("cmd")
            if cmd == "render":
                if self.render is not None:
                    self.emit({"event": "dropped", "id": self.render.get("id")})
                self.render = req
            else:
                if cmd in ("cancel", "quit"):
                    self.cancel_event.set()
                    if self.render is not None:
                        self.emit({"event": "dropped", "id": self.render.get("id")})
                        self.render = None
                self.controls.append(req)
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()

    def take(self) -> dict | None:
        """The next request to handle (controls first), waiting for one; None once stdin has ended."""
        with self.cond:
            while not self.controls and self.render is None:
                if self.closed:
                    return None
                self.cond.wait()
            if self.controls:
                return self.controls.popleft()
            req, self.render = self.render, None
            return req


def read_requests(stream, inbox: Inbox) -> None:
    """Parse stdin lines into the inbox; a line that is not a JSON object gets one error event."""
    try:
        for raw in stream:
            line = raw.strip()
            if not line:
                continue
            req = _parse(line)
            if isinstance(req, str):
                inbox.emit({"event": "error", "id": None, "message": req})
            else:
                inbox.put(req)
    except (OSError, ValueError):
        pass
    finally:
        inbox.close()


def _parse(line: str) -> dict | str:
    """One request line -> the request dict, or the sentence that says why it is not one."""
    if len(line) > MAX_LINE:
        return f"A request line is longer than {MAX_LINE} bytes; send smaller requests."
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        return "A request line is not valid JSON; send one JSON object per line."
    if not isinstance(req, dict):
        return "A request must be a JSON object with a \"cmd\"."
    if req.get("cmd") not in ("open", "render", "cancel", "close", "quit"):
        return f"Unknown cmd {str(req.get('cmd'))[:40]!r}; use open, render, cancel, close or quit."
    return req


class Server:
    """The session state between requests: the open clip and the lighting specs already loaded."""

    def __init__(self, emit, inbox: Inbox) -> None:
        self.emit, self.inbox = emit, inbox
        self.clip = None
        self._lighting: dict[str, Any] = {}

    def handle(self, req: dict) -> bool:
        """Handle one request; False when the server should exit."""
        from relight_core.errors import UserError
        from relight_core.session import Cancelled

        cmd, rid = req.get("cmd"), req.get("id")
        try:
            if cmd == "quit":
                return False
            if cmd == "cancel":
                self.inbox.cancel_event.clear()
                self.emit({"event": "cancelled", "id": rid})
            elif cmd == "close":
                self._close()
                self.emit({"event": "closed", "id": rid})
            elif cmd == "open":
                self._open(req)
            elif cmd == "render":
                self._render(req)
        except Cancelled:
            self.inbox.cancel_event.clear()
            self._close()
            self.emit({"event": "cancelled", "id": rid})
        except UserError as exc:
            self.emit({"event": "error", "id": rid, "message": str(exc)})
        except MemoryError:
            self.emit({"event": "error", "id": rid, "message": "The engine ran out of memory; use a smaller "
                       "preview size."})
        except Exception as exc:  # noqa: BLE001 - an engine bug is reported and the session stays up
            import traceback

            traceback.print_exc(file=sys.stderr)
            self.emit({"event": "error", "id": rid,
                       "message": f"internal error: {type(exc).__name__}: {exc}"})
        return True

    def _close(self) -> None:
        if self.clip is not None:
            self.clip.close()
            self.clip = None

    def _open(self, req: dict) -> None:
        from relight_core import session
        from relight_core.errors import UserError

        path = req.get("input")
        if not isinstance(path, str) or not path:
            raise UserError("Open request field 'input' must be the path of a movie, image folder or image.")
        self._close()
        self.inbox.cancel_event.clear()
        rid = req.get("id")
        clip = session.ClipSession(path, frames=_frames(req.get("frames")), size=_size(req.get("size")),
                                   cache_dir=_engine_dir(_optional_path(req.get("cache"), "cache")),
                                   fov_deg=_number(req.get("fov"), "fov", 1.0, 170.0))

        def progress(event: dict) -> None:
            self.emit({**event, "id": rid})

        clip.open(progress, self.inbox.cancel_event)
        self.clip = clip
        f = clip.footage
        self.emit({"event": "opened", "id": rid, "frames": f.n_frames, "first": f.frame_indices[0],
                   "fps": clip.fps, "width": f.width, "height": f.height, "cached": clip.analysis_cached})

    def _render(self, req: dict) -> None:
        from relight_core import outputs, session
        from relight_core.errors import UserError

        if self.clip is None:
            raise UserError("No clip is open; send an open request first.")
        t0 = time.perf_counter()
        output = _optional_path(req.get("output"), "output")
        if output is None:
            raise UserError("Render request field 'output' must be the path of the PNG to write.")
        passes = _passes(req.get("passes"))
        frame = req.get("frame")
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise UserError("Render request field 'frame' must be a source frame number.")
        look = session.Look(self._target(req.get("lighting")), self._views(req.get("view")), passes,
                            _choice(req, "light_space", ("world", "head")),
                            _choice(req, "intensity", ("match", "absolute")),
                            _choice(req, "background", ("keep", "transparent")))
        clip = self.clip.at_size(_size(req.get("size")))
        timings = session.new_timings()
        layers, info = clip.render(frame, look, timings)
        files = pass_files(output, passes)
        t = time.perf_counter()
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        outputs.write_frame(files, layers, "png", stored=True)
        ms = dict(info["ms"], write=round(1000 * (time.perf_counter() - t), 2),
                  total=round(1000 * (time.perf_counter() - t0), 2))
        self.emit({"event": "rendered", "id": req.get("id"), "frame": frame,
                   "files": {k: str(v) for k, v in files.items()}, "ms": ms, "cached": info["cached"]})

    def _target(self, spec: Any):
        """The lighting object of a request (a reference portrait's light is estimated once per path)."""
        from relight_core import lighting

        spec = spec if spec is not None else "input"
        if isinstance(spec, dict) and "reference" in spec:
            key = json.dumps(spec, sort_keys=True)
            if key not in self._lighting:
                self._lighting = {key: lighting.load_target_lighting(spec)}
            return self._lighting[key]
        return lighting.load_target_lighting(spec)

    def _views(self, view: Any):
        from relight_core import views

        if view in (None, "input"):
            return views.ViewPlan(None, 1)
        return views.ViewPlan(view, self.clip.analysis.n_frames)


def pass_files(output: str, passes: tuple[str, ...]) -> dict:
    """{pass: Path}: `output` itself for one pass, else the pass name before its extension."""
    from pathlib import Path

    out = Path(output)
    if len(passes) == 1:
        return {passes[0]: out}
    return {p: out.with_name(f"{out.stem}.{p}{out.suffix or '.png'}") for p in passes}


def _frames(value: Any) -> tuple[int, int] | None:
    from relight_core.errors import UserError

    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in value)):
        raise UserError("Open request field 'frames' must be [first, last_exclusive] or null.")
    if value[0] < 0 or value[1] <= value[0]:
        raise UserError(f"Open request frames {value} is an empty or negative range.")
    return value[0], value[1]


def _size(value: Any) -> int | None:
    from relight_core.errors import UserError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 8192:
        raise UserError("Field 'size' must be the longer side in pixels (16..8192) or null.")
    return value


def _number(value: Any, name: str, lo: float, hi: float) -> float | None:
    import math

    from relight_core.errors import UserError

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise UserError(f"Field '{name}' must be a number from {lo:g} to {hi:g}.")
    return float(value)


def _optional_path(value: Any, name: str) -> str | None:
    from relight_core.errors import UserError

    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise UserError(f"Field '{name}' must be a path.")
    return value


def _engine_dir(out: str | None):
    """The engine's own folder inside a relight output folder (where `relight --out` keeps its analysis)."""
    from relight_core import layout

    return None if out is None else layout.engine_dir(out)


def _passes(value: Any) -> tuple[str, ...]:
    from relight_core.errors import UserError
    from relight_core.outputs import PASSES

    value = ["rgba"] if value is None else ([value] if isinstance(value, str) else value)
    if not isinstance(value, list) or not value or not all(isinstance(p, str) and p in PASSES for p in value):
        raise UserError(f"Field 'passes' must be a list of {', '.join(PASSES)}.")
    return tuple(dict.fromkeys(value))


def _choice(req: dict, name: str, allowed: tuple[str, ...]) -> str:
    from relight_core.errors import UserError

    value = req.get(name) or allowed[0]
    if value not in allowed:
        raise UserError(f"Field '{name}' must be one of {', '.join(allowed)}.")
    return value


def run(args: argparse.Namespace) -> int:
    """Serve requests until `quit` or the end of stdin; returns 0."""
    from relight_core import session

    emit = event_stream()

    inbox = Inbox(emit)
    threading.Thread(target=read_requests, args=(sys.stdin, inbox), daemon=True, name="serve-stdin").start()
    server = Server(emit, inbox)
    session.tune_allocator()
    with session.single_threaded_libraries((os.cpu_count() or 1) <= 4):
        emit({"event": "ready", "id": None, "pid": os.getpid()})
        while True:
            req = inbox.take()
            if req is None or not server.handle(req):
                break
    server._close()
    return 0
