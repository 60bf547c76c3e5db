"""`relight-core farm-task track|relight|encode --request FILE ...`: one task of a farm job bundle (what
the bundle's template.yaml runs on a worker; see `relight_core.farm`)."""

from __future__ import annotations

import argparse

NAME = "farm-task"
HELP = "Run one task of a farm job bundle (Track, a Relight chunk, or Encode of a shot)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `farm-task` (the job template fills them from its parameters)."""
    parser.add_argument("kind", choices=("track", "relight", "encode"), help="which task of the shot")
    parser.add_argument("--request", required=True, metavar="FILE",
                        help="the shot's request (shots/<shot>.json)")
    parser.add_argument("--input", default=None, metavar="PATH", help="the shot's footage [the request's]")
    parser.add_argument("--out", default=None, metavar="DIR", help="the shot's output folder [the request's]")
    parser.add_argument("--frames", default=None, metavar="A-B",
                        help="the shot's source frames, both included [the request's]")
    parser.add_argument("--chunk", default=None, metavar="A-B", help="relight: the frames of this task")
    parser.add_argument("--warmup", type=int, default=None, metavar="N",
                        help="relight: frames before the chunk processed but not written")


def run(args: argparse.Namespace) -> int:
    """Run the task; its log lines go to stdout."""
    from relight_core import farm, farm_run
    from relight_core.errors import UserError

    req = farm_run.load_shot_request(args.request, args.input, args.out, args.frames)
    if args.kind == "track":
        return farm_run.run_track(req)
    if args.kind == "encode":
        return farm_run.run_encode(req)
    if not args.chunk:
        raise UserError("farm-task relight needs --chunk A-B (the frames of this task).")
    warmup = farm.DEFAULT_WARMUP if args.warmup is None else args.warmup
    if warmup < 0:
        raise UserError(f"--warmup {warmup} is negative; give 0 or more frames.")
    return farm_run.run_chunk(req, args.chunk, warmup)
