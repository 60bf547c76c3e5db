"""The streaming orchestrator: footage in -> relit frames and passes out, with progress events.

Pass 1 (analysis): the tracker runs over the clip once (landmarks, pose, matte: small per-frame data);
the result is cached as DIR/analysis.npz (with DIR/analysis.json naming the input) and reused when it
matches the input and the frame range, at any size of the same aspect (it scales to the frame), so
`relight-core analyze INPUT -o DIR/analysis.npz` ahead of time works too. Pass 2 (relight), one frame at
a time, constant memory:
geometry -> input light (intrinsic) -> temporal stabilisation -> render -> write (atomic).

Exposure ("intensity"): by default ("match") the target light is scaled by one constant per run so that
its mean irradiance over camera-facing normals equals that of the input light estimated on the first
frame of the range: a preset then relights at about the input's exposure, and a light that changes over
time keeps its own relative changes. "absolute" uses the target light in physical units (Blender's: a sun of
strength E W/m^2, ...), as a Blender render of the same albedo would show it: a diffuse surface of albedo
rho lit by irradiance E has radiance rho * E / pi, while the engine's image model is albedo x shade(), so
the target SH (and key lights) are scaled by 1/pi (`ABSOLUTE_SCALE`). The input light is then expressed for
a skin albedo of luminance `intrinsic.SKIN_ALBEDO_LUMA`.

Resume: a run skips frames whose files exist only when DIR/settings.json (`render_settings`: input, light,
camera, size, background, light space, intensity, smoothing) says they were made the same way; otherwise
it warns and renders every frame again.

Events (dicts, the worker protocol in the README): started, progress (stage analyze|relight), warning,
frame, done, cancelled. Cancelling (an Event, SIGTERM or Ctrl-C) stops between frames: every file that
exists is complete (written under a temporary name, then renamed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relight_core.errors import UserError

PASSES = ("rgba", "albedo", "shading", "normal", "depth")
PROCESSING_STAGES = ("geometry", "intrinsic", "temporal", "render")
EventSink = Callable[[dict], None]
SPECULAR_ALBEDO = 0.05  # skin-like specular reflectance used with explicit key lights
ABSOLUTE_SCALE = 1.0 / math.pi  # physical irradiance -> the engine's image model (see module docstring)
SHADING_STEP_FROM = 400  # frames this large (longer side, px) get diffuse shading on every 2nd pixel


@dataclasses.dataclass
class RelightJob:
    """One relight request (the worker's JSON request, or the CLI's options).

    lighting: a preset name or light-file path (str), "input" (the estimated input light: identity relight,
    e.g. for novel views only), a dict as in the worker protocol, or a `lights.LightSequence`.
    camera: None (input view), {"yaw": [...], "pitch": [...], "roll": [...]} (degrees, one value or one per
    frame; an orbit of the INPUT camera about the head centre, positive yaw = camera toward head +x,
    positive pitch = camera above) or {"fov_deg": f, "cam2head": 4x4 or [4x4 per frame]} (absolute).
    """

    input: str
    output: str
    lighting: Any = "input"
    frames: tuple[int, int] | None = None
    size: int | None = None
    format: str = "png"
    passes: tuple[str, ...] = ("rgba",)
    device: str = "auto"
    background: str = "keep"
    light_space: str = "world"
    resume: bool = True
    camera: dict | None = None
    intensity: str = "match"
    smoothing: bool = True
    keep_analysis: bool = True


# --------------------------------------------------------------------------------------------- allocator

def tune_allocator() -> bool:
    """Keep freed frame-sized buffers in the process heap (glibc only) -> True when applied.

    By default glibc serves every allocation over 128 KiB with a fresh mmap and returns it on free, so
    each (H, W, 3) temporary of every frame is page-faulted in again (~10% of the per-frame time at
    512 px). Raising the mmap and trim thresholds to 256 MiB makes those buffers reused; peak memory is
    unchanged (the same buffers are live at the peak), freed memory is kept for the next frame.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(libc.mallopt(m_trim_threshold,
                                                                                  512 << 20))
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------- validation

def resolve_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda' -> 'cpu' or 'cuda'; UserError when CUDA is asked for but absent."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"Device '{device}' is not one of auto, cpu, cuda.")
    if device == "cpu":
        return "cpu"
    import torch

    has = torch.cuda.is_available()
    if device == "cuda" and not has:
        raise UserError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto.")
    return "cuda" if has else "cpu"


def _validate(job: RelightJob) -> None:
    bad = [p for p in job.passes if p not in PASSES]
    if bad or not job.passes:
        raise UserError(f"Unknown pass(es) {', '.join(bad) or '(none)'}; choose from {', '.join(PASSES)}.")
    if job.format not in ("png", "exr"):
        raise UserError(f"Format '{job.format}' is not png or exr.")
    if job.background not in ("keep", "transparent"):
        raise UserError(f"Background '{job.background}' is not keep or transparent.")
    if job.light_space not in ("world", "head"):
        raise UserError(f"Light space '{job.light_space}' is not world or head.")
    if job.intensity not in ("match", "absolute"):
        raise UserError(f"Intensity '{job.intensity}' is not match or absolute.")
    if job.size is not None and not 16 <= int(job.size) <= 8192:
        raise UserError(f"Size {job.size} is out of range; give the longer side in pixels (16..8192).")


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


# --------------------------------------------------------------------------------------------- lighting

class SHSequence:
    """A light sequence over explicit SH: shs (N, 9, 3); key_lights: one list for all frames, or one
    list per frame. Frames past the end hold the last light."""

    def __init__(self, shs: np.ndarray, key_lights: list | None = None) -> None:
        self.shs = np.asarray(shs, dtype=np.float64)
        self.keys = key_lights or []
        self.per_frame_keys = bool(self.keys) and all(isinstance(k, list) for k in self.keys)
        self.n_frames = len(self.shs)
        self.name = "sh"

    def sh_at(self, frame: int) -> np.ndarray:
        return self.shs[min(max(frame, 0), self.n_frames - 1)]

    def key_lights_at(self, frame: int) -> list:
        if self.per_frame_keys:
            return self.keys[min(max(frame, 0), len(self.keys) - 1)]
        return self.keys


def _key_lights_from_json(items: list) -> list:
    from relight_core import lights

    out = []
    for i, it in enumerate(items or []):
        try:
            kind = str(it.get("type", "directional")).lower()
            color = tuple(float(c) for c in it.get("color", (1, 1, 1)))
            if kind in ("directional", "sun"):
                out.append(lights.DirectionalLight(direction=np.asarray(it["direction"], float), color=color,
                                                   strength=float(it.get("strength", 1.0))))
            elif kind == "point":
                out.append(lights.PointLight(position=np.asarray(it["position"], float), color=color,
                                             power=float(it.get("power", 100.0)),
                                             radius=float(it.get("radius", 0.0))))
            else:
                raise KeyError("type")
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"Key light {i} of the request is malformed; give type 'directional' (direction, "
                            "color, strength) or 'point' (position, color, power).") from None
    return out


def _sh_array(value: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where} is not a list of numbers; give 9 [r, g, b] triples.") from None
    if arr.shape == (9,):
        arr = np.repeat(arr[:, None], 3, axis=1)
    if arr.shape == (9, 3):
        return arr[None]
    if arr.ndim == 2 and arr.shape[1] == 9:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[1:] == (9, 3):
        return arr
    raise UserError(f"{where} has shape {arr.shape}; give 9 [r, g, b] triples or one such list per frame.")


def reference_light(path: str, size: int | None = 512) -> np.ndarray:
    """Light transfer: the estimated (smoothing-free) input light (9, 3) of a reference portrait image."""
    from relight_core import geometry, intrinsic, io, track

    footage = io.open_footage(path, size=size)
    analysis = track.analyze_footage(footage)
    if not bool(np.any(analysis.valid)):
        raise UserError(f"No face was found in the reference image {path}; use a portrait photo.")
    _, img = next(iter(footage))
    geo = geometry.build_geometry(analysis, 0, footage.height, footage.width)
    est = intrinsic.estimate_input_light(img, intrinsic.cam_to_dpr_normals(geo.normals), geo.labels)
    if est is None:
        raise UserError(f"Too little skin is visible in the reference image {path} to estimate its light.")
    return est[0].astype(np.float64)


def load_target_lighting(spec: Any, size: int | None = 512):
    """A lighting spec -> an object with `sh_at(k)`, `key_lights_at(k)`, `n_frames`, or None for "input".

    spec: "input" | preset name | light-file path | worker dict ({"preset"}, {"file"}, {"reference"},
    {"sh", "key_lights"}) | an object that already has `sh_at`.
    """
    if hasattr(spec, "sh_at"):
        return spec
    if isinstance(spec, dict):
        if "sh" in spec:
            return SHSequence(_sh_array(spec["sh"], "Lighting 'sh'"),
                              _key_lights_from_json(spec.get("key_lights")))
        if "reference" in spec:
            return SHSequence(reference_light(str(spec["reference"]), size)[None], [])
        if "preset" in spec:
            spec = str(spec["preset"])
        elif "file" in spec:
            spec = str(spec["file"])
        else:
            raise UserError("Lighting must be one of {\"preset\"}, {\"file\"}, {\"reference\"} or {\"sh\"}.")
    spec = str(spec)
    if spec == "input":
        return None
    from relight_core import lights

    p = Path(spec)
    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr"):
        if not p.is_file():
            raise UserError(f"Reference image {spec} does not exist.")
        return SHSequence(reference_light(spec, size)[None], [])
    return lights.load_lighting(spec)


# --------------------------------------------------------------------------------------------- cameras

def _orbit_delta(yaw: float, pitch: float, roll: float, pivot: np.ndarray) -> np.ndarray:
    """New camera pose (4x4) in the input camera's frame: the camera orbits `pivot` (cam space).

    Rotation Q = Ry(yaw) @ Rx(-pitch) @ Rz(roll) (degrees): positive yaw moves the camera toward +x (image
    right), positive pitch moves it up (it looks down on the head); position = pivot - Q pivot.
    """
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(-p), -math.sin(-p)], [0, math.sin(-p), math.cos(-p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    q = ry @ rx @ rz
    m = np.eye(4)
    m[:3, :3] = q
    m[:3, 3] = pivot - q @ pivot
    return m


def _per_frame(values: Any, n: int, name: str) -> np.ndarray:
    """One value, 'START:END' (linear over the frames) or one value per frame -> (n,) float64."""
    if isinstance(values, str):
        try:
            a, b = (float(v) for v in values.split(":"))
        except ValueError:
            raise UserError(f"Camera '{name}' value '{values}' is not a number or START:END.") from None
        return np.linspace(a, b, n) if n > 1 else np.array([a])
    try:
        arr = np.atleast_1d(np.asarray(values if values is not None else 0.0, dtype=np.float64))
    except (TypeError, ValueError):
        raise UserError(f"Camera '{name}' must be degrees: one number or one per frame.") from None
    if arr.size == 1:
        return np.full(n, float(arr[0]))
    if arr.size != n:
        raise UserError(f"Camera '{name}' has {arr.size} values for {n} frames; give one or one per frame.")
    return arr


class ViewPlan:
    """Per output frame k: the view (None = input view) as new_from_input 4x4 and intrinsics."""

    def __init__(self, camera: dict | None, n: int) -> None:
        self.kind = "input"
        self.n = n
        if not camera:
            return
        if not isinstance(camera, dict):
            raise UserError("Camera must be {\"yaw\", \"pitch\", \"roll\"} or {\"fov_deg\", \"cam2head\"}.")
        if "cam2head" in camera:
            try:
                m = np.asarray(camera["cam2head"], dtype=np.float64)
                self.fov = float(camera.get("fov_deg", 18.837))
            except (TypeError, ValueError):
                raise UserError("Camera 'cam2head' must be a 4x4 matrix or one per frame.") from None
            if m.shape == (4, 4):
                m = m[None]
            if m.ndim != 3 or m.shape[1:] != (4, 4) or len(m) not in (1, n):
                raise UserError(f"Camera 'cam2head' has shape {m.shape}; give a 4x4 or {n} of them.")
            if not 1.0 <= self.fov <= 170.0:
                raise UserError(f"Camera fov_deg {self.fov} is out of range (1..170 degrees).")
            self.kind, self.cam2head = "absolute", m
            return
        self.yaw = _per_frame(camera.get("yaw"), n, "yaw")
        self.pitch = _per_frame(camera.get("pitch"), n, "pitch")
        self.roll = _per_frame(camera.get("roll"), n, "roll")
        if np.all(self.yaw == 0) and np.all(self.pitch == 0) and np.all(self.roll == 0):
            return
        self.kind = "orbit"

    def view(self, k: int, cam_from_head: np.ndarray, k_in: tuple, hw: tuple[int, int]
             ) -> tuple[np.ndarray, tuple, np.ndarray] | None:
        """(new_from_input 4x4, (fx, fy, cx, cy), cam2head 4x4) for frame k, or None for the input view."""
        if self.kind == "input":
            return None
        c2h_in = np.linalg.inv(cam_from_head)
        if self.kind == "orbit":
            delta = _orbit_delta(self.yaw[k], self.pitch[k], self.roll[k], cam_from_head[:3, 3])
            return np.linalg.inv(delta), k_in, c2h_in @ delta
        c2h = self.cam2head[min(k, len(self.cam2head) - 1)]
        h, w = hw
        fy = 0.5 * h / math.tan(math.radians(self.fov) / 2)
        kk = (fy, fy, w / 2.0, h / 2.0)
        return np.linalg.inv(c2h) @ c2h_in, kk, c2h

    def describe(self, k: int, c2h: np.ndarray | None) -> dict:
        if self.kind == "orbit":
            return {"kind": "orbit", "yaw": float(self.yaw[k]), "pitch": float(self.pitch[k]),
                    "roll": float(self.roll[k]),
                    "cam2head": None if c2h is None else np.round(c2h, 6).tolist()}
        if self.kind == "absolute":
            return {"kind": "absolute", "fov_deg": self.fov,
                    "cam2head": None if c2h is None else np.round(c2h, 6).tolist()}
        return {"kind": "input"}


# --------------------------------------------------------------------------------------------- analysis

def _input_signature(footage, job: RelightJob) -> dict:
    p = Path(job.input).expanduser().resolve()
    st = p.stat()
    h = hashlib.sha1(f"{p}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return {"input": str(p), "id": h, "first": footage.frame_indices[0],
            "stop": footage.frame_indices[-1] + 1, "width": footage.width, "height": footage.height}


def load_or_analyze(footage, job: RelightJob, out: Path, emit: EventSink, cancel: threading.Event):
    """Pass 1: the tracker's `Analysis` of the footage, from DIR/analysis.npz when it matches, else fresh."""
    from relight_core import io, track

    npz, meta = out / "analysis.npz", out / "analysis.json"
    sig = _input_signature(footage, job)
    if npz.is_file():
        try:
            old_sig = json.loads(meta.read_text()) if meta.is_file() else None
            a = track.Analysis.load(str(npz))
            # any size of the same frames will do: the analysis scales to the frame (K_at, matte_at, ...)
            same_aspect = abs(a.width / a.height - footage.width / footage.height) < 0.01
            same = (list(a.frame_indices) == list(footage.frame_indices) and same_aspect
                    and (old_sig is None or old_sig.get("id") == sig["id"]))
            if same:
                emit({"event": "progress", "stage": "analyze", "done": a.n_frames, "total": a.n_frames})
                return a, True
        except Exception:  # noqa: BLE001 - an unreadable cache is simply recomputed
            pass
    total = footage.n_frames

    def progress(*args, **_kw) -> None:
        if cancel.is_set():
            raise _Cancelled()
        done = int(args[0]) if args else 0
        emit({"event": "progress", "stage": "analyze", "done": done, "total": total})

    a = track.analyze_footage(footage, progress=progress)
    if not bool(np.any(a.valid)):
        raise UserError(f"No face was found in {Path(job.input).name}; the engine needs a visible face.")
    if job.keep_analysis:
        with io.atomic_write(npz) as tmp:
            a.save(str(tmp))
            if not tmp.exists() and Path(str(tmp) + ".npz").exists():  # np.savez may append .npz
                os.replace(str(tmp) + ".npz", tmp)
        with io.atomic_write(meta) as tmp:
            tmp.write_text(json.dumps(sig))
    return a, False


class _Cancelled(Exception):
    pass


# --------------------------------------------------------------------------------------------- outputs

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


def write_frame(files: dict[str, Path], layers: dict[str, np.ndarray], fmt: str) -> None:
    """Write one frame's layers (rgba (H,W,4), albedo/shading (H,W,3) linear, normal (H,W,3) 0..1,
    depth (H,W) head units) to `files` atomically."""
    from relight_core import io, render

    if fmt == "exr":
        # The colour goes in the unprefixed R/G/B/A channels (the main image for Blender's sequencer and
        # compositor, Nuke, ...); the other passes are named layers.
        io.write_exr(files["exr"], {("" if k == "rgba" else k): v for k, v in layers.items()})
        return
    for name, path in files.items():
        img = layers[name]
        if name == "normal":
            _write_data_png16(path, img)
        elif name == "depth":
            _write_data_png16(path, img / render.DEPTH_PNG_RANGE)
        elif name == "rgba":
            _write_rgba_png8(path, img)
        else:
            io.write_png(path, img)


def _write_rgba_png8(path: Path, rgba: np.ndarray) -> None:
    """(H, W, 4) linear RGB + straight alpha -> 8-bit sRGB RGBA PNG, atomically (as `io.write_png`, with
    fewer copies: this is the hot path of every run)."""
    import cv2

    from relight_core import io

    r, g, b = cv2.split(io.encode_srgb8(rgba[..., :3]))
    a8 = (np.clip(rgba[..., 3], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with io.atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.merge((b, g, r, a8)), io.PNG_PARAMS):
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


def _prefetch(iterable, timings: dict | None = None, depth: int = 2):
    """Iterate `iterable` on a background thread, `depth` items ahead (frame decoding overlaps the
    processing of the previous frame; OpenCV releases the GIL while decoding). The time spent producing
    items is added to timings["decode"]."""
    import queue

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            source = iter(iterable)
            while True:
                t = time.perf_counter()
                try:
                    item = next(source)
                except StopIteration:
                    break
                if timings is not None:
                    timings["decode"] += time.perf_counter() - t
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(end)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)

    threading.Thread(target=work, name="relight-decoder", daemon=True).start()
    try:
        while True:
            item = q.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _frame_done(emit: EventSink, idx: int, files: dict[str, Path], done: int, total: int,
                written: list) -> Callable[[], None]:
    def call() -> None:
        written.append(idx)
        emit({"event": "frame", "index": idx, "files": {name: str(p) for name, p in files.items()}})
        emit({"event": "progress", "stage": "relight", "done": done, "total": total})
    return call


# --------------------------------------------------------------------------------------------- the frame

class FrameRenderer:
    """Per-frame state and work of pass 2 (geometry -> intrinsic -> temporal -> render).

    Holds the temporal filters (`reset()` forgets them) and the per-run exposure scale.
    """

    STAGES = ("decode", "geometry", "intrinsic", "temporal", "render", "write")

    def __init__(self, job: RelightJob, analysis, target, views: ViewPlan, fps: float) -> None:
        from relight_core import geometry, temporal

        geometry.prepare()
        self.job, self.analysis, self.target, self.views = job, analysis, target, views
        self.light_filter = temporal.SHSmoother(fps=fps) if job.smoothing else None
        self.albedo_filter = temporal.FlowStabilizer(strength=0.6 if job.smoothing else 0.0)
        self.last_light: np.ndarray | None = None
        self.scale: float | None = ABSOLUTE_SCALE if job.intensity == "absolute" else None
        self._feat: np.ndarray | None = None
        self._geo_cache: tuple | None = None
        self._output_sh: np.ndarray | None = None

    def reset(self) -> None:
        if self.light_filter is not None:
            self.light_filter.reset()
        self.albedo_filter.reset()
        self.last_light = None

    def process(self, k: int, a_index: int, img: np.ndarray, timings: dict, render_out: bool = True
                ) -> tuple[dict[str, np.ndarray] | None, dict]:
        """Frame k of the run (analysis row a_index, image (H, W, 3) linear) -> (layers or None, info).

        render_out False: only update the temporal state (resume warm-up).
        """
        from relight_core import geometry, intrinsic

        h, w = img.shape[:2]
        info: dict[str, Any] = {"warnings": []}
        t = time.perf_counter()
        # diffuse shading is smooth (interpolated mesh normals): evaluated at half resolution, upsampled
        step = 2 if max(h, w) >= SHADING_STEP_FROM else 1
        key = (a_index, h, w, id(img))
        if self._geo_cache is not None and self._geo_cache[0] == key:  # a still image rendered again
            geo = self._geo_cache[1]
        else:
            geo = geometry.build_geometry(self.analysis, a_index, h, w, step)
            self._geo_cache = (key, geo)
        half = geo.normals_every(step)
        alpha = np.ascontiguousarray(geo.alpha, dtype=np.float32)
        t2 = time.perf_counter()
        timings["geometry"] += t2 - t
        est = intrinsic.estimate_input_light(img, half, geo.labels, frame="cam", step=step)
        hh, hw = half.shape[:2]
        if self._feat is None or self._feat.shape[0] != hh * hw:
            self._feat = np.empty((hh * hw, 9), np.float32)
        feats = intrinsic.sh_features_cam(half, out=self._feat)
        t3 = time.perf_counter()
        timings["intrinsic"] += t3 - t2
        if est is None:
            info["warnings"].append("too little skin visible to estimate the input light; kept the previous")
            light_in = self.last_light if self.last_light is not None else _default_light()
        else:
            light_in = self.light_filter(est[0]) if self.light_filter is not None else est[0]
        self.last_light = np.asarray(light_in, dtype=np.float32)
        info["light_in"] = self.last_light
        t4 = time.perf_counter()
        timings["temporal"] += t4 - t3
        cfh = np.asarray(self.analysis.cam_from_head[a_index], dtype=np.float64)
        shs = [self.last_light]
        if self.target is not None:
            if self.scale is None:
                self.scale = render_exposure(self.last_light, self._target_sh_cam(0, cfh))
            if render_out:
                shs.append(self._target_sh_cam(k, cfh) * self.scale)
        self._output_sh = shs[-1]  # the light of the output's shading (for `render.mirror_fill`'s pixels)
        shaded = [e.reshape(hh, hw, 3) for e in intrinsic.shade_features(feats, shs)]
        intrinsic.fade_dim_colour(shaded[0])  # the estimated input shading; a target light is exact
        view = self.views.view(k, cfh, _intrinsics(self.analysis, h, w), (h, w)) if render_out else None
        t_keys = time.perf_counter()
        # key lights: their cast shadows darken the target shading, their specular comes on top
        spec = self._key_lights(k, cfh, view, geo, half, alpha, step, shaded[1]) if len(shaded) > 1 else None
        t_keys = time.perf_counter() - t_keys
        timings["render"] += t_keys  # key lights are rendering, done here on the shading grid
        shaded = [_upsample(e, h, w) for e in shaded]
        shading_in = shaded[0]
        shading = shaded[1] if len(shaded) > 1 else shading_in
        albedo = intrinsic.estimate_albedo(img, shading_in, alpha)
        intrinsic.suppress_highlights(albedo, geo.labels == 1)
        t5 = time.perf_counter()
        timings["intrinsic"] += t5 - t4 - t_keys
        albedo = self.albedo_filter(albedo, img, alpha > 0.02)
        t6 = time.perf_counter()
        timings["temporal"] += t6 - t5
        if not render_out:
            return None, info
        layers = self._render(view, img, geo, alpha, albedo, shading, spec, step, info)
        timings["render"] += time.perf_counter() - t6
        return layers, info

    def _key_lights(self, k: int, cfh: np.ndarray, view: tuple | None, geo, normals: np.ndarray,
                    alpha: np.ndarray, step: int, shading: np.ndarray) -> np.ndarray | None:
        """Frame k's key lights on the shading grid (every `step`-th pixel; normals (h, w, 3) are that
        grid's): their cast shadows are added to the target shading (h, w, 3) in place; returns their
        specular irradiance (h, w, 3), or None when this frame has no key light."""
        from relight_core import render

        keys = list(self.target.key_lights_at(k) or [])
        if not keys:
            return None
        rot = render.light_rotation(cfh, self.job.light_space)
        view_pos = np.zeros(3) if view is None else np.linalg.inv(view[0])[:3, 3]
        points = np.asarray(geo.points, dtype=np.float32)[::step, ::step]
        person = alpha[::step, ::step] > 0.02
        scaled = [_scaled_light(kl, self.scale or 1.0) for kl in keys]
        delta, spec = render.key_light_terms(normals, points, person, scaled, rot, cfh[:3, 3], view_pos)
        shading += delta
        np.maximum(shading, 0.0, out=shading)
        return spec

    def _target_sh_cam(self, k: int, cam_from_head: np.ndarray) -> np.ndarray:
        from relight_core import render

        sh = np.asarray(self.target.sh_at(k), dtype=np.float64)
        if sh.ndim == 1:
            sh = np.repeat(sh[:, None], 3, axis=1)
        rot = render.light_rotation(cam_from_head, self.job.light_space)
        return render.sh_in_camera(sh, rot)

    def _render(self, view: tuple | None, img: np.ndarray, geo, alpha: np.ndarray, albedo: np.ndarray,
                shading: np.ndarray, spec: np.ndarray | None, step: int, info: dict) -> dict[str, np.ndarray]:
        """Relight (albedo x shading, plus the key lights' specular (h, w, 3) on the `step` grid where
        given), change the view, composite -> the frame's layers."""
        from relight_core import render
        from relight_core.intrinsic import rgb3

        job = self.job
        h, w = img.shape[:2]
        points = np.asarray(geo.points, dtype=np.float32)
        person = alpha > 0.02
        info["cam2head"] = None if view is None else view[2]
        relit = albedo * shading
        if spec is not None:
            where = render.specular_mask(albedo[::step, ::step], geo.labels[::step, ::step])
            spec *= rgb3(where * np.float32(SPECULAR_ALBEDO))
            relit += _upsample(spec, h, w)
        depth = np.asarray(geo.depth, dtype=np.float32)
        want = job.passes if job.format == "png" else PASSES
        if view is None:
            bg = None if job.background == "transparent" else img
            rgba = render.composite(relit, alpha, bg)
            out_alpha, out_depth = alpha, depth
            out_normals = geo.normals if "normal" in want else None
            out_albedo, out_shading = albedo, shading
        else:
            new_from_input, kk, _ = view
            valid = person & (depth > 0)
            mx, my, cover, out_depth = render.reproject_maps(points, valid, new_from_input, kk, (h, w),
                                                             step=step)
            out_alpha = render.sample(alpha, mx, my) * cover
            cover3 = rgb3(cover)
            plate = render.inpaint_background(img, alpha)
            render.decontaminate_edge(relit, img, alpha, plate)  # a turned rim stretches the matte's edge
            out_rgb = render.sample(relit, mx, my)
            out_albedo = render.sample(albedo, mx, my) * cover3 if "albedo" in want else None
            out_shading = render.sample(shading, mx, my) * cover3 if "shading" in want else None
            out_normals = render.sample(geo.normals, mx, my) if "normal" in want else None
            self._fill_from_mirror(geo, view, depth, out_depth, albedo,
                                   {"rgb": out_rgb, "albedo": out_albedo, "shading": out_shading,
                                    "normal": out_normals})
            if out_normals is not None:
                out_normals = out_normals @ new_from_input[:3, :3].astype(np.float32).T
                out_normals /= rgb3(np.maximum(np.linalg.norm(out_normals, axis=-1), 1e-6))
            rgba = render.composite(out_rgb, out_alpha, None if job.background == "transparent" else plate)
        layers: dict[str, np.ndarray] = {}
        if "rgba" in want:
            layers["rgba"] = rgba
        inside = (out_alpha > 0.02).astype(np.float32)
        if "albedo" in want:
            layers["albedo"] = out_albedo * rgb3(inside)
        if "shading" in want:
            layers["shading"] = out_shading * rgb3(inside)
        if "normal" in want:
            layers["normal"] = render.encode_normals(out_normals, out_alpha)
        if "depth" in want:
            layers["depth"] = (out_depth * inside).astype(np.float32)
        return layers

    def _fill_from_mirror(self, geo, view: tuple, depth_in: np.ndarray, depth_out: np.ndarray,
                          albedo: np.ndarray, maps: dict[str, np.ndarray | None]) -> None:
        """Novel-view face pixels the input saw badly or not at all take the mirrored side's albedo,
        shaded with their own normals (`render.mirror_fill`), in place in maps: "rgb" (relit), "albedo",
        "shading" (h, w, 3) and "normal" (input-camera space), each None when not wanted. The SH light
        only: a key light's cast shadow and specular are not drawn on those pixels."""
        from relight_core import intrinsic, render

        if geo.face_tris is None or self._output_sh is None:
            return
        new_from_input, kk, _ = view
        fill = render.mirror_fill(geo.vertices, geo.face_tris, geo.face_normals, new_from_input, geo.K, kk,
                                  depth_out.shape, depth_in, depth_out)
        if fill.ys.size == 0:
            return
        at = (fill.ys, fill.xs)
        w = fill.weight[:, None]
        alb = render.sample_points(albedo, fill.src_x, fill.src_y)
        shd = intrinsic.shade_features(intrinsic.sh_features_cam(fill.normals), [self._output_sh])[0]
        for name, value in (("rgb", alb * shd), ("albedo", alb), ("shading", shd), ("normal", fill.normals)):
            m = maps[name]
            if m is not None:
                m[at] += w * (value - m[at])


def _upsample(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (h', w', C) map to (h, w, C) (identity when already that size)."""
    import cv2

    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def render_exposure(light_in: np.ndarray, target_cam: np.ndarray) -> float:
    """The per-run exposure scale of the "match" intensity mode (see the module docstring)."""
    from relight_core import render

    return render.exposure_scale(light_in, target_cam)


def _scaled_light(light, scale: float):
    if scale == 1.0:
        return light
    fields = {f.name for f in dataclasses.fields(light)} if dataclasses.is_dataclass(light) else set()
    for attr in ("strength", "power"):
        if attr in fields:
            return dataclasses.replace(light, **{attr: getattr(light, attr) * scale})
    return light


def _default_light() -> np.ndarray:
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 1.0
    return sh


def _intrinsics(analysis, h: int, w: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the analysis scaled to (h, w)."""
    k = np.asarray(analysis.K, dtype=np.float64)
    sx, sy = w / float(analysis.width), h / float(analysis.height)
    return float(k[0, 0] * sx), float(k[1, 1] * sy), float(k[0, 2] * sx), float(k[1, 2] * sy)


# --------------------------------------------------------------------------------------------- the run

def run(job: RelightJob, on_event: EventSink | None = None, cancel: threading.Event | None = None) -> dict:
    """Run a relight job -> the report (also written to DIR/report.json).

    on_event receives the protocol events; cancel (threading.Event) stops the run between frames
    (a "cancelled" event is sent and the report says so). Raises UserError for bad input.
    """
    emit = on_event or (lambda e: None)
    cancel = cancel or threading.Event()
    t_start = time.perf_counter()
    _validate(job)
    tune_allocator()
    with single_threaded_libraries((os.cpu_count() or 1) <= 4):
        return _run(job, emit, cancel, t_start)


@contextlib.contextmanager
def single_threaded_libraries(active: bool = True):
    """While active: one worker thread for OpenCV, the BLAS (numpy, scipy) and OpenMP (torch); the
    previous settings are restored afterwards.

    Frames are already decoded, processed and encoded on three threads of our own; the libraries' pools on
    top of them oversubscribe a small machine, and a BLAS pool's threads spin on every small matrix
    product (the per-frame ones are 478 x 3 or 65k x 9): at 2 cores, geometry 20.9 -> 12.8 ms and
    processing 21 -> 28 fps at 512 px with them limited.
    """
    if not active:
        yield
        return
    import cv2
    from threadpoolctl import threadpool_limits

    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        cv2.setNumThreads(cv2_threads)


def _run(job: RelightJob, emit: EventSink, cancel: threading.Event, t_start: float) -> dict:
    """`run` once the allocator and thread settings are made."""
    from relight_core import io

    device = resolve_device(job.device)
    footage = io.open_footage(job.input, frames=tuple(job.frames) if job.frames else None, size=job.size)
    target = load_target_lighting(job.lighting, size=512)
    still = footage.kind == "image"
    n_out = footage.n_frames
    if still:
        n_out = max(n_out, _sequence_length(job.camera), int(getattr(target, "n_frames", 1) or 1))
    views = ViewPlan(job.camera, n_out)
    existed = Path(job.output).expanduser().exists()
    out = prepare_output(job.output)
    try:
        return _run_frames(job, footage, target, views, out, n_out, still, device, emit, cancel, t_start)
    except UserError:
        frames_made = any(f.is_file() and not f.name.startswith("analysis.") for f in out.rglob("*"))
        if not existed and not frames_made:  # a folder this run created, holding nothing of value
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _run_frames(job: RelightJob, footage, target, views: ViewPlan, out: Path, n_out: int, still: bool,
                device: str, emit: EventSink, cancel: threading.Event, t_start: float) -> dict:
    """Pass 1 and pass 2 of `run` once the inputs are validated and the output folder exists."""
    stem = footage.name
    emit({"event": "started", "frames": n_out, "output": str(out)})

    timings = {s: 0.0 for s in FrameRenderer.STAGES}
    report: dict[str, Any] = {"input": str(Path(job.input).expanduser().resolve()), "output": str(out),
                              "device": device, "compute": "cpu: numpy/OpenCV, torch for z-buffer scatters "
                              "(no GPU kernels yet)", "options": _job_options(job), "frames": []}
    report_path = out / "report.json"
    settings = _as_json(render_settings(job, footage))
    resume = job.resume and _settings_unchanged(out, settings, footage, job, emit)
    old_frames = _previous_report_frames(report_path) if resume else {}
    try:
        analysis, cached = load_or_analyze(footage, job, out, emit, cancel)
    except _Cancelled:
        emit({"event": "cancelled", "frames_done": 0})
        return {"cancelled": True, "frames_done": 0}
    timings["analyze"] = 0.0 if cached else time.perf_counter() - t_start
    report["analysis"] = {"cached": cached, "warnings": list(getattr(analysis, "warnings", []) or [])}
    for wmsg in report["analysis"]["warnings"]:
        emit({"event": "warning", "frame": None, "message": str(wmsg)})

    out_indices = footage.frame_indices if not still else list(range(n_out))
    _write_json(out / SETTINGS_FILE, settings)  # before the first frame is written
    done_flags = [resume and all(p.is_file() for p in frame_paths(out, stem, i, job.passes, job.format)
                                     .values()) for i in out_indices]
    warm = 3  # frames re-analysed before a resumed stretch, so the temporal filters start settled
    need = [not d for d in done_flags]
    analyse_only = [done_flags[k] and (k == 0 or any(need[k + 1:k + 1 + warm])) for k in range(n_out)]

    renderer = FrameRenderer(job, analysis, target, views, float(footage.fps or 25.0))
    cancelled = False
    per_frame: dict[int, dict] = dict(old_frames)
    written: list[int] = []
    t_pass2 = time.perf_counter()
    writer = FrameWriter(job.format, timings)
    try:
        cancelled = _relight_frames(job, footage, analysis, renderer, views, writer, out, stem, n_out, still,
                                    out_indices, done_flags, analyse_only, per_frame, written, timings, emit,
                                    cancel)
    finally:
        writer.close()
    pass2_s = time.perf_counter() - t_pass2
    frames_written = len(written)
    processed = max(frames_written, 1)
    total_s = time.perf_counter() - t_start
    report["frames"] = [per_frame[i] for i in sorted(per_frame)]
    report["exposure_scale"] = renderer.scale
    report["totals"] = {
        "frames": n_out, "written": frames_written, "skipped": sum(done_flags), "cancelled": cancelled,
        "seconds": round(total_s, 3),
        "stage_seconds": {s: round(v, 4) for s, v in timings.items()},
        "ms_per_frame": {s: round(1000 * v / processed, 2) for s, v in timings.items() if s != "analyze"},
        # null when every frame was already done: a rate over no frames means nothing
        "fps_processing": round(processed / max(sum(timings[s] for s in PROCESSING_STAGES), 1e-9), 2)
        if frames_written else None,
        "fps_end_to_end": round(processed / max(pass2_s, 1e-9), 2) if frames_written else None,
        "pass2_seconds": round(pass2_s, 3),
    }
    _write_json(report_path, report)
    if cancelled:
        emit({"event": "cancelled", "frames_done": frames_written})
    else:
        emit({"event": "done", "frames": frames_written, "output": str(out), "report": str(report_path)})
    return report



def _relight_frames(job: RelightJob, footage, analysis, renderer: FrameRenderer, views: ViewPlan,
                    writer: FrameWriter, out: Path, stem: str, n_out: int, still: bool, out_indices: list,
                    done_flags: list, analyse_only: list, per_frame: dict, written: list, timings: dict,
                    emit: EventSink, cancel: threading.Event) -> bool:
    """Pass 2 over the frames; returns True when cancelled."""
    it = _prefetch(footage, timings) if not still else iter(footage)
    img = None
    a_index = 0
    for k in range(n_out):
        if cancel.is_set():
            return True
        t0 = time.perf_counter()
        if not still or img is None:
            try:
                _, img = next(it)
            except StopIteration:
                break
            a_index = k if not still else 0
        timings["decode"] += time.perf_counter() - t0
        idx = out_indices[k]
        if done_flags[k] and not analyse_only[k]:
            emit({"event": "progress", "stage": "relight", "done": k + 1, "total": n_out})
            continue
        if done_flags[k]:
            renderer.process(k, a_index, img, timings, render_out=False)
            emit({"event": "progress", "stage": "relight", "done": k + 1, "total": n_out})
            continue
        before = {st: timings[st] for st in PROCESSING_STAGES}
        layers, info = renderer.process(k, a_index, img, timings)
        frame_ms = {st: round(1000 * (timings[st] - before[st]), 2) for st in PROCESSING_STAGES}
        files = frame_paths(out, stem, idx, job.passes, job.format)
        tracked = bool(np.asarray(analysis.valid)[a_index])
        warnings = list(info["warnings"])
        if not tracked:
            warnings.append("no face tracked on this frame; pose and matte interpolated from neighbours")
        for wmsg in warnings:
            emit({"event": "warning", "frame": idx, "message": wmsg})
        faces = getattr(analysis, "face_count", None)
        per_frame[idx] = {"index": idx, "tracked": tracked,
                          "faces": 1 if faces is None else int(np.asarray(faces)[a_index]),
                          "light_in": np.round(info["light_in"], 5).tolist(),
                          "view": views.describe(k, info.get("cam2head")),
                          "warnings": warnings, "ms": frame_ms}
        writer.submit(files, layers, _frame_done(emit, idx, files, k + 1, n_out, written))
    return False


SETTINGS_FILE = "settings.json"


def render_settings(job: RelightJob, footage) -> dict:
    """What decides the pixels of the output frames -> a JSON-able dict: the input (path, size, mtime), the
    lighting (a light or reference file also by size and mtime, so an edited file counts as a change), the
    camera, size, background, light space, intensity and smoothing. Passes, format, frame range, device
    and resume are not in it: frames of another range, pass or format are other files."""
    return {"version": 1, "input": _input_signature(footage, job)["id"],
            "lighting": _lighting_key(job.lighting), "camera": job.camera, "size": job.size,
            "background": job.background, "light_space": job.light_space, "intensity": job.intensity,
            "smoothing": job.smoothing}


def _lighting_key(spec: Any) -> Any:
    """A lighting spec as a comparable JSON-able value (files by path, size and mtime; light objects by
    their SH per frame)."""
    if hasattr(spec, "sh_at"):
        n = int(getattr(spec, "n_frames", 1) or 1)
        shs = np.asarray([spec.sh_at(k) for k in range(n)], dtype=np.float64)
        return {"object": type(spec).__name__, "sh": hashlib.sha1(shs.tobytes()).hexdigest()}
    if isinstance(spec, dict):
        return {k: (_lighting_key(v) if k in ("file", "reference") else v) for k, v in spec.items()}
    p = Path(str(spec)).expanduser()
    if p.is_file():
        st = p.stat()
        return {"file": str(p.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}
    return spec


def _settings_unchanged(out: Path, settings: dict, footage, job: RelightJob, emit: EventSink) -> bool:
    """True when DIR/settings.json holds `settings` (as written by `_as_json`), i.e. finished frames there
    would come out the same; otherwise False, with a warning that every frame is rendered again when DIR
    holds settings or frames of an earlier run."""
    try:
        old = json.loads((out / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        old = None
    if old == settings:
        return True
    first = frame_paths(out, footage.name, footage.frame_indices[0] if footage.kind != "image" else 0,
                        job.passes, job.format)
    if old is not None or any(p.is_file() for p in first.values()):
        emit({"event": "warning", "frame": None,
              "message": f"the settings differ from those that made the frames in {out}; every frame is "
                         "rendered again"})
    return False


def _sequence_length(camera: dict | None) -> int:
    if not camera or not isinstance(camera, dict):
        return 1
    n = 1
    for key in ("yaw", "pitch", "roll", "cam2head"):
        v = camera.get(key)
        if v is None:
            continue
        arr = np.asarray(v, dtype=object if key != "cam2head" else np.float64)
        if key == "cam2head":
            n = max(n, len(arr) if arr.ndim == 3 else 1)
        else:
            n = max(n, int(np.atleast_1d(arr).size))
    return n


def _job_options(job: RelightJob) -> dict:
    d = dataclasses.asdict(job)
    if not isinstance(d.get("lighting"), (str, dict, type(None))):
        d["lighting"] = getattr(job.lighting, "name", type(job.lighting).__name__)
    if isinstance(d.get("lighting"), dict) and "sh" in d["lighting"]:
        d["lighting"] = {"sh": "(inline)", "key_lights": d["lighting"].get("key_lights")}
    if isinstance(d.get("camera"), dict):
        d["camera"] = {k: ("(per frame)" if isinstance(v, list) and len(v) > 3 else v)
                       for k, v in d["camera"].items()}
    d["passes"] = list(job.passes)
    return d


def _previous_report_frames(path: Path) -> dict[int, dict]:
    try:
        data = json.loads(path.read_text())
        return {int(f["index"]): f for f in data.get("frames", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _json_default(o: Any) -> Any:
    """JSON for what `json` cannot write itself: arrays as lists, numpy scalars as numbers, else str."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _as_json(data: Any) -> Any:
    """`data` as it reads back from `_write_json` (so that it compares equal to a file's contents)."""
    return json.loads(json.dumps(data, default=_json_default))


def _write_json(path: Path, data: Any) -> None:
    from relight_core import io

    with io.atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=_json_default))
