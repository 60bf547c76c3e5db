"""`relight-core evaluate CLIPS... --lights LIGHTS... --views ... --out DIR`: the paper's metrics."""

from __future__ import annotations

import argparse
import sys

NAME = "evaluate"
HELP = "Relight clips under several lights and views and measure LE, LI, ID, WE, tSSIM (+ ablations)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `evaluate` (see the README, "Evaluation and benchmark")."""
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="movie files or image-sequence folders")
    parser.add_argument("--lights", nargs="+", required=True, metavar="LIGHT",
                        help="target lights: preset names or light files (.txt/.npy/.json)")
    parser.add_argument("--views", nargs="+", default=["0/0"], metavar="YAW/PITCH",
                        help="views in degrees about the head centre, separate words or one comma list "
                             "(0/0 is the input view; start a list with a negative yaw as one comma list, "
                             "--views -20/10,0/0) [0/0]")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for tables, plots and JSON")
    parser.add_argument("--frames", type=int, default=30, metavar="N", help="first N frames per clip [30]")
    parser.add_argument("--size", type=int, default=384, metavar="N", help="longer side in pixels [384]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--no-ablation", action="store_true", help="skip the ablation variants")
    parser.add_argument("--ablation-lights", type=int, default=None, metavar="N",
                        help="use only the first N lights for the ablation variants [all]")
    parser.add_argument("--id-every", type=int, default=5, metavar="K",
                        help="identity metric on every K-th frame [5]")
    parser.add_argument("--keep-frames", action="store_true", help="keep the relit frames of every run")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print the tables; 0 on success."""
    from relight_core.errors import UserError
    from relight_core.eval import evaluate

    if args.frames < 2:
        raise UserError(f"--frames {args.frames} must be at least 2 (temporal metrics need frame pairs).")
    views = [evaluate.parse_view(v) for word in args.views for v in word.split(",") if v.strip()]
    cfg = evaluate.EvalConfig(clips=list(args.clips), lights=list(args.lights), views=views, out=args.out,
                              frames=args.frames, size=args.size, ablation=not args.no_ablation,
                              ablation_lights=args.ablation_lights, id_every=args.id_every,
                              keep_frames=args.keep_frames, device=args.device)
    results = evaluate.evaluate(cfg)
    for note in results["notes"]:
        print(f"evaluate: {note}", file=sys.stderr)
    from pathlib import Path

    for name in ("views", "input", "per_view", "ablation"):
        p = Path(args.out) / f"table_{name}.md"
        if p.is_file():
            print(f"\n## {name}\n\n{p.read_text()}")
    print(f"evaluate: results in {Path(args.out).resolve()} ({results['elapsed_s']:.0f} s)", file=sys.stderr)
    return 0
