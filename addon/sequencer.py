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
# Custom properties of a result strip: it is a result (never a source), of which source strip, which take,
# the strip folder holding its takes and the pixel size of its frames.
RESULT_KEY = "portrait_relight_result"
SOURCE_KEY = "portrait_relight_source"
TAKE_KEY = "portrait_relight_take"
FOLDER_KEY = "portrait_relight_folder"
SIZE_KEY = "portrait_relight_size"


def is_result(strip) -> bool:
    """Whether a strip is a relight result (results are never relit themselves)."""
    return bool(strip.get(RESULT_KEY, False))


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
    return sorted((s for s in strips if s.type in {"MOVIE", "IMAGE"} and not is_result(s)),
                  key=lambda s: (s.channel, s.frame_final_start))


def active_strip(scene: bpy.types.Scene):
    """The active strip if it is a movie or image strip that is not a relight result, else None."""
    s = active_any(scene)
    return s if s is not None and s.type in {"MOVIE", "IMAGE"} and not is_result(s) else None


def active_any(scene: bpy.types.Scene):
    """The active strip of a scene's sequencer, whatever it is (None without one)."""
    ed = scene.sequence_editor
    return ed.active_strip if ed is not None else None


def result_of(scene: bpy.types.Scene, source):
    """The result strip made from `source` (by its mark; None when it has none)."""
    for s in strips_of(scene) or []:
        if is_result(s) and s.get(SOURCE_KEY) == source.name:
            return s
    return None


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


def media_size(strip) -> tuple[int, int]:
    """(width, height) in pixels of a movie or image strip's media (0, 0 when it cannot be read)."""
    el = strip.elements[0] if len(getattr(strip, "elements", ())) else None
    if el is not None and el.orig_width > 0 and el.orig_height > 0:
        return int(el.orig_width), int(el.orig_height)
    if strip.type == "MOVIE":
        clip = bpy.data.movieclips.load(bpy.path.abspath(strip.filepath))
        try:
            return int(clip.size[0]), int(clip.size[1])
        finally:
            bpy.data.movieclips.remove(clip)
    return image_size(os.path.join(bpy.path.abspath(strip.directory), el.filename)) if el else (0, 0)


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file, read through Blender (header only); (0, 0) when unreadable."""
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError:
        return 0, 0
    try:
        return int(img.size[0]), int(img.size[1])
    finally:
        bpy.data.images.remove(img)


def _copy_placement(dst, src) -> None:
    """Copy a strip's transform, crop, flip and blending to `dst` (media of the same pixel size)."""
    for k in ("offset_x", "offset_y", "rotation", "filter", "scale_x", "scale_y"):
        if hasattr(src.transform, k):
            setattr(dst.transform, k, getattr(src.transform, k))
    if hasattr(src.transform, "origin"):
        dst.transform.origin = tuple(src.transform.origin)
    for k in ("min_x", "max_x", "min_y", "max_y"):
        setattr(dst.crop, k, getattr(src.crop, k))
    for k in ("use_flip_x", "use_flip_y", "blend_type", "blend_alpha"):
        setattr(dst, k, getattr(src, k))


def refit_media(strip, old: tuple[int, int], new: tuple[int, int]) -> None:
    """Keep a strip's footprint when its media changes pixel size from `old` to `new` (width, height).

    The sequencer scales and rotates an image about its origin, placed at (origin - 0.5) x media size in
    unscaled pixels from the frame centre; a media k times the size therefore needs scale / k, crop x k
    and the offset moved by (1 - k) x that pivot, so that every image point lands on the same pixel."""
    if min(*old, *new) <= 0 or tuple(old) == tuple(new):
        return
    t = strip.transform
    for axis, o_size, n_size in ((0, old[0], new[0]), (1, old[1], new[1])):
        k = n_size / o_size
        xy = "xy"[axis]
        origin = float(t.origin[axis]) if hasattr(t, "origin") else 0.5
        setattr(t, f"scale_{xy}", getattr(t, f"scale_{xy}") / k)
        setattr(t, f"offset_{xy}", getattr(t, f"offset_{xy}") + (1.0 - k) * (origin - 0.5) * o_size)
        for end in ("min", "max"):
            setattr(strip.crop, f"{end}_{xy}", round(getattr(strip.crop, f"{end}_{xy}") * k))


def blend_path(path: str) -> str:
    """`path` relative to the saved .blend ('//...'), absolute while the file is unsaved."""
    return bpy.path.relpath(path) if bpy.data.filepath else path


def set_strip_files(strip, files: list[str], length: int, start: int) -> None:
    """Point an image strip at `files` (one folder, one file per frame) in place, `length` frames long from
    timeline frame `start`."""
    folder = os.path.dirname(files[0])
    if any(os.path.dirname(f) != folder for f in files):
        raise ValueError(f"Relit frames of '{strip.name}' are in several folders; expected one.")
    strip.directory = blend_path(folder) + os.sep
    strip.elements[0].filename = os.path.basename(files[0])
    while len(strip.elements) > 1:
        strip.elements.pop(len(strip.elements) - 1)
    for f in files[1:]:
        strip.elements.append(os.path.basename(f))
    strip.frame_offset_start = strip.frame_offset_end = 0
    strip.frame_start = start
    strip.frame_final_duration = int(length)


def add_result_strip(scene: bpy.types.Scene, source, files: list[str], length: int | None = None,
                     take: int = 0, folder: str = "", start: int | None = None):
    """Show `files` (one per frame, in order) as the result strip of `source`, '<source name> relit'.

    A new result strip starts at the source's first shown frame on the first free channel above it and
    copies its placement (transform, crop, flip, blending, colour space of 8-bit results), scaled so that it
    covers the source's footprint whatever the result's pixel size. An existing result strip of the source
    is updated in place, keeping the artist's channel, blending, transform and modifiers. `length` holds a
    single image for that many frames (default: one frame per file). `start`: its first timeline frame
    (default: the source's first shown frame). The result is left unselected."""
    if not files:
        raise ValueError(f"No relit frames to add for strip '{source.name}'.")
    strips = strips_of(scene, ensure=True)
    length = int(length or len(files))
    new_size = image_size(files[0])
    strip = result_of(scene, source)
    start = int(source.frame_final_start) if start is None else int(start)
    if strip is not None and strip.type == "IMAGE":
        set_strip_files(strip, files, length, start)
        refit_media(strip, tuple(strip.get(SIZE_KEY, new_size)), new_size)
    else:
        channel = free_channel_above(scene, source, start, start + length)
        strip = strips.new_image(name=f"{source.name} relit", filepath=files[0], channel=channel,
                                 frame_start=start)
        set_strip_files(strip, files, length, start)
        _copy_placement(strip, source)
        refit_media(strip, media_size(source), new_size)
        if not files[0].lower().endswith(".exr"):
            strip.colorspace_settings.name = source.colorspace_settings.name
        strip[RESULT_KEY] = True
        strip[SOURCE_KEY] = source.name
    strip[SIZE_KEY] = list(new_size)
    strip[TAKE_KEY] = int(take)
    strip[FOLDER_KEY] = blend_path(folder) if folder else ""
    strip.select = False
    return strip
