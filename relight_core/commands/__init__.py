"""One module per `relight-core` subcommand.

Each module defines `NAME` (the subcommand), `HELP` (one line), `add_arguments(parser)` and
`run(args) -> int`. Modules import only the standard library at top level, so `relight-core --help`
stays fast; heavy imports (torch, mediapipe, cv2) happen inside `run`.
"""

COMMAND_MODULES = (
    "relight_core.commands.demo",
    "relight_core.commands.relight",
    "relight_core.commands.analyze",
    "relight_core.commands.preview_light",
    "relight_core.commands.worker",
    "relight_core.commands.serve",
    "relight_core.commands.bench",
    "relight_core.commands.evaluate",
)
