"""The worker protocol end to end, as the Blender add-on drives it (subprocess, JSON lines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = ("-m", "relight_core")


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory, astronaut) -> Path:
    from relight_core import io

    p = tmp_path_factory.mktemp("in") / "astro.png"
    io.write_png(p, io.decode_srgb8(np.asarray(astronaut)[::2, ::2]))
    return p


def start(req: dict) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, *RUNNER, "worker"], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    p.stdin.write(json.dumps(req) + "\n")
    p.stdin.flush()
    return p


def request(inp: Path, out: Path, n: int, **kw) -> dict:
    sh = np.zeros((9, 3))
    sh[0] = 1.0
    sh[3] = -0.6  # from image left
    req = {"version": 1, "input": str(inp), "frames": None, "output": str(out), "format": "png",
           "passes": ["rgba", "normal", "depth"], "size": 256, "device": "cpu", "background": "transparent",
           "light_space": "world", "resume": True, "lighting": {"sh": sh.tolist()},
           "camera": {"yaw": np.linspace(-10, 10, n).tolist(), "pitch": 0.0, "roll": 0.0}}
    req.update(kw)
    return req


def complete_pngs(folder: Path) -> list[Path]:
    import cv2

    files = sorted(folder.glob("*.png"))
    for f in files:
        assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED) is not None, f
    return files


def test_worker_runs_a_request_to_done(tmp_path, astro_png):
    out = tmp_path / "out"
    p = start(request(astro_png, out, 3))
    events = [json.loads(line) for line in p.stdout]
    assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and events[0]["frames"] == 3 and kinds[-1] == "done"
    assert "progress" in kinds and kinds.count("frame") == 3
    frame = next(e for e in events if e["event"] == "frame")
    assert set(frame["files"]) == {"rgba", "normal", "depth"} and Path(frame["files"]["rgba"]).is_file()
    assert Path(events[-1]["report"]).is_file()
    assert len(complete_pngs(out / "rgba")) == 3


@pytest.mark.parametrize("how", ["line", "sigterm"])
def test_worker_cancel_leaves_complete_frames(tmp_path, astro_png, how):
    out = tmp_path / "out"
    p = start(request(astro_png, out, 40))
    frames = 0
    events = []
    for line in p.stdout:
        ev = json.loads(line)
        events.append(ev)
        if ev["event"] == "frame":
            frames += 1
            if frames == 2:
                if how == "line":
                    p.stdin.write("cancel\n")
                    p.stdin.flush()
                else:
                    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=120) == 1
    assert events[-1]["event"] == "cancelled" and events[-1]["frames_done"] >= 2
    files = complete_pngs(out / "rgba")
    assert 2 <= len(files) < 40
    assert not [f for f in out.rglob("*") if ".tmp" in f.name]  # no temporary files left
    assert not (out / ".relight" / "lock").exists()  # the folder is free for the next run


def test_worker_bad_request_is_one_error_event(tmp_path, astro_png):
    p = start(request(astro_png, tmp_path / "o", 2, passes=["rgba", "glitter"]))
    events = [json.loads(line) for line in p.stdout]
    assert p.wait(timeout=120) == 2
    assert events[-1]["event"] == "error" and "glitter" in events[-1]["message"]
    p = subprocess.run([sys.executable, *RUNNER, "worker"], cwd=REPO, input="not json\n",
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and json.loads(p.stdout.strip())["event"] == "error"
