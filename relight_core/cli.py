"""`relight-core` command line: dispatches to the subcommands in `relight_core.commands`.

User mistakes raise `UserError`; they are printed as one sentence (`relight-core: error: ...`) with
exit status 2 and no traceback. Ctrl-C exits with 130 after the subcommand has cleaned up.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence

from relight_core import __version__
from relight_core.commands import COMMAND_MODULES
from relight_core.errors import UserError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _available_commands() -> list:
    """The command modules that exist in this installation, in `COMMAND_MODULES` order."""
    modules = []
    for name in COMMAND_MODULES:
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available command."""
    parser = argparse.ArgumentParser(
        prog="relight-core",
        description="Relight portrait footage with spherical-harmonics lighting and render novel views.",
    )
    parser.add_argument("--version", action="version", version=f"relight-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _available_commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


_NEGATIVE_VALUE = re.compile(r"-\.?\d")


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """`--yaw -25:25` -> `--yaw=-25:25`: argparse takes a value that starts with a minus sign for an option
    unless it is a plain number, so a keyframed range (or a view list) starting below zero needs the
    `=` form; an option followed by a negative-number-like word is given it that way."""
    out: list[str] = []
    for word in argv:
        if (out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_VALUE.match(word)):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(join_negative_values(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"relight-core: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("relight-core: interrupted; finished frames are complete, nothing half-written is left.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
