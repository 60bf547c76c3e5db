"""Live Preview in the add-on, driven as an artist's session in headless Blender: the toggle opens an engine
session, the timer and the depsgraph/frame handlers (called as Blender calls them) send one render per
change with the add-on's own request code, replies show as an image over the strip, errors stay one
sentence, a crash is reported once, and nothing is left running. The protocol side runs against a small
fake `serve` engine (fast); `test_live_preview_follows_the_sun` runs the real engine."""

from __future__ import annotations

import json
import math
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import (  # noqa: E402
    PKG,
    _CheckingLayout,
    active_scene,
    add_image_strip,
    enable_addon,
    look_rotation,
    set_matrix,
    write_png_frames,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.blender

FAKE_SERVE = r'''#!{python}
"""Fake engine: `<this> -m relight_core serve`, speaking the serve protocol (FAKE_MODE, FAKE_DELAY env).

Renders are solid PNGs: red = source frame * 10, green = 40 * pass index, blue = 200 when the light's x
coefficient (SH index 3, red) is positive, else 50. Every request is logged to $FAKE_LOG."""
import json, os, queue, struct, sys, threading, time, zlib

mode = os.environ.get("FAKE_MODE", "ok")
delay = float(os.environ.get("FAKE_DELAY", "0.02"))
log = open(os.environ["FAKE_LOG"], "a")
inbox = queue.Queue()
emit_lock = threading.Lock()

def emit(**e):
    with emit_lock:
        print(json.dumps(e), flush=True)

def png(path, w, h, rgba):
    raw = b"".join(b"\x00" + bytes(rgba) * w for _ in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with open(path + ".tmp", "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)

cancel = threading.Event()
def read():
    for line in sys.stdin:
        msg = json.loads(line)
        log.write(line); log.flush()
        if msg["cmd"] == "cancel":
            cancel.set()
        inbox.put(msg)
    inbox.put({"cmd": "quit"})
threading.Thread(target=read, daemon=True).start()

opened = None
while True:
    msg = inbox.get()
    pending = [msg]
    while True:  # latest wins: of the renders waiting now, only the last is rendered
        try:
            pending.append(inbox.get_nowait())
        except queue.Empty:
            break
    renders = [m for m in pending if m["cmd"] == "render"]
    for m in renders[:-1]:
        emit(event="dropped", id=m["id"])
    for m in pending:
        if m["cmd"] == "render" and m is not renders[-1]:
            continue
        cmd = m["cmd"]
        if cmd == "quit":
            sys.exit(0)
        if cmd == "open":
            cancel.clear()
            n = 6
            for i in range(n):
                if cancel.is_set():
                    emit(event="cancelled")
                    break
                emit(event="progress", id=m["id"], stage="analyze", done=i, total=n)
                time.sleep(delay * (20 if mode == "slow_open" else 1))
            else:
                if mode == "open_error":
                    emit(event="error", id=m["id"],
                         message="No face was found in clip; the engine needs a visible face.")
                    continue
                opened = m
                emit(event="opened", id=m["id"], frames=3, first=0, fps=25.0, width=64, height=48,
                     cached=False)
        elif cmd == "render":
            if mode == "crash":
                print("Traceback: the fake engine broke", file=sys.stderr, flush=True)
                sys.exit(3)
            lighting = m["lighting"]
            if "file" in lighting and not os.path.isfile(lighting["file"]):
                emit(event="error", id=m["id"],
                     message=f"Light file {lighting['file']} does not exist; choose a light file.")
                continue
            time.sleep(delay)
            sh = lighting.get("sh")
            blue = 200 if sh is not None and sh[3][0] > 0 else 50
            passes = ["rgba", "albedo", "shading", "normal"]
            rgba = (min(255, 10 * m["frame"]), 40 * passes.index(m["passes"][0]), blue, 255)
            size = m["size"] or 64
            png(m["output"], size, round(size * 48 / 64), rgba)
            emit(event="rendered", id=m["id"], frame=m["frame"], files={m["passes"][0]: m["output"]},
                 ms={"total": 1000 * delay}, cached=False)
'''


def _requests(log: Path, cmd: str = "render") -> list[dict]:
    if not log.is_file():
        return []
    return [r for r in (json.loads(line) for line in log.read_text().splitlines() if line.strip())
            if r["cmd"] == cmd]


class Longest:
    """The longest call of a function: wall-clock ms, and the main thread's own CPU ms (which other
    processes on a busy machine do not inflate)."""

    def __init__(self):
        self.max_ms = self.max_cpu_ms = 0.0

    def call(self, fn, *args):
        t, c = time.perf_counter(), time.thread_time()
        ret = fn(*args)
        self.max_cpu_ms = max(self.max_cpu_ms, 1000 * (time.thread_time() - c))
        self.max_ms = max(self.max_ms, 1000 * (time.perf_counter() - t))
        return ret

    def __str__(self):
        return f"{self.max_ms:.1f} ms ({self.max_cpu_ms:.1f} ms CPU)"


class Clock(Longest):
    """Blender's main loop, reduced to what the add-on sees: evaluate the depsgraph (which calls the
    depsgraph handlers when something changed), then call the add-on's timer; keeps the longest timer
    call."""

    def __init__(self):
        from portrait_relight import live_preview

        super().__init__()
        self.lp = live_preview
        self.calls = 0

    def tick(self):
        bpy.context.view_layer.update()
        self.calls += 1
        return self.call(self.lp.tick)

    def until(self, cond, timeout: float = 30.0) -> None:
        """Run the loop (at least once: Blender evaluates a change before anything else) until `cond()`."""
        end = time.monotonic() + timeout
        self.tick()
        while not cond():
            assert time.monotonic() < end, f"timed out; note: {self.lp.note()!r}"
            time.sleep(0.02)
            self.tick()

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            time.sleep(0.02)


class TimedHandlers(Longest):
    """Wraps the add-on's depsgraph and frame handlers in the handler lists, so that Blender calls them and
    the longest call is kept."""

    def __init__(self):
        from portrait_relight import live_preview

        super().__init__()
        self._swaps = []
        for lst, fn in ((bpy.app.handlers.depsgraph_update_post, live_preview.on_depsgraph_update),
                        (bpy.app.handlers.frame_change_post, live_preview.on_frame_change)):
            def timed(*args, _fn=fn):
                self.call(_fn, *args)

            i = lst.index(fn)
            lst[i] = timed
            self._swaps.append((lst, i, fn))

    def restore(self):
        for lst, i, fn in self._swaps:
            lst[i] = fn


def place_sun(sun, side: float) -> None:
    """A sun on the head's left (side < 0) or right (side > 0), a little in front, shining at the head."""
    pos = np.array([side, -0.6, 0.2])
    m = np.eye(4)
    m[:3, :3] = look_rotation(-pos)
    m[:3, 3] = pos * 3
    set_matrix(sun, m)


@pytest.fixture()
def live(tmp_path, monkeypatch):
    """The add-on with the fake serve engine, a scene with a head rig, a sun and a 3-frame image strip."""
    enable_addon()
    exe = tmp_path / "fake_python"
    exe.write_text(FAKE_SERVE.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_MODE", "ok")
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.engine_python = str(exe)
    from portrait_relight import live_preview

    with active_scene("PR live") as sc:
        bpy.ops.portrait_relight.add_head_rig()
        sc.portrait_relight.output_dir = str(tmp_path / "out")
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sun.data.energy = 3.0
        sc.collection.objects.link(sun)
        place_sun(sun, -1.0)
        frames = [np.full((48, 64, 3), 30 * k, np.uint8) for k in range(3)]
        strip = add_image_strip(sc, write_png_frames(tmp_path / "clip", frames), channel=2, start=10)
        sc.frame_set(10)
        yield sc, sun, strip, log
        live_preview.stop()
    # looked up again: a test that disabled and re-enabled the add-on freed the preferences seen above
    bpy.context.preferences.addons[PKG].preferences.engine_python = ""


def test_toggle_opens_renders_and_follows_changes(live):
    sc, sun, strip, log = live
    from portrait_relight import live_preview, request

    clock = Clock()
    s = sc.portrait_relight
    want = request.lighting_spec(bpy.context, sc, s, [10])
    s.live_preview = True
    lv = live_preview.session()
    assert lv is not None and lv.phase == "analyzing"
    clock.until(lambda: _requests(log, "open"))
    opened = _requests(log, "open")[0]
    assert opened["input"] == str(Path(bpy.path.abspath(strip.directory)))
    assert opened["frames"] == [0, 3] and opened["cache"] == request.strip_output(bpy.context, strip)
    clock.until(lambda: lv.phase == "ready" and lv.current)
    first = _requests(log)
    assert len(first) == 1
    req = first[0]
    # the request is the add-on's own lighting for that frame, at half the strip's size
    assert req["frame"] == 0 and req["view"] == "input" and req["passes"] == ["rgba"] and req["size"] == 32
    assert np.allclose(req["lighting"]["sh"], want["sh"]) and req["light_space"] == "world"
    img = bpy.data.images[live_preview.IMAGE_NAME]
    assert tuple(img.size) == (32, 24)
    assert "current" in live_preview.overlay_text(lv)
    # idle: nothing is rebuilt or sent while nothing changes (the add-on's own writes trigger nothing)
    builds = []
    build = lv.render_request
    lv.render_request = lambda ctx: builds.append(1) or build(ctx)
    clock.idle(0.4)
    assert len(_requests(log)) == 1 and not builds
    del lv.render_request
    # the sun moves to the other side: one new request, the image follows
    handlers = TimedHandlers()
    try:
        place_sun(sun, 1.0)
        bpy.context.view_layer.update()
        assert lv.dirty and not lv.current and "updating" in live_preview.overlay_text(lv)
        clock.until(lambda: lv.current)
        reqs = _requests(log)
        x_coeff = [np.sign(r["lighting"]["sh"][3][0]) for r in reqs]
        assert len(reqs) == 2 and x_coeff[0] != x_coeff[1]
        # the World brightens: a new request with more light
        world = sc.world or bpy.data.worlds.new("PR live world")
        sc.world = world
        if world.node_tree is None and hasattr(world, "use_nodes"):
            world.use_nodes = True
        clock.until(lambda: lv.current)
        n = len(_requests(log))
        world.node_tree.nodes["Background"].inputs["Strength"].default_value = 2.0
        clock.until(lambda: lv.current)
        reqs = _requests(log)
        assert len(reqs) == n + 1 and reqs[-1]["lighting"]["sh"][0][0] > reqs[-2]["lighting"]["sh"][0][0]
        # the playhead moves: the next source frame
        sc.frame_set(12)
        clock.until(lambda: lv.current)
        assert _requests(log)[-1]["frame"] == 2
        px = np.array(bpy.data.images[live_preview.IMAGE_NAME].pixels[:4])
        assert abs(px[0] - 20 / 255) < 0.02  # red = 10 x source frame
        # the strip moves two frames later: frame 12 now shows its first source frame
        strip.frame_start = 12
        clock.until(lambda: lv.current)
        assert _requests(log)[-1]["frame"] == 0
    finally:
        handlers.restore()
    # preview settings: the albedo pass at full size
    s.live_pass = "albedo"
    s.live_size = "FULL"
    clock.until(lambda: lv.current)
    last = _requests(log)[-1]
    assert last["passes"] == ["albedo"] and last["size"] == 64
    # outside the strip nothing is asked and nothing drawn
    n = len(_requests(log))
    sc.frame_set(40)
    clock.idle(0.3)
    assert len(_requests(log)) == n and live_preview._visible(lv) is None
    print(f"longest timer call {clock} of {clock.calls}; handler {handlers}")
    assert clock.max_cpu_ms < 20 and handlers.max_cpu_ms < 20
    # switching off ends the engine and removes the image
    proc = lv.client.proc
    s.live_preview = False
    assert live_preview.session() is None and live_preview.IMAGE_NAME not in bpy.data.images
    assert proc.wait(5) == 0


def test_latest_wins_while_dragging(live, monkeypatch):
    sc, sun, _strip, log = live
    monkeypatch.setenv("FAKE_DELAY", "0.25")
    from portrait_relight import live_preview

    clock = Clock()
    sc.portrait_relight.live_preview = True
    lv = live_preview.session()
    clock.until(lambda: lv.current, timeout=40)
    # drag the sun: a change every 40 ms for 1.2 s; sends stay at <= ~10/s and superseded ones are dropped
    t0 = time.monotonic()
    k = 0
    while time.monotonic() - t0 < 1.2:
        k += 1
        place_sun(sun, math.cos(k * 0.3))
        bpy.context.view_layer.update()
        clock.tick()
        time.sleep(0.04)
    clock.until(lambda: lv.current)
    renders = _requests(log)
    assert 4 <= len(renders) - 1 <= 14, len(renders)
    assert lv.shown["key"] == lv.latest_key and not lv.pending
    files = list(Path(lv.folder).glob("*.png"))
    assert len(files) == 1  # dropped and replaced renders leave no files


def test_unpreviewable_lighting_is_one_sentence_and_recovers(live, tmp_path):
    sc, _sun, _strip, log = live
    from portrait_relight import live_preview

    clock = Clock()
    s = sc.portrait_relight
    s.live_preview = True
    lv = live_preview.session()
    clock.until(lambda: lv.current)
    s.lighting_source = "FILE"
    s.light_file = str(tmp_path / "missing.txt")
    clock.idle(0.4)
    assert "does not exist" in live_preview.note() and live_preview.note().count(".") <= 2
    assert not lv.current and live_preview.session() is lv
    bad = tmp_path / "gone.txt"
    bad.write_text("0 " * 9)
    s.light_file = str(bad)
    bad.unlink()  # the engine finds the file gone: its error is shown, the session stays
    clock.until(lambda: "gone.txt" in live_preview.note())
    assert live_preview.session() is lv
    s.lighting_source = "SCENE"
    clock.until(lambda: lv.current)
    assert live_preview.note() == ""
    # no light at all: one sentence, nothing sent
    n = len(_requests(log))
    for obj in [o for o in sc.objects if o.type == "LIGHT"]:
        obj.hide_render = True
    bpy.context.view_layer.update()
    clock.idle(0.4)
    assert "no light" in live_preview.note() and len(_requests(log)) == n


def test_crash_is_reported_once_and_the_toggle_restarts(live, monkeypatch, capsys):
    sc, _sun, _strip, log = live
    monkeypatch.setenv("FAKE_MODE", "crash")
    from portrait_relight import live_preview

    clock = Clock()
    s = sc.portrait_relight
    s.live_preview = True
    lv = live_preview.session()
    clock.until(lambda: live_preview.session() is None)
    assert not s.live_preview
    assert "stopped unexpectedly (exit 3)" in live_preview.note()
    assert "fake engine broke" in live_preview.note()
    assert lv.client.proc.poll() == 3
    clock.idle(0.2)
    assert capsys.readouterr().out.count("stopped unexpectedly") == 1
    monkeypatch.setenv("FAKE_MODE", "ok")
    s.live_preview = True
    assert live_preview.session() is not None and live_preview.note() == ""
    clock.until(lambda: live_preview.session().current)


def test_cancel_while_tracking_and_open_error(live, monkeypatch):
    sc, _sun, _strip, _log = live
    from portrait_relight import live_preview

    clock = Clock()
    s = sc.portrait_relight
    monkeypatch.setenv("FAKE_MODE", "slow_open")
    s.live_preview = True
    lv = live_preview.session()
    clock.until(lambda: lv.total > 0)
    seen: list = []
    live_preview.draw_panel(_CheckingLayout(seen), bpy.context)  # tracking progress and its Cancel button
    assert {"live_preview", "live_size", "live_pass", "portrait_relight.live_cancel"} <= set(seen)
    assert bpy.ops.portrait_relight.live_cancel() == {"FINISHED"}
    clock.until(lambda: live_preview.session() is None)
    assert "cancelled" in live_preview.note() and not s.live_preview
    assert lv.client.proc.wait(5) == 0
    monkeypatch.setenv("FAKE_MODE", "open_error")
    s.live_preview = True
    clock.until(lambda: live_preview.session() is None)
    assert live_preview.note().startswith("Live Preview could not open strip 'clip': No face was found")


def test_session_ends_on_new_file_and_disable(live):
    sc, _sun, _strip, _log = live
    from portrait_relight import live_preview

    clock = Clock()
    sc.portrait_relight.live_preview = True
    lv = live_preview.session()
    clock.until(lambda: lv.current)
    live_preview.on_load_pre()  # what Blender calls before File > New / Open
    assert live_preview.session() is None and lv.client.proc.wait(15) == 0
    sc.portrait_relight["live_preview"] = True  # as a file saved while previewing holds it
    live_preview.sync_toggles()  # what Blender calls after the load (and after undo / redo)
    assert not sc.portrait_relight.live_preview and live_preview.session() is None
    sc.portrait_relight.live_preview = True
    lv = live_preview.session()
    import addon_utils

    addon_utils.disable(PKG, default_set=True)
    try:
        assert lv.client.proc.wait(15) == 0
        assert live_preview.registered_handlers() == []
    finally:
        enable_addon()


def test_no_strip_or_engine_is_one_sentence(live):
    sc, _sun, _strip, _log = live
    from portrait_relight import live_preview

    sc.sequence_editor.active_strip = None
    sc.portrait_relight.live_preview = True
    assert not sc.portrait_relight.live_preview and live_preview.session() is None
    assert live_preview.note() == "Select a movie or image strip in the sequencer for Live Preview."


# ------------------------------------------------------------------------------------------ placement


@pytest.mark.parametrize("flip", [(False, False), (True, False), (False, True)])
def test_strip_quad_matches_the_sequencer_render(tmp_path, flip):
    """The quad the relit image is drawn on covers the pixels Blender's sequencer renders the strip to
    (offset, scale, rotation, pivot, crop, flip), checked against a sequencer render of a 4x4 colour grid."""
    enable_addon()
    from portrait_relight import live_preview

    cells = np.arange(16).reshape(4, 4)
    colours = np.stack([(cells % 4) * 60 + 30, (cells // 4) * 60 + 30, np.full_like(cells, 128)], -1)
    grid = np.kron(colours, np.ones((40, 50, 1))).astype(np.uint8)  # 160 x 200, row 0 = top
    files = write_png_frames(tmp_path / "grid", [grid])
    with active_scene("PR quad") as sc:
        r = sc.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = 320, 240, 100
        sc.view_settings.view_transform = "Standard"
        strip = add_image_strip(sc, files, channel=1, start=1)
        t = strip.transform
        t.offset_x, t.offset_y, t.scale_x, t.scale_y, t.rotation = 25.0, -15.0, 1.1, 0.8, 0.35
        t.origin = (0.3, 0.6)
        strip.crop.min_x, strip.crop.max_x, strip.crop.min_y, strip.crop.max_y = 10, 20, 8, 4
        strip.use_flip_x, strip.use_flip_y = flip
        sc.frame_set(1)
        r.filepath = str(tmp_path / "render.png")
        r.image_settings.file_format = "PNG"
        r.image_settings.color_mode = "RGBA"
        r.film_transparent = True
        bpy.ops.render.render(write_still=True, scene=sc.name)
        img = bpy.data.images.load(r.filepath)
        out = np.array(img.pixels[:], dtype=np.float32).reshape(240, 320, 4)  # row 0 = bottom
        quad, uv = live_preview.shown_quad(sc, strip, (200, 160))
    # rasterise our quad: pixel centre -> (u, v) through the inverse of the quad's affine map
    a, b, c = quad[2], quad[1], quad[3]  # uv (0,0)->(1,0) and (0,1) corners before crop scaling
    ua, ub, uc = uv[2], uv[1], uv[3]
    m = np.column_stack([b - a, c - a])
    ys, xs = np.mgrid[0:240, 0:320]
    p = np.stack([xs + 0.5 - 160, ys + 0.5 - 120], -1).reshape(-1, 2)
    st = np.linalg.solve(m, (p - a).T).T
    inside = np.all((st > 0.02) & (st < 0.98), axis=1)
    u = ua[0] + st[:, 0] * (ub[0] - ua[0])
    v = ua[1] + st[:, 1] * (uc[1] - ua[1])
    col = np.clip((u * 200).astype(int), 0, 199)
    row = np.clip(((1 - v) * 160).astype(int), 0, 159)
    want = grid[row, col].astype(np.float32) / 255.0
    got = out.reshape(-1, 4)
    # away from the grid's cell borders the colours must agree; outside the quad the render is empty
    border = (np.minimum((u * 200) % 50, 50 - (u * 200) % 50) < 2) | \
             (np.minimum((v * 160) % 40, 40 - (v * 160) % 40) < 2)
    sel = inside & ~border
    assert sel.sum() > 10000
    agree = np.all(np.abs(got[sel, :3] - want[sel]) < 0.03, axis=1).mean()
    outside = ~np.all((st > -0.02) & (st < 1.02), axis=1)
    assert agree > 0.99, agree
    assert got[outside, 3].max() < 0.05
    assert got[inside, 3].min() > 0.95


# ------------------------------------------------------------------------------------------ real engine


def _engine_python() -> str | None:
    import os

    exe = os.environ.get("RELIGHT_ENGINE_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    return exe if Path(exe).exists() else None


def _has_serve() -> bool:
    return (REPO / "relight_core" / "commands" / "serve.py").is_file()


def _cheek_ratio(img) -> float:
    """Mean luminance of the astronaut's image-left cheek over her image-right cheek (sRGB values)."""
    w, h = img.size
    px = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1]  # row 0 = top
    lum = px[..., :3] @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    rows = slice(round(0.23 * h), round(0.28 * h))
    left = lum[rows, round(0.36 * w):round(0.40 * w)].mean()
    right = lum[rows, round(0.48 * w):round(0.52 * w)].mean()
    return float(left / max(right, 1e-6))


@pytest.mark.slow
def test_live_preview_follows_the_sun(tmp_path, astronaut):
    """The real engine: a sun moved from the head's left to its right; the previewed face's lit side
    follows (the left/right cheek luminance ratio flips) and Blender's side stays fast."""
    exe = _engine_python()
    if exe is None:
        pytest.skip("no engine Python (.venv/bin/python or $RELIGHT_ENGINE_PYTHON)")
    if not _has_serve():
        pytest.skip("the engine has no `serve` command in this checkout yet")
    enable_addon()
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.engine_python = exe
    from portrait_relight import live_preview

    small = np.asarray(astronaut, dtype=np.float32).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    files = write_png_frames(tmp_path / "astro", [small.round().astype(np.uint8)], stem="astro")
    try:
        with active_scene("PR live sun") as sc:
            bpy.ops.portrait_relight.add_head_rig()
            sc.portrait_relight.output_dir = str(tmp_path / "out")  # the session caches its analysis there
            sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "SUN"))
            sun.data.energy = 4.0
            sc.collection.objects.link(sun)
            place_sun(sun, -1.0)
            add_image_strip(sc, files, channel=2, start=1, name="astro")
            sc.frame_set(1)
            clock = Clock()
            switch_on = Longest()
            switch_on.call(setattr, sc.portrait_relight, "live_preview", True)  # starts the engine process
            lv = live_preview.session()
            clock.until(lambda: lv.current, timeout=300)
            assert live_preview.note() == "", live_preview.note()
            from portrait_relight import request

            strip = sc.sequence_editor.active_strip  # its analysis is where a Relight would look for it
            from relight_core import layout

            assert layout.analysis_file(request.strip_output(bpy.context, strip)).is_file()
            img = bpy.data.images[live_preview.IMAGE_NAME]
            assert tuple(img.size) == (128, 128)
            before = _cheek_ratio(img)
            ms_before = lv.shown["ms"]
            clock.max_ms = clock.max_cpu_ms = 0.0  # from here on: a warm session, as the artist works
            handlers = TimedHandlers()
            try:
                for side in (-0.5, 0.0, 0.5, 1.0):  # the sun travels to the right, a step per change
                    place_sun(sun, side)
                    clock.until(lambda: lv.current, timeout=60)
            finally:
                handlers.restore()
            after = _cheek_ratio(bpy.data.images[live_preview.IMAGE_NAME])
            print(f"cheek ratio left/right: sun left {before:.2f}, sun right {after:.2f}; engine "
                  f"{ms_before:.0f} ms then {lv.shown['ms']:.0f} ms; longest timer call {clock}, handler "
                  f"{handlers}; switching on {switch_on}")
            assert before > 1.1 and after < 1 / 1.1
            # the Head Camera's novel view and the normal pass come back too, without a note
            sc.portrait_relight.view, sc.portrait_relight.live_pass = "SCENE", "normal"
            clock.until(lambda: lv.current, timeout=60)
            assert live_preview.note() == "" and lv.shown["ms"] > 0
            # the target is 20 ms; the main thread's CPU time is what Blender spends, wall time is generous
            assert clock.max_cpu_ms < 20 and handlers.max_cpu_ms < 20
            assert clock.max_ms < 150 and handlers.max_ms < 150 and switch_on.max_ms < 150
            proc = lv.client.proc
            sc.portrait_relight.live_preview = False
            assert proc.wait(20) == 0
    finally:
        live_preview.stop()
        bpy.context.preferences.addons[PKG].preferences.engine_python = ""
