"""`relight-core relight` on bad input: one sentence on stderr, exit 2, no traceback, nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RUNNER = ("-m", "relight_core")


def relight(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *RUNNER, "relight", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(res: subprocess.CompletedProcess, out: Path, needle: str) -> None:
    err = res.stderr.strip()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in err.splitlines() if ln.startswith("relight-core: error:")]
    assert len(lines) == 1 and needle.lower() in lines[0].lower(), err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.fixture(scope="module")
def astro_png(tmp_path_factory, astronaut) -> Path:
    from relight_core import io

    p = tmp_path_factory.mktemp("in") / "astro.png"
    io.write_png(p, io.decode_srgb8(np.asarray(astronaut)[::2, ::2]))
    return p


def test_missing_input(tmp_path):
    out = tmp_path / "o"
    assert_user_error(relight(str(tmp_path / "nope.mp4"), "--light", "x", "--out", str(out)), out, "nope.mp4")


def test_corrupt_movie(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01not a movie" * 100)
    out = tmp_path / "o"
    res = relight(str(bad), "--out", str(out))
    assert_user_error(res, out, "broken.mp4")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr  # FFmpeg's own messages are silenced


def test_no_face(tmp_path):
    from relight_core import io

    img = tmp_path / "wall.png"
    io.write_png(img, np.full((128, 128, 3), 0.3, np.float32))
    out = tmp_path / "o"
    assert_user_error(relight(str(img), "--out", str(out)), out, "face")


def test_bad_light_file(tmp_path, astro_png):
    light = tmp_path / "light.txt"
    light.write_text("this is not a light\n")
    out = tmp_path / "o"
    assert_user_error(relight(str(astro_png), "--light", str(light), "--out", str(out)), out, "light.txt")


def test_impossible_frame_range(tmp_path, astro_png):
    out = tmp_path / "o"
    assert_user_error(relight(str(astro_png), "--frames", "5:2", "--out", str(out)), out, "frames")
    assert_user_error(relight(str(astro_png), "--frames", "3:9", "--out", str(out)), out, "3:9")


def test_unwritable_output_folder(tmp_path, astro_png):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub"
    assert_user_error(relight(str(astro_png), "--out", str(out)), out, "not writable")


def test_cuda_asked_but_absent(tmp_path, astro_png):
    try:
        import torch
    except ImportError:  # torch is the optional gpu extra: without it there is no CUDA either
        torch = None
    if torch is not None and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "o"
    assert_user_error(relight(str(astro_png), "--device", "cuda", "--out", str(out)), out, "cuda")


def test_bad_camera_file(tmp_path, astro_png):
    cams = tmp_path / "cams.json"
    cams.write_text("{not json")
    out = tmp_path / "o"
    assert_user_error(relight(str(astro_png), "--camera", str(cams), "--out", str(out)), out, "cams.json")


def test_a_keyframed_range_may_start_below_zero() -> None:
    """`--yaw -25:25` is read as the value, not as an unknown option (argparse alone rejects it)."""
    from relight_core import cli

    argv = ["relight", "in.mp4", "--out", "o", "--yaw", "-25:25", "--pitch", "-5", "--roll", "3:-3"]
    args = cli.build_parser().parse_args(cli.join_negative_values(argv))
    assert (args.yaw, args.pitch, args.roll) == ("-25:25", "-5", "3:-3")
    assert cli.join_negative_values(["--out", "-dir"]) == ["--out", "-dir"]  # not a number: left alone
