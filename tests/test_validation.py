"""Numbers, paths and JSON are checked where they enter: one sentence, exit 2, no traceback, no leak of a
file's content (issue 15, "Numbers are checked where they enter" and "No tracebacks")."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from relight_core import cli
from relight_core.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """`relight-core ARGV` in this process -> (exit status, stderr)."""
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_sentence(code: int, err: str, needle: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith("relight-core: error:")]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory, astronaut) -> Path:
    from relight_core import io

    p = tmp_path_factory.mktemp("in") / "astro.png"
    io.write_png(p, io.decode_srgb8(np.asarray(astronaut)[::4, ::4]))
    return p


@pytest.mark.parametrize("value", ["inf", "nan", "-inf:10", "1e999"])
def test_orbit_angles_must_be_finite(capsys, tmp_path, astro_png, value):
    code, err = run_cli(capsys, "relight", str(astro_png), "--out", str(tmp_path / "o"), f"--yaw={value}")
    assert_one_sentence(code, err, "--yaw")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["camera", "light"])
def test_deeply_nested_json_is_one_sentence(capsys, tmp_path, astro_png, kind):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    out = str(tmp_path / "o")
    code, err = run_cli(capsys, "relight", str(astro_png), "--out", out, f"--{kind}", str(deep))
    assert_one_sentence(code, err, "deep.json")


def test_light_file_content_is_never_quoted(capsys, tmp_path, astro_png):
    secret = tmp_path / "notes.txt"
    secret.write_text("password=hunter2 do not share\n")
    out = str(tmp_path / "o")
    code, err = run_cli(capsys, "relight", str(astro_png), "--out", out, "--light", str(secret))
    assert_one_sentence(code, err, "notes.txt")
    assert "hunter2" not in err


def test_non_utf8_path_is_an_error(capsys, tmp_path, astro_png):
    odd = os.fsdecode(bytes(tmp_path) + b"/\xff\xfe.png")
    Path(odd).write_bytes(astro_png.read_bytes())
    code, err = run_cli(capsys, "relight", odd, "--out", str(tmp_path / "o"))
    assert_one_sentence(code, err, "UTF-8")


def test_light_values_that_overflow_are_refused(tmp_path):
    from relight_core import lights

    huge = tmp_path / "huge.txt"
    huge.write_text(" ".join(["1e300"] + ["0"] * 8))
    with pytest.raises(UserError, match="huge.txt"):
        lights.load_lighting(str(huge))
    spec = {"format": lights.FORMAT, "version": 1, "sh": [[1, 1, 1]] + [[0, 0, 0]] * 8,
            "key_lights": [{"type": "point", "position": [0, 0, 1], "power": 1e300}]}
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps(spec))
    with pytest.raises(UserError, match="key light 0"):
        lights.load_lighting(str(bad))
    spec["key_lights"], spec["intensity"] = [], 1e30
    bad.write_text(json.dumps(spec))
    with pytest.raises(UserError, match="intensity"):
        lights.load_lighting(str(bad))


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "a/b", "rembrandt/../../x"])
def test_preset_names_cannot_leave_the_presets_folder(name):
    from relight_core import lights

    with pytest.raises(UserError) as info:
        lights.load_preset(name)
    assert "root:" not in str(info.value)


def test_a_preset_loads_by_name():
    from relight_core import lights

    name = lights.list_presets()[0]
    assert lights.load_preset(name).n_frames >= 1


@pytest.mark.parametrize("field, value, needle", [
    ("size", "abc", "size"), ("size", 12.5, "size"), ("size", True, "size"), ("passes", [1, 2], "passes"),
    ("version", "1", "version"), ("version", 2, "version"), ("resume", "yes", "resume"),
    ("lighting", 5, "lighting"), ("camera", [1, 2], "camera"), ("frames", [0, float("inf")], "frames"),
    ("format", ["png"], "format"),
])
def test_worker_fields_of_the_wrong_type(field, value, needle):
    from relight_core.commands.worker import job_from_request

    req = {"input": "in.mp4", "output": "out", field: value}
    with pytest.raises(UserError, match=needle):
        job_from_request(req)


def test_worker_request_that_is_not_json_or_utf8(tmp_path):
    """The worker answers a deeply nested or undecodable request with one error event (exit 2)."""
    for payload in (b"[" * 100_000 + b"]" * 100_000 + b"\n", b'{"input": "\xff\xfe"}\n'):
        p = subprocess.run([sys.executable, "-m", "relight_core", "worker"], cwd=REPO, input=payload,
                           capture_output=True, timeout=120)
        events = [json.loads(line) for line in p.stdout.decode().splitlines()]
        assert p.returncode == 2 and [e["event"] for e in events] == ["error"], (p.stdout, p.stderr[-2000:])
        assert b"Traceback" not in p.stderr


def test_analyze_into_an_output_folder(tmp_path):
    from relight_core import layout
    from relight_core.commands.analyze import analysis_path

    (tmp_path / "shot").mkdir()
    assert analysis_path(str(tmp_path / "shot")) == layout.analysis_file(tmp_path / "shot")
    assert analysis_path(str(tmp_path / "new")) == layout.analysis_file(tmp_path / "new")
    assert analysis_path(str(tmp_path / "a.npz")) == tmp_path / "a.npz"
    with pytest.raises(UserError, match="npz"):
        analysis_path(str(tmp_path / "a.json"))


@contextlib.contextmanager
def disk_full_after(limit: int):
    """Writes past `limit` bytes per file fail with EFBIG (RLIMIT_FSIZE stands in for a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def leftovers(folder: Path) -> list[Path]:
    return [f for f in folder.rglob("*") if f.is_file()]


def test_disk_full_while_writing_the_analysis(tmp_path):
    from relight_core import track

    rng, n = np.random.default_rng(0), 3
    a = track.Analysis(width=64, height=64, fps=25.0, frame_indices=np.arange(n),
                       landmarks=rng.random((n, 478, 3), np.float32), landmarks_raw=np.zeros((n, 478, 3)),
                       valid=np.ones(n, bool), cam_from_head=np.stack([np.eye(4)] * n), K=np.eye(3),
                       fov_deg=30.0, matte=rng.integers(0, 255, (n, 64, 64), np.uint8),
                       face_count=np.ones(n, int), pose_error_px=np.zeros(n, np.float32))
    with disk_full_after(4000), pytest.raises(UserError, match="a.npz"):
        track.write_analysis(a, tmp_path / "a.npz")
    assert leftovers(tmp_path) == []


def test_disk_full_while_writing_exr(tmp_path):
    from relight_core import outputs

    layers = {"rgba": np.random.default_rng(0).random((64, 64, 4), dtype=np.float32)}
    files = {"exr": tmp_path / "f.exr"}
    with disk_full_after(2000), pytest.raises(UserError, match="f.exr"):
        outputs.write_frame(files, layers, "exr")
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_disk_full_while_tracking(tmp_path, astro_png):
    """Tracking data goes to anonymous temporary files; a full temporary disk is one sentence too."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    argv = ["analyze", str(astro_png), "-o", str(tmp_path / "o" / "a.npz"), "--size", "96"]
    p = subprocess.run([sys.executable, "-m", "relight_core", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=300, preexec_fn=limit)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("relight-core: error:")]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert "TMPDIR" in lines[0] and leftovers(tmp_path / "o") == []


def _orbit(yaw: float = 0.0) -> np.ndarray:
    from relight_core import camera

    return camera.orbit_cam2head(yaw, 0.0)


@pytest.mark.parametrize("matrix, needle", [
    (np.zeros((4, 4)), "rigid"),
    (np.diag([1.0, 1.0, 1.0, 1.0]), "does not look at the head"),      # the camera sits in the head centre
    (np.diag([2.0, 2.0, 2.0, 1.0]) @ _orbit(), "orthonormal"),           # scaled
    (np.diag([1.0, 1.0, -1.0, 1.0]) @ _orbit(), "orthonormal"),          # mirrored
    (_orbit(180.0) @ np.diag([1.0, -1.0, -1.0, 1.0]), "does not look at the head"),  # looking away
    (np.full((4, 4), np.nan), "NaN"),
])
def test_camera_matrices_are_checked(matrix, needle):
    from relight_core import views

    with pytest.raises(UserError, match=needle):
        views.ViewPlan({"fov_deg": 20.0, "cam2head": matrix.tolist()}, 1)
    with pytest.raises(UserError, match="frame 1"):
        views.ViewPlan({"fov_deg": 20.0, "cam2head": [_orbit().tolist(), matrix.tolist()]}, 2)


def test_a_good_camera_and_the_orbit_range():
    from relight_core import views

    assert views.ViewPlan({"fov_deg": 20.0, "cam2head": _orbit(10.0).tolist()}, 1).kind == "absolute"
    with pytest.raises(UserError, match="fov"):
        views.ViewPlan({"fov_deg": float("nan"), "cam2head": _orbit().tolist()}, 1)
    assert views.ViewPlan({"yaw": "-20:20", "pitch": 10}, 5).warnings == []
    far = views.ViewPlan({"yaw": 40, "pitch": "0:-20"}, 5).warnings
    assert len(far) == 2 and "yaw reaches 40" in far[0] and "pitch reaches 20" in far[1]
    with pytest.raises(UserError, match="finite"):
        views.ViewPlan({"yaw": "0:inf"}, 5)


def test_singular_camera_file_is_one_sentence(capsys, tmp_path, astro_png):
    cams = tmp_path / "cams.json"
    cams.write_text(json.dumps({"fov_deg": 20, "cam2head": np.zeros((4, 4)).tolist()}))
    out = str(tmp_path / "o")
    code, err = run_cli(capsys, "relight", str(astro_png), "--out", out, "--camera", str(cams))
    assert_one_sentence(code, err, "cam2head")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec, needle", [
    ({"sh": [1e300] + [0] * 8}, "overflows"),
    ({"sh": [[1, 1, 1]] * 9, "key_lights": [{"type": "sun", "direction": [0, 0, 1], "strength": 1e300}]},
     "key light 0"),
    ({"sh": [[1, 1, 1]] * 9, "key_lights": [[{"type": "point", "position": [0, 0, float("nan")]}]]},
     "frame 0"),
    ({"preset": "../../etc/passwd"}, "plain name"),
])
def test_inline_lighting_numbers_are_checked(spec, needle):
    from relight_core import lighting

    with pytest.raises(UserError, match=needle):
        lighting.load_target_lighting(spec)
