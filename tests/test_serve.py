"""`relight-core serve` as the add-on drives it: a real engine process speaking JSON lines."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.test_session import write_clip


class Engine:
    """A `serve` process; events are read by a thread so a test can wait with a timeout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "relight_core", "serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=Path(__file__).resolve().parents[1])
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, *requests: dict | str) -> None:
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in requests)
        self.proc.stdin.write(text)  # several requests in one write arrive together
        self.proc.stdin.flush()

    def until(self, kinds: set[str], timeout: float = 120) -> list[dict]:
        """Events up to and including the first whose kind is in `kinds`."""
        seen = []
        while True:
            e = self.events.get(timeout=timeout)
            seen.append(e)
            if e["event"] in kinds:
                return seen

    def close(self) -> int:
        if self.proc.poll() is None:
            self.send({"cmd": "quit"})
        return self.proc.wait(timeout=30)


@pytest.fixture
def engine():
    e = Engine()
    yield e
    if e.proc.poll() is None:
        e.proc.kill()


@pytest.fixture(scope="module")
def clip(tmp_path_factory, astronaut) -> Path:
    return write_clip(tmp_path_factory.mktemp("serveclip"), astronaut, 8)


def opened(engine: Engine, clip: Path, cache: Path) -> dict:
    engine.send({"cmd": "open", "id": "o", "input": str(clip), "cache": str(cache)})
    events = engine.until({"opened", "error"})
    assert events[-1]["event"] == "opened", events[-1]
    assert {e["stage"] for e in events if e["event"] == "progress"} <= {"analyze", "light"}
    return events[-1]


def test_serve_survives_bad_requests_and_renders_afterwards(engine, clip, tmp_path):
    info = opened(engine, clip, tmp_path / "cache")
    assert info["frames"] == 8 and info["width"] == 192
    bad_light = tmp_path / "bad.json"
    bad_light.write_text("{ this is not json")
    engine.send("{not json", {"cmd": "render", "id": 1, "frame": 3, "lighting": {"file": str(bad_light)},
                              "output": str(tmp_path / "x.png")})
    malformed, bad_file = engine.until({"error"}), engine.until({"error"})
    assert malformed[-1]["id"] is None and "JSON" in malformed[-1]["message"]
    assert bad_file[-1]["id"] == 1 and "bad.json" in bad_file[-1]["message"]
    assert "this is not" not in bad_file[-1]["message"], "a file's content is never quoted back"
    engine.send({"cmd": "render", "id": 2, "frame": 99, "lighting": "rembrandt",
                 "output": str(tmp_path / "x.png")})
    missing = engine.until({"error"})[-1]
    assert missing["id"] == 2 and "Frame 99" in missing["message"]
    engine.send({"cmd": "render", "id": 3, "frame": 3, "lighting": "rembrandt", "passes": ["rgba", "albedo"],
                 "view": {"yaw": 15}, "output": str(tmp_path / "p.png")})
    done = engine.until({"rendered", "error"})[-1]
    assert done["event"] == "rendered" and done["id"] == 3
    assert done["files"] == {"rgba": str(tmp_path / "p.rgba.png"), "albedo": str(tmp_path / "p.albedo.png")}
    assert all(Path(f).stat().st_size > 0 for f in done["files"].values())
    assert done["ms"]["total"] > 0
    assert engine.close() == 0


def test_latest_render_wins(engine, clip, tmp_path):
    opened(engine, clip, tmp_path / "cache")
    engine.send(*[{"cmd": "render", "id": i, "frame": i % 8, "lighting": "split",
                   "output": str(tmp_path / f"r{i}.png")} for i in range(6)])
    answers: dict = {}
    while 5 not in answers:
        e = engine.until({"rendered", "dropped", "error"})[-1]
        answers[e["id"]] = e["event"]
    assert answers[5] == "rendered", "the newest request is always rendered"
    assert "dropped" in answers.values(), "requests superseded while one renders are dropped, not queued"
    assert not (tmp_path / "r4.png").exists() or answers.get(4) == "rendered"


def test_cancel_stops_an_open_in_progress(engine, astronaut, tmp_path):
    long_clip = write_clip(tmp_path / "long", astronaut, 120)
    engine.send({"cmd": "open", "id": "o", "input": str(long_clip)})
    engine.until({"progress"})
    engine.send({"cmd": "cancel"})
    assert engine.until({"cancelled", "opened"})[-1]["event"] == "cancelled"
    engine.send({"cmd": "render", "id": 1, "frame": 0, "lighting": "split",
                 "output": str(tmp_path / "a.png")})
    assert "No clip is open" in engine.until({"error"})[-1]["message"]
    assert engine.close() == 0
