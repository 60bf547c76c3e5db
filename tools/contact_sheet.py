"""Contact sheet of the engine's output: input / relit / novel view / albedo / shading, one row a clip.

    .venv/bin/python tools/contact_sheet.py                 # three fixture clips -> out/contact_sheet.png
    .venv/bin/python tools/contact_sheet.py --astronaut     # the public-domain astronaut under three
                                                            # presets -> docs/astronaut_sheet.png (README)
    .venv/bin/python tools/contact_sheet.py --keys [--astronaut]  # key lights: input / rembrandt / split /
                          # rembrandt at yaw 20 pitch 10 / at yaw -25 -> out/key_lights_sheet.png
                          # (or docs/astronaut_key_lights.png)

Runs `relight_core.pipeline` on one frame of each clip (a light preset, then the same light from a camera
orbited by yaw 20 / pitch 10) in a temporary folder and tiles the results, downscaled, into one PNG.
The fixture footage shows real people who did not consent to publication of derived images, so its
sheet goes to the git-ignored out/ folder for review only; the README shows the astronaut (NASA, public
domain, ships with scikit-image).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIPS = (("videos/lp_d9.mp4", 60), ("videos/vr_4.mp4", 40), ("videos/lp_d18.mp4", 30))
ASTRONAUT_LIGHTS = ("rembrandt", "golden-hour", "rim")
ASTRONAUT_BOX = (0.1, 0.0, 0.6)  # the head and shoulders
COLUMNS = ("input", "relit ({light})", "yaw 20, pitch 10", "albedo", "shading x 1/2")
KEY_COLUMNS = ("input", "rembrandt", "split", "rembrandt, yaw 20 pitch 10", "rembrandt, yaw -25")
KEY_VIEWS = (("rembrandt", None), ("split", None), ("rembrandt", {"yaw": 20.0, "pitch": 10.0}),
             ("rembrandt", {"yaw": -25.0}))


def tile(img_bgr: np.ndarray, size: int, box: tuple[float, float, float] | None = None) -> np.ndarray:
    """Crop to a square and resize to size x size. box = (x0, y0, side) as fractions of the width;
    None: the centred square."""
    h, w = img_bgr.shape[:2]
    if box is None:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
    else:
        x0, y0, s = (round(v * w) for v in box)
    return cv2.resize(img_bgr[y0:y0 + s, x0:x0 + s], (size, size), interpolation=cv2.INTER_AREA)


def read_bgr(path: Path, gain: float = 1.0) -> np.ndarray:
    """A PNG pass as 8-bit BGR (alpha premultiplied, 16-bit scaled); gain scales the LINEAR values
    (the shading pass is irradiance, often above 1: it is shown at half its value)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img.dtype == np.uint16:
        img = (img / 257.0 + 0.5).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        img = (img[..., :3] * alpha).astype(np.uint8)
    if gain != 1.0:
        from relight_core import io

        img = io.encode_srgb8(io.decode_srgb8(img) * gain)
    return img


def clip_row(clip: Path, frame: int, light: str, size: int, work: Path,
             box: tuple[float, float, float] | None = None) -> list[np.ndarray]:
    from relight_core import io, pipeline

    out = work / clip.stem
    common = {"input": str(clip), "frames": (frame, frame + 1), "size": 384, "resume": False,
              "lighting": light}
    pipeline.run(pipeline.RelightJob(output=str(out / "relit"), passes=("rgba", "albedo", "shading"),
                                     **common))
    pipeline.run(pipeline.RelightJob(output=str(out / "novel"), passes=("rgba",),
                                     camera={"yaw": 20.0, "pitch": 10.0}, **common))
    src = io.open_footage(clip, frames=(frame, frame + 1), size=384).read(frame)
    name = f"{io.open_footage(clip).name}_{frame:06d}.png"
    inp = cv2.cvtColor(io.encode_srgb8(src), cv2.COLOR_RGB2BGR)
    return [tile(inp, size, box)] + [tile(read_bgr(out / d / p / name, gain), size, box)
                                for d, p, gain in (("relit", "rgba", 1.0), ("novel", "rgba", 1.0),
                                                   ("relit", "albedo", 1.0), ("relit", "shading", 0.5))]


def key_light_row(clip: Path, frame: int, size: int, work: Path,
                  box: tuple[float, float, float] | None = None) -> list[np.ndarray]:
    """One clip's frame under the key-light presets and views of KEY_VIEWS (tiles, BGR)."""
    from relight_core import io, pipeline

    src = io.open_footage(clip, frames=(frame, frame + 1), size=384).read(frame)
    name = f"{io.open_footage(clip).name}_{frame:06d}.png"
    tiles = [tile(cv2.cvtColor(io.encode_srgb8(src), cv2.COLOR_RGB2BGR), size, box)]
    for i, (light, camera) in enumerate(KEY_VIEWS):
        out = work / clip.stem / f"k{i}"
        pipeline.run(pipeline.RelightJob(input=str(clip), output=str(out), frames=(frame, frame + 1),
                                         size=384, resume=False, lighting=light, camera=camera))
        tiles.append(tile(read_bgr(out / "rgba" / name), size, box))
    return tiles


def astronaut_png(work: Path) -> Path:
    """skimage's astronaut portrait written as a PNG in `work`."""
    from skimage import data

    path = work / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def header_row(labels: list[str], width: int, tile_size: int) -> np.ndarray:
    """White label strip over the tiles; a label too wide for its tile goes on two lines (at a comma)."""
    header = np.full((34, width, 3), 255, np.uint8)
    for i, label in enumerate(labels):
        lines = [label]
        if cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > tile_size - 8 and ", " in label:
            lines = label.split(", ", 1)
        for j, line in enumerate(lines):
            cv2.putText(header, line, (i * tile_size + 4, 14 + 13 * j), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return header


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures"))
    ap.add_argument("--astronaut", action="store_true",
                    help="the public-domain astronaut under three presets instead of the fixture clips")
    ap.add_argument("--out", default=None,
                    help="output PNG (default: out/contact_sheet.png, or docs/astronaut_sheet.png)")
    ap.add_argument("--light", default="rembrandt", help="preset or light file for the fixture rows")
    ap.add_argument("--tile", type=int, default=168, help="tile size in pixels")
    ap.add_argument("--keys", action="store_true", help="the key-light sheet (KEY_COLUMNS) instead")
    args = ap.parse_args()
    default = REPO / "docs" / "astronaut_sheet.png" if args.astronaut else REPO / "out" / "contact_sheet.png"
    if args.keys:
        default = REPO / ("docs/astronaut_key_lights.png" if args.astronaut else "out/key_lights_sheet.png")
    out_path = Path(args.out) if args.out else default
    fixtures = Path(args.fixtures)
    if not args.astronaut and not (fixtures / "PROVENANCE.md").is_file():
        print(f"no fixtures at {fixtures}; use --astronaut", file=sys.stderr)
        return 2
    rows, labels = [], [c.format(light=args.light) for c in COLUMNS]
    with tempfile.TemporaryDirectory() as tmp:
        if args.keys:
            labels = list(KEY_COLUMNS)
            sources = [(astronaut_png(Path(tmp)), 0, ASTRONAUT_BOX)] if args.astronaut else \
                [(fixtures / rel, frame, None) for rel, frame in CLIPS]
            rows = [np.hstack(key_light_row(src, frame, args.tile, Path(tmp), box))
                    for src, frame, box in sources]
        elif args.astronaut:
            src = astronaut_png(Path(tmp))
            for light in ASTRONAUT_LIGHTS:
                row = clip_row(src, 0, light, args.tile, Path(tmp) / light, ASTRONAUT_BOX)
                cv2.putText(row[1], light, (4, args.tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (255, 255, 255), 1, cv2.LINE_AA)
                rows.append(np.hstack(row))
            labels[1] = "relit (preset)"
        else:
            for rel, frame in CLIPS:
                rows.append(np.hstack(clip_row(fixtures / rel, frame, args.light, args.tile, Path(tmp))))
    sheet = np.vstack([header_row(labels, rows[0].shape[1], args.tile), *rows])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_path), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out_path} ({out_path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
