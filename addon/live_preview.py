"""Live Preview: the frame under the playhead, relit by a long-lived engine session while lights move.

Switching *Live Preview* on starts `<engine python> -m relight_core serve` (serve_client.py) and opens the
active strip (tracking, with progress; cancellable). From then on any change of the scene's lights, World,
head anchor, camera, exposure, the current frame or the add-on's settings marks the preview dirty; a
`bpy.app.timers` timer (every TICK_S) picks up the engine's replies and, at most every SEND_INTERVAL_S,
builds the render request for the current frame with the add-on's own request code (request.py: the
same lighting and camera a relight would send, for that one frame) and sends it when it differs from
the last one. Nothing on the main thread waits for the engine. The relit image is drawn in the
sequencer preview exactly over the source strip (its transform, crop and flip; `strip_quad`), with a
small overlay of the engine time and whether the image is current.

The session ends when the toggle goes off, on file load/new, on add-on disable and on quit; an engine
that dies is reported once (one sentence in the panel) and the toggle restarts it.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import tempfile
import time
import traceback

import bpy
import numpy as np
from bpy.app.handlers import persistent

from . import handlers, request, sequencer
from .serve_client import MALFORMED, ServeClient

TICK_S = 0.05  # how often the timer looks for replies
SEND_INTERVAL_S = 0.1  # at most ~10 render requests a second
IMAGE_NAME = "Portrait Relight Live"
SIZE_FACTORS = {"HALF": 0.5, "FULL": 1.0}

# Settings that are state, not inputs of the preview: writing them must not trigger a render
_STATE_SETTINGS = frozenset({"rna_type", "is_running", "progress", "status", "last_result", "last_output",
                             "sh", "sh_frames", "live_preview"})
_REACT_TO = (bpy.types.Object, bpy.types.Light, bpy.types.World, bpy.types.Camera, bpy.types.NodeTree)

_SESSION: dict = {}  # "live": the running LiveSession
_NOTE = {"text": ""}  # the last one-sentence message of an ended session (shown in the panel)
_DRAW: list = []  # installed draw handlers: (handle, region type)


# --------------------------------------------------------------------------------------------- geometry


def strip_quad(media_size: tuple[float, float], offset: tuple[float, float], scale: tuple[float, float],
               rotation: float, origin: tuple[float, float], crop: tuple[float, float, float, float],
               flip: tuple[bool, bool], pixel_aspect: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Where the sequencer shows a strip's image: (quad (4, 2), uv (4, 2)) float32.

    `quad` is in the preview's view coordinates (render pixels, origin at the frame centre, +y up), `uv`
    the matching texture coordinates in [0, 1] (v up). media_size: the media's (width, height) in pixels;
    offset: pixels; scale; rotation: radians, counter-clockwise; origin: the pivot, relative to the image
    (0.5, 0.5 = centre); crop: (left, right, bottom, top) pixels cut from the media; flip: (x, y) mirrored
    about the frame centre; pixel_aspect: render pixel aspect x / y. Follows Blender's sequencer
    (`image_transform_final_quad_get`), so the relit image lands exactly on the source strip.
    """
    w, h = (float(v) for v in media_size)
    left, right, bottom, top = (float(v) for v in crop)
    corners = np.array([[w / 2 - right, h / 2 - top], [w / 2 - right, -h / 2 + bottom],
                        [-w / 2 + left, -h / 2 + bottom], [-w / 2 + left, h / 2 - top]])
    uv = (corners + [w / 2, h / 2]) / [w, h]
    pivot = np.array(origin, dtype=np.float64) * [w, h] - [w / 2, h / 2]
    c, s = math.cos(rotation), math.sin(rotation)
    rs = np.array([[c, -s], [s, c]]) @ np.diag(np.asarray(scale, dtype=np.float64))
    points = (corners - pivot) @ rs.T + pivot + np.asarray(offset, dtype=np.float64)
    mirror = np.array([-1.0 if flip[0] else 1.0, -1.0 if flip[1] else 1.0])
    quad = points * mirror * [pixel_aspect, 1.0]
    return quad.astype(np.float32), uv.astype(np.float32)


def media_size(strip, fallback: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a strip's media as Blender knows it (its first element), else `fallback`."""
    elems = getattr(strip, "elements", None)
    if elems is not None and len(elems) and elems[0].orig_width > 0 and elems[0].orig_height > 0:
        return int(elems[0].orig_width), int(elems[0].orig_height)
    return fallback


def shown_quad(scene, strip, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`strip_quad` for a strip of a scene (its transform, crop, flip; the scene's pixel aspect)."""
    t, cr = strip.transform, strip.crop
    aspect = float(scene.render.pixel_aspect_x) / max(float(scene.render.pixel_aspect_y), 1e-6)
    return strip_quad(size, (t.offset_x, t.offset_y), (t.scale_x, t.scale_y), float(t.rotation),
                      tuple(t.origin), (cr.min_x, cr.max_x, cr.min_y, cr.max_y),
                      (bool(strip.use_flip_x), bool(strip.use_flip_y)), aspect)


# --------------------------------------------------------------------------------------------- session


class LiveSession:
    """One engine session for one strip: what was asked, what came back, what is shown."""

    def __init__(self, context, scene, seq_scene, strip, engine):
        self.scene_name, self.seq_scene_name, self.strip_name = scene.name, seq_scene.name, strip.name
        self.src = sequencer.strip_source(strip)
        self.timing = _strip_timing(strip)
        self.folder = tempfile.mkdtemp(prefix="portrait_relight_live_")
        self.client = ServeClient(engine)
        # `cache`: the strip's relight folder, so that a relight and the preview share one analysis
        self.open_id = self.client.send("open", input=self.src.input,
                                        frames=list(self.src.frames) if self.src.frames else None,
                                        size=None, fov=None, cache=request.strip_output(context, strip))
        self.phase = "analyzing"  # -> "ready"
        self.stage, self.done, self.total = "analyze", 0, 0
        self.info: dict = {}
        self.dirty = True
        self.building = False
        self.seen: tuple = ()
        self.message = ""
        self.latest_key: str | None = None  # the request the scene asks for now (None: nothing to show)
        self.sent_key: str | None = None
        self.sent_at = 0.0
        self.pending: dict[int, tuple[str, str]] = {}  # id -> (request key, output file)
        self.shown: dict | None = None  # {"key", "frame", "ms", "file"}
        self.renders = 0
        self.last_scene_key: tuple = ()

    # -------------------------------------------------------------- scene access
    @property
    def scene(self):
        return bpy.data.scenes.get(self.scene_name)

    @property
    def seq_scene(self):
        return bpy.data.scenes.get(self.seq_scene_name)

    def strip(self):
        strips = sequencer.strips_of(self.seq_scene) if self.seq_scene is not None else None
        return strips.get(self.strip_name) if strips is not None else None

    def follow_strip(self) -> None:
        """Re-read the strip's timing when it was moved, trimmed or slipped; ValueError when it is gone or
        now shows frames the session did not track."""
        strip = self.strip()
        if strip is None:
            raise ValueError(f"Strip '{self.strip_name}' is gone; switch Live Preview off, select a strip "
                             "and switch it on again.")
        timing = _strip_timing(strip)
        if timing == self.timing:
            return
        src = sequencer.strip_source(strip)
        old = self.src.frames
        if old is not None and (src.frames is None or src.frames[0] < old[0] or src.frames[1] > old[1]):
            raise ValueError(f"Strip '{self.strip_name}' now shows frames that were not tracked; switch Live "
                             "Preview off and on to track them.")
        self.src, self.timing = src, timing

    def source_frame(self, timeline_frame: int) -> int | None:
        """The source frame index shown at a timeline frame (None outside the strip)."""
        src = self.src
        if not src.timeline_start <= timeline_frame < src.timeline_start + src.length:
            return None
        if src.frames is None:
            return int(self.info.get("first", 0))
        return src.frames[0] + timeline_frame - src.timeline_start

    @property
    def current(self) -> bool:
        """True when the shown image is the render of what the scene asks for now."""
        return (self.shown is not None and not self.dirty and not self.pending
                and self.shown["key"] == self.latest_key)

    # -------------------------------------------------------------- requests
    def render_request(self, context) -> dict | None:
        """The `render` request for the frame under the playhead (None outside the strip). Lighting and
        camera come from request.py for that one frame; ValueError says what the scene lacks."""
        scene, seq_scene = self.scene, self.seq_scene
        self.follow_strip()
        timeline_frame = int(seq_scene.frame_current)
        frame = self.source_frame(timeline_frame)
        if frame is None:
            return None
        settings = scene.portrait_relight
        lighting = request.lighting_spec(context, scene, settings, [timeline_frame])
        camera = request.camera_spec(scene, settings, [timeline_frame])
        view = "input" if camera is None else {"fov_deg": camera["fov_deg"],
                                               "cam2head": camera["cam2head"][0]}
        longest = max(int(self.info.get("width", 0)), int(self.info.get("height", 0)))
        size = max(16, round(longest * SIZE_FACTORS.get(settings.live_size, 0.5))) if longest else None
        return {"frame": frame, "lighting": lighting, "light_space": request.light_space(settings),
                "intensity": "match", "view": view, "size": size, "passes": [settings.live_pass],
                "background": settings.background}

    def send_if_changed(self, context) -> None:
        """Build the request for the current state; send it when it differs from the last one sent."""
        self.dirty = False
        self.building = True
        try:
            with handlers.paused():
                req = self.render_request(context)
        except ValueError as exc:
            self.message, self.latest_key, self.sent_key = str(exc), None, None
            return
        finally:
            self.building = False
        if req is None:
            self.latest_key = None
            return
        key = json.dumps(req, sort_keys=True)
        self.latest_key = key
        if key == self.sent_key:
            return
        self.renders += 1
        out = os.path.join(self.folder, f"preview_{self.renders:06d}.png")
        rid = self.client.send("render", output=out, **req)
        self.pending[rid] = (key, out)
        self.sent_key, self.sent_at = key, time.monotonic()

    # -------------------------------------------------------------- replies
    def apply(self, event: dict) -> str | None:
        """Handle one engine event; returns a message that ends the session, else None."""
        kind, rid = event.get("event"), event.get("id")
        if kind == "progress" and rid == self.open_id:
            self.stage = str(event.get("stage") or "analyze")
            self.done, self.total = int(event.get("done") or 0), int(event.get("total") or 0)
        elif kind == "opened":
            self.phase, self.info, self.dirty = "ready", dict(event), True
        elif kind == "rendered" and rid in self.pending:
            key, _out = self.pending.pop(rid)
            files = event.get("files") or {}
            path = next(iter(files.values()), "") if files else ""
            if path and os.path.isfile(path):
                self.show(key, int(event.get("frame", -1)), event.get("ms") or {}, path)
                if self.message and key == self.latest_key:
                    self.message = ""
        elif kind == "dropped":
            _key, out = self.pending.pop(rid, ("", ""))
            _remove_file(out)
        elif kind == MALFORMED:
            return (f"The live engine wrote {event.get('message')} on its output and was stopped; switch "
                    "Live Preview on to restart it.")
        elif kind == "cancelled" and self.phase == "analyzing":
            return "Live Preview was cancelled while tracking the strip."
        elif kind == "error":
            message = str(event.get("message") or "the engine reported an error")
            if rid == self.open_id or self.phase == "analyzing":
                return f"Live Preview could not open strip '{self.strip_name}': {message}"
            self.pending.pop(rid, None)
            self.message, self.sent_key = message, None
        return None

    def show(self, key: str, frame: int, ms: dict, path: str) -> None:
        """Point the live image at a new render and forget the file shown before."""
        img = bpy.data.images.get(IMAGE_NAME)
        if img is None:
            img = bpy.data.images.load(path)
            img.name = IMAGE_NAME
        else:
            img.filepath = path
            img.reload()
        old = self.shown["file"] if self.shown is not None else ""
        self.shown = {"key": key, "frame": frame, "ms": float(ms.get("total", 0.0)), "file": path}
        if old and old != path:
            _remove_file(old)

    def step(self, context) -> str | None:
        """One timer tick: handle replies, send the next request when due; returns an ending message."""
        for event in self.client.poll():
            end = self.apply(event)
            if end:
                return end
        if self.client.ended and not self.client.closing:
            return self.client.crash_message()
        if self.phase == "ready" and self.dirty and time.monotonic() - self.sent_at >= SEND_INTERVAL_S:
            self.send_if_changed(context)
        return None

    def close(self) -> None:
        """Quit the engine (without waiting) and drop the live image and its files."""
        if self.phase == "analyzing":
            self.client.send("cancel")  # a tracking engine reads `quit` only after it
        self.client.close()
        img = bpy.data.images.get(IMAGE_NAME)
        if img is not None:
            bpy.data.images.remove(img)
        shutil.rmtree(self.folder, ignore_errors=True)

    def snapshot(self) -> tuple:
        """What the panel and the overlay show (redraw only when it changes)."""
        return (self.phase, self.done, self.message, self.shown and self.shown["file"], self.current)

    # -------------------------------------------------------------- change detection
    def scene_key(self) -> tuple:
        """What in the scenes, outside the objects and World, changes the preview (frame, exposure, camera,
        the add-on's settings, the strip's timing): compared on each scene update, so that writing state
        fields triggers nothing."""
        scene, seq_scene = self.scene, self.seq_scene
        if scene is None or seq_scene is None:
            return ()
        s = scene.portrait_relight
        values = tuple(_plain(getattr(s, p.identifier)) for p in s.bl_rna.properties
                       if p.identifier not in _STATE_SETTINGS)
        strip = self.strip()
        return (seq_scene.frame_current, scene.frame_current, float(scene.view_settings.exposure),
                _plain(scene.camera), _plain(scene.world), values, strip and _strip_timing(strip))


def _plain(value):
    """A comparable stand-in for a property value (ID blocks by name, arrays as tuples)."""
    if isinstance(value, bpy.types.ID):
        return value.name
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        return tuple(value)
    except TypeError:
        return str(value)


def _strip_timing(strip) -> tuple:
    """What places a strip's media on the timeline (start, length, offsets)."""
    return (strip.frame_start, strip.frame_final_start, strip.frame_final_duration, strip.frame_offset_start,
            getattr(strip, "animation_offset_start", 0))


def _remove_file(path: str) -> None:
    if path:
        try:
            os.remove(path)
        except OSError:
            pass


# --------------------------------------------------------------------------------------------- control


def session() -> LiveSession | None:
    """The running session (None when Live Preview is off)."""
    return _SESSION.get("live")


def note() -> str:
    """The one-sentence message to show in the panel (the session's, else the last ended one's)."""
    live = session()
    return live.message if live is not None else _NOTE["text"]


def start(context) -> bool:
    """Open a session for the active strip; False (and a note) when that is not possible."""
    stop()
    scene = context.scene
    seq_scene = sequencer.sequencer_scene(context)
    strip = sequencer.active_strip(seq_scene)
    try:
        if strip is None:
            raise ValueError("Select a movie or image strip in the sequencer for Live Preview.")
        live = LiveSession(context, scene, seq_scene, strip, request.engine())
    except (ValueError, RuntimeError) as exc:
        _NOTE["text"] = str(exc)
        return False
    _NOTE["text"] = ""
    _SESSION["live"] = live
    live.last_scene_key = live.scene_key()
    live.seen = live.snapshot()
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=TICK_S)
    redraw()
    return True


def stop(message: str = "") -> None:
    """End the session (if any), leaving `message` as the panel's note; switches the toggle off."""
    live = _SESSION.pop("live", None)
    if live is None:
        return
    _NOTE["text"] = message
    try:
        live.close()
    finally:
        sc = live.scene
        if sc is not None and hasattr(sc, "portrait_relight") and sc.portrait_relight.live_preview:
            sc.portrait_relight.live_preview = False  # its update calls stop() again: nothing left to do
        if bpy.app.timers.is_registered(tick):
            bpy.app.timers.unregister(tick)
        redraw()


def cancel() -> None:
    """Cancel the tracking of a session that is still opening (the engine answers `cancelled`)."""
    live = session()
    if live is not None:
        live.client.send("cancel")


def mark_dirty() -> None:
    """Ask for a new render at the next timer tick (settings changed)."""
    live = session()
    if live is not None and not live.building:
        live.dirty = True


def tick() -> float | None:
    """The timer: engine replies in, the next request out. Never raises into Blender."""
    live = session()
    if live is None:
        return None
    try:
        end = live.step(bpy.context)
    except Exception as exc:  # noqa: BLE001 - a timer must never raise into Blender
        traceback.print_exc()
        end = f"Live Preview stopped after an internal error: {exc}"
    if end:
        print(f"Portrait Relight: {end}", flush=True)
        stop(end)
        return None
    seen = live.snapshot()
    if seen != live.seen:
        live.seen = seen
        redraw()
    return TICK_S


def toggle(settings, context) -> None:
    """Update callback of the Live Preview toggle."""
    live = session()
    if settings.live_preview:
        if (live is None or live.scene is None or live.scene.portrait_relight != settings) \
                and not start(context):
            settings.live_preview = False
    elif live is not None and live.scene is not None and live.scene.portrait_relight == settings:
        stop()


def redraw() -> None:
    """Redraw the sequencer and the sidebars that show the panel or the preview."""
    wm = bpy.context.window_manager
    for win in getattr(wm, "windows", []):
        for area in win.screen.areas:
            if area.type in {"SEQUENCE_EDITOR", "VIEW_3D"}:
                area.tag_redraw()


# --------------------------------------------------------------------------------------------- handlers


@persistent
def on_depsgraph_update(scene, depsgraph) -> None:
    """Mark the preview dirty when lights, World, anchor, camera or the relevant scene settings changed."""
    live = session()
    if live is None or live.building:
        return
    for update in depsgraph.updates:
        idb = update.id
        if isinstance(idb, _REACT_TO):
            live.dirty = True
            return
        if isinstance(idb, bpy.types.Scene):
            key = live.scene_key()
            if key != getattr(live, "last_scene_key", None):
                live.last_scene_key = key
                live.dirty = True
                return


@persistent
def on_frame_change(scene, depsgraph=None) -> None:
    """The playhead moved: render the new frame (a frame set while building a request is ignored)."""
    live = session()
    if live is not None and not live.building:
        live.dirty = True


@persistent
def on_load_pre(*_args) -> None:
    """A file is being loaded (or a new one made): the session ends."""
    stop()
    _NOTE["text"] = ""


@persistent
def sync_toggles(*_args) -> None:
    """After a file load, undo or redo: the toggle is on exactly in the scene whose session runs (a saved
    file or an undo step may hold a stale value; SKIP_SAVE does not keep scene properties out of files)."""
    live = session()
    for sc in bpy.data.scenes:
        settings = getattr(sc, "portrait_relight", None)
        want = live is not None and sc.name == live.scene_name
        if settings is not None and settings.live_preview != want:
            settings.live_preview = want  # its update finds the session as it is: nothing starts or stops


_HANDLERS = (
    (bpy.app.handlers.depsgraph_update_post, on_depsgraph_update),
    (bpy.app.handlers.frame_change_post, on_frame_change),
    (bpy.app.handlers.load_pre, on_load_pre),
    (bpy.app.handlers.load_post, sync_toggles),
    (bpy.app.handlers.undo_post, sync_toggles),
    (bpy.app.handlers.redo_post, sync_toggles),
)


def registered_handlers() -> list:
    """This module's handlers currently installed."""
    return [fn for lst, fn in _HANDLERS for h in lst if getattr(h, "__name__", "") == fn.__name__
            and getattr(h, "__module__", "") == fn.__module__]


# --------------------------------------------------------------------------------------------- drawing


def _visible(live: LiveSession):
    """(seq scene, strip) when the relit image belongs on screen now, else None."""
    ctx = bpy.context
    seq_scene = sequencer.sequencer_scene(ctx)
    if live.shown is None or seq_scene is None or seq_scene.name != live.seq_scene_name:
        return None
    strip = live.strip()
    if strip is None or strip.mute or live.source_frame(int(seq_scene.frame_current)) is None:
        return None
    return seq_scene, strip


def draw_image() -> None:
    """POST_VIEW draw handler of the sequencer preview: the relit image over the source strip."""
    live = session()
    img = bpy.data.images.get(IMAGE_NAME)
    if live is None or img is None:
        return
    try:
        vis = _visible(live)
        if vis is None:
            return
        import gpu
        from gpu_extras.batch import batch_for_shader

        seq_scene, strip = vis
        size = media_size(strip, (int(live.info.get("width", 0)), int(live.info.get("height", 0))))
        if min(size) <= 0:
            return
        quad, uv = shown_quad(seq_scene, strip, size)
        shader = gpu.shader.from_builtin("IMAGE")
        batch = batch_for_shader(shader, "TRI_FAN", {"pos": quad.tolist(), "texCoord": uv.tolist()})
        gpu.state.blend_set("ALPHA")
        shader.bind()
        shader.uniform_sampler("image", gpu.texture.from_image(img))
        batch.draw(shader)
        gpu.state.blend_set("NONE")
    except Exception:  # noqa: BLE001 - drawing must never raise into Blender
        traceback.print_exc()


def overlay_text(live: LiveSession) -> str:
    """The overlay line: pass, engine time and whether the image is current."""
    if live.phase != "ready":
        return f"Live Preview: {opening_stage(live)} {live.done}/{live.total or '?'}"
    if live.shown is None:
        return "Live Preview: rendering..."
    state = "current" if live.current else "updating..."
    return f"Live Preview  {live.shown['ms']:.0f} ms  {state}"


def opening_stage(live: LiveSession) -> str:
    """What an opening session is doing, in words."""
    return "estimating the input light" if live.stage == "light" else "tracking"


def draw_overlay() -> None:
    """POST_PIXEL draw handler: one line of text at the bottom left of the preview."""
    live = session()
    if live is None:
        return
    try:
        import blf

        font = 0
        blf.size(font, 13.0 * bpy.context.preferences.view.ui_scale)
        blf.color(font, 1.0, 1.0, 1.0, 0.9)
        blf.enable(font, blf.SHADOW)
        blf.shadow(font, 3, 0.0, 0.0, 0.0, 0.8)
        blf.position(font, 12, 12, 0)
        blf.draw(font, overlay_text(live))
        blf.disable(font, blf.SHADOW)
    except Exception:  # noqa: BLE001 - drawing must never raise into Blender
        traceback.print_exc()


# --------------------------------------------------------------------------------------------- UI


def draw_panel(layout, context) -> None:
    """The Live Preview box of the main panel: toggle, tracking progress / cancel, size, pass, note."""
    s = context.scene.portrait_relight
    live = session()
    box = layout.box()
    row = box.row(align=True)
    row.prop(s, "live_preview", toggle=True, icon="HIDE_OFF" if s.live_preview else "HIDE_ON")
    if live is not None and live.phase == "analyzing":
        frac = live.done / live.total if live.total else 0.0
        box.progress(factor=frac, type="BAR", text=f"{live.strip_name}: {opening_stage(live)} "
                                                   f"{live.done}/{live.total or '?'}")
        box.operator(PORTRAIT_RELIGHT_OT_live_cancel.bl_idname, icon="CANCEL")
    elif live is not None:
        box.label(text=overlay_text(live).replace("Live Preview", live.strip_name, 1), icon="SEQUENCE")
    row = box.row(align=True)
    row.prop(s, "live_size", expand=True)
    box.prop(s, "live_pass")
    text = note()
    if text:
        box.label(text=text, icon="ERROR")


class PORTRAIT_RELIGHT_OT_live_cancel(bpy.types.Operator):
    """Stop tracking the strip for Live Preview (the preview switches off)"""

    bl_idname = "portrait_relight.live_cancel"
    bl_label = "Cancel Tracking"

    @classmethod
    def poll(cls, context):
        live = session()
        return live is not None and live.phase == "analyzing"

    def execute(self, context):
        cancel()
        return {"FINISHED"}


CLASSES = (PORTRAIT_RELIGHT_OT_live_cancel,)


def _quit() -> None:
    """Blender is quitting: stop the engine without waiting."""
    live = _SESSION.pop("live", None)
    if live is not None:
        live.client.terminate()
        shutil.rmtree(live.folder, ignore_errors=True)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    for lst, fn in _HANDLERS:
        handlers.remove_handler(lst, fn)
        lst.append(fn)
    space = bpy.types.SpaceSequenceEditor
    _DRAW.append(space.draw_handler_add(draw_image, (), "PREVIEW", "POST_VIEW"))
    _DRAW.append(space.draw_handler_add(draw_overlay, (), "PREVIEW", "POST_PIXEL"))
    atexit.register(_quit)
    _NOTE["text"] = ""


def unregister() -> None:
    stop()
    atexit.unregister(_quit)
    for handle in _DRAW:
        bpy.types.SpaceSequenceEditor.draw_handler_remove(handle, "PREVIEW")
    _DRAW.clear()
    for lst, fn in _HANDLERS:
        handlers.remove_handler(lst, fn)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
