"""`relight-core relight INPUT --light LIGHT --out DIR`: relight footage (and optionally move the camera)."""

from __future__ import annotations

import argparse
import sys

NAME = "relight"
HELP = "Relight a portrait clip, image sequence or photo; optionally render it from a new camera."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `relight` (see the README, "Command line")."""
    parser.add_argument("input", metavar="INPUT", help="movie file, image-sequence folder or one image")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_render_options(parser)
    parser.add_argument("--no-resume", action="store_true", help="re-render frames that already exist")


def add_render_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how frames are rendered (light, camera, passes, format, frames, size, ...):
    shared by `relight` and `farm-job`."""
    parser.add_argument("--light", default="input", metavar="LIGHT",
                        help="preset name, light file (.txt/.npy/.json, one light or one per frame), a "
                             "reference portrait image (its light is transferred) or 'input' (keep the "
                             "estimated input light) [default: input]")
    for axis in ("yaw", "pitch", "roll"):
        parser.add_argument(f"--{axis}", default=None, metavar="DEG",
                            help=f"camera {axis} about the head centre relative to the input camera, "
                             "degrees: a constant or a keyframed START:END over the frames")
    parser.add_argument("--camera", default=None, metavar="CAMS.json",
                        help='per-frame cameras: {"fov_deg": f, "cam2head": [4x4 per frame]} '
                             '(the Blender export)')
    parser.add_argument("--light-space", choices=("world", "head"), default="world",
                        help="light fixed to the camera/world (default) or to the head")
    parser.add_argument("--passes", default="rgba",
                        help="comma list of rgba,albedo,shading,normal,depth,specular,shadow,N,P,Pref,"
                             "matte,id (PNG; an EXR holds them all)")
    parser.add_argument("--format", choices=("png", "exr"), default="png", help="png files per pass or "
                        "one multilayer EXR per frame")
    parser.add_argument("--frames", default=None, metavar="A:B", help="source frames A (incl.) to B (excl.)")
    parser.add_argument("--size", type=int, default=None, metavar="N", help="longer side in pixels")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--background", choices=("keep", "transparent"), default="keep",
                        help="relit person over the plate (keep) or RGBA with the matte (transparent)")
    parser.add_argument("--intensity", choices=("match", "absolute"), default="match",
                        help="match: scale the target light to the input's exposure (default); "
                             "absolute: use it as given")
    parser.add_argument("--no-smoothing", action="store_true", help="switch temporal stabilisation off")


def parse_frames(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B) source frame range (B exclusive; 'A:' = to the end); UserError when malformed."""
    from relight_core.errors import UserError

    if text is None:
        return None
    try:
        a, b = text.split(":")
        start = int(a) if a.strip() else 0
        stop = int(b) if b.strip() else -1
    except ValueError:
        raise UserError(f"--frames '{text}' is not A:B (two frame numbers, B exclusive).") from None
    if start < 0 or (stop != -1 and stop <= start):
        raise UserError(f"--frames '{text}' is an empty or negative range; give A:B with 0 <= A < B.")
    return start, stop


def parse_angle(text: str | None, name: str) -> float | str | None:
    """'12.5' -> 12.5, 'a:b' -> 'a:b' (keyframed, validated: finite degrees), None -> None."""
    from relight_core import validate
    from relight_core.errors import UserError

    if text is None:
        return None
    parts = str(text).split(":")
    if len(parts) not in (1, 2):
        raise UserError(f"--{name} '{text}' is not a number of degrees or START:END.")
    values = [validate.finite_number(p, f"--{name} '{text}'") if p.strip() else None for p in parts]
    if None in values:
        raise UserError(f"--{name} '{text}' is not a number of degrees or START:END.")
    return values[0] if len(values) == 1 else f"{values[0]}:{values[1]}"


def load_camera_file(path: str) -> dict:
    """Read a cams.json -> the camera dict of the worker protocol (UserError when unreadable; the numbers
    are checked when the job starts, `views.ViewPlan`)."""
    from relight_core import validate
    from relight_core.errors import UserError

    data = validate.read_json_file(path, "Camera file")
    if isinstance(data, dict) and isinstance(data.get("frames"), list) and "cam2head" not in data:
        frames = data["frames"]
        if not all(isinstance(f, dict) and "cam2head" in f for f in frames):
            raise UserError(f"Camera file {path}: every entry of 'frames' needs a 'cam2head' 4x4 matrix.")
        first = frames[0].get("fov_deg") if frames else None
        data = {"fov_deg": data.get("fov_deg", first), "cam2head": [f["cam2head"] for f in frames]}
    if not isinstance(data, dict) or "cam2head" not in data:
        raise UserError(f"Camera file {path} needs a 'cam2head' list of 4x4 matrices and 'fov_deg'.")
    return data


def camera_from_args(args: argparse.Namespace) -> dict | None:
    """The worker-protocol camera of --camera / --yaw --pitch --roll (None: the input view)."""
    if args.camera:
        return load_camera_file(args.camera)
    angles = {a: parse_angle(getattr(args, a), a) for a in ("yaw", "pitch", "roll")}
    if any(v is not None for v in angles.values()):
        return {a: (0.0 if v is None else v) for a, v in angles.items()}
    return None


def passes_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """--passes 'rgba,albedo' -> ('rgba', 'albedo')."""
    return tuple(p.strip() for p in args.passes.split(",") if p.strip())


def job_from_args(args: argparse.Namespace):
    """The `pipeline.RelightJob` of parsed CLI arguments."""
    from relight_core import pipeline, validate

    for what, value in (("Input", args.input), ("Output folder", args.out), ("--light", args.light),
                        ("Camera file", args.camera)):
        if value is not None:
            validate.path_text(value, what)
    camera = camera_from_args(args)
    passes = passes_from_args(args)
    return pipeline.RelightJob(
        input=args.input, output=args.out, lighting=args.light, frames=parse_frames(args.frames),
        size=args.size, format=args.format, passes=passes, device=args.device, background=args.background,
        light_space=args.light_space, resume=not args.no_resume, camera=camera, intensity=args.intensity,
        smoothing=not args.no_smoothing)


class TerminalProgress:
    """Event sink for the terminal: tqdm bars per stage on stderr, warnings as lines."""

    def __init__(self) -> None:
        self.bar = None
        self.stage = None

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        kind = event.get("event")
        if kind == "progress":
            if event["stage"] != self.stage:
                self.close()
                self.stage = event["stage"]
                self.bar = tqdm(total=event["total"], desc=self.stage, unit="frame", file=sys.stderr,
                                dynamic_ncols=True)
            self.bar.update(event["done"] - self.bar.n)  # update(), not n=: tqdm's rate needs it
        elif kind == "warning":
            msg = f"warning: frame {event['frame']}: {event['message']}" if event.get("frame") is not None \
                else f"warning: {event['message']}"
            (self.bar.write if self.bar else print)(msg, file=sys.stderr)
        elif kind in ("done", "cancelled"):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    """Run `relight`; prints where the frames and the report are."""
    from relight_core import layout, pipeline

    job = job_from_args(args)
    sink = TerminalProgress()
    try:
        report = pipeline.run(job, on_event=sink)
    finally:
        sink.close()
    t = report["totals"]
    rate = f" ({t['fps_end_to_end']} fps end to end)" if t["fps_end_to_end"] else ""
    print(f"relit {t['written']} frame(s) ({t['skipped']} already done) into {report['output']}; "
          f"report: {layout.report_file(report['output'])}{rate}")
    return 0
