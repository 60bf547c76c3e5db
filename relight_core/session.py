"""The clip session: footage opened once, its analysis, and the one per-frame path of the engine.

Everything that renders a frame goes through here: the batch loop (`pipeline.run`, the `relight` and
`worker` commands, farm chunks) and the live preview (`serve`).

Per frame, the work splits where lighting starts to matter:
1. `prepare_frame` (lighting-independent, cacheable): geometry (depth, normals, labels, matte) at the
   frame's size, the SH features of the normals on the shading grid, the input light, the input shading
   and the albedo (image / input shading).
2. Albedo stabilisation over time (`temporal.FlowStabilizer`, a recursive filter along the input's flow):
   the batch loop feeds every frame in order; a preview warms the filter up on the `PREVIEW_WARMUP` frame
   before the one shown (continuing from its stabilised albedo when that is cached, as when playing
   forward), which approximates the batch's state (the past's weight decays as 0.6^n). Measured: a
   previewed frame is within 47-58 dB (PSNR inside the matte) of the batch render of that frame.
3. `Look.render` (the lighting and the view): the target light's shading on the shading grid, the key
   lights' shadows and specular, albedo x shading, a new camera's re-projection, the composite and passes.

The input light of frame k is the estimated light smoothed over time by a causal One-Euro filter from
the clip's first analysed frame (`InputLightTrack`). A batch run estimates it as it goes; the whole
clip's track is stored next to the analysis (`input_light_<w>x<h>.npz`) once known, so that a preview,
a farm chunk or a second run reads the same light for every frame without re-estimating it. The "match"
exposure is computed from the clip's first analysed frame's light when the track is known.

`ClipSession` keeps decoded frames and `FrameState`s in a least-recently-used cache bounded in MB:
changing only the lighting re-shades a cached frame; changing the view re-projects it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from relight_core import layout, passes
from relight_core import lighting as lighting_mod
from relight_core.errors import UserError
from relight_core.views import ViewPlan, intrinsics

EventSink = Callable[[dict], None]
SHADING_STEP_FROM = 400  # frames this large (longer side, px) get diffuse shading on every 2nd pixel
PROCESSING_STAGES = ("geometry", "intrinsic", "temporal", "render")
STAGES = ("decode", "geometry", "intrinsic", "temporal", "render", "write")
PREVIEW_WARMUP = 1  # frames before a previewed frame that warm its albedo filter up (module docstring)
DEFAULT_CACHE_MB = 2048
LIGHT_TRACK_VERSION = 1


class Cancelled(Exception):
    """Raised inside long work (tracking, the light pass) when its cancel Event is set."""


def new_timings() -> dict[str, float]:
    """A zeroed per-stage time accumulator (seconds), as the batch report and `serve` use it."""
    return {s: 0.0 for s in STAGES}


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


def resolve_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda' -> 'cpu' or 'cuda'; UserError when CUDA is asked for but absent."""
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"Device '{device}' is not one of auto, cpu, cuda.")
    if device == "cpu":
        return "cpu"
    if importlib.util.find_spec("torch") is None:  # torch is the optional `gpu` extra
        if device == "cuda":
            raise UserError("Device 'cuda' needs torch, which is not installed; install relight-core[gpu] "
                            "or use --device cpu or auto.")
        return "cpu"
    import torch

    has = torch.cuda.is_available()
    if device == "cuda" and not has:
        raise UserError("Device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto.")
    return "cuda" if has else "cpu"


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


def upsample(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a (h', w', C) map to (h, w, C) (identity when already that size)."""
    import cv2

    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


# --------------------------------------------------------------------------------------------- analysis

def input_signature(footage) -> dict:
    """What identifies the analysed footage: the resolved path, its content fingerprint as "id"
    (`fingerprint.footage_fingerprint`: bytes, not path or mtime), the source frame range and the frame
    size."""
    from relight_core import fingerprint

    p = Path(footage.path).expanduser().resolve()
    return {"input": str(p), "id": fingerprint.footage_fingerprint(footage),
            "first": footage.frame_indices[0], "stop": footage.frame_indices[-1] + 1,
            "width": footage.width, "height": footage.height}


def analysis_mismatch(analysis, footage, fov_deg: float | None = None) -> str | None:
    """Why a stored analysis cannot serve `footage` (one phrase), or None when it can: it must have been
    made from the same bytes (`Analysis.source["input"]`), at exactly this frame size, with this engine
    version and field of view, and cover the footage's frames (a movie that ends early is covered by
    the analysis of the frames it has)."""
    from relight_core import __version__, fingerprint

    src = getattr(analysis, "source", None) or {}
    if src.get("input") != fingerprint.footage_fingerprint(footage):
        return "for other footage (or an earlier version of this file)" if src.get("input") else \
            "without a record of its footage"
    if list(src.get("size") or []) != [footage.width, footage.height]:
        return f"at another size ({'x'.join(str(v) for v in src.get('size') or [])})"
    if src.get("engine") != __version__:
        return f"by engine version {src.get('engine')}"
    if fov_deg is not None and abs(analysis.fov_deg - fov_deg) > 1e-6:
        return f"for a field of view of {analysis.fov_deg:g} degrees"
    have = [int(i) for i in analysis.frame_indices]
    asked = src.get("frames") or [have[0], have[-1] + 1]
    want = list(footage.frame_indices)
    if not have or have != list(range(have[0], have[0] + len(have))) or not (
            asked[0] <= want[0] and want[-1] < asked[1] and have[0] == asked[0]):
        return "for other frames"
    return None


def load_or_analyze(footage, cache_dir: Path | None, keep: bool, emit: EventSink,
                    cancel: threading.Event, fov_deg: float | None = None):
    """The tracker's `Analysis` of the footage -> (analysis, cached): from cache_dir/analysis.npz when
    `analysis_mismatch` finds nothing against it, else tracked now (progress events, stage "analyze";
    `Cancelled` when cancel is set) and stored there when `keep` (with a warning when a stored analysis
    was made for something else)."""
    from relight_core import layout, track

    npz = None if cache_dir is None else cache_dir / layout.ANALYSIS_NAME
    if npz is not None and npz.is_file():
        try:
            a = track.Analysis.load(str(npz))
            why = analysis_mismatch(a, footage, fov_deg)
        except UserError:
            why = "by an engine that wrote another format"
        if why is None:
            emit({"event": "progress", "stage": "analyze", "done": a.n_frames, "total": a.n_frames})
            return a, True
        emit({"event": "warning", "frame": None,
              "message": f"the analysis in {npz} was made {why}; the footage is tracked again"})
    total = footage.n_frames

    def progress(*args, **_kw) -> None:
        if cancel.is_set():
            raise Cancelled()
        emit({"event": "progress", "stage": "analyze", "done": int(args[0]) if args else 0, "total": total})

    a = track.analyze_footage(footage, progress=progress, fov_deg=fov_deg)
    if not bool(np.any(a.valid)):
        raise UserError(f"No face was found in {footage.path.name}; the engine needs a visible face.")
    if keep and npz is not None:
        track.write_analysis(a, npz)
    return a, False


# --------------------------------------------------------------------------------------------- input light

class LightFollower:
    """Causal smoothing of per-frame input-light estimates (9, 3): One-Euro (`temporal.SHSmoother`) when
    smoothing, holding the last light where a frame has no estimate (a neutral light before the first)."""

    def __init__(self, fps: float, smoothing: bool = True) -> None:
        from relight_core import temporal

        self.filter = temporal.SHSmoother(fps=fps) if smoothing else None
        self.last: np.ndarray | None = None

    def __call__(self, est: np.ndarray | None) -> np.ndarray:
        if est is None:
            return self.last if self.last is not None else lighting_mod.default_light()
        light = self.filter(est) if self.filter is not None else est
        self.last = np.asarray(light, dtype=np.float32)
        return self.last


class InputLightTrack:
    """The clip's input light per analysis row: raw estimates (N, 9, 3) float32 (NaN where a frame had
    too little skin) and the smoothed sequence the renders use (`LightFollower` over the rows in order).

    `light(row, estimate)` is the one way a frame gets its input light: from the finished track, or, while
    the track is still being made (a batch run going through the clip), by calling `estimate()` and
    following it causally; so both give the same light when the run starts at row 0.
    """

    def __init__(self, n: int, fps: float, smoothing: bool = True) -> None:
        self.raw = np.full((n, 9, 3), np.nan, np.float32)
        self.known = np.zeros(n, bool)
        self.fps, self.smoothing = float(fps), smoothing
        self._follower = LightFollower(fps, smoothing)
        self._smoothed: np.ndarray | None = None
        self.next_row = 0  # rows estimated in order from 0 so far

    @property
    def complete(self) -> bool:
        return bool(self.known.all())

    def record(self, row: int, est: np.ndarray | None) -> None:
        if est is not None:
            self.raw[row] = est
        self.known[row] = True
        if row == self.next_row:
            self.next_row += 1
        self._smoothed = None

    def smoothed(self) -> np.ndarray:
        """(N, 9, 3) float32: the light each row is rendered with (needs `complete`)."""
        if self._smoothed is None:
            follow = LightFollower(self.fps, self.smoothing)
            self._smoothed = np.stack([follow(None if np.isnan(r[0, 0]) else r) for r in self.raw])
        return self._smoothed

    def light(self, row: int, estimate: Callable[[], np.ndarray | None]) -> tuple[np.ndarray, bool]:
        """Row's input light (9, 3) float32 -> (light, estimated: False where the frame had too little
        skin and a neighbour's light is used)."""
        if self.complete:
            return self.smoothed()[row], not bool(np.isnan(self.raw[row, 0, 0]))
        est = estimate()
        self.record(row, est)
        return self._follower(est), est is not None

    def first_light(self) -> np.ndarray | None:
        """The smoothed light of row 0 when the track is complete (the "match" exposure's reference)."""
        return self.smoothed()[0] if self.complete else None

    def save(self, path: Path, key: dict) -> None:
        from relight_core import io

        with io.atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, raw=self.raw, meta=np.array(json.dumps({**key, "version": LIGHT_TRACK_VERSION})))

    @classmethod
    def load(cls, path: Path, key: dict, n: int, fps: float, smoothing: bool) -> InputLightTrack | None:
        """The stored track when it was made for `key` (the analysis' input and frames) with n rows."""
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                raw = np.asarray(z["raw"], np.float32)
        except (OSError, ValueError, KeyError):
            return None
        if meta != {**key, "version": LIGHT_TRACK_VERSION} or raw.shape != (n, 9, 3):
            return None
        track = cls(n, fps, smoothing)
        track.raw[:] = raw
        track.known[:] = True
        track.next_row = n
        return track


# --------------------------------------------------------------------------------------------- one frame

@dataclasses.dataclass
class FrameState:
    """The lighting-independent intermediates of one frame at one size (what `ClipSession` caches).

    img (H, W, 3) linear; geo `geometry.Geometry`; half: normals (h, w, 3) on the shading grid (every
    `step`-th pixel); feats (h*w, 9) their SH features; alpha (H, W) float32 matte; light_in (9, 3) the
    input light; shading_in (H, W, 3) its shading; albedo (H, W, 3) image / shading_in, not yet stabilised
    over time; stable_albedo: the stabilised albedo once known.
    """

    row: int
    img: np.ndarray
    geo: Any
    step: int
    half: np.ndarray
    feats: np.ndarray
    alpha: np.ndarray
    cam_from_head: np.ndarray
    light_in: np.ndarray
    light_estimated: bool
    shading_in: np.ndarray
    albedo: np.ndarray
    stable_albedo: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        arrays = [v for v in dataclasses.astuple(self) if isinstance(v, np.ndarray)]
        arrays += [v for v in vars(self.geo).values() if isinstance(v, np.ndarray)]
        return int(sum(a.nbytes for a in arrays))


def shading_step(height: int, width: int) -> int:
    """Diffuse shading is smooth (interpolated mesh normals): frames this large are shaded on every 2nd
    pixel and upsampled."""
    return 2 if max(height, width) >= SHADING_STEP_FROM else 1


def prepare_frame(analysis, row: int, img: np.ndarray, light: InputLightTrack, timings: dict) -> FrameState:
    """Step 1 of the per-frame path (module docstring): frame `row` of the analysis, image (H, W, 3)
    linear -> its FrameState. Stage times are added to timings (geometry, intrinsic, temporal)."""
    from relight_core import geometry, intrinsic

    h, w = img.shape[:2]
    t = time.perf_counter()
    step = shading_step(h, w)
    geo = geometry.build_geometry(analysis, row, h, w, step)
    half = geo.normals_every(step)
    alpha = np.ascontiguousarray(geo.alpha, dtype=np.float32)
    t2 = time.perf_counter()
    timings["geometry"] += t2 - t
    feats = intrinsic.sh_features_cam(half)
    light_in, estimated = light.light(
        row, lambda: _estimate(intrinsic.estimate_input_light(img, half, geo.labels, frame="cam", step=step)))
    t3 = time.perf_counter()
    timings["intrinsic"] += t3 - t2
    hh, hw = half.shape[:2]
    shading_in = intrinsic.shade_features(feats, [light_in])[0].reshape(hh, hw, 3)
    intrinsic.fade_dim_colour(shading_in)  # the estimated input shading; a target light is exact
    shading_in = upsample(shading_in, h, w)
    albedo = intrinsic.estimate_albedo(img, shading_in, alpha)
    intrinsic.suppress_highlights(albedo, geo.labels == 1)
    timings["intrinsic"] += time.perf_counter() - t3
    cfh = np.asarray(analysis.cam_from_head[row], dtype=np.float64)
    return FrameState(row, img, geo, step, half, feats, alpha, cfh, np.asarray(light_in, np.float32),
                      estimated, shading_in, albedo)


def _estimate(est) -> np.ndarray | None:
    return None if est is None else np.asarray(est[0], dtype=np.float32)


class Look:
    """Step 3 of the per-frame path: how frames are lit and seen (the target lighting, its space and
    exposure, the view plan, the passes and the background) -> `render(state, albedo, k)`.

    target: a `lighting.load_target_lighting` object, or None to keep the input light; views: a
    `views.ViewPlan`; want: the layers to make (a subset of `outputs.PASSES`); background "keep" (over
    the plate) or "transparent". The "match" exposure scale is fixed by the first `fix_exposure` call.
    """

    def __init__(self, target, views: ViewPlan, want: tuple[str, ...] = ("rgba",), light_space: str = "world",
                 intensity: str = "match", background: str = "keep") -> None:
        self.target, self.views, self.want = target, views, tuple(want)
        self.light_space, self.background = light_space, background
        self.scale: float | None = lighting_mod.ABSOLUTE_SCALE if intensity == "absolute" else None

    def fix_exposure(self, light_in: np.ndarray, cam_from_head: np.ndarray) -> None:
        """Set the "match" exposure from a reference frame's input light and pose (once)."""
        if self.scale is None and self.target is not None:
            self.scale = lighting_mod.render_exposure(light_in, self.target_sh_cam(0, cam_from_head))

    def target_sh_cam(self, k: int, cam_from_head: np.ndarray) -> np.ndarray:
        from relight_core import render

        sh = np.asarray(self.target.sh_at(k), dtype=np.float64)
        if sh.ndim == 1:
            sh = np.repeat(sh[:, None], 3, axis=1)
        rot = render.light_rotation(cam_from_head, self.light_space)
        return render.sh_in_camera(sh, rot)

    def render(self, state: FrameState, albedo: np.ndarray, k: int, analysis, timings: dict
               ) -> tuple[dict[str, np.ndarray], dict]:
        """Output frame k from a prepared frame and its (stabilised) albedo -> (layers, info: cam2head)."""
        from relight_core import intrinsic

        t = time.perf_counter()
        h, w = state.img.shape[:2]
        self.fix_exposure(state.light_in, state.cam_from_head)
        hh, hw = state.half.shape[:2]
        if self.target is not None:
            output_sh = self.target_sh_cam(k, state.cam_from_head) * self.scale
            # the key lights are added back per pixel by `_key_lights` (`render.ambient_target_sh`)
            ambient = self._ambient_sh(k, state.cam_from_head, output_sh)
            shading = intrinsic.shade_features(state.feats, [ambient])[0].reshape(hh, hw, 3)
        else:
            output_sh, shading = state.light_in, None
        view = self.views.view(k, state.cam_from_head, intrinsics(analysis, h, w), (h, w))
        # key lights: their shadowed diffuse light joins the target's fill, their specular comes on top
        spec, shadow = self._key_lights(k, state, view, shading) if shading is not None else (None, None)
        shading = state.shading_in if shading is None else upsample(shading, h, w)
        layers, info, maps = self._compose(state, view, albedo, shading, spec, output_sh)
        if any(p in self.want for p in passes.DATA_PASSES):
            layers.update(self._data_passes(state, view, shadow, maps))
        timings["render"] += time.perf_counter() - t
        return layers, info

    def _key_lights(self, k: int, state: FrameState, view: tuple | None, shading: np.ndarray
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Frame k's key lights on the shading grid: their diffuse light, shadowed, is added to the
        target's ambient shading (h, w, 3) in place, on skin's terms (`render.key_light_shading`); returns
        (their specular (h, w, 3), the shadow factor (h, w) when the shadow pass is wanted), each None
        when there are no key lights."""
        from relight_core import render

        keys = list(self.target.key_lights_at(k) or [])
        if not keys:
            return None, None
        step, cfh = state.step, state.cam_from_head
        rot = render.light_rotation(cfh, self.light_space)
        view_pos = np.zeros(3) if view is None else np.linalg.inv(view[0])[:3, 3]
        points = np.asarray(state.geo.points, dtype=np.float32)[::step, ::step]
        person = state.alpha[::step, ::step] > 0.02
        scaled = [lighting_mod.scaled_light(kl, self.scale or 1.0) for kl in keys]
        fx = float(state.geo.K[0, 0]) / step
        labels = state.geo.labels[::step, ::step]
        return render.key_light_shading(shading, state.half, points, person, labels, scaled, rot, cfh[:3, 3],
                                        view_pos, fx, shadow_pass="shadow" in self.want)

    def _ambient_sh(self, k: int, cam_from_head: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The target SH (9, 3) in the camera's DPR frame without frame k's key lights."""
        from relight_core import render

        keys = self.target.key_lights_at(k) or []
        keys = [lighting_mod.scaled_light(kl, self.scale or 1.0) for kl in keys]
        return render.ambient_target_sh(target, keys, render.light_rotation(cam_from_head, self.light_space))

    def _compose(self, state: FrameState, view: tuple | None, albedo: np.ndarray, shading: np.ndarray,
                 spec: np.ndarray | None, output_sh: np.ndarray) -> tuple[dict[str, np.ndarray], dict, dict]:
        """Relight (albedo x shading (H, W, 3), plus the key lights' specular (h, w, 3) on the shading grid
        where given), change the view, composite -> (the frame's layers, info, what the data passes
        need in the output view: the specular (H, W, 3), alpha, depth, normals and the view's remap)."""
        from relight_core import render
        from relight_core.intrinsic import rgb3

        img, geo, alpha, step = state.img, state.geo, state.alpha, state.step
        h, w = img.shape[:2]
        info: dict[str, Any] = {}
        points = np.asarray(geo.points, dtype=np.float32)
        person = alpha > 0.02
        info["cam2head"] = None if view is None else view[2]
        relit = albedo * shading
        if spec is not None:
            where = render.specular_mask(albedo[::step, ::step], geo.labels[::step, ::step])
            spec *= rgb3(where)
            spec = upsample(spec, h, w)  # the specular radiance added, (H, W, 3): also the specular pass
            relit += spec
        depth = np.asarray(geo.depth, dtype=np.float32)
        want = self.want
        if view is None:
            bg = None if self.background == "transparent" else img
            rgba = render.composite(relit, alpha, bg)
            out_alpha, out_depth = alpha, depth
            out_normals = geo.normals if "normal" in want or "N" in want else None
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
            out_normals = render.sample(geo.normals, mx, my) if "normal" in want or "N" in want else None
            _fill_from_mirror(geo, view, depth, out_depth, albedo, output_sh,
                                   {"rgb": out_rgb, "albedo": out_albedo, "shading": out_shading,
                                    "normal": out_normals})
            if out_normals is not None:
                out_normals = out_normals @ new_from_input[:3, :3].astype(np.float32).T
                out_normals /= rgb3(np.maximum(np.linalg.norm(out_normals, axis=-1), 1e-6))
            rgba = render.composite(out_rgb, out_alpha, None if self.background == "transparent" else plate)
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
        # what the data passes need, in the output view
        maps = {"spec": spec, "alpha": out_alpha, "depth": out_depth * inside, "normals": out_normals,
                "remap": None if view is None else (mx, my, cover)}
        return layers, info, maps

    def _data_passes(self, state: FrameState, view: tuple | None, shadow: np.ndarray | None, maps: dict
                     ) -> dict[str, np.ndarray]:
        """The wanted data passes (`passes.DATA_PASSES`) of a composed frame, in the output view:
        specular (H, W, 3), shadow, matte (H, W), N, P, Pref (H, W, 3), id (H, W, 5) (module `passes`).
        shadow: the key-light shadow factor on the shading grid; maps: what `_compose` returned."""
        from relight_core import render
        from relight_core.intrinsic import rgb3

        h, w = state.img.shape[:2]
        alpha, depth, remap = maps["alpha"], maps["depth"], maps["remap"]
        inside = alpha > 0.02

        def to_view(img: np.ndarray, nearest: bool = False) -> np.ndarray:
            if remap is None:
                return img
            out = render.sample(img, remap[0], remap[1], nearest=nearest)
            return out * (remap[2] if out.ndim == 2 else rgb3(remap[2]))

        want, out = self.want, {}
        if "specular" in want:
            spec_full = np.zeros((h, w, 3), np.float32) if maps["spec"] is None else maps["spec"]
            out["specular"] = to_view(spec_full) * rgb3(inside.astype(np.float32))
        if "shadow" in want:
            out["shadow"] = np.ones((h, w), np.float32) if shadow is None else to_view(upsample(shadow, h, w))
        if "matte" in want:
            out["matte"] = np.asarray(alpha, dtype=np.float32)
        if "N" in want:
            n = state.geo.normals if maps["normals"] is None else maps["normals"]
            out["N"] = np.where(inside[..., None], n, np.float32(0.0)).astype(np.float32)
        if "P" in want or "Pref" in want:
            p_cam = passes.positions(depth, state.geo.K if view is None else view[1])
            cam2head = np.linalg.inv(state.cam_from_head) if view is None else view[2]
            if "P" in want:
                out["P"] = p_cam
            if "Pref" in want:
                out["Pref"] = passes.head_positions(p_cam, cam2head, depth > 0)
        if "id" in want:
            labels = to_view(state.geo.labels.astype(np.float32), nearest=True).round().astype(np.int64)
            ids = passes.id_mattes(labels, alpha)
            out["id"] = np.stack([ids[r] for r in passes.ID_REGIONS], axis=-1)
        return out


def _fill_from_mirror(geo, view: tuple, depth_in: np.ndarray, depth_out: np.ndarray, albedo: np.ndarray,
                      output_sh: np.ndarray, maps: dict[str, np.ndarray | None]) -> None:
    """Novel-view face pixels the input saw badly or not at all take the mirrored side's albedo,
    shaded with their own normals under output_sh (9, 3) (`render.mirror_fill`), in place in maps:
    "rgb" (relit), "albedo", "shading" (h, w, 3) and "normal" (input-camera space), each None when not
    wanted. The SH light only: a key light's cast shadow and specular are not drawn on those pixels."""
    from relight_core import intrinsic, render

    if geo.face_tris is None:
        return
    new_from_input, kk, _ = view
    fill = render.mirror_fill(geo.vertices, geo.face_tris, geo.face_normals, new_from_input, geo.K, kk,
                              depth_out.shape, depth_in, depth_out)
    if fill.ys.size == 0:
        return
    at = (fill.ys, fill.xs)
    w = fill.weight[:, None]
    alb = render.sample_points(albedo, fill.src_x, fill.src_y)
    shd = intrinsic.shade_features(intrinsic.sh_features_cam(fill.normals), [output_sh])[0]
    for name, value in (("rgb", alb * shd), ("albedo", alb), ("shading", shd), ("normal", fill.normals)):
        m = maps[name]
        if m is not None:
            m[at] += w * (value - m[at])


# --------------------------------------------------------------------------------------------- the session

class ClipSession:
    """A clip opened once: its footage, analysis and input-light track, and a least-recently-used cache of
    decoded frames and `FrameState`s bounded by `cache_mb` (module docstring).

    input: movie, image-sequence folder or image; frames: (first, last_exclusive) source frames or None;
    size: working size (longer side, px) or None; cache_dir: where the analysis and the light track are
    kept (None: nowhere); fov_deg: the tracker's assumed vertical field of view (None: its default).
    `open()` must be called before `render`.
    """

    def __init__(self, input: str | os.PathLike, frames: tuple[int, int] | None = None,
                 size: int | None = None, cache_dir: str | os.PathLike | None = None,
                 keep_analysis: bool = True, smoothing: bool = True, cache_mb: float = DEFAULT_CACHE_MB,
                 fov_deg: float | None = None) -> None:
        from relight_core import io

        self.footage = io.open_footage(input, frames=frames, size=size)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.keep_analysis, self.smoothing, self.fov_deg = keep_analysis, smoothing, fov_deg
        self.cache_bytes = int(cache_mb * (1 << 20))
        self.analysis = None
        self.analysis_cached = False
        self.light: InputLightTrack | None = None
        self._cache: collections.OrderedDict[tuple, tuple[FrameState, int]] = collections.OrderedDict()
        self._cached_bytes = 0
        self._reader = None
        self._sizes: dict[int, ClipSession] = {}

    # -- the clip

    @property
    def fps(self) -> float:
        return float(self.footage.fps or 25.0)

    @property
    def frame_indices(self) -> list[int]:
        return list(self.footage.frame_indices)

    def row(self, index: int) -> int:
        """The analysis row of source frame `index` (UserError when the session does not hold it)."""
        first = int(self.analysis.frame_indices[0])
        if self.footage.kind == "image":
            return 0
        if index not in self.footage.frame_indices:
            f = self.footage.frame_indices
            raise UserError(f"Frame {index} is not in the open clip's frames {f[0]}..{f[-1]}.")
        return index - first

    def open(self, emit: EventSink | None = None, cancel: threading.Event | None = None,
             light_pass: bool = True) -> None:
        """Load or make the analysis (progress events, stage "analyze") and the input-light track (stage
        "light": one pass over the clip when it is not stored yet and `light_pass`). `Cancelled` when
        cancel is set meanwhile; UserError when the clip has no face."""
        from relight_core import geometry

        emit = emit or (lambda e: None)
        cancel = cancel or threading.Event()
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.analysis, self.analysis_cached = load_or_analyze(self.footage, self.cache_dir,
                                                              self.keep_analysis, emit, cancel, self.fov_deg)
        geometry.prepare()  # the mesh topology, once per process, not inside the first frame's time
        self.light = self._stored_light_track() or InputLightTrack(self.analysis.n_frames, self.fps,
                                                                   self.smoothing)
        if light_pass and not self.light.complete:
            self._light_pass(emit, cancel)

    def _light_key(self) -> dict:
        a = self.analysis
        return {"input": input_signature(self.footage)["id"], "first": int(a.frame_indices[0]),
                "stop": int(a.frame_indices[-1]) + 1, "width": self.footage.width,
                "height": self.footage.height}

    def _stored_light_track(self) -> InputLightTrack | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / layout.light_track_name(self.footage.height, self.footage.width)
        return InputLightTrack.load(path, self._light_key(), self.analysis.n_frames, self.fps, self.smoothing)

    def save_light_track(self) -> bool:
        """Store the light track next to the analysis once it is complete -> True when written."""
        if self.cache_dir is None or not self.keep_analysis or not self.light.complete:
            return False
        self.light.save(self.cache_dir / layout.light_track_name(self.footage.height, self.footage.width),
                        self._light_key())
        return True

    def _light_pass(self, emit: EventSink, cancel: threading.Event) -> None:
        """Estimate the input light of every analysed frame in order (stage "light")."""
        from relight_core import io

        a = self.analysis
        first, n = int(a.frame_indices[0]), a.n_frames
        whole = io.open_footage(self.footage.path, frames=(first, first + n), size=self._size_arg())
        timings = new_timings()
        for row, (_, img) in enumerate(whole):
            if cancel.is_set():
                raise Cancelled()
            if not self.light.known[row]:
                self._remember(prepare_frame(a, row, img, self.light, timings), img)
            emit({"event": "progress", "stage": "light", "done": row + 1, "total": n})
        self.save_light_track()

    def _size_arg(self) -> int | None:
        return max(self.footage.width, self.footage.height)

    # -- frames and their cached intermediates

    def _remember(self, state: FrameState, img: np.ndarray) -> None:
        """Cache a frame's state (again, when it grew: its stabilised albedo), counted at its size now;
        the least recently used states go while the cache is over its bound."""
        key = (state.row, img.shape[0], img.shape[1])
        if key in self._cache:
            self._cached_bytes -= self._cache.pop(key)[1]
        if self.cache_bytes <= 0:
            return
        size = state.nbytes
        self._cache[key] = (state, size)
        self._cached_bytes += size
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            _, (_old, old_size) = self._cache.popitem(last=False)
            self._cached_bytes -= old_size

    @property
    def cached_mb(self) -> float:
        return self._cached_bytes / float(1 << 20)

    def held_mb(self) -> float:
        """What the cached states hold now, counted afresh (MB; `cached_mb` is the running count)."""
        return sum(state.nbytes for state, _ in self._cache.values()) / float(1 << 20)

    def _decode(self, row: int) -> np.ndarray:
        from relight_core import io

        if self._reader is None:
            self._reader = io.FrameReader(self.footage)
        return self._reader.read(int(self.analysis.frame_indices[0]) + row if self.footage.kind != "image"
                                 else self.footage.frame_indices[0])

    def state(self, row: int, timings: dict | None = None) -> tuple[FrameState, bool]:
        """Row's FrameState at the working size -> (state, from the cache)."""
        timings = new_timings() if timings is None else timings
        key = (row, self.footage.height, self.footage.width)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0], True
        t = time.perf_counter()
        img = self._decode(row)
        timings["decode"] += time.perf_counter() - t
        state = prepare_frame(self.analysis, row, img, self.light, timings)
        self._remember(state, img)
        return state, False

    def stable_albedo(self, row: int, timings: dict | None = None) -> np.ndarray:
        """Row's albedo stabilised over time as a preview approximates it: the flow filter warmed up on
        the `PREVIEW_WARMUP` frames before it (cached with the frame)."""
        from relight_core import temporal

        timings = new_timings() if timings is None else timings
        state, _ = self.state(row, timings)
        if state.stable_albedo is not None:
            return state.stable_albedo
        if not self.smoothing or self.footage.kind == "image":
            state.stable_albedo = state.albedo
            return state.albedo
        flt = temporal.FlowStabilizer(strength=0.6)
        start = max(row - PREVIEW_WARMUP, 0)
        for r in range(start, row + 1):
            s = state if r == row else self.state(r, timings)[0]
            # a cached stabilised predecessor continues the batch's recursion exactly
            value = s.stable_albedo if r == start and s.stable_albedo is not None else s.albedo
            t = time.perf_counter()
            out = flt(value, s.img, s.alpha > 0.02)
            timings["temporal"] += time.perf_counter() - t
        state.stable_albedo = out
        self._remember(state, state.img)  # counted again at its new size
        return out

    def render(self, index: int, look: Look, timings: dict | None = None
               ) -> tuple[dict[str, np.ndarray], dict]:
        """Relight source frame `index` with `look` -> (layers, info: "cached" (the frame's intermediates
        came from the cache), "ms" per stage, "light_in"). Lighting or view sequences are indexed by the
        frame's row in the clip."""
        timings = new_timings() if timings is None else timings
        before = dict(timings)
        row = self.row(index)
        state, cached = self.state(row, timings)
        albedo = self.stable_albedo(row, timings)
        first = self.light.first_light()
        if first is not None:
            look.fix_exposure(first, np.asarray(self.analysis.cam_from_head[0], dtype=np.float64))
        layers, info = look.render(state, albedo, row, self.analysis, timings)
        info.update(cached=cached, light_in=state.light_in,
                    ms={s: round(1000 * (timings[s] - before.get(s, 0.0)), 2) for s in STAGES})
        return layers, info

    def at_size(self, size: int | None) -> ClipSession:
        """This clip at another working size (longer side, px): a session that shares the analysis and the
        input-light track, with a frame cache of its own (one other size is kept at a time); itself for
        None or its own size."""
        if size is None or size == max(self.footage.width, self.footage.height):
            return self
        other = self._sizes.get(size)
        if other is None:
            f = self.footage
            frames = None if f.kind == "image" else (f.frame_indices[0], f.frame_indices[-1] + 1)
            other = ClipSession(f.path, frames=frames, size=size, smoothing=self.smoothing,
                                cache_mb=self.cache_bytes / float(1 << 20))
            other.analysis, other.light = self.analysis, self.light
            other.analysis_cached = self.analysis_cached
            for old in self._sizes.values():
                old.close()
            self._sizes = {size: other}
        return other

    def close(self) -> None:
        """Forget the cached frames and release the decoder."""
        for other in self._sizes.values():
            other.close()
        self._sizes = {}
        self._cache.clear()
        self._cached_bytes = 0
        if self._reader is not None:
            self._reader.close()
            self._reader = None
