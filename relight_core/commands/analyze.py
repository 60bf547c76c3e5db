"""`relight-core analyze`: track a clip once (landmarks, head pose, matte) and store it as analysis.npz."""

from __future__ import annotations

import argparse

NAME = "analyze"
HELP = "Track faces in footage (landmarks, head pose, person matte) and save the analysis as .npz."

PREVIEW_FRAMES = 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `analyze`."""
    parser.add_argument("input", metavar="INPUT", help="movie file, image-sequence folder or one image")
    parser.add_argument("-o", "--output", required=True, metavar="FILE|DIR",
                        help="analysis file to write (.npz), or a relight output folder: the analysis goes "
                             "where `relight --out DIR` looks for it")
    parser.add_argument("--preview", metavar="DIR",
                        help=f"also write debug PNGs (landmarks, labels, depth, normals) of up to "
                             f"{PREVIEW_FRAMES} frames spread over the clip")
    parser.add_argument("--frames", metavar="A:B",
                        help="source frames A (inclusive) to B (exclusive), 0-based")
    parser.add_argument("--size", type=int, metavar="N", help="resize so that the longer side is N pixels")
    parser.add_argument("--fov", type=float, metavar="DEG",
                        help="vertical field of view of the footage in degrees "
                             "[30, a 50 mm lens on full frame]")


def parse_frames(text: str | None) -> tuple[int, int] | None:
    """'A:B' -> (A, B); None -> None. UserError when malformed."""
    from relight_core.errors import UserError

    if not text:
        return None
    try:
        a, b = (int(x) for x in text.split(":"))
    except ValueError:
        raise UserError(f"--frames {text!r} is not A:B; give two frame numbers like 0:100.") from None
    if a < 0 or b <= a:
        raise UserError(f"--frames {text!r} is empty or negative; give A:B with 0 <= A < B.")
    return a, b


def analysis_path(output: str):
    """`-o` -> the .npz to write: FILE.npz as given; a folder (existing, ending in a separator, or a new
    name without a suffix) -> the analysis file that `relight --out DIR` reuses. UserError otherwise."""
    import os
    from pathlib import Path

    from relight_core import layout
    from relight_core.errors import UserError

    out = Path(output)
    if out.is_dir() or output.endswith((os.sep, "/")) or (not out.exists() and not out.suffix):
        return layout.analysis_file(out)
    if out.suffix.lower() != ".npz":
        raise UserError(f"Output {out} must be a .npz file or an output folder.")
    return out


def write_preview(folder, footage, analysis, indices) -> list:
    """Write debug PNGs for the analysis rows `indices` -> list of written paths.

    Per frame: `<stem>_<NNNNNN>_landmarks.png` (landmarks, rigid ones in green, and the head axes over
    the frame), `_labels.png` (semantic labels over the frame, face mask outline), `_depth.png` (near =
    bright), `_normals.png` (cam-space normals as 0.5 + 0.5 n).
    """
    from pathlib import Path

    import cv2
    import numpy as np

    from relight_core import camera, face_model, geometry, io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    colours = np.array([[0, 0, 0], [230, 180, 150], [40, 120, 255], [120, 60, 20], [220, 30, 60],
                        [80, 200, 80]], np.uint8)
    wanted = {int(analysis.frame_indices[i]): i for i in indices}
    written = []
    for src, rgb in footage:
        if src not in wanted:
            continue
        i = wanted[src]
        h, w = rgb.shape[:2]
        img8 = io.encode_srgb8(rgb)
        geo = geometry.build_geometry(analysis, i, h, w)
        stem = f"{footage.name}_{src:06d}"
        lm = analysis.landmarks_at(i, h, w)
        canvas = img8.copy()
        rigid = set(face_model.RIGID_LANDMARKS)
        for j, (x, y, _) in enumerate(lm):
            col = (0, 255, 0) if j in rigid else (255, 255, 0) if j < 468 else (255, 0, 255)
            cv2.circle(canvas, (int(x), int(y)), 1, col, -1, lineType=cv2.LINE_AA)
        axes = np.array([[0, 0, 0], [0.15, 0, 0], [0, 0.15, 0], [0, 0, 0.15]])
        p = camera.project(camera.transform_points(analysis.cam_from_head[i], axes), geo.K)
        for end, col in zip(p[1:], ((255, 0, 0), (0, 255, 0), (0, 0, 255)), strict=True):
            cv2.line(canvas, tuple(int(v) for v in p[0]), tuple(int(v) for v in end), col, 2, cv2.LINE_AA)
        if not analysis.valid[i]:
            cv2.putText(canvas, "no face: interpolated", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                        (255, 0, 0), 2)
        over = (0.45 * img8 + 0.55 * colours[geo.labels]).astype(np.uint8)
        over[geo.labels == 0] = img8[geo.labels == 0] // 3
        contours, _ = cv2.findContours((geo.face_mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(over, contours, -1, (255, 255, 255), 1)
        d = geo.depth
        pos = d > 0
        dn = np.zeros_like(d)
        if pos.any():
            lo, hi = float(d[pos].min()), float(d[pos].max())
            dn[pos] = 1.0 - 0.85 * (d[pos] - lo) / max(hi - lo, 1e-6)
        nrm = np.where(pos[..., None], 0.5 + 0.5 * geo.normals, 0.0)
        for suffix, img in (("landmarks", io.decode_srgb8(canvas)), ("labels", io.decode_srgb8(over)),
                            ("depth", np.repeat(dn[..., None], 3, axis=2)), ("normals", nrm)):
            path = folder / f"{stem}_{suffix}.png"
            # data maps (depth, normals) are written as values, so undo the sRGB encoding of write_png
            data = img if suffix in ("landmarks", "labels") else io.srgb_to_linear(img)
            io.write_png(path, data.astype(np.float32))
            written.append(path)
    return written


def run(args: argparse.Namespace) -> int:
    """Analyse INPUT, write the .npz (atomically) and optional previews; prints a summary."""
    import sys

    import numpy as np

    from relight_core import io, track, validate
    from relight_core.outputs import prepare_output

    out = analysis_path(validate.path_text(args.output, "Output"))
    footage = io.open_footage(validate.path_text(args.input, "Input"), frames=parse_frames(args.frames),
                              size=args.size)
    prepare_output(out.parent)  # e.g. DIR/.relight of `-o DIR`
    bar = None
    try:
        from tqdm import tqdm

        bar = tqdm(total=footage.n_frames, desc="analyze", unit="frame", file=sys.stderr)
    except ImportError:  # pragma: no cover - tqdm is in the requirements
        pass

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    try:
        analysis = track.analyze_footage(footage, progress=progress, fov_deg=args.fov)
    finally:
        if bar is not None:
            bar.close()
    track.write_analysis(analysis, out)
    n = analysis.n_frames
    print(f"analyze: {n} frame(s) of {footage.name} ({analysis.width}x{analysis.height}), face on "
          f"{int(analysis.valid.sum())}, vertical FOV {analysis.fov_deg:g} deg -> {out}")
    for w in analysis.warnings:
        print(f"analyze: warning: {w}")
    if args.preview:
        rows = np.unique(np.linspace(0, n - 1, min(n, PREVIEW_FRAMES)).round().astype(int))
        paths = write_preview(args.preview, footage, analysis, rows)
        print(f"analyze: {len(paths)} preview image(s) in {args.preview}")
    return 0
