"""Contact sheet of the engine's output: input / relit / novel view / albedo / shading for three clips.

    .venv/bin/python tools/contact_sheet.py [--fixtures ../shared/fixtures] [--out docs/contact_sheet.png]

Runs `relight_core.pipeline` on one frame of each clip (light preset, then the same light from a camera
orbited by yaw 20 / pitch 10) in a temporary folder and tiles the results, downscaled, into one PNG
(kept small: no fixture frames are stored in the repository, only this derived sheet).
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
COLUMNS = ("input", "relit (rembrandt)", "yaw 20, pitch 10", "albedo", "shading x 1/2")


def tile(img_bgr: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to size x size."""
    h, w = img_bgr.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
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


def clip_row(clip: Path, frame: int, light: str, size: int, work: Path) -> list[np.ndarray]:
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
    return [tile(inp, size)] + [tile(read_bgr(out / d / p / name, gain), size)
                                for d, p, gain in (("relit", "rgba", 1.0), ("novel", "rgba", 1.0),
                                                   ("relit", "albedo", 1.0), ("relit", "shading", 0.5))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", default=str(REPO.parent / "shared" / "fixtures"))
    ap.add_argument("--out", default=str(REPO / "docs" / "contact_sheet.png"))
    ap.add_argument("--light", default="rembrandt", help="preset or light file for the relit columns")
    ap.add_argument("--tile", type=int, default=168, help="tile size in pixels")
    args = ap.parse_args()
    fixtures = Path(args.fixtures)
    if not (fixtures / "PROVENANCE.md").is_file():
        print(f"no fixtures at {fixtures}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel, frame in CLIPS:
            rows.append(np.hstack(clip_row(fixtures / rel, frame, args.light, args.tile, Path(tmp))))
    header = np.full((22, rows[0].shape[1], 3), 255, np.uint8)
    for i, label in enumerate(COLUMNS):
        cv2.putText(header, label, (i * args.tile + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    sheet = np.vstack([header, *rows])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1024} KiB, light {args.light})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
