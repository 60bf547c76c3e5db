"""build.py: the extension zip passes Blender's own validator, carries the numpy-only engine modules with
relative imports, and installs and enables in a fresh `bpy` (a separate process with its own user folder)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.blender


def _load_build():
    spec = importlib.util.spec_from_file_location("pr_build", REPO / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def built_zip(tmp_path_factory) -> Path:
    pytest.importorskip("bpy")
    build = _load_build()
    for name in ("sh", "lights", "camera"):
        if not (REPO / "relight_core" / f"{name}.py").is_file():
            pytest.skip(f"relight_core/{name}.py is not in this checkout yet")
    return build.build(tmp_path_factory.mktemp("dist"), validate=True)


def test_zip_layout_and_vendored_modules(built_zip):
    with zipfile.ZipFile(built_zip) as zf:
        names = set(zf.namelist())
        assert {"blender_manifest.toml", "__init__.py", "worker_client.py", "relight_core/__init__.py",
                "relight_core/sh.py", "relight_core/lights.py", "relight_core/camera.py",
                "relight_core/errors.py"} <= names
        assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
        assert not any(n.startswith("relight_core/") and n.split("/")[1] in
                       ("io.py", "pipeline.py", "track.py", "render.py") for n in names)
        for n in names:
            if n.startswith("relight_core/") and n.endswith(".py"):
                text = zf.read(n).decode()
                assert "from relight_core" not in text and "import relight_core" not in text, n
        if (REPO / "presets").is_dir():
            assert any(n.startswith("presets/") for n in names)


def test_validator_rejects_a_broken_manifest(tmp_path):
    pytest.importorskip("bpy")
    build = _load_build()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "__init__.py").write_text("def register():\n    pass\n\n\ndef unregister():\n    pass\n")
    text = (REPO / "blender_manifest.toml").read_text().replace('tagline = "', 'tagline = "' + "x" * 70)
    (bad / "blender_manifest.toml").write_text(text)
    res = subprocess.run(build.tool_prefix(None) + ["validate", str(bad)], capture_output=True, text=True)
    assert res.returncode != 0 and "tagline" in (res.stdout + res.stderr)


INSTALL_SCRIPT = r"""
import json, sys
import bpy
zip_path = sys.argv[1]
res = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
addons = list(bpy.context.preferences.addons.keys())
mod = sys.modules.get("bl_ext.user_default.portrait_relight")
out = {"result": sorted(res), "addons": addons, "file": getattr(mod, "__file__", None),
       "scene_prop": hasattr(bpy.types.Scene, "portrait_relight"),
       "ops": hasattr(bpy.ops.portrait_relight, "relight"),
       "heavy": sorted(m for m in ("torch", "cv2", "mediapipe") if m in sys.modules)}
if mod is not None:
    import numpy as np
    sl = sys.modules["bl_ext.user_default.portrait_relight.scene_lighting"]
    lights = sys.modules["bl_ext.user_default.portrait_relight._core"].core_module("lights")
    out["lights_from"] = lights.__file__
    out["presets"] = lights.list_presets()
    sh = np.zeros((9, 3)); sh[0] = 1.0
    out["sphere"] = float(sl.lit_sphere(sh, size=8)[..., 3].sum())
print("RESULT " + json.dumps(out))
"""


def test_built_zip_installs_and_enables(built_zip, tmp_path):
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"), PYTHONPATH="")
    res = subprocess.run([sys.executable, "-c", INSTALL_SCRIPT, str(built_zip)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=180)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(line[7:])
    assert out["result"] == ["FINISHED"]
    assert "bl_ext.user_default.portrait_relight" in out["addons"]
    assert out["file"] and out["file"].startswith(str(tmp_path / "user"))
    assert out["lights_from"].startswith(str(tmp_path / "user"))  # the bundled copy, not the repo's
    assert out["scene_prop"] and out["ops"] and out["heavy"] == []
    assert out["sphere"] > 0
    repo_presets = sorted(p.stem for p in (REPO / "presets" / "lighting").glob("*.json"))
    assert sorted(out["presets"]) == repo_presets  # the bundled presets are found
