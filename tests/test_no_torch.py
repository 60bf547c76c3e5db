"""The CPU engine runs without torch (the optional `gpu` extra).

torch is made uninstalled for a subprocess by a `sitecustomize` whose path finder does not see it (so
`import torch` raises ModuleNotFoundError and `importlib.util.find_spec("torch")` is None, exactly as
when it is not installed); the CI environment (requirements*.txt) has no torch at all, so there the whole
suite runs without it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

BLOCKER = '''
import sys
from importlib.machinery import PathFinder


class _WithoutTorch(PathFinder):
    """The standard path finder, blind to torch (as if it were not installed)."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            return None
        return super().find_spec(name, path, target)


sys.meta_path[:] = [_WithoutTorch if f is PathFinder else f for f in sys.meta_path]
'''


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory) -> dict[str, str]:
    site = tmp_path_factory.mktemp("no_torch")
    (site / "sitecustomize.py").write_text(BLOCKER)
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))


def _run(env: dict[str, str], *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "relight_core", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_blocker_hides_torch(no_torch_env):
    res = _run(no_torch_env, code="import importlib.util as u, relight_core.render, relight_core.pipeline\n"
                                  "assert u.find_spec('torch') is None\n"
                                  "try:\n    import torch\nexcept ModuleNotFoundError:\n    print('absent')")
    assert res.returncode == 0 and res.stdout.strip() == "absent", res.stderr[-2000:]


@pytest.mark.slow
def test_relight_with_key_light_and_new_view_without_torch(no_torch_env, tmp_path, astronaut):
    """Both z-buffers (key-light shadow map, novel-view splat) on the astronaut, then CUDA asked for."""
    sys.path.insert(0, str(REPO))
    from relight_core import io

    src = tmp_path / "astro.png"
    io.write_png(src, io.decode_srgb8(np.asarray(astronaut)[::2, ::2]))
    out = tmp_path / "out"
    res = _run(no_torch_env, "relight", str(src), "--light", "rembrandt", "--yaw", "15", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    frames = sorted(out.rglob("*.png"))
    assert frames, list(out.rglob("*"))
    import cv2

    img = cv2.imread(str(frames[0]), cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[:2] == (256, 256) and img.std() > 10  # a picture, not a blank
    res = _run(no_torch_env, "relight", str(src), "--device", "cuda", "--out", str(tmp_path / "cuda"))
    assert res.returncode == 2 and "needs torch" in res.stderr and "Traceback" not in res.stderr, res.stderr
