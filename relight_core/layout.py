"""Where the engine keeps its own files in an output folder DIR (one place, so that every command agrees).

The frames go in DIR/<pass>/ (PNG) or DIR/exr/ (README, "Outputs"). The engine's bookkeeping lives in
the hidden folder DIR/.relight/, so that a file of the user's in DIR (their own report.json, ...) is
never replaced:

    DIR/.relight/lock             the run writing into DIR now (`lock.py`)
    DIR/.relight/analysis.npz     the tracking of the footage, with what it was made from (`Analysis.source`)
    DIR/.relight/input_light_<w>x<h>.npz   the clip's input light per frame at a working size
    DIR/.relight/manifest.jsonl   one line per finished frame: its files, their sizes and the settings
                                  that made it (`manifest.py`); resume trusts only what it lists
    DIR/.relight/report.json      the run's report, rebuilt from the manifest (every finished frame)
"""

from __future__ import annotations

from pathlib import Path

ENGINE_DIR = ".relight"
ANALYSIS_NAME = "analysis.npz"


def engine_dir(out: str | Path) -> Path:
    """DIR/.relight: the engine's own files in output folder DIR."""
    return Path(out) / ENGINE_DIR


def analysis_file(out: str | Path) -> Path:
    """The analysis `relight --out DIR` reuses (and `analyze -o DIR` writes)."""
    return engine_dir(out) / ANALYSIS_NAME


def report_file(out: str | Path) -> Path:
    return engine_dir(out) / "report.json"


def manifest_file(out: str | Path) -> Path:
    return engine_dir(out) / "manifest.jsonl"


def lock_file(out: str | Path) -> Path:
    return engine_dir(out) / "lock"


def light_track_name(height: int, width: int) -> str:
    """The file name of the clip's input-light track at a working size (in the engine's folder)."""
    return f"input_light_{width}x{height}.npz"


def light_track_file(out: str | Path, height: int, width: int) -> Path:
    return engine_dir(out) / light_track_name(height, width)
