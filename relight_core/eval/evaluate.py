"""The evaluation harness: clips x lights x views (x ablation variants) through the pipeline, then metrics.

For every clip: the first run relights it with its own estimated light in the input view (the round
trip: its PSNR against the input says how much the decomposition loses) and leaves the tracker's
analysis, which every later run of that clip reuses (copied into its folder), so tracking time is counted
once per clip. Each run's RGBA output is then measured (relight_core.eval.metrics):

- the light is estimated on the OUTPUT alone: the output frames are re-tracked (track.analyze_footage),
  their geometry rebuilt (geometry.build_geometry), and RGB SH fitted to the skin pixels (label 1) with
  the re-tracked normals (metrics.estimate_light). Both the estimate and the target are expressed in the
  output camera's DPR frame (for a novel view the world-fixed target is rotated by the view rotation)
  for LE; for LI the estimates are rotated back into the input camera's (world) frame, where a
  world-fixed light is constant, and LI is taken over all frames and views of one clip and one light;
- the re-tracked head pose gives the pose error against the requested view (input view: the input's
  own tracked pose);
- WE and tSSIM use the person matte as region of interest; the flow comes from the INPUT frames for the
  input view; for a novel view there are no input frames seen from that camera, so the flow is computed
  on the output frames themselves (documented limitation: flicker that DIS absorbs is not counted);
- ID compares dlib descriptors of the input frame and the output frame (every `id_every`-th frame).

Ablations (`VARIANTS`, paper Table 5 layout), at the input view: temporal stabilisation off (the
pipeline's `smoothing=False`: no One-Euro filter on the input light, no flow-guided albedo filter), the
face mesh replaced by a fitted sphere, and a flat rest of the head (relight_core.eval.ablation).

Results: DIR/results.json (every run, per-frame curves, settings, versions), DIR/table_views.md (the
layout of the paper's Table 1), DIR/table_input.md (Table 4), DIR/table_ablation.md (Table 5) and
DIR/plots/<clip>.png (per-frame LE, WE, tSSIM).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relight_core import layout
from relight_core.errors import UserError
from relight_core.eval import metrics

# name -> (RelightJob field overrides, geometry ablation of relight_core.eval.ablation or None);
# a variant whose job fields the pipeline lacks is skipped with a note
VARIANTS: dict[str, tuple[dict[str, Any], str | None]] = {
    "full": ({}, None),
    "no temporal stabilisation": ({"smoothing": False}, None),
    "no face mesh (sphere)": ({}, "sphere"),
    "flat rest of head": ({}, "flat"),
}
SEED = 0


@dataclasses.dataclass
class EvalConfig:
    """What to run. views: (yaw, pitch) degrees; (0, 0) is the input view."""

    clips: list[str]
    lights: list[str]
    views: list[tuple[float, float]]
    out: str
    frames: int | None = 30
    size: int | None = 384
    ablation: bool = True
    ablation_lights: int | None = None  # first N lights for the ablation (None: all)
    id_every: int = 5
    keep_frames: bool = False
    device: str = "cpu"


def parse_view(text: str) -> tuple[float, float]:
    """'YAW/PITCH' or 'YAW' (degrees) -> (yaw, pitch); UserError when malformed."""
    try:
        parts = [float(p) for p in str(text).split("/")]
    except ValueError:
        raise UserError(f"View '{text}' is not YAW/PITCH in degrees (e.g. 0/0, 20/0, -20/10).") from None
    if len(parts) == 1:
        parts.append(0.0)
    if len(parts) != 2:
        raise UserError(f"View '{text}' is not YAW/PITCH in degrees (e.g. 0/0, 20/0, -20/10).")
    return parts[0], parts[1]


def view_name(view: tuple[float, float]) -> str:
    return f"yaw{view[0]:+g}_pitch{view[1]:+g}" if view != (0.0, 0.0) else "input"


def clip_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name in ("cropped", "frames") else p.stem


def target_sh(light: str) -> np.ndarray:
    """The target light (9, 3) in its own DPR frame, as the pipeline loads it."""
    from relight_core import lighting

    seq = lighting.load_target_lighting(light)
    sh = np.asarray(seq.sh_at(0), dtype=np.float64)
    return np.repeat(sh[:, None], 3, axis=1) if sh.ndim == 1 else sh


def seed_everything(seed: int = SEED) -> None:
    """Fix numpy / OpenCV / torch random state (the pipeline itself is deterministic)."""
    import cv2

    np.random.seed(seed)
    cv2.setRNGSeed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


# --------------------------------------------------------------------------------------------- reading


def read_rgba_dir(folder: Path, stem: str, indices: Sequence[int]) -> list[np.ndarray]:
    """The rgba PNGs of a run in frame order -> display RGB (H, W, 3) float32 in [0, 1]."""
    import cv2

    out = []
    for i in indices:
        p = folder / f"{stem}_{i:06d}.png"
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise UserError(f"Output frame {p} is missing or unreadable; the run did not finish.")
        out.append(np.ascontiguousarray(img[:, :, 2::-1], dtype=np.float32) / 255.0)
    return out


# --------------------------------------------------------------------------------------------- measuring


@dataclasses.dataclass
class ClipContext:
    """What every run of one clip shares: input frames, flows, mattes, embeddings, tracking."""

    name: str
    path: str
    stem: str
    indices: list[int]
    fps: float
    display: list[np.ndarray]
    mattes: list[np.ndarray]
    cam_from_head: np.ndarray
    flows: list
    we_input: np.ndarray
    tssim_input: np.ndarray
    embeddings: dict[int, np.ndarray | None]
    analyze_s_per_frame: float
    analysis_dir: Path


def _retrack(frames_display: list[np.ndarray], fps: float):
    """Re-track output frames -> (analysis, per-frame linear images)."""
    from relight_core import io, track

    linear = [io.srgb_to_linear(f) for f in frames_display]
    return track.analyze_footage(track.ArrayFootage(linear, fps, "output")), linear


def _embed_all(embedder, frames: list[np.ndarray], every: int) -> dict[int, np.ndarray | None]:
    if embedder is None:
        return {}
    return {i: embedder.embed(frames[i]) for i in range(0, len(frames), max(every, 1))}


def new_from_input_rotation(cam2head: np.ndarray, cam_from_head_in: np.ndarray) -> np.ndarray:
    """3x3 rotation taking input-camera vectors to the output camera's: p_new = cam2head^-1 cfh^-1 p_in."""
    m = np.linalg.inv(np.asarray(cam2head, dtype=np.float64)) @ np.linalg.inv(
        np.asarray(cam_from_head_in, dtype=np.float64))
    return m[:3, :3]


def measure_run(ctx: ClipContext, out_dir: Path, target: np.ndarray, view: tuple[float, float],
                embedder, id_every: int, estimator: metrics.LightEstimator | None = None) -> dict[str, Any]:
    """Metrics of one finished run (see the module docstring) -> per-frame curves and means.

    estimator: the light estimator (default `metrics.estimate_light`), given the output frame (linear),
    the re-tracked normals (DPR frame) and the skin mask.
    """
    estimate = estimator or metrics.estimate_light
    from relight_core import geometry
    from relight_core import sh as shlib

    report = json.loads(layout.report_file(out_dir).read_text())
    frames = read_rgba_dir(out_dir / "rgba", ctx.stem, ctx.indices)
    ana, linear = _retrack(frames, ctx.fps)
    by_index = {int(f["index"]): f for f in report.get("frames", [])}
    n = len(frames)
    le = np.full(n, np.nan)
    pose = np.full(n, np.nan)
    est_world: list[np.ndarray] = []
    out_mattes = []
    h, w = frames[0].shape[:2]
    for i in range(n):
        out_mattes.append(np.asarray(ana.matte_at(i, h, w), dtype=np.float32))
        cfh_in = np.asarray(ctx.cam_from_head[i], dtype=np.float64)
        c2h = (by_index.get(ctx.indices[i], {}).get("view") or {}).get("cam2head")
        c2h_req = np.linalg.inv(cfh_in) if c2h is None else np.asarray(c2h, dtype=np.float64)
        r_dpr = metrics.cam_rotation_to_dpr(new_from_input_rotation(c2h_req, cfh_in))
        if not bool(np.asarray(ana.valid)[i]):
            continue
        pose[i] = metrics.pose_error_deg(c2h_req, ana.cam_from_head[i])
        geo = geometry.build_geometry(ana, i, h, w)
        n_dpr = metrics.cam_to_dpr(np.asarray(geo.normals, dtype=np.float64))
        skin = (np.asarray(geo.labels) == 1).astype(np.float32)
        est = estimate(linear[i], n_dpr, skin)
        if est is None:
            continue
        target_out = shlib.rotate_sh(target, r_dpr)
        le[i] = metrics.lighting_error(est, target_out)
        est_world.append(np.asarray(shlib.rotate_sh(est, r_dpr.T)))
    if view == (0.0, 0.0):
        flows, rois = ctx.flows, ctx.mattes
    else:
        flows, rois = metrics.flows_for(frames), out_mattes
    we = metrics.warping_errors(frames, flows, rois) if n > 1 else np.zeros(0)
    ts = metrics.temporal_ssim(frames, rois) if n > 1 else np.zeros(0)
    ids = np.array([np.nan])
    if embedder is not None:
        out_emb = _embed_all(embedder, frames, id_every)
        from relight_core.eval.identity import id_distance

        ids = np.array([id_distance(ctx.embeddings.get(i), e) for i, e in out_emb.items()])
    totals = report.get("totals", {})
    ms = totals.get("ms_per_frame", {})
    proc_s = sum(float(ms.get(s, 0.0)) for s in ("geometry", "intrinsic", "temporal", "render")) / 1000.0
    return {
        "le": le, "pose": pose, "we": we, "tssim": ts, "id": ids, "est_world": est_world,
        "LE": _nanmean(le), "WE": _nanmean(we), "WE_rel": _nanmean(we) / max(_nanmean(ctx.we_input), 1e-12),
        "tSSIM": _nanmean(ts), "ID": _nanmean(ids), "pose_deg": _nanmean(pose),
        "light_fits": int(np.isfinite(le).sum()), "tracked": int(np.asarray(ana.valid).sum()), "frames": n,
        "time_s": proc_s + ctx.analyze_s_per_frame,
    }


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


# --------------------------------------------------------------------------------------------- running


def _job(cfg: EvalConfig, clip: str, out_dir: Path, light: str, view: tuple[float, float],
         overrides: dict[str, Any]):
    from relight_core import pipeline

    fields = {f.name for f in dataclasses.fields(pipeline.RelightJob)}
    missing = [k for k in overrides if k not in fields]
    if missing:
        return None, f"the pipeline has no option {', '.join(missing)}"
    camera = None if view == (0.0, 0.0) else {"yaw": view[0], "pitch": view[1]}
    frames = (0, cfg.frames) if cfg.frames else None
    job = pipeline.RelightJob(input=clip, output=str(out_dir), lighting=light, frames=frames, size=cfg.size,
                              device=cfg.device, resume=False, camera=camera, **overrides)
    return job, None


def prepare_clip(cfg: EvalConfig, clip: str, root: Path, embedder) -> tuple[ClipContext, dict[str, Any]]:
    """Round-trip run (input light, input view) + everything the clip's runs share."""
    from relight_core import io, pipeline, track

    name = clip_name(clip)
    rt_dir = root / "runs" / name / "roundtrip"
    job, _ = _job(cfg, clip, rt_dir, "input", (0.0, 0.0), {})
    t0 = time.perf_counter()
    report = pipeline.run(job)
    wall = time.perf_counter() - t0
    footage = io.open_footage(clip, frames=tuple(job.frames) if job.frames else None, size=cfg.size)
    linear = [img for _, img in footage]
    display = [metrics.to_display(f) for f in linear]
    ana = track.Analysis.load(str(layout.analysis_file(rt_dir)))
    h, w = display[0].shape[:2]
    mattes = [np.asarray(ana.matte_at(i, h, w), dtype=np.float32) for i in range(len(display))]
    flows = metrics.flows_for(display)
    we_in = metrics.warping_errors(display, flows, mattes)
    ts_in = metrics.temporal_ssim(display, mattes)
    stem = footage.name
    out = read_rgba_dir(rt_dir / "rgba", stem, footage.frame_indices)
    psnr = np.array([metrics.masked_psnr(o, d, m) for o, d, m in zip(out, display, mattes, strict=True)])
    st = report["totals"]["stage_seconds"]
    n = max(len(display), 1)
    ctx = ClipContext(name=name, path=clip, stem=stem, indices=list(footage.frame_indices),
                      fps=float(footage.fps or 25.0), display=display, mattes=mattes,
                      cam_from_head=np.asarray(ana.cam_from_head, dtype=np.float64), flows=flows,
                      we_input=we_in, tssim_input=ts_in,
                      embeddings=_embed_all(embedder, display, cfg.id_every),
                      analyze_s_per_frame=float(st.get("analyze", 0.0)) / n, analysis_dir=rt_dir)
    info = {"clip": name, "path": clip, "frames": n, "width": w, "height": h,
            "roundtrip_psnr_db": _nanmean(psnr), "roundtrip_psnr": psnr, "input_WE": _nanmean(we_in),
            "input_tSSIM": _nanmean(ts_in), "input_we_curve": we_in,
            "analyze_s_per_frame": ctx.analyze_s_per_frame,
            "roundtrip_wall_s": wall, "tracked": int(np.asarray(ana.valid).sum())}
    if not cfg.keep_frames:
        shutil.rmtree(rt_dir / "rgba", ignore_errors=True)
    return ctx, info


def run_one(cfg: EvalConfig, ctx: ClipContext, root: Path, variant: str, light: str,
            view: tuple[float, float], embedder,
            estimator: metrics.LightEstimator | None = None) -> dict[str, Any]:
    """One pipeline run (reusing the clip's analysis) + its metrics."""
    from relight_core import pipeline

    out_dir = root / "runs" / ctx.name / variant.replace(" ", "_").replace("(", "").replace(")", "") / \
        f"{Path(light).stem}_{view_name(view)}"
    from relight_core.eval.ablation import geometry_variant

    overrides, geometry_kind = VARIANTS[variant]
    job, why = _job(cfg, ctx.path, out_dir, light, view, overrides)
    if job is None:
        return {"skipped": why}
    out_dir.mkdir(parents=True, exist_ok=True)
    if layout.analysis_file(ctx.analysis_dir).is_file():
        layout.engine_dir(out_dir).mkdir(exist_ok=True)
        shutil.copy2(layout.analysis_file(ctx.analysis_dir), layout.analysis_file(out_dir))
    with geometry_variant(geometry_kind):
        pipeline.run(job)
    res = measure_run(ctx, out_dir, target_sh(light), view, embedder, cfg.id_every, estimator)
    if not cfg.keep_frames:
        shutil.rmtree(out_dir / "rgba", ignore_errors=True)
    res.update({"clip": ctx.name, "variant": variant, "light": Path(light).stem, "view": list(view)})
    return res


def evaluate(cfg: EvalConfig, estimator: metrics.LightEstimator | None = None) -> dict[str, Any]:
    """Run everything in `cfg`, write the tables, plots and JSON into cfg.out -> the results dict.

    estimator: the light estimator for LE/LI (default `metrics.estimate_light`).
    """
    from tqdm import tqdm

    from relight_core.eval import bench, identity

    seed_everything()
    started_with = bench.versions()  # before the runs: the code that produced the numbers
    if not cfg.clips or not cfg.lights or not cfg.views:
        raise UserError("evaluate needs at least one clip, one --lights file and one --views entry.")
    for p in list(cfg.clips) + list(cfg.lights):
        if not Path(p).exists():
            raise UserError(f"{p} does not exist; check the path.")
    root = Path(cfg.out).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    embedder = None
    reason = identity.unavailable_reason()
    if reason:
        notes.append(reason)
    else:
        embedder = identity.FaceEmbedder()
    abl_lights = cfg.lights[: cfg.ablation_lights] if cfg.ablation_lights else cfg.lights
    variants = [v for v in VARIANTS if v != "full"] if cfg.ablation else []
    plan = [(c, "full", li, v) for c in cfg.clips for li in cfg.lights for v in cfg.views]
    plan += [(c, var, li, (0.0, 0.0)) for c in cfg.clips for var in variants for li in abl_lights]
    if cfg.ablation and (0.0, 0.0) not in cfg.views:
        plan += [(c, "full", li, (0.0, 0.0)) for c in cfg.clips for li in abl_lights]
    t0 = time.perf_counter()
    clips_info, runs = [], []
    ctxs: dict[str, ClipContext] = {}
    bar = tqdm(total=len(plan) + len(cfg.clips), desc="evaluate", unit="run")
    for clip in cfg.clips:
        ctx, info = prepare_clip(cfg, clip, root, embedder)
        ctxs[clip] = ctx
        clips_info.append(info)
        bar.update(1)
        for c, variant, light, view in plan:
            if c != clip:
                continue
            bar.set_postfix_str(f"{ctx.name} {variant} {Path(light).stem} {view_name(view)}")
            res = run_one(cfg, ctx, root, variant, light, view, embedder, estimator)
            if "skipped" in res:
                note = f"ablation '{variant}' skipped: {res['skipped']}"
                if note not in notes:
                    notes.append(note)
            else:
                runs.append(res)
            bar.update(1)
        del ctxs[clip]
    bar.close()
    results = {"config": dataclasses.asdict(cfg), "seed": SEED, "versions": started_with,
               "elapsed_s": time.perf_counter() - t0, "notes": notes, "clips": clips_info,
               "runs": [_public_run(r) for r in runs]}
    from relight_core.eval import report

    report.write_all(root, results, runs)
    return results


def _public_run(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in r.items() if k != "est_world"}
    return out


def light_instability(runs: list[dict[str, Any]]) -> float:
    """LI over a group of runs of ONE clip and ONE light: every frame's world-frame estimate pooled."""
    ests = [e for r in runs for e in r.get("est_world", [])]
    return metrics.lighting_instability(ests) if ests else float("nan")


def mean_of(values) -> float:
    v = [x for x in values if x is not None and math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")
