"""Result tables (Markdown, JSON) and per-frame metric plots (PNG, matplotlib Agg backend)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: floats with `digits` decimals (scientific below 1e-3), NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.{max(digits - 1, 1)}e}"
        return f"{v:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                   headers: Sequence[str] | None = None, digits: int = 4) -> str:
    """Rows of dicts -> a GitHub Markdown table with the given columns (first column left-aligned)."""
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(columns) - 1)) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return None if not math.isfinite(v) else v
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON (NaN/inf as null, numpy converted) atomically."""
    from relight_core.io import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(_jsonable(data), indent=1) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    from relight_core.io import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)


def plot_per_frame(path: str | os.PathLike, series: Mapping[str, Mapping[str, Sequence[float]]],
                   title: str) -> None:
    """One PNG with a subplot per metric; `series[metric][label]` is a per-frame curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relight_core.io import atomic_write

    names = list(series)
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        for label, ys in series[name].items():
            ys = np.asarray(ys, dtype=np.float64)
            ax.plot(np.arange(len(ys)), ys, label=label, lw=1)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, ncol=4, loc="best")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
