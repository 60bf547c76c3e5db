"""`relight-core demo`: relight the astronaut portrait into a short camera orbit under a moving light."""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "Relight skimage's astronaut portrait into a short orbit with a moving light (frames + MP4)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `demo`."""
    parser.add_argument("--out", default="out/demo", metavar="DIR", help="output folder [out/demo]")
    parser.add_argument("--frames", type=int, default=24, metavar="N", help="number of frames [24]")
    parser.add_argument("--yaw", type=float, default=20.0, metavar="DEG", help="orbit from -DEG to +DEG [20]")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def moving_light(n: int):
    """A key light circling from the subject's left over the top to the right, plus a soft fill -> a light
    sequence of n frames (per-frame SH and key light)."""
    import math

    import numpy as np

    from relight_core import lighting, lights

    shs, keys = [], []
    for k in range(n):
        a = math.radians(-70 + 140 * k / max(n - 1, 1))
        # DPR frame: +X image right, +Z up, -Y toward the viewer
        d = np.array([math.sin(a), -math.cos(a) * 0.8, 0.45])
        d /= np.linalg.norm(d)
        key = lights.DirectionalLight(direction=d, color=(1.0, 0.95, 0.88), strength=3.0)
        fill = lights.WorldColor(color=(0.55, 0.6, 0.7), strength=0.35)
        shs.append(np.asarray(lights.sh_from_lights([key, fill]), dtype=np.float64))
        keys.append([key])
    return lighting.SHSequence(np.stack(shs), keys)


def run(args: argparse.Namespace) -> int:
    """Write the demo frames and MP4; prints where they are."""
    from pathlib import Path

    import numpy as np
    from skimage import data

    from relight_core import io, layout, outputs, pipeline
    from relight_core.commands.relight import TerminalProgress
    from relight_core.errors import UserError

    n = int(args.frames)
    if not 2 <= n <= 2000:
        raise UserError(f"--frames {n} is out of range; give 2..2000 frames.")
    out = outputs.prepare_output(args.out)
    src = out / "astronaut.png"
    io.write_png(src, io.decode_srgb8(data.astronaut()))
    job = pipeline.RelightJob(input=str(src), output=str(out), lighting=moving_light(n),
                              camera={"yaw": np.linspace(-args.yaw, args.yaw, n).tolist(),
                                      "pitch": (4.0 * np.sin(np.linspace(0, 2 * np.pi, n))).tolist()},
                              passes=("rgba",), device=args.device, resume=False, keep_analysis=False)
    sink = TerminalProgress()
    try:
        report = pipeline.run(job, on_event=sink)
    finally:
        sink.close()
    frames = sorted((out / "rgba").glob("astronaut_*.png"))
    movie = out / "astronaut_relit.mp4"
    io.write_mp4(movie, (io.open_footage(p).read(0) for p in frames), fps=12.0)
    print(f"demo: {len(frames)} relit frames in {Path(out) / 'rgba'}, movie {movie}, "
          f"report {layout.report_file(report['output'])}")
    return 0
