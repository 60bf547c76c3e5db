"""Where the engine keeps its own files in an output folder DIR (one place, so that every command agrees).

The frames go in DIR/<pass>/ (PNG) or DIR/exr/ (README, "Outputs"). The engine's bookkeeping lives next
to them: the analysis it tracked (`analysis_file`) and what it records about the run.
"""

from __future__ import annotations

from pathlib import Path

ANALYSIS_NAME = "analysis.npz"


def analysis_file(out: str | Path) -> Path:
    """The analysis `relight --out DIR` reuses (and `analyze -o DIR` writes) -> its path in DIR."""
    return Path(out) / ANALYSIS_NAME
