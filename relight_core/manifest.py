"""The record of finished frames in an output folder (`layout.manifest_file`, JSON lines).

A line is appended as each frame completes (after its files were renamed into place): the frame's
index, the id of the settings that made it (`settings_id`), each file's path (relative to DIR) and size,
the frame's raw input-light estimate (so that a resumed run continues the light's smoothing exactly) and
its report entry. A later line for the same frame replaces an earlier one.

Resume trusts a frame only when its last line was made with the same settings and every file it needs
is there with the size recorded (an empty, truncated or replaced file is rendered again); files that
no line lists (a killed run's `.tmp`, an older engine's frames) are never trusted. A line cut short by a
kill is ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np


def settings_id(settings: dict) -> str:
    """A short id of a run's render settings (JSON-able dict)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


class Manifest:
    """The finished frames of one output folder: `entries` {index: last line}; `append` adds one."""

    def __init__(self, out: Path, path: Path) -> None:
        self.out, self.path = Path(out), Path(path)
        self.entries: dict[int, dict] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        for raw in lines:
            try:
                entry = json.loads(raw)
                self.entries[int(entry["index"])] = entry
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill, or not ours
        self.lines = len(lines)

    def compact(self) -> None:
        """Rewrite the file with one line per frame when superseded lines make up most of it (only by the
        run that holds the folder's lock)."""
        from relight_core import io

        if self.lines <= 2 * len(self.entries) + 16:
            return
        with io.atomic_write(self.path) as tmp:
            tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n"
                                   for _, e in sorted(self.entries.items())), encoding="utf-8")
        self.lines = len(self.entries)

    def trusted(self, index: int, sid: str, files: dict[str, Path]) -> dict | None:
        """The entry of frame `index` when it was made with settings `sid` and each of `files` (pass ->
        path) is listed and still there with its recorded size; else None."""
        entry = self.entries.get(int(index))
        if entry is None or entry.get("settings") != sid:
            return None
        recorded = entry.get("files") or {}
        for name, path in files.items():
            rel, size = (recorded.get(name) or (None, None))
            if rel != self._rel(path) or not size:
                return None
            try:
                if path.stat().st_size != size:
                    return None
            except OSError:
                return None
        return entry

    def append(self, index: int, sid: str, files: dict[str, Path], light_raw: np.ndarray | None,
               report: dict[str, Any]) -> None:
        """Record a finished frame (its files exist): one line, flushed before returning."""
        entry = {"index": int(index), "settings": sid,
                 "files": {name: [self._rel(p), p.stat().st_size] for name, p in files.items()},
                 "light_raw": None if light_raw is None or not np.all(np.isfinite(light_raw))
                 else np.asarray(light_raw, np.float64).tolist(),
                 "report": report}
        line = json.dumps(entry, separators=(",", ":"), default=_json_default) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
        self.entries[int(index)] = json.loads(line)

    def _rel(self, path: Path) -> str:
        return Path(path).relative_to(self.out).as_posix()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
