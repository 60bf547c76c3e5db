"""Output folders and takes: `<output root>/<scene>/<strip>/take_NNN/`, one engine output folder per take.

A take is one look of a strip: the request's lighting, view, frames, size, format, passes and background
(`take_look`). Relighting with the look of an existing take resumes that take; a new look makes the next
take, so earlier results are never overwritten. Each take folder holds `take.json` (its look) next to the
engine's outputs; the engine's tracking and input light of the clip (`.relight/analysis.npz`,
`.relight/input_light_*.npz`, which do not depend on the look) are copied from the previous take so that a
new take does not track the clip again.
Folder names are made from scene and strip names: characters unsafe in file names become `_`, and a name
that had to change gets a short hash of the original, so "shot 1" and "shot_1" never share a folder.
No bpy here: paths in, paths out.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil

TAKE_FILE = "take.json"
ENGINE_DIR = ".relight"  # the engine's own files in an output folder (relight_core.layout)
ANALYSIS_NAME = "analysis.npz"
# what a new take may reuse from an earlier one: the clip's tracking and its input light per working size
REUSABLE = ("analysis.npz", "input_light_*.npz")
_TAKE_DIR = re.compile(r"^take_(\d{3,})$")
_LOOK_KEYS = ("frames", "format", "passes", "size", "background", "light_space", "lighting", "camera")


def safe_name(name: str) -> str:
    """A file-name-safe, collision-free folder name for a scene or strip name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_.") or "unnamed"
    if safe != name:
        safe += "-" + hashlib.sha1(name.encode("utf-8")).hexdigest()[:6]
    return safe


def strip_folder(root: str, scene_name: str, strip_name: str) -> str:
    """The folder of one strip of one scene under the output root (absolute in, absolute out)."""
    return os.path.join(root, safe_name(scene_name), safe_name(strip_name))


def take_folder(strip_dir: str, take: int) -> str:
    """`<strip_dir>/take_NNN`."""
    return os.path.join(strip_dir, f"take_{int(take):03d}")


def take_number(folder: str) -> int | None:
    """The take number of a take folder (None when the folder is not a take)."""
    m = _TAKE_DIR.match(os.path.basename(os.path.normpath(folder)))
    return int(m.group(1)) if m else None


def list_takes(strip_dir: str) -> list[int]:
    """Take numbers present under a strip folder, ascending."""
    if not os.path.isdir(strip_dir):
        return []
    nums = (take_number(n) for n in os.listdir(strip_dir) if os.path.isdir(os.path.join(strip_dir, n)))
    return sorted(n for n in nums if n is not None)


def take_look(request: dict) -> dict:
    """What makes a take: the request's fields that change the pictures (not paths, device or resume)."""
    return {k: request.get(k) for k in _LOOK_KEYS}


def take_info(folder: str) -> dict:
    """The take's record ({"look", "input", "timeline_start"}; empty when unreadable)."""
    try:
        with open(os.path.join(folder, TAKE_FILE), encoding="utf-8") as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _stored_look(folder: str) -> dict | None:
    return take_info(folder).get("look")


def has_frames(folder: str) -> bool:
    """Whether a take folder holds any finished frame (PNG or EXR)."""
    return any(glob.glob(os.path.join(folder, sub, "*.*")) for sub in ("rgba", "exr"))


def choose_take(strip_dir: str, request: dict) -> int:
    """The take for a request: an existing take with the same look (resumed), else the newest take when it
    holds no frames yet (a failed or cancelled-before-any-frame start), else a new take number."""
    look = json.loads(json.dumps(take_look(request)))  # the form it has after a JSON round trip
    takes = list_takes(strip_dir)
    for t in reversed(takes):
        if _stored_look(take_folder(strip_dir, t)) == look:
            return t
    if takes and not has_frames(take_folder(strip_dir, takes[-1])):
        return takes[-1]
    return (takes[-1] + 1) if takes else 1


def prepare_take(request: dict, timeline_start: int | None = None) -> None:
    """Create the request's take folder, record its look (and the timeline frame its first frame belongs
    at), and copy the engine's analysis of the clip from the newest other take that has one (so a new look
    does not track the clip again)."""
    folder = request["output"]
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, TAKE_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"look": take_look(request), "input": request.get("input"),
                   "timeline_start": timeline_start}, fh)
    os.replace(tmp, os.path.join(folder, TAKE_FILE))
    if os.path.isfile(analysis_file(folder)):
        return
    donor = latest_analysis_folder(os.path.dirname(os.path.normpath(folder)))
    if donor is None or os.path.normpath(donor) == os.path.normpath(folder):
        return
    os.makedirs(os.path.join(folder, ENGINE_DIR), exist_ok=True)
    for pattern in REUSABLE:
        for src in glob.glob(os.path.join(donor, ENGINE_DIR, pattern)):
            shutil.copy2(src, os.path.join(folder, ENGINE_DIR, os.path.basename(src)))


def analysis_file(folder: str) -> str:
    """The engine's head track in an output folder: DIR/.relight/analysis.npz."""
    return os.path.join(folder, ENGINE_DIR, ANALYSIS_NAME)


def latest_analysis_folder(strip_dir: str) -> str | None:
    """The newest take folder (or the strip folder itself, as written before takes existed) holding the
    engine's head track; None when the strip was never relit."""
    for t in reversed(list_takes(strip_dir)):
        if os.path.isfile(analysis_file(take_folder(strip_dir, t))):
            return take_folder(strip_dir, t)
    return strip_dir if os.path.isfile(analysis_file(strip_dir)) else None


_INDEX = re.compile(r"_(\d{6})\.[A-Za-z]+$")


def frame_files(folder: str, fmt: str) -> dict[int, str]:
    """{source frame index: file} of the finished frames in a take folder (rgba PNGs or multilayer EXRs)."""
    sub = "rgba" if fmt == "png" else "exr"
    found = {}
    for path in glob.glob(os.path.join(folder, sub, f"*.{fmt}")):
        m = _INDEX.search(os.path.basename(path))
        if m:
            found[int(m.group(1))] = path
    return found


def take_format(folder: str) -> str:
    """The output format a take was made with ("png" or "exr"), from its look or its files."""
    look = _stored_look(folder) or {}
    if look.get("format") in ("png", "exr"):
        return look["format"]
    return "exr" if glob.glob(os.path.join(folder, "exr", "*.exr")) else "png"
