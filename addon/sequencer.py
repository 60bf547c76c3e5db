"""Sequencer helpers that work on Blender 4.5 LTS and 5.0.

4.5 has `SequenceEditor.sequences` (deprecated) and `.strips`; 5.0 only `.strips`. In 5.0 the sequencer
shows `context.workspace.sequencer_scene`, which may differ from the window's scene; in 4.5 it is the
window's scene. Source frames are 0-based indices into the strip's media.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import bpy

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp", ".webp"}
MAX_CHANNEL = 128


def sequencer_scene(context) -> bpy.types.Scene:
    """The scene whose strips the sequencer edits (5.0: the workspace's sequencer scene).

    Without a window (`blender -b`) there is no current workspace: the window scene is used when it has
    strips, else the first workspace's sequencer scene that has some."""
    ws = getattr(context, "workspace", None)
    scene = getattr(ws, "sequencer_scene", None) if ws is not None else None
    if scene is not None:
        return scene
    if ws is None and strips_of(context.scene) is None:
        for other in bpy.data.workspaces:
            cand = getattr(other, "sequencer_scene", None)
            if cand is not None and strips_of(cand) is not None:
                return cand
    return context.scene


def strips_of(scene: bpy.types.Scene, ensure: bool = False):
    """The top-level strips collection of a scene (None without a sequence editor unless `ensure`)."""
    ed = scene.sequence_editor
    if ed is None:
        if not ensure:
            return None
        ed = scene.sequence_editor_create()
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def media_strips(scene: bpy.types.Scene) -> list:
    """Movie and image strips of a scene, in channel then start order."""
    strips = strips_of(scene)
    if strips is None:
        return []
    return sorted((s for s in strips if s.type in {"MOVIE", "IMAGE"}),
                  key=lambda s: (s.channel, s.frame_final_start))


def active_strip(scene: bpy.types.Scene):
    """The active strip if it is a movie or image strip, else None."""
    ed = scene.sequence_editor
    s = ed.active_strip if ed is not None else None
    return s if s is not None and s.type in {"MOVIE", "IMAGE"} else None


def selected_or_active(scene: bpy.types.Scene) -> list:
    """Selected movie/image strips; the active one when none is selected."""
    sel = [s for s in media_strips(scene) if s.select]
    if sel:
        return sel
    act = active_strip(scene)
    return [act] if act is not None else []


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class StripSource:
    """What the engine reads for a strip: `input` path and source frame range [first, last)."""

    input: str
    frames: tuple[int, int] | None
    timeline_start: int
    length: int
    name: str


def strip_source(strip) -> StripSource:
    """The engine input of a movie or image strip (absolute path, source frame range).

    Source frame of timeline frame f = f - frame_start + animation_offset_start; the strip shows
    frame_final_duration frames from frame_final_start. Image strips map their element files to indices
    of the folder listing (natural sort, as the engine reads folders). Raises ValueError with one
    sentence when the strip cannot be sent, e.g. when it is retimed: Blender's Python API gives the
    retiming keys' timeline frames but not the media frames they hold, so the relit frames could not be
    put in step with what the sequencer shows.
    """
    if len(getattr(strip, "retiming_keys", ())):
        raise ValueError(f"Strip '{strip.name}' is retimed (retiming keys, or a movie made to play at the "
                         "scene's frame rate); reset its retiming (Reset Retiming) or render it to a movie "
                         "first, so that relit frames match the strip frame for frame.")
    start = int(strip.frame_final_start)
    length = int(strip.frame_final_duration)
    first = int(strip.frame_offset_start) + int(getattr(strip, "animation_offset_start", 0))
    if strip.type == "MOVIE":
        path = os.path.normpath(bpy.path.abspath(strip.filepath))
        if not os.path.isfile(path):
            raise ValueError(f"Strip '{strip.name}': movie file {path} does not exist.")
        return StripSource(path, (first, first + length), start, length, strip.name)
    if strip.type != "IMAGE":
        raise ValueError(f"Strip '{strip.name}' is a {strip.type} strip; select a movie or image strip.")
    folder = os.path.normpath(bpy.path.abspath(strip.directory))
    names = [e.filename for e in strip.elements]
    if len(names) == 1:
        path = os.path.join(folder, names[0])
        if not os.path.isfile(path):
            raise ValueError(f"Strip '{strip.name}': image {path} does not exist.")
        return StripSource(path, None, start, length, strip.name)
    listing = sorted((n for n in os.listdir(folder) if Path(n).suffix.lower() in IMAGE_EXTS
                      and not n.startswith(".")), key=_natural_key) if os.path.isdir(folder) else []
    index = {n: i for i, n in enumerate(listing)}
    shown = names[first:first + length]
    missing = [n for n in shown if n not in index]
    if missing:
        raise ValueError(f"Strip '{strip.name}': image {os.path.join(folder, missing[0])} does not exist.")
    src = [index[n] for n in shown]
    if src != list(range(src[0], src[0] + len(src))):
        raise ValueError(f"Strip '{strip.name}' uses a subset of the images in {folder}; put the strip's "
                         "images in a folder of their own.")
    return StripSource(folder, (src[0], src[0] + len(src)), start, length, strip.name)


def free_channel_above(scene: bpy.types.Scene, strip, start: int, end: int, ignore=()) -> int:
    """The lowest channel above `strip` with no strip overlapping timeline frames [start, end)."""
    strips = strips_of(scene) or []
    ignore_names = {s.name for s in ignore}
    for ch in range(strip.channel + 1, MAX_CHANNEL + 1):
        busy = any(s.channel == ch and s.name not in ignore_names and s.frame_final_start < end
                   and s.frame_final_end > start for s in strips)
        if not busy:
            return ch
    raise ValueError(f"No free channel above strip '{strip.name}'; free a channel and run again.")


def add_result_strip(scene: bpy.types.Scene, source, files: list[str], length: int | None = None):
    """Add (or replace) the image strip '<source name> relit' made of `files`, one per frame in order,
    starting at the source's first shown frame, on the first free channel above it. `length` holds a
    single image for that many frames (default: one frame per file)."""
    if not files:
        raise ValueError(f"No relit frames to add for strip '{source.name}'.")
    strips = strips_of(scene, ensure=True)
    name = f"{source.name} relit"
    old = strips.get(name)
    if old is not None:
        strips.remove(old)
    start = int(source.frame_final_start)
    length = int(length or len(files))
    channel = free_channel_above(scene, source, start, start + length)
    strip = strips.new_image(name=name, filepath=files[0], channel=channel, frame_start=start)
    folder = os.path.dirname(files[0])
    for f in files[1:]:
        if os.path.dirname(f) != folder:
            raise ValueError(f"Relit frames of '{source.name}' are in several folders; expected one.")
        strip.elements.append(os.path.basename(f))
    strip.frame_final_duration = length
    return strip
