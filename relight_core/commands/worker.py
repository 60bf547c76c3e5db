"""`relight-core worker`: the JSON-lines engine process that the Blender add-on drives.

Protocol (README, "Worker protocol"): the first stdin line is one JSON request; later lines may be
{"cmd": "cancel"} or `cancel`; SIGTERM also cancels. Events are JSON lines on stdout, flushed per line;
everything else (logs, library chatter) goes to stderr. Exit status: 0 done, 1 cancelled, 2 error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading

from relight_core.commands import event_stream

NAME = "worker"
HELP = "Run one relight request read as JSON from stdin, reporting JSON-lines events on stdout."

FIELDS = ("version", "input", "frames", "output", "format", "passes", "size", "device", "background",
          "light_space", "resume", "lighting", "camera", "intensity", "smoothing", "task")
TASKS = ("relight", "track")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker takes no options: the request comes on stdin."""


# the request's optional fields and the JSON types each takes (None = null allowed)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,), "device": (str,), "background": (str,), "light_space": (str,), "intensity": (str,),
    "resume": (bool,), "smoothing": (bool,), "lighting": (str, dict), "camera": (dict,),
}
TYPE_NAMES = {str: "a string", bool: "true or false", dict: "an object"}


def _check_field_types(req: dict) -> None:
    """UserError naming the first field whose JSON type is wrong (`FIELD_TYPES`, size, passes, version)."""
    from relight_core.errors import UserError

    version = req.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError("Request field 'version' must be the number 1 (not a string).")
    if version != 1:
        raise UserError(f"Request version {version} is not supported; this worker speaks version 1.")
    for key, types in FIELD_TYPES.items():
        value = req.get(key)
        if value is not None and not isinstance(value, types):
            want = " or ".join(TYPE_NAMES[t] for t in types)
            raise UserError(f"Request field '{key}' must be {want}.")
    size = req.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise UserError("Request field 'size' must be a whole number of pixels or null.")
    passes = req.get("passes")
    if passes is not None and not (isinstance(passes, str) or (
            isinstance(passes, list) and all(isinstance(p, str) for p in passes))):
        raise UserError("Request field 'passes' must be a list of pass names such as [\"rgba\", \"normal\"].")


def job_from_request(req: dict):
    """A protocol request (dict) -> `pipeline.RelightJob`; UserError names a bad field."""
    from relight_core import pipeline, validate
    from relight_core.errors import UserError

    if not isinstance(req, dict):
        raise UserError("The request must be a JSON object.")
    unknown = sorted(set(req) - set(FIELDS))
    if unknown:
        raise UserError(f"Unknown request field(s) {', '.join(unknown)}.")
    _check_field_types(req)
    for key in ("input", "output"):
        if not isinstance(req.get(key), str) or not req[key]:
            raise UserError(f"Request field '{key}' must be a path.")
        validate.path_text(req[key], f"Request field '{key}'")
    frames = req.get("frames")
    if frames is not None:
        if not (isinstance(frames, (list, tuple)) and len(frames) == 2
                and all(isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f)
                        and float(f).is_integer() for f in frames)):
            raise UserError("Request field 'frames' must be [first, last_exclusive] or null.")
        frames = [int(f) for f in frames]
        if frames[0] < 0 or frames[1] <= frames[0]:
            raise UserError(f"Request frames {frames} is an empty or negative range.")
    if req.get("task", "relight") not in TASKS:
        raise UserError(f"Request task {req.get('task')!r} is not one of {', '.join(TASKS)}.")
    passes = req.get("passes") or ["rgba"]
    if isinstance(passes, str):
        passes = [passes]
    return pipeline.RelightJob(
        input=req["input"], output=req["output"], lighting=req.get("lighting") or "input",
        frames=tuple(frames) if frames else None, size=req.get("size"), format=req.get("format") or "png",
        passes=tuple(passes), device=req.get("device") or "auto", background=req.get("background") or "keep",
        light_space=req.get("light_space") or "world", resume=bool(req.get("resume", True)),
        camera=req.get("camera"), intensity=req.get("intensity") or "match",
        smoothing=bool(req.get("smoothing", True)))


class StdinLines:
    """Lines of bytes from file descriptor 0, read with os.read: no Python buffered-stream lock is held
    by the daemon thread that waits for `cancel` (one held at interpreter exit aborts the process), and
    stdin is read as bytes, so a request that is not UTF-8 is an error event, not a crash."""

    def __init__(self, fd: int = 0) -> None:
        self.fd, self.pending = fd, b""

    def readline(self) -> bytes:
        """The next line (with its newline), or what is left at end of input (b"" when nothing)."""
        while b"\n" not in self.pending:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                line, self.pending = self.pending, b""
                return line
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line + b"\n"


def _watch_stdin(lines: StdinLines, cancel: threading.Event) -> None:
    while True:
        raw = lines.readline()
        if not raw:
            return
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            continue
        if text == "cancel":
            cancel.set()
            return
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(msg, dict) and msg.get("cmd") == "cancel":
            cancel.set()
            return


def run(args: argparse.Namespace) -> int:
    """Serve one request; returns 0 (done), 1 (cancelled) or 2 (error)."""
    emit = event_stream()

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    lines = StdinLines()
    line = lines.readline()
    from relight_core.errors import UserError

    try:
        from relight_core import validate

        if not line.strip():
            raise UserError("The first line on stdin must be one JSON request object.")
        req = validate.parse_json(line, "The request (first line on stdin)")
        job = job_from_request(req)
        threading.Thread(target=_watch_stdin, args=(lines, cancel), daemon=True).start()
        from relight_core import pipeline

        if req.get("task", "relight") == "track":
            from relight_core import headmesh

            report = headmesh.track_job(job, on_event=emit, cancel=cancel)
        else:
            report = pipeline.run(job, on_event=emit, cancel=cancel)
        return 1 if report.get("cancelled") or report.get("totals", {}).get("cancelled") else 0
    except UserError as exc:
        emit({"event": "error", "message": str(exc)})
        return 2
    except KeyboardInterrupt:
        emit({"event": "cancelled", "frames_done": 0})
        return 1
    except Exception as exc:  # noqa: BLE001 - an engine bug still ends with one error event
        import traceback

        traceback.print_exc(file=sys.stderr)
        emit({"event": "error", "message": f"internal error: {type(exc).__name__}: {exc}"})
        return 2
