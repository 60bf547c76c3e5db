"""`relight-core farm-job INPUT... --light L --out BUNDLE`: write shots as an Open Job Description job
bundle (AWS Deadline Cloud: `deadline bundle submit BUNDLE`; one machine: `--run-local`)."""

from __future__ import annotations

import argparse

NAME = "farm-job"
HELP = ("Write shots as an Open Job Description job bundle for a render farm (Track, chunked Relight, "
        "Encode per shot); optionally run it here in parallel.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `farm-job`: the inputs, the bundle, the chunking, plus `relight`'s render options."""
    from relight_core import farm
    from relight_core.commands import relight

    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="movie files or image-sequence folders, one shot each (none with --run-local: "
                             "run the bundle already at --out, e.g. one exported from Blender)")
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to write")
    parser.add_argument("--chunk", type=int, default=farm.DEFAULT_CHUNK, metavar="N",
                        help=f"frames per Relight task [{farm.DEFAULT_CHUNK}]")
    parser.add_argument("--warmup", type=int, default=farm.DEFAULT_WARMUP, metavar="N",
                        help="frames before each chunk processed (not written) so that chunks equal one "
                             f"pass [{farm.DEFAULT_WARMUP}]")
    parser.add_argument("--engine", default=farm.DEFAULT_ENGINE, metavar="CMD",
                        help="how a farm worker runs the engine (the EngineCommand job parameter) "
                             f"[{farm.DEFAULT_ENGINE}]")
    parser.add_argument("--name", default=None, help="job name [Portrait Relight: <shots>]")
    parser.add_argument("--run-local", action="store_true",
                        help="run the bundle on this machine with the OpenJD runtime after writing it")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="tasks run at once with --run-local [2]")
    relight.add_render_options(parser)


def shot_request(args: argparse.Namespace, path: str, name: str, camera: dict | None) -> dict:
    """The worker-protocol request of one input (its whole clip unless --frames)."""
    from pathlib import Path

    from relight_core import io
    from relight_core.commands.relight import parse_frames, passes_from_args
    from relight_core.errors import UserError

    footage = io.open_footage(path, frames=parse_frames(args.frames))
    if footage.kind == "image":
        raise UserError(f"Input {path} is a single image; a farm job chunks clips, so relight it with "
                        "`relight-core relight` instead.")
    light = args.light
    if light != "input" and Path(light).expanduser().is_file():
        light = str(Path(light).expanduser().resolve())
    return {"version": 1, "input": str(Path(path).expanduser().resolve()),
            "frames": [footage.frame_indices[0], footage.frame_indices[-1] + 1],
            "output": f"output/{name}", "format": args.format, "passes": list(passes_from_args(args)),
            "size": args.size, "device": args.device, "background": args.background,
            "light_space": args.light_space, "resume": True, "lighting": light, "camera": camera,
            "intensity": args.intensity, "smoothing": not args.no_smoothing}


def run(args: argparse.Namespace) -> int:
    """Write the bundle (and run it with --run-local); prints what it wrote and how to run it."""
    from pathlib import Path

    from relight_core import farm
    from relight_core.commands.relight import camera_from_args
    from relight_core.errors import UserError

    if not args.inputs:
        if not args.run_local:
            raise UserError("Give the INPUT movie files or sequence folders to write a bundle for, or "
                            "--run-local to run the bundle already at --out.")
        from relight_core import farm_run

        return farm_run.run_bundle(args.out, workers=args.workers)
    camera = camera_from_args(args)
    names = farm.unique_names(Path(p).stem if Path(p).is_file() else Path(p).name for p in args.inputs)
    shots = [farm.Shot(n, shot_request(args, p, n, camera)) for p, n in zip(args.inputs, names, strict=True)]
    template = farm.write_bundle(args.out, shots, chunk=args.chunk, warmup=args.warmup, engine=args.engine,
                                 name=args.name, relative_outputs=True)
    bundle = template.parent
    n_tasks = sum(len(farm.chunk_ranges(tuple(s.request["frames"]), args.chunk)) + 2 for s in shots)
    print(f"farm-job: {len(shots)} shot(s), {n_tasks} task(s) -> {template}")
    print(f"  submit:   deadline bundle submit {bundle}")
    print(f"  run here: add --run-local, or per shot: openjd run {template} -p "
          f"file://{bundle / farm.PARAMETERS_JSON} --step 'Encode {shots[-1].name}' --run-dependencies")
    if not args.run_local:
        return 0
    from relight_core import farm_run

    return farm_run.run_bundle(bundle, workers=args.workers)
