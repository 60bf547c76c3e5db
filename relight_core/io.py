"""Footage in (movie files, image sequences, single images) and frames out (PNG, multilayer EXR, MP4).

Frames travel through the engine as (H, W, 3) float32 LINEAR RGB. 8- and 16-bit inputs are decoded
with the sRGB transfer; EXR inputs are linear already. Every writer goes through `atomic_write`: the file
is written under a temporary name in the destination folder and renamed when complete, so an interrupted
run never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

import cv2
import numpy as np

from relight_core.errors import UserError

MOVIE_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mxf"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp"}
DEFAULT_FPS = 25.0
MAX_AUTO_SIZE = 4096  # px: longer side above which an input is processed at this size unless --size says

# OpenCV's FFmpeg reader prints its own errors ("moov atom not found") to stderr ahead of the one sentence
# this module raises for an unreadable movie; it reads this variable whenever it opens a file. Set
# RELIGHT_NATIVE_LOGS=1 to see them (as for MediaPipe's, `face_model.quiet_native_stderr`).
if not os.environ.get("RELIGHT_NATIVE_LOGS"):
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET

# --------------------------------------------------------------------------------------------- colour


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear, same shape, float32 (IEC 61966-2-1)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear values -> sRGB-encoded in [0, 1] (clipped), same shape, float32."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


_DECODE_LUT_8 = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)
_DECODE_LUT_16 = srgb_to_linear(np.arange(65536, dtype=np.float32) / 65535.0)
_ENCODE_LUT_SIZE = 4096
_ENCODE_LUT_8 = np.round(linear_to_srgb(np.linspace(0, 1, _ENCODE_LUT_SIZE)) * 255).astype(np.uint8)
_ENCODE_LUT_16 = np.round(linear_to_srgb(np.linspace(0, 1, _ENCODE_LUT_SIZE * 16)) * 65535).astype(np.uint16)


def decode_srgb8(img: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 sRGB -> float32 linear, through a lookup table (fast)."""
    return _DECODE_LUT_8[img]


# the 8-bit encoding table extended to every uint16 index: indices past 1.0 saturate to 255
_ENCODE_LUT_8_WIDE = np.concatenate([_ENCODE_LUT_8, np.full(65536 - _ENCODE_LUT_SIZE, _ENCODE_LUT_8[-1],
                                                            np.uint8)])


def encode_srgb8(img: np.ndarray) -> np.ndarray:
    """(H, W, C) float linear -> uint8 sRGB, through a lookup table (fast; error < 0.5 LSB).

    The table index is round(x * 4095) by OpenCV's saturating float -> uint16 conversion (negative
    values give 0, values past 1 the last entry): ~4x faster than numpy clip + cast at 512 px.
    """
    a = np.ascontiguousarray(img, dtype=np.float32)
    flat = a.reshape(a.shape[0] if a.ndim > 1 else 1, -1)
    idx = cv2.multiply(flat, float(_ENCODE_LUT_SIZE - 1), dtype=cv2.CV_16U)
    return np.take(_ENCODE_LUT_8_WIDE, idx).reshape(a.shape)


def _encode_srgb16(img: np.ndarray) -> np.ndarray:
    idx = np.clip(img, 0.0, 1.0) * (_ENCODE_LUT_16.size - 1) + 0.5
    return _ENCODE_LUT_16[idx.astype(np.int32)]


def _to_linear_rgb(img: np.ndarray, source: str) -> np.ndarray:
    """A decoded OpenCV image (BGR/BGRA/grey, uint8/uint16/float) -> (H, W, 3) float32 linear RGB."""
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[:, :, 2::-1] if img.shape[2] >= 3 else img
    if img.dtype == np.uint8:
        return decode_srgb8(img)
    if img.dtype == np.uint16:
        return _DECODE_LUT_16[img]
    if img.dtype in (np.float32, np.float64, np.float16):
        return np.ascontiguousarray(img, dtype=np.float32)
    raise UserError(f"{source} has an unsupported pixel type {img.dtype}; save it as 8/16-bit PNG or EXR.")


# --------------------------------------------------------------------------------------------- EXR


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """Read the colour of an EXR file -> (H, W, 3) float32 linear.

    Takes plain R/G/B channels, else the first layer with R/G/B (`rgba.R`, Blender's `Combined.R`, ...),
    else a grey Y channel.
    """
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            ch = {name: c.pixels for name, c in f.channels().items()}
    except Exception as exc:  # OpenEXR raises plain exceptions for damaged files
        raise UserError(f"{path} could not be read as EXR ({exc}); check that the file is complete.") from exc
    prefixes = [""] + sorted({n[: -len("R")] for n in ch if n.endswith(".R")})
    for prefix in prefixes:
        if all(f"{prefix}{c}" in ch for c in "RGB"):
            return np.stack([ch[f"{prefix}{c}"] for c in "RGB"], axis=-1).astype(np.float32)
    for name in ("Y", *sorted(n for n in ch if n.endswith(".Y"))):
        if name in ch:
            return np.repeat(ch[name].astype(np.float32)[..., None], 3, axis=2)
    raise UserError(f"{path} has no RGB channels; write the EXR with R, G and B channels.")


def write_exr(path: str | os.PathLike, layers: Mapping[str, np.ndarray], vectors: Collection[str] = (),
              full_float: Collection[str] = ()) -> None:
    """Write a multilayer EXR atomically.

    layers: name -> (H, W) or (H, W, C) float array. C=1 -> `name.Y`, 3 -> `name.R/G/B` (`name.X/Y/Z` for
    the layers in `vectors`, e.g. normals and positions), 4 -> `name.R/G/B/A`. Colour layers are stored
    as half floats unless in `full_float`; single-channel layers (depth) and vectors as float32.
    """
    import OpenEXR

    channels: dict[str, np.ndarray] = {}
    for name, arr in layers.items():
        arr = np.asarray(arr)
        if arr.ndim == 2:
            channels[f"{name}.Y" if name else "Y"] = np.ascontiguousarray(arr, dtype=np.float32)
            continue
        names = "XYZ" if name in vectors else {1: "Y", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        dtype = np.float32 if name in vectors or name in full_float else np.float16
        for k, c in enumerate(names):
            channels[f"{name}.{c}" if name else c] = np.ascontiguousarray(arr[..., k], dtype=dtype)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_write(path) as tmp:
        try:
            with OpenEXR.File(header, channels) as f:
                f.write(str(tmp))
        except (RuntimeError, OSError):  # OpenEXR reports a full disk as RuntimeError
            raise UserError(f"Could not write {path}; check that the folder is writable and has space.") \
                from None


# --------------------------------------------------------------------------------------------- writing

# zlib level 1 with run-length matching: ~30% faster to encode than OpenCV's default (level 3) at
# 512 px, and no larger;
# PNG stays lossless whatever the level
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
PNG_STORED_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 0]  # no compression: for transient files (live preview)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffix); rename it to `path` when the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_png(path: str | os.PathLike, img: np.ndarray, bits: int = 8) -> None:
    """Write (H, W, 3) RGB or (H, W, 4) RGBA linear float as an sRGB PNG, atomically.

    Alpha is straight (not premultiplied) and stored linearly; bits is 8 or 16.
    """
    img = np.asarray(img, dtype=np.float32)
    encode = encode_srgb8 if bits == 8 else _encode_srgb16
    out = encode(img[..., :3])[:, :, ::-1]
    if img.shape[-1] == 4:
        scale = 255 if bits == 8 else 65535
        alpha = (np.clip(img[..., 3:4], 0, 1) * scale + 0.5).astype(out.dtype)
        out = np.concatenate([out, alpha], axis=2)
    with atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(out), PNG_PARAMS):
            raise UserError(f"Could not write {path}; check that the folder is writable and has space.")


def write_mp4(path: str | os.PathLike, frames: Iterator[np.ndarray], fps: float) -> int:
    """Encode linear float RGB frames as an H.264 MP4 (yuv420p, odd sizes padded), atomically.

    Returns the number of frames written.
    """
    import imageio_ffmpeg

    count = 0
    with atomic_write(path) as tmp:
        writer = None
        try:
            for frame in frames:
                rgb = encode_srgb8(frame[..., :3])
                h, w = rgb.shape[:2]
                rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (rgb.shape[1], rgb.shape[0]), fps=fps, codec="libx264",
                        pix_fmt_out="yuv420p", quality=8, macro_block_size=1, ffmpeg_log_level="error")
                    writer.send(None)
                writer.send(np.ascontiguousarray(rgb))
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise UserError(f"No frames to write to {path}.")
    return count


# --------------------------------------------------------------------------------------------- reading


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _read_image(path: Path) -> np.ndarray:
    """Read one image file -> (H, W, 3) float32 linear RGB; UserError when it cannot be decoded."""
    if path.suffix.lower() == ".exr":
        return read_exr(path)
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise UserError(f"{path} could not be decoded as an image; check that the file is complete.")
    return _to_linear_rgb(img, str(path))


def _resize_to(img: np.ndarray, width: int, height: int) -> np.ndarray:
    if img.shape[1] == width and img.shape[0] == height:
        return img
    interp = cv2.INTER_AREA if width < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


def _scaled_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) scaled so that the longer side is `size` (None: unchanged)."""
    if not size:
        return width, height
    if size < 16:
        raise UserError(f"--size {size} is too small; use at least 16 pixels.")
    s = size / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


class Footage:
    """A clip to process: a movie file, an image-sequence folder or one image.

    Iterating yields `(source_index, rgb)` with rgb (height, width, 3) float32 linear, for the selected
    frame range. `frame_indices` are the source frame numbers (0-based) that iteration visits.
    `warnings` collects what the user should know (an input scaled down to `MAX_AUTO_SIZE`, a movie that
    ends before the frame count its container claims: iteration then stops at the last decodable frame,
    `last_decoded`).
    """

    def __init__(self, path: str | os.PathLike, frames: tuple[int, int] | None = None,
                 size: int | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"Input {self.path} does not exist; check the path.")
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self._files: list[Path] = []
        self.fps = DEFAULT_FPS
        if self.path.is_dir():
            self.kind = "sequence"
            self._files = sorted((p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS
                                  and not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
            if not self._files:
                raise UserError(f"Folder {self.path} holds no images ({', '.join(sorted(IMAGE_EXTS))}).")
            total = len(self._files)
            first = _read_image(self._files[0])
            src_h, src_w = first.shape[:2]
        elif self.path.suffix.lower() in IMAGE_EXTS:
            self.kind = "image"
            self._files = [self.path]
            total = 1
            first = _read_image(self.path)
            src_h, src_w = first.shape[:2]
        elif self.path.suffix.lower() in MOVIE_EXTS:
            self.kind = "movie"
            src_w, src_h, total, self.fps = self._probe_movie()
        else:
            raise UserError(f"Input {self.path} is not a supported movie ({', '.join(sorted(MOVIE_EXTS))}), "
                            f"image ({', '.join(sorted(IMAGE_EXTS))}) or image folder.")
        self.source_frames = total
        self.source_width, self.source_height = src_w, src_h
        self.warnings: list[str] = []
        self.last_decoded: int | None = None
        if size is None and max(src_w, src_h) > MAX_AUTO_SIZE:
            size = MAX_AUTO_SIZE
            self.warnings.append(f"{self.path.name} is {src_w}x{src_h}; it is processed at {MAX_AUTO_SIZE} "
                                 "px on the longer side (give --size to choose another size)")
        self.width, self.height = _scaled_size(src_w, src_h, size)
        start, stop = frames if frames is not None else (0, total)
        stop = total if stop is None or stop < 0 else stop
        if not (0 <= start < stop <= total):
            raise UserError(f"Frame range {start}:{stop} is outside {self.path.name}'s {total} frame(s) "
                            f"(valid: 0:{total}).")
        self.frame_indices = list(range(start, stop))

    @property
    def n_frames(self) -> int:
        return len(self.frame_indices)

    def _probe_movie(self) -> tuple[int, int, int, float]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            if not ok:
                raise UserError(f"{self.path} could not be decoded as a movie; check that the file is "
                                "complete and uses a common codec (H.264, ProRes, MJPEG).")
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or DEFAULT_FPS
            if total <= 0:
                total = 1
                while cap.grab():
                    total += 1
            return frame.shape[1], frame.shape[0], total, fps
        finally:
            cap.release()

    def _finish(self, img: np.ndarray) -> np.ndarray:
        return _resize_to(img, self.width, self.height)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.kind != "movie":
            for i in self.frame_indices:
                yield i, self._finish(_read_image(self._files[i]))
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            if self.frame_indices[0] > 0:
                cap.set(cv2.CAP_PROP_POS_FRAMES, self.frame_indices[0])
            for i in self.frame_indices:
                ok, frame = cap.read()
                if not ok:
                    if i == self.frame_indices[0]:
                        raise UserError(f"{self.path} frame {i} could not be decoded; the file may be "
                                        "truncated.")
                    # the container over-reported its length: stop at the real end, and say so
                    msg = (f"{self.path.name} claims {self.source_frames} frames but ends after frame "
                           f"{i - 1}; frames {i} to {self.frame_indices[-1]} are skipped")
                    if msg not in self.warnings:
                        self.warnings.append(msg)
                    return
                self.last_decoded = i
                frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA) \
                    if (frame.shape[1], frame.shape[0]) != (self.width, self.height) else frame
                yield i, _to_linear_rgb(frame, f"{self.path} frame {i}")
        finally:
            cap.release()

    def read(self, index: int) -> np.ndarray:
        """Random access to source frame `index` -> (height, width, 3) float32 linear."""
        if not 0 <= index < self.source_frames:
            raise UserError(f"Frame {index} is outside {self.path.name}'s {self.source_frames} frame(s).")
        if self.kind != "movie":
            return self._finish(_read_image(self._files[index]))
        cap = cv2.VideoCapture(str(self.path))
        try:
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok:
            raise UserError(f"{self.path} frame {index} could not be decoded; the file may be truncated.")
        return self._finish(_to_linear_rgb(frame, f"{self.path} frame {index}"))


def open_footage(path: str | os.PathLike, frames: tuple[int, int] | None = None,
                 size: int | None = None) -> Footage:
    """Open a movie file, an image-sequence folder or one image for reading (see `Footage`).

    frames: (first, last_exclusive) source indices, None for all; size: longer side in pixels after
    resizing (aspect kept), None for the source size. Problems raise UserError naming the input.
    """
    return Footage(path, frames=frames, size=size)


class FrameReader:
    """Random access to a `Footage`'s source frames that stays cheap when frames are asked for in order
    (a playhead moving forward): one open decoder, read on when the next frame is asked for, seek
    otherwise. `read(index)` -> (height, width, 3) float32 linear; `close()` releases the decoder."""

    def __init__(self, footage: Footage) -> None:
        self.footage = footage
        self._cap = None
        self._next = -1

    def read(self, index: int) -> np.ndarray:
        f = self.footage
        if f.kind != "movie":
            return f.read(index)
        if not 0 <= index < f.source_frames:
            raise UserError(f"Frame {index} is outside {f.path.name}'s {f.source_frames} frame(s).")
        if self._cap is None:
            self._cap = cv2.VideoCapture(str(f.path))
        if index != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self._cap.read()
        if not ok:
            self._next = -1
            raise UserError(f"{f.path} frame {index} could not be decoded; the file may be truncated.")
        self._next = index + 1
        return f._finish(_to_linear_rgb(frame, f"{f.path} frame {index}"))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
