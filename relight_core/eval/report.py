"""Aggregate evaluation runs into the paper-style tables (Markdown + JSON) and per-frame plots.

- table_views.md   (paper Table 1): per clip, the "full" engine over ALL requested views and lights:
                   LE, LI, ID, WE, WE rel. input, tSSIM, pose error, time (s/frame).
- table_input.md   (paper Table 4): per clip, input view only: LE, LI, time, plus round-trip PSNR, WE,
                   tSSIM, ID, pose error.
- table_per_view.md: the same metrics per view, averaged over clips and lights.
- table_ablation.md (paper Table 5): per variant (input view, the ablation lights, all clips): LE, LI,
                   WE, WE rel., tSSIM, ID.
LI of a group = the mean over (clip, light) of the instability of all that clip's and light's
world-frame estimates in the group (all frames, all views of the group).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from relight_core.eval.evaluate import light_instability, mean_of, view_name
from relight_core.eval.tables import markdown_table, plot_per_frame, write_json, write_text

COLS_VIEWS = ["name", "LE", "LI", "ID", "WE", "WE_rel", "tSSIM", "pose_deg", "time_s"]
HEAD_VIEWS = ["clip", "LE ↓", "LI ↓", "ID dist ↓", "WE ↓", "WE / input WE", "tSSIM ↑", "pose err (deg) ↓",
              "Time (s/frame)"]


def summarise(group: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Mean metrics over a group of runs, LI per (clip, light) then averaged."""
    by_cl: dict[tuple[str, str], list] = defaultdict(list)
    for r in group:
        by_cl[(r["clip"], r["light"])].append(r)
    row = {"name": name, "runs": len(group),
           "LI": mean_of([light_instability(rs) for rs in by_cl.values()])}
    for key in ("LE", "ID", "WE", "WE_rel", "tSSIM", "pose_deg", "time_s"):
        row[key] = mean_of([r.get(key) for r in group])
    return row


def _rows_by(group: list[dict[str, Any]], key, order: list) -> list[dict[str, Any]]:
    rows = [summarise([r for r in group if key(r) == k], str(k)) for k in order]
    rows = [r for r in rows if r["runs"]]
    if len(rows) > 1:
        rows.append(summarise(group, "mean (all)"))
    return rows


def build_tables(results: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The table rows (dicts) for the views, input-view, per-view and ablation tables."""
    clips = [c["clip"] for c in results["clips"]]
    cfg = results["config"]
    full = [r for r in runs if r["variant"] == "full"]
    views_set = {tuple(v) for v in cfg["views"]}
    t_views = _rows_by([r for r in full if tuple(r["view"]) in views_set], lambda r: r["clip"], clips)
    inp = [r for r in full if tuple(r["view"]) == (0.0, 0.0)]
    t_input = _rows_by(inp, lambda r: r["clip"], clips)
    rt = {c["clip"]: c for c in results["clips"]}
    for row in t_input:
        c = rt.get(row["name"])
        row["roundtrip_psnr_db"] = c["roundtrip_psnr_db"] if c else mean_of(
            [x["roundtrip_psnr_db"] for x in results["clips"]])
    view_keys = [view_name(tuple(v)) for v in cfg["views"]]
    t_per_view = _rows_by(full, lambda r: view_name(tuple(r["view"])), view_keys)
    abl_lights = {r["light"] for r in runs if r["variant"] != "full"}
    abl = [r for r in runs if tuple(r["view"]) == (0.0, 0.0) and r["light"] in abl_lights]
    variants = list(dict.fromkeys(["full"] + [r["variant"] for r in abl]))
    t_abl = [summarise([r for r in abl if r["variant"] == v], v) for v in variants] if abl_lights else []
    t_abl = [r for r in t_abl if r["runs"]]
    return {"views": t_views, "input": t_input, "per_view": t_per_view, "ablation": t_abl}


def markdown(tables: dict[str, Any]) -> dict[str, str]:
    """Markdown text of each table."""
    out = {"views": markdown_table(tables["views"], COLS_VIEWS, HEAD_VIEWS),
           "input": markdown_table(tables["input"], ["name", "LE", "LI", "time_s", "roundtrip_psnr_db", "WE",
                                                     "WE_rel", "tSSIM", "ID", "pose_deg"],
                                   ["clip", "Lighting Error ↓", "Lighting Instability ↓", "Time (s/frame)",
                                    "round-trip PSNR (dB) ↑", "WE ↓", "WE / input WE", "tSSIM ↑",
                                    "ID dist ↓", "pose err (deg) ↓"]),
           "per_view": markdown_table(tables["per_view"], COLS_VIEWS, ["view"] + HEAD_VIEWS[1:])}
    if tables["ablation"]:
        out["ablation"] = markdown_table(tables["ablation"],
                                         ["name", "LE", "LI", "WE", "WE_rel", "tSSIM", "ID"],
                                         ["variant", "LE ↓", "LI ↓", "WE ↓", "WE / input WE", "tSSIM ↑",
                                          "ID dist ↓"])
    return out


def plots(root: Path, results: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """Per clip: per-frame LE (mean over lights), WE and tSSIM per view and variant -> PNG paths."""
    written = []
    (root / "plots").mkdir(parents=True, exist_ok=True)
    for c in results["clips"]:
        mine = [r for r in runs if r["clip"] == c["clip"]]
        if not mine:
            continue
        series: dict[str, dict[str, Any]] = {"LE": {}, "WE": {"input footage": c["input_we_curve"]},
                                             "tSSIM": {}}
        groups: dict[str, list] = defaultdict(list)
        for r in mine:
            label = view_name(tuple(r["view"])) if r["variant"] == "full" else r["variant"]
            groups[label].append(r)
        for label, rs in groups.items():
            for key, field in (("LE", "le"), ("WE", "we"), ("tSSIM", "tssim")):
                arr = np.array([np.asarray(r[field], dtype=np.float64) for r in rs])
                with np.errstate(all="ignore"):
                    series[key][label] = np.nanmean(arr, axis=0)
        path = root / "plots" / f"{c['clip']}.png"
        plot_per_frame(path, series, f"{c['clip']}: per-frame metrics (mean over lights)")
        written.append(str(path))
    return written


def write_all(root: Path, results: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write results.json, the Markdown tables and the plots into root."""
    tables = build_tables(results, runs)
    md = markdown(tables)
    results["tables"] = tables
    results["plots"] = plots(root, results, runs)
    for name, text in md.items():
        write_text(root / f"table_{name}.md", text)
    write_json(root / "results.json", results)
    return tables
