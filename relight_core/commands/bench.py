"""`relight-core bench INPUT`: per-stage timings, fps and peak memory of the relight pipeline."""

from __future__ import annotations

import argparse
import sys

NAME = "bench"
HELP = "Time the relight pipeline per stage (warm-up excluded, median of runs) and show peak memory."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `bench` (see the README, "Evaluation and benchmark")."""
    parser.add_argument("input", metavar="INPUT", help="movie file, image-sequence folder or one image")
    parser.add_argument("--size", type=int, default=512, metavar="N", help="longer side in pixels [512]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--frames", type=int, default=30, metavar="N", help="first N frames of the clip [30]")
    parser.add_argument("--runs", type=int, default=3, metavar="R", help="timed runs after one warm-up [3]")
    parser.add_argument("--novel-view", action="store_true",
                        help="render from a new camera (yaw 20, pitch 5 degrees) instead of the input view")
    parser.add_argument("--light", default="input", metavar="LIGHT",
                        help="target light as for `relight --light` [input: the estimated input light; a "
                             "preset with a key light, e.g. rembrandt, adds specular and cast shadows]")
    parser.add_argument("--interactive", action="store_true",
                        help="measure the live preview instead: a warm session's latency for a lighting "
                             "change, a new frame and a novel view, and memory over --walk renders")
    parser.add_argument("--renders", type=int, default=20, metavar="N",
                        help="renders per interactive figure (median) [20]")
    parser.add_argument("--walk", type=int, default=1000, metavar="N",
                        help="renders of the interactive memory check [1000]")
    parser.add_argument("--lights", default="rembrandt,split", metavar="A,B",
                        help="the two lights an interactive lighting change alternates between "
                             "[rembrandt,split: presets with a key light]")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, optionally write JSON; 0 on success."""
    from relight_core.errors import UserError
    from relight_core.eval import bench, tables

    if args.frames < 1:
        raise UserError(f"--frames {args.frames} must be at least 1.")
    if args.runs < 1:
        raise UserError(f"--runs {args.runs} must be at least 1.")

    if args.interactive:
        if args.renders < 1 or args.walk < 100:
            raise UserError("--renders must be at least 1 and --walk at least 100.")
        pair = tuple(x.strip() for x in args.lights.split(","))
        if len(pair) != 2 or not all(pair):
            raise UserError(f"--lights '{args.lights}' is not two lights A,B.")
        res = bench.run_interactive(args.input, size=args.size, renders=args.renders, walk=args.walk,
                                    lights=pair,
                                    progress=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True))
        print(bench.format_interactive(res))
    else:
        res = _batch(args)
    if args.json:
        tables.write_json(args.json, res)
        print(f"bench: wrote {args.json}", file=sys.stderr)
    return 0


def _batch(args: argparse.Namespace) -> dict:
    """The batch benchmark (per-stage timings of `relight`)."""
    from relight_core.eval import bench

    def progress(i: int, n: int) -> None:
        label = "warm-up" if i == 0 else f"run {i}/{n - 1}"
        print(f"bench: {label} ...", file=sys.stderr, flush=True)

    res = bench.run_bench(args.input, size=args.size, device=args.device, frames=args.frames, runs=args.runs,
                          novel_view=args.novel_view, light=args.light, progress=progress)
    print(bench.format_table(res))
    return res
