"""Output writing: where a frame's files go and how its layers are written (atomically, off the main
thread), plus the JSON helpers for the engine's own files.

PNG: one file per pass (`DIR/<pass>/<stem>_<index>.png`), 8-bit sRGB RGBA for rgba, 8-bit sRGB for albedo,
shading and specular, 16-bit linear for normal, N (n * 0.5 + 0.5), shadow, matte, depth (/ DEPTH_PNG_RANGE)
and P, Pref (/ (2 DEPTH_PNG_RANGE) + 0.5), an 8-bit region index for id (`passes.ID_REGIONS`);
EXR: one multilayer file per frame (`DIR/exr/<stem>_<index>.exr`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relight_core.errors import UserError

PASSES = ("rgba", "albedo", "shading", "normal", "depth", "specular", "shadow", "N", "P", "Pref", "matte",
          "id")
# colour passes the compositor multiplies and adds (albedo x shading + specular = the beauty): full floats
REBUILD_PASSES = ("albedo", "shading", "specular")


def prepare_output(path: str | os.PathLike) -> Path:
    """Create the output folder and check that it is writable -> its Path (UserError otherwise)."""
    out = Path(path).expanduser().resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"Output folder {out} is not writable ({exc.strerror or exc}); choose another "
                        "folder with --out.") from None
    return out


def frame_paths(out: Path, stem: str, index: int, passes: tuple[str, ...], fmt: str) -> dict[str, Path]:
    """The files of one output frame: {pass: path} (PNG) or {"exr": path}."""
    name = f"{stem}_{index:06d}"
    if fmt == "exr":
        return {"exr": out / "exr" / f"{name}.exr"}
    return {p: out / p / f"{name}.png" for p in passes}


def _write_data_png16(path: Path, img: np.ndarray) -> None:
    """(H, W) or (H, W, 3) values in 0..1 stored LINEARLY as a 16-bit PNG (normal, depth passes)."""
    import cv2

    from relight_core import io

    a = (np.clip(img, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)
    if a.ndim == 3:
        a = np.ascontiguousarray(a[:, :, ::-1])
    with io.atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), a, io.PNG_PARAMS):
            raise UserError(f"Could not write {path}; check that the folder is writable and has space.")


def write_frame(files: dict[str, Path], layers: dict[str, np.ndarray], fmt: str,
                stored: bool = False) -> None:
    """Write one frame's layers (rgba (H,W,4), albedo/shading (H,W,3) linear, normal (H,W,3) 0..1,
    depth (H,W) head units; the data passes of `passes`) to `files` atomically. stored: the rgba PNG
    uncompressed (about 40% faster to write; for the live preview's transient files)."""
    from relight_core import io, passes, render

    if fmt == "exr":
        # The colour goes in the unprefixed R/G/B/A channels (the main image for Blender's sequencer and
        # compositor, Nuke, ...); the other passes are named layers (`passes`: N.X, P.X, id_skin.Y, ...).
        named = {("" if k == "rgba" else k): v for k, v in passes.exr_layers(layers).items()}
        io.write_exr(files["exr"], named, vectors=passes.VECTOR_PASSES, full_float=REBUILD_PASSES)
        return
    for name, path in files.items():
        img = layers[name]
        if name in ("normal", "shadow", "matte"):
            _write_data_png16(path, img)
        elif name == "N":
            _write_data_png16(path, img * 0.5 + 0.5)
        elif name in ("P", "Pref"):  # head units over +-DEPTH_PNG_RANGE around 0.5
            _write_data_png16(path, img / (2.0 * render.DEPTH_PNG_RANGE) + 0.5)
        elif name == "depth":
            _write_data_png16(path, img / render.DEPTH_PNG_RANGE)
        elif name == "id":
            _write_id_png8(path, img)
        elif name == "rgba":
            _write_rgba_png8(path, img, io.PNG_STORED_PARAMS if stored else io.PNG_PARAMS)
        else:
            io.write_png(path, img)


def _write_id_png8(path: Path, ids: np.ndarray) -> None:
    """ID mattes (H, W, 5) -> an 8-bit index PNG: 0 background, 1..5 the region (`passes.ID_REGIONS`)
    holding most of the pixel's matte, where the matte is at least 1/2."""
    import cv2

    from relight_core import io

    index = (np.argmax(ids, axis=-1) + 1).astype(np.uint8)
    index[ids.sum(axis=-1) < 0.5] = 0
    with io.atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), index, io.PNG_PARAMS):
            raise UserError(f"Could not write {path}; check that the folder is writable and has space.")


def _write_rgba_png8(path: Path, rgba: np.ndarray, params: list) -> None:
    """(H, W, 4) linear RGB + straight alpha -> 8-bit sRGB RGBA PNG, atomically (as `io.write_png`, with
    fewer copies: this is the hot path of every run)."""
    import cv2

    from relight_core import io

    r, g, b = cv2.split(io.encode_srgb8(rgba[..., :3]))
    a8 = (np.clip(rgba[..., 3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with io.atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.merge((b, g, r, a8)), params):
            raise UserError(f"Could not write {path}; check that the folder is writable and has space.")


class FrameWriter:
    """Writes frames on a background thread (PNG/EXR encoding overlaps the next frame's processing).

    At most `depth` frames wait (constant memory). `submit` re-raises a failed write; `close` waits for
    every submitted frame, so a cancelled run still ends with complete files only.
    """

    def __init__(self, fmt: str, timings: dict, depth: int = 2) -> None:
        import queue

        self.fmt, self.timings = fmt, timings
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="relight-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            files, layers, done = item
            if self.error is not None:
                continue
            try:
                t = time.perf_counter()
                for p in files.values():
                    p.parent.mkdir(parents=True, exist_ok=True)
                write_frame(files, layers, self.fmt)
                self.timings["write"] += time.perf_counter() - t
                done()
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                self.error = exc

    def _check(self) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, OSError):
                raise UserError(f"Could not write the output frames ({err.strerror or err}); check the "
                                "output folder's permissions and free space.") from None
            raise err

    def submit(self, files: dict[str, Path], layers: dict[str, np.ndarray], done: Callable[[], None]) -> None:
        """Queue one frame (blocks while `depth` frames wait); done() runs after its files exist."""
        self._check()
        self.q.put((files, layers, done))

    def close(self) -> None:
        """Wait until every queued frame is written; re-raise a failed write."""
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join()
        self._check()


def json_default(o: Any) -> Any:
    """JSON for what `json` cannot write itself: arrays as lists, numpy scalars as numbers, else str."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def as_json(data: Any) -> Any:
    """`data` as it reads back from `write_json` (so that it compares equal to a file's contents)."""
    return json.loads(json.dumps(data, default=json_default))


def write_json(path: Path, data: Any) -> None:
    from relight_core import io

    with io.atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=json_default))

