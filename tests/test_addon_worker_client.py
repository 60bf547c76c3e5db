"""The add-on's side of the worker protocol, against a small fake engine (fast, no torch): results come back
as strips, cancel keeps a partial strip and leaves no process, errors and crashes become reports, a worker
that ignores cancel is terminated, a batch relights every selected strip."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
from test_addon_blender import active_scene, add_image_strip, enable_addon, write_png_frames  # noqa: E402

pytestmark = pytest.mark.blender

FAKE_ENGINE = r'''#!{python}
"""Fake engine: `<this> -I -u engine_boot.py PATH worker|--version`, the worker protocol (FAKE_MODE env)."""
import json, os, re, shutil, sys, threading, time

if sys.argv[-1] == "--version":
    print("relight-core 0.0-fake")
    sys.exit(0)
mode = os.environ.get("FAKE_MODE", "ok")
delay = float(os.environ.get("FAKE_DELAY", "0.05"))
req = json.loads(sys.stdin.readline())
cancel = threading.Event()

def watch():
    for line in sys.stdin:
        if line.strip() in ("cancel", '{"cmd": "cancel"}'):
            if mode != "ignore_cancel":
                cancel.set()
            return

threading.Thread(target=watch, daemon=True).start()
emit = lambda **e: print(json.dumps(e), flush=True)
if mode == "crash":
    print("Traceback: something broke in the engine", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "error":
    emit(event="error", message="Frame 0 of the input could not be decoded; check the file.")
    sys.exit(2)
if mode == "garbage":
    sys.stdout.buffer.write(b'{"event": "progress", "stage": "\xff\xfe"}\n')
    sys.stdout.flush()
    time.sleep(60)
if mode == "hang":
    emit(event="started", frames=1, output=req["output"])
    time.sleep(60)
src = req["input"]
key = lambda n: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", n)]
files = sorted(os.listdir(src), key=key) if os.path.isdir(src) else [os.path.basename(src)]
folder = src if os.path.isdir(src) else os.path.dirname(src)
first, last = req["frames"] or [0, 1]
stem = os.path.basename(src.rstrip("/")) if os.path.isdir(src) else os.path.splitext(files[0])[0]
out = os.path.join(req["output"], "rgba")
os.makedirs(out, exist_ok=True)
emit(event="started", frames=last - first, output=req["output"])
done = 0
for i in range(first, last):
    if cancel.is_set():
        emit(event="cancelled", frames_done=done)
        sys.exit(1)
    time.sleep(delay)
    dst = os.path.join(out, f"{stem}_{i:06d}.png")
    shutil.copyfile(os.path.join(folder, files[i]), dst)
    done += 1
    emit(event="progress", stage="relight", done=done, total=last - first)
    emit(event="frame", index=i, files={"rgba": dst})
with open(os.path.join(req["output"], "request_seen.json"), "w") as fh:
    json.dump(req, fh)
emit(event="done", frames=done, output=req["output"],
     report=os.path.join(req["output"], ".relight", "report.json"))
'''


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    """The add-on enabled with the fake engine as its Python, in a fresh scene with a sun light."""
    enable_addon()
    exe = tmp_path / "fake_python"
    exe.write_text(FAKE_ENGINE.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    prefs = bpy.context.preferences.addons["portrait_relight"].preferences
    prefs.engine_python = str(exe)
    monkeypatch.setenv("FAKE_MODE", "ok")
    with active_scene("PR fake") as sc:
        sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
        sc.collection.objects.link(sun)
        sc.portrait_relight.output_dir = str(tmp_path / "out")

        def make(name: str, n: int, start: int, channel: int = 1):
            frames = [np.full((8, 8, 3), 20 * k, np.uint8) for k in range(n)]
            return add_image_strip(sc, write_png_frames(tmp_path / name, frames, stem=name), channel=channel,
                                   start=start, name=name)

        yield sc, make, exe
    prefs.engine_python = ""


def _result(sc, name):
    from portrait_relight import sequencer

    return sequencer.strips_of(sc).get(f"{name} relit")


def test_done_gives_aligned_strip(fake):
    sc, make, _ = fake
    src = make("shot", 6, start=20, channel=2)
    src.frame_offset_start = 1  # shows source frames 1..5 from timeline frame 21
    assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}
    new = _result(sc, "shot")
    assert new.frame_final_start == 21 and new.frame_final_duration == 5 and new.channel == 3
    assert [e.filename for e in new.elements] == [f"shot_{i:06d}.png" for i in range(1, 6)]
    assert "relit 5/5" in sc.portrait_relight.last_result
    from portrait_relight import operators

    assert operators.running_job() is None and not sc.portrait_relight.is_running


def test_cancel_keeps_partial_strip_and_no_process(fake, monkeypatch):
    sc, make, _ = fake
    monkeypatch.setenv("FAKE_DELAY", "0.3")
    strip = make("long", 12, start=1)
    from portrait_relight import operators, request
    from portrait_relight.worker_client import WorkerJob

    req, src = request.build_request(bpy.context, strip)
    job = WorkerJob(request.engine(), req)
    state = job.wait(cancel_after_frames=2)
    assert state.finished == "cancelled" and job.proc.poll() is not None
    level, msg = operators.finish_strip(sc, sc, strip, src, req, job)
    new = _result(sc, "long")
    assert level == "WARNING" and "partial" in msg
    assert 2 <= new.frame_final_duration < 12 and new.frame_final_start == 1
    assert all(Path(new.directory, e.filename).is_file() for e in new.elements)


def test_worker_that_ignores_cancel_is_terminated(fake, monkeypatch):
    sc, make, _ = fake
    monkeypatch.setenv("FAKE_MODE", "ignore_cancel")
    monkeypatch.setenv("FAKE_DELAY", "0.5")
    from portrait_relight import request, worker_client

    monkeypatch.setattr(worker_client, "CANCEL_GRACE_S", 0.3)
    strip = make("stubborn", 40, start=1)
    req, _src = request.build_request(bpy.context, strip)
    job = worker_client.WorkerJob(request.engine(), req)
    state = job.wait(cancel_after_frames=1)
    assert state.finished == "cancelled" and job.proc.poll() is not None
    assert len(state.frames) < 40


@pytest.mark.parametrize("mode", ["error", "crash"])
def test_engine_errors_become_reports(fake, monkeypatch, mode):
    sc, make, _ = fake
    monkeypatch.setenv("FAKE_MODE", mode)
    make("broken", 2, start=1)
    expected = "could not be decoded" if mode == "error" else "stopped unexpectedly"
    with pytest.raises(RuntimeError, match=expected):
        bpy.ops.portrait_relight.relight(synchronous=True)
    assert _result(sc, "broken") is None
    assert "error" in sc.portrait_relight.last_result


@pytest.mark.parametrize("mode, expected", [("garbage", "not UTF-8"), ("hang", "sent nothing")])
def test_synchronous_run_survives_a_broken_or_silent_engine(fake, monkeypatch, mode, expected):
    """A non-UTF-8 event or an engine that goes silent: one error report, then the next run works."""
    sc, make, _ = fake
    from portrait_relight import worker_client

    monkeypatch.setattr(worker_client, "IDLE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(worker_client, "TERMINATE_GRACE_S", 0.5)
    monkeypatch.setenv("FAKE_MODE", mode)
    make("bad", 2, start=1)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=expected):
        bpy.ops.portrait_relight.relight(synchronous=True)
    assert time.monotonic() - t0 < 15 and _result(sc, "bad") is None
    monkeypatch.setenv("FAKE_MODE", "ok")
    assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}
    assert _result(sc, "bad").frame_final_duration == 2


def test_batch_relights_all_selected(fake):
    sc, make, _ = fake
    a = make("a", 3, start=1, channel=1)
    b = make("b", 2, start=10, channel=1)
    for s in (a, b):
        s.select = True
    assert bpy.ops.portrait_relight.relight_strips(synchronous=True) == {"FINISHED"}
    assert _result(sc, "a").frame_final_duration == 3 and _result(sc, "b").frame_final_duration == 2
    assert _result(sc, "a").channel == 2 and _result(sc, "b").frame_final_start == 10


def test_check_engine(fake, tmp_path):
    from portrait_relight import worker_client

    _sc, _make, exe = fake
    ok, msg = worker_client.check_engine(str(exe))
    assert ok and "relight-core 0.0-fake" in msg
    ok, msg = worker_client.check_engine(str(tmp_path / "nope" / "python"))
    assert not ok and "does not exist" in msg
    assert bpy.ops.portrait_relight.check_engine() == {"FINISHED"}
    assert "fake" in bpy.context.preferences.addons["portrait_relight"].preferences.engine_status


FARM_SCRIPT = r"""
import sys, bpy, addon_utils
sys.path.insert(0, sys.argv[2])
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
addon_utils.enable("portrait_relight", default_set=True)
bpy.ops.portrait_relight.relight_strips(synchronous=True)
bpy.ops.wm.save_mainfile()
"""


def test_headless_farm_command_on_a_saved_blend(fake, tmp_path):
    """The documented farm flow in a separate process: open the .blend, relight the selected strips
    synchronously (engine from $RELIGHT_ENGINE_PYTHON), save; the saved file has the result strip."""
    sc, make, exe = fake
    strip = make("farm", 3, start=5)
    strip.select = True
    blend = tmp_path / "shot.blend"
    bpy.context.window.scene = sc
    bpy.ops.wm.save_as_mainfile(filepath=str(blend), copy=True)
    addons_dir = Path(sys.modules["portrait_relight"].__file__).parent.parent
    env = dict(os.environ, RELIGHT_ENGINE_PYTHON=str(exe), FAKE_MODE="ok")
    res = subprocess.run([sys.executable, "-c", FARM_SCRIPT, str(blend), str(addons_dir)], env=env,
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "relit 3/3" in res.stdout
    check = ("import bpy, sys; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
             "s = bpy.data.scenes['PR fake'].sequence_editor; "
             "st = (s.strips if hasattr(s, 'strips') else s.sequences)['farm relit']; "
             "print('STRIP', st.frame_final_start, st.frame_final_duration)")
    res = subprocess.run([sys.executable, "-c", check, str(blend)], capture_output=True, text=True,
                         timeout=120)
    assert "STRIP 5 3" in res.stdout, res.stderr[-2000:]


class _Event:
    def __init__(self, type_: str, value: str = "NOTHING"):
        self.type, self.value = type_, value


class _Op:
    """Stands in for the operator instance (bpy cannot invoke operators without an event loop)."""

    def __init__(self):
        self.reports: list[tuple[str, str]] = []

    def report(self, levels, msg):
        self.reports.append((next(iter(levels)), msg))


@pytest.mark.parametrize("esc", [False, True])
def test_modal_run_with_timer_events(fake, monkeypatch, esc):
    """The interactive path, fed timer events as Blender's event loop would: starting returns at once
    while the worker runs; ticks bring the strip in; Esc cancels (partial strip); the run, the progress
    and the status are cleared afterwards. A second run cannot start while one is in progress."""
    import time

    from portrait_relight import operators, sequencer

    sc, make, _ = fake
    monkeypatch.setenv("FAKE_DELAY", "0.2" if esc else "0.02")
    strip = make("modal", 8, start=2)
    op = _Op()
    t0 = time.monotonic()
    assert operators.start_modal(op, bpy.context, [strip], add_handler=False) == {"RUNNING_MODAL"}
    assert time.monotonic() - t0 < 5.0  # returns while the worker runs
    assert sc.portrait_relight.is_running and operators.running_job() is not None
    assert not bpy.ops.portrait_relight.relight.poll()
    ret, esc_sent = {"RUNNING_MODAL"}, False
    end = time.monotonic() + 60
    while ret == {"RUNNING_MODAL"} and time.monotonic() < end:
        job = operators.running_job()
        if esc and not esc_sent and job is not None and len(job.state.frames) >= 2:
            assert bpy.ops.portrait_relight.cancel() == {"FINISHED"}  # the panel's Cancel (Esc: see
            esc_sent = True  # test_addon_session.py, it cancels only over the add-on's sidebar)
        assert operators.modal_step(bpy.context, _Event("MOUSEMOVE")) == {"PASS_THROUGH"}
        ret = operators.modal_step(bpy.context, _Event("TIMER"))
        time.sleep(0.05)
    assert ret == {"FINISHED"}
    assert operators._RUN == {} and not sc.portrait_relight.is_running and sc.portrait_relight.status == ""
    new = sequencer.strips_of(sc).get("modal relit")
    if esc:
        assert 2 <= new.frame_final_duration < 8 and "partial" in sc.portrait_relight.last_result
        assert op.reports[-1][0] == "WARNING"
    else:
        assert new.frame_final_duration == 8 and new.frame_final_start == 2
        assert op.reports[-1][0] == "INFO"


def test_requests_resume_and_carry_the_changed_light(fake):
    """The add-on always asks to resume; the engine skips finished frames only when its recorded settings
    match (tests/test_pipeline.py), so what must change with the scene is the request's lighting."""
    import json

    sc, make, _ = fake
    make("again", 2, start=1)

    def run_and_seen() -> dict:
        assert bpy.ops.portrait_relight.relight(synchronous=True) == {"FINISHED"}
        out = Path(sc.portrait_relight.last_output)
        return json.loads((out / "request_seen.json").read_text())

    first, second = run_and_seen(), run_and_seen()
    assert first["resume"] is True and first["lighting"] == second["lighting"]
    next(o for o in sc.objects if o.type == "LIGHT").data.energy = 7.0
    third = run_and_seen()
    assert third["resume"] is True and third["lighting"] != first["lighting"]
