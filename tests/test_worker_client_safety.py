"""The add-on's worker client against engines that misbehave (no bpy needed: worker_client is bpy-free).

Each case was seen failing against the client before it was hardened: a non-UTF-8 or malformed event ends
the job with one error (and the next job runs), kept warnings are capped, cancel kills the whole process
group (a wrapper script without `exec` leaves no orphan), a silent engine is stopped (the synchronous
path cannot hang), and the engine is started isolated from the caller's working directory and PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE = r'''#!{python}
"""A misbehaving engine: the mode is the FAKE_MODE environment variable."""
import json, os, signal, sys, time

mode = os.environ["FAKE_MODE"]
if sys.argv[-1] == "--version":
    print("relight-core 0.0-fake")
    sys.exit(0)
req = json.loads(sys.stdin.readline())
out = sys.stdout.buffer
def emit(**e):
    out.write((json.dumps(e) + "\n").encode()); out.flush()
emit(event="started", frames=3, output=req["output"])
if mode == "not_utf8":
    out.write(b'{"event": "progress", "stage": "relight\xff\xfe", "done": 1, "total": 3}\n'); out.flush()
elif mode == "bad_types":
    emit(event="frame", index="abc", files=[1, 2])
elif mode == "not_json":
    out.write(b"Segmentation fault? {{{\n"); out.flush()
elif mode == "warnings":
    for i in range(5000):
        emit(event="warning", frame=i % 3, message="no face found " * 3)
    emit(event="done", frames=3, output=req["output"], report="")
    sys.exit(0)
elif mode == "ok":
    emit(event="frame", index=0, files={"rgba": "a.png"})
    emit(event="done", frames=1, output=req["output"], report="")
    sys.exit(0)
elif mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.environ["FAKE_PIDFILE"], "w") as fh:
        fh.write(str(os.getpid()))
# not_utf8 / bad_types / not_json / stubborn / silent: keep running, saying nothing, ignoring cancel
time.sleep(60)
'''


def _load_client():
    spec = importlib.util.spec_from_file_location("pr_worker_client", REPO / "addon" / "worker_client.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


wc = _load_client()


@pytest.fixture()
def fake(tmp_path, monkeypatch):
    exe = tmp_path / "fake_python"
    exe.write_text(FAKE.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(wc, "CANCEL_GRACE_S", 0.5)
    monkeypatch.setattr(wc, "TERMINATE_GRACE_S", 0.5)
    return exe


def _request(tmp_path: Path) -> dict:
    return {"version": 1, "input": str(tmp_path / "in"), "output": str(tmp_path / "out"), "frames": [0, 3]}


def _wait(job, limit: float = 20.0, **kw):
    """job.wait() in a thread; fails (instead of hanging the suite) when it does not return in `limit` s."""
    box = {}

    def run():
        try:
            box["state"] = job.wait(**kw)
        except Exception as exc:  # noqa: BLE001 - reported below
            box["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        job.kill()
        pytest.fail(f"the job did not end within {limit} s")
    if "exc" in box:
        raise box["exc"]
    return box["state"]


def _alive(pid: int) -> bool:
    """True when `pid` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


@pytest.mark.parametrize("mode, needle", [("not_utf8", "not UTF-8"), ("bad_types", "wrong type"),
                                          ("not_json", "not JSON")])
def test_malformed_event_ends_the_job_with_one_error_and_the_next_job_runs(fake, tmp_path, monkeypatch,
                                                                           mode, needle):
    monkeypatch.setenv("FAKE_MODE", mode)
    job = wc.WorkerJob(str(fake), _request(tmp_path))
    state = _wait(job)
    assert state.finished == "error" and needle in state.error, state.error
    assert "\n" not in state.error and len(state.error) < 400
    assert not job.running
    monkeypatch.setenv("FAKE_MODE", "ok")
    state = _wait(wc.WorkerJob(str(fake), _request(tmp_path)))
    assert state.finished == "done" and state.frames == {0: {"rgba": "a.png"}}


def test_kept_warnings_are_capped(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "warnings")
    state = _wait(wc.WorkerJob(str(fake), _request(tmp_path)))
    assert state.finished == "done"
    assert len(state.warnings) == wc.MAX_WARNINGS
    assert state.warnings_dropped == 5000 - wc.MAX_WARNINGS


@pytest.mark.skipif(os.name != "posix", reason="POSIX process groups")
def test_cancel_kills_the_whole_process_group(fake, tmp_path, monkeypatch):
    """A wrapper shell script that runs the engine without `exec`; the engine ignores cancel and SIGTERM."""
    pidfile = tmp_path / "engine.pid"
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(f'#!/bin/sh\n"{fake}" "$@"\necho wrapper done >&2\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("FAKE_MODE", "stubborn")
    monkeypatch.setenv("FAKE_PIDFILE", str(pidfile))
    job = wc.WorkerJob(str(wrapper), _request(tmp_path))
    deadline = time.monotonic() + 10
    while not pidfile.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    engine_pid = int(pidfile.read_text())
    assert engine_pid != job.proc.pid and _alive(engine_pid)
    job.cancel()
    state = _wait(job)
    assert state.finished == "cancelled"
    deadline = time.monotonic() + 5
    while _alive(engine_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(engine_pid), "the wrapper's child outlived the cancelled job"


def test_silent_engine_is_stopped_by_the_idle_timeout(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "silent")
    t0 = time.monotonic()
    job = wc.WorkerJob(str(fake), _request(tmp_path), idle_timeout=1.0)
    state = _wait(job)
    assert state.finished == "error" and "sent nothing" in state.error
    assert time.monotonic() - t0 < 10 and not job.running


def test_default_idle_timeout_is_finite():
    assert 60 <= wc.IDLE_TIMEOUT_S < float("inf")


def test_engine_runs_isolated_from_cwd_and_pythonpath(tmp_path, monkeypatch):
    """A `relight_core/` package in the caller's working directory or on PYTHONPATH must not run."""
    for folder in ("cwd", "pp"):
        evil = tmp_path / folder / "relight_core"
        evil.mkdir(parents=True)
        marker = tmp_path / f"ran_{folder}"
        code = f"open({str(marker)!r}, 'w').write('x')\nprint('relight-core 6.6.6-evil')\n"
        (evil / "__init__.py").write_text("")
        (evil / "__main__.py").write_text(code)
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "pp"))
    ok, msg = wc.check_engine(wc.chosen_engine(sys.executable, REPO))
    assert ok and "evil" not in msg, msg
    assert not (tmp_path / "ran_cwd").exists() and not (tmp_path / "ran_pp").exists()
    from relight_core import __version__

    assert f"relight-core {__version__}" in msg and str(REPO) in msg  # which engine, and its version


def test_worker_command_is_isolated():
    cmd = wc.engine_command(wc.Engine("/x/python", "/site", "bundled"))
    assert cmd[:3] == ["/x/python", "-I", "-u"] and cmd[-2:] == ["/site", "worker"]
    assert Path(cmd[3]).name == "engine_boot.py" and Path(cmd[3]).is_file()
    assert json.dumps(cmd)  # plain strings only
