"""`relight-core worker`: the JSON-lines engine process that the Blender add-on drives.

Protocol (README, "Worker protocol"): the first stdin line is one JSON request; later lines may be
{"cmd": "cancel"} or `cancel`; SIGTERM also cancels. Events are JSON lines on stdout, flushed per line;
everything else (logs, library chatter) goes to stderr. Exit status: 0 done, 1 cancelled, 2 error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from relight_core.commands import event_stream

NAME = "worker"
HELP = "Run one relight request read as JSON from stdin, reporting JSON-lines events on stdout."

FIELDS = ("version", "input", "frames", "output", "format", "passes", "size", "device", "background",
          "light_space", "resume", "lighting", "camera", "intensity", "smoothing")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker takes no options: the request comes on stdin."""


def job_from_request(req: dict):
    """A protocol request (dict) -> `pipeline.RelightJob`; UserError names a bad field."""
    from relight_core import pipeline
    from relight_core.errors import UserError

    if not isinstance(req, dict):
        raise UserError("The request must be a JSON object.")
    if req.get("version", 1) != 1:
        raise UserError(f"Request version {req.get('version')} is not supported; this worker speaks "
                        "version 1.")
    unknown = sorted(set(req) - set(FIELDS))
    if unknown:
        raise UserError(f"Unknown request field(s) {', '.join(unknown)}.")
    for key in ("input", "output"):
        if not isinstance(req.get(key), str) or not req[key]:
            raise UserError(f"Request field '{key}' must be a path.")
    frames = req.get("frames")
    if frames is not None:
        if not (isinstance(frames, (list, tuple)) and len(frames) == 2
                and all(isinstance(f, (int, float)) and float(f).is_integer() for f in frames)):
            raise UserError("Request field 'frames' must be [first, last_exclusive] or null.")
        frames = [int(f) for f in frames]
        if frames[0] < 0 or frames[1] <= frames[0]:
            raise UserError(f"Request frames {frames} is an empty or negative range.")
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


def _watch_stdin(cancel: threading.Event) -> None:
    for line in sys.stdin:
        text = line.strip()
        if not text:
            continue
        if text == "cancel":
            cancel.set()
            return
        try:
            msg = json.loads(text)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("cmd") == "cancel":
            cancel.set()
            return


def run(args: argparse.Namespace) -> int:
    """Serve one request; returns 0 (done), 1 (cancelled) or 2 (error)."""
    emit = event_stream()

    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    line = sys.stdin.readline()
    from relight_core.errors import UserError

    try:
        try:
            req = json.loads(line)
        except ValueError:
            raise UserError("The first line on stdin must be one JSON request object.") from None
        job = job_from_request(req)
        threading.Thread(target=_watch_stdin, args=(cancel,), daemon=True).start()
        from relight_core import pipeline

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
