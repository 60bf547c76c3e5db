"""`relight-core preview-light LIGHT -o sphere.png`: a lit-sphere preview of a light.

LIGHT is a preset name or a light file (.txt / .npy / .json). The sphere is seen by the DPR viewer
(orthographic, looking along +Y: light from +X lights its right side, from +Z its top), white-ish
Lambertian (albedo 0.8) with a faint specular highlight for each key light, written as an 8-bit sRGB
PNG with straight alpha. Exposure is automatic (the brightest part of the sphere just below white)
unless --exposure gives a fixed scale in stops (radiance = albedo x E / pi x 2**EV).
"""

from __future__ import annotations

import argparse
from typing import Any

NAME = "preview-light"
HELP = "Render a lit-sphere preview (PNG) of a lighting preset or light file."

ALBEDO = 0.8
SPECULAR = 0.04
SHININESS = 60.0
DARK_BACKGROUND = 0.02  # linear grey
SUPERSAMPLE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("light", metavar="LIGHT", help="preset name, or a .txt / .npy / .json light file")
    parser.add_argument("-o", "--output", default=None, help="output PNG (default: <LIGHT name>.png)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--frame", type=int, default=0, help="frame of a light sequence (default 0)")
    parser.add_argument("--background", choices=("dark", "transparent"), default="dark",
                        help="dark grey (default) or transparent")
    parser.add_argument("--exposure", type=float, default=None,
                        help="fixed exposure in stops instead of automatic")


def render_lit_sphere(sh: Any, key_lights: list | None = None, size: int = 256, background: str = "dark",
                      exposure: float | None = None) -> Any:
    """Lit sphere (size, size, 4) float32 linear RGBA (straight alpha) for SH (9, 3) in the DPR frame.

    key_lights: DirectionalLight / PointLight objects (positions relative to the sphere centre) that add a
    normalised Blinn-Phong highlight; exposure: None = automatic, else stops.
    """
    import numpy as np

    from relight_core import sh as shlib

    ss = size * SUPERSAMPLE
    n, mask = shlib.sphere_normals(ss)
    nm = n[mask]
    e = np.maximum(shlib.shade(nm, shlib.to_rgb(sh)), 0.0)
    rad = ALBEDO * e / np.pi
    view = np.array([0.0, -1.0, 0.0])
    for light in key_lights or []:
        if hasattr(light, "position"):
            p = np.asarray(light.position, dtype=np.float64)
            d2 = max(float(p @ p), 1e-9)
            to_l = p / np.sqrt(d2)
            irr = np.asarray(light.color, float)[:3] * float(light.power) / (4 * np.pi) / d2
        else:
            to_l = np.asarray(light.direction, dtype=np.float64)
            to_l = to_l / np.linalg.norm(to_l)
            irr = np.asarray(light.color, float)[:3] * float(light.strength)
        half = to_l + view
        half /= max(np.linalg.norm(half), 1e-9)
        ndl = np.maximum(nm @ to_l, 0.0)
        ndh = np.maximum(nm @ half, 0.0)
        norm = (SHININESS + 8) / (8 * np.pi)
        rad += SPECULAR * (ndl * norm * ndh ** SHININESS)[:, None] * irr[None, :]
    if exposure is None:
        lum = rad @ shlib.LUMA
        peak = float(np.percentile(lum, 99.5)) if lum.size else 0.0
        scale = 0.9 / peak if peak > 1e-12 else 1.0
    else:
        scale = 2.0 ** float(exposure)
    img = np.zeros((ss, ss, 3))
    img[mask] = rad * scale
    cover = mask.astype(np.float64)
    # box-filter the supersampled image: premultiplied colour and coverage
    img = img.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    cover = cover.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    out = np.zeros((size, size, 4), dtype=np.float32)
    if background == "transparent":
        inside = cover > 0
        out[inside, :3] = img[inside] / cover[inside, None]
        out[..., 3] = cover
    else:
        out[..., :3] = img + DARK_BACKGROUND * (1 - cover)[..., None]
        out[..., 3] = 1.0
    return out


def write_preview(path: str, rgba: Any) -> None:
    """Write a linear RGBA float image as an 8-bit sRGB PNG (atomically)."""
    from relight_core import io

    io.write_png(path, rgba)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from relight_core import lights
    from relight_core.errors import UserError

    if not 8 <= args.size <= 4096:
        raise UserError(f"--size {args.size} is out of range; give 8 to 4096 pixels.")
    seq = lights.load_lighting(args.light)
    if args.frame < 0 or args.frame >= seq.n_frames:
        raise UserError(f"--frame {args.frame} is out of range; {args.light} has {seq.n_frames} frame(s).")
    out = Path(args.output) if args.output else Path(f"{Path(args.light).stem}.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"Output {out} must be a .png file.")
    if not out.parent.exists():
        raise UserError(f"Output folder {out.parent} does not exist.")
    rgba = render_lit_sphere(seq.sh_at(args.frame), seq.key_lights_at(args.frame), args.size,
                             args.background, args.exposure)
    write_preview(str(out), rgba)
    print(out)
    return 0
