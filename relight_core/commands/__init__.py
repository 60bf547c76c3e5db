"""One module per `relight-core` subcommand.

Each module defines `NAME` (the subcommand), `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Modules import only the standard library at top level, so `relight-core --help`
stays fast; heavy imports (torch, mediapipe, cv2) happen inside `run`.
"""

COMMAND_MODULES = (
    "relight_core.commands.demo",
    "relight_core.commands.relight",
    "relight_core.commands.analyze",
    "relight_core.commands.head_mesh",
    "relight_core.commands.preview_light",
    "relight_core.commands.worker",
    "relight_core.commands.serve",
    "relight_core.commands.bench",
    "relight_core.commands.evaluate",
    "relight_core.commands.farm_job",
    "relight_core.commands.farm_task",
)


def event_stream():
    """Give the process's real stdout to JSON-lines events -> emit(event: dict), thread-safe, flushed per
    line. Anything else that prints to stdout (Python or native libraries) lands on stderr from then on,
    so it can never corrupt the protocol (`worker`, `serve`)."""
    import json
    import os
    import sys
    import threading

    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def emit(event: dict) -> None:
        with lock:
            events.write(json.dumps(event) + "\n")
            events.flush()

    return emit
