"""build.py: the linux-x64 extension zip passes Blender's own validator, carries the numpy-only engine modules
with relative imports and the engine's wheels (no numpy, torch or matplotlib), and, installed into a fresh
`bpy` user folder with no Engine Python set, relights a clip through the Relight operator with a bare
Python 3.11 standing in for Blender's own (numpy only, as Blender ships it): the engine comes from the
zip's wheels alone, so the run fails if one it needs is missing."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
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
    """The linux-x64 zip (wheels from the build cache; downloaded on a clean machine)."""
    pytest.importorskip("bpy")
    build = _load_build()
    (zip_path,) = build.build(tmp_path_factory.mktemp("dist"), validate=True, platforms=["linux-x64"])
    return zip_path


@pytest.mark.slow
def test_zip_layout_wheels_and_vendored_modules(built_zip):
    import tomllib

    build = _load_build()
    with zipfile.ZipFile(built_zip) as zf:
        names = set(zf.namelist())
        assert {"blender_manifest.toml", "__init__.py", "worker_client.py", "engine_boot.py",
                "relight_core/__init__.py", "relight_core/sh.py", "relight_core/lights.py",
                "relight_core/camera.py", "relight_core/errors.py"} <= names
        assert not any("__pycache__" in n or n.startswith("tests/") for n in names)
        assert not any(n.startswith("relight_core/") and n.split("/")[1] in
                       ("io.py", "pipeline.py", "track.py", "render.py") for n in names)
        for n in names:
            if n.startswith("relight_core/") and n.endswith(".py"):
                text = zf.read(n).decode()
                assert "from relight_core" not in text and "import relight_core" not in text, n
        assert any(n.startswith("presets/") for n in names)
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
    wheels = [w.split("/")[-1] for w in manifest["wheels"]]
    assert set(f"wheels/{w}" for w in wheels) <= names
    dists = {w.split("-")[0].lower() for w in wheels}
    pinned = {build._norm(n) for n, _ in build.read_pins()}
    assert dists == pinned | {"relight_core"}
    assert not dists & {"numpy", "torch", "matplotlib", "jax", "jaxlib", "opencv_contrib_python"}
    assert all(w.endswith(("none-any.whl", "x86_64.whl")) for w in wheels), wheels  # linux-x64 only
    assert built_zip.stat().st_size < 200e6


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


def test_manifest_gets_wheels_before_its_tables():
    import tomllib

    build = _load_build()
    text = (REPO / "blender_manifest.toml").read_text()
    out = tomllib.loads(build.manifest_with_wheels(text, ["a-1-py3-none-any.whl"], ["linux-x64"]))
    assert out["wheels"] == ["./wheels/a-1-py3-none-any.whl"] and out["platforms"] == ["linux-x64"]
    assert out["permissions"] == tomllib.loads(text)["permissions"]


def test_extension_pins_agree_with_the_engine_requirements():
    """The zips ship what the engine is tested with: requirements.txt's pins, every runtime dependency of
    pyproject.toml (less numpy, Blender's own, and imageio-ffmpeg, MP4 only) and setup.sh's mediapipe."""
    import tomllib

    build = _load_build()
    pins = {build._norm(n): v for n, v in build.read_pins()}
    assert not {"numpy", "torch", "matplotlib"} & set(pins)
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep and build._norm(name) != "numpy":
            assert pins.get(build._norm(name)) == version, name
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {build._norm(re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0]) for d in deps}
    assert names - {"numpy", "imageio_ffmpeg"} <= set(pins)
    mp = re.search(r"mediapipe==([\w.]+)", (REPO / "tools" / "setup.sh").read_text()).group(1)
    assert pins["mediapipe"] == mp


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """A Python 3.11 with numpy 1.26.4 and nothing else: what a fresh Blender 4.5/5.0 runs.

    numpy is linked from this environment when it is that version (fast), else installed with pip."""
    root = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "py")], check=True)
    exe = root / "py" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(exe), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    if np.__version__ == "1.26.4" and os.name == "posix":
        src = Path(np.__file__).parent.parent
        for name in ("numpy", "numpy.libs", "numpy-1.26.4.dist-info"):
            if (src / name).exists():
                (site / name).symlink_to(src / name)
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-deps", "--target", str(site), "numpy==1.26.4"], check=True)
    return exe


ARTIST_SESSION = r"""
import json, sys
from pathlib import Path
import bpy

zip_path, bare, frames_dir, out_dir = sys.argv[1:5]
sys.executable = bare  # inside Blender, sys.executable is Blender's own bundled Python
res = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
pkg = "bl_ext.user_default.portrait_relight"
out = {"install": sorted(res), "enabled": pkg in bpy.context.preferences.addons}
prefs = bpy.context.preferences.addons[pkg].preferences
out["engine_python"] = prefs.engine_python
out["lights_from"] = sys.modules[pkg + "._core"].core_module("lights").__file__
out["heavy"] = sorted(m for m in ("torch", "cv2", "mediapipe", "scipy") if m in sys.modules)
try:
    out["check"] = sorted(bpy.ops.portrait_relight.check_engine())
except RuntimeError as exc:
    out["check"] = str(exc)
out["engine_status"] = prefs.engine_status

sc = bpy.context.scene
sc.render.resolution_x, sc.render.resolution_y = 256, 256
sun = bpy.data.objects.new("Key", bpy.data.lights.new("Key", "SUN"))
sun.data.energy = 3.0
sun.rotation_euler = (0.9, 0.0, 0.6)
sc.collection.objects.link(sun)
ed = sc.sequence_editor_create()
strips = ed.strips if hasattr(ed, "strips") else ed.sequences
files = sorted(Path(frames_dir).glob("*.png"))
strip = strips.new_image(name="astro", filepath=str(files[0]), channel=1, frame_start=1)
for f in files[1:]:
    strip.elements.append(f.name)
ed.active_strip = strip
sc.portrait_relight.output_dir = out_dir
try:
    out["relight"] = sorted(bpy.ops.portrait_relight.relight(synchronous=True))
except RuntimeError as exc:
    out["relight"] = str(exc)
out["last_result"] = sc.portrait_relight.last_result
new = strips.get("astro relit")
if new is not None:
    out["strip"] = {"start": new.frame_final_start, "length": new.frame_final_duration,
                    "files": [str(Path(bpy.path.abspath(new.directory), e.filename)) for e in new.elements]}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow
def test_installed_zip_relights_with_blenders_python_and_bundled_wheels(built_zip, bare_python, tmp_path,
                                                                         astronaut):
    from relight_core import io

    res = subprocess.run([str(bare_python), "-c", "import relight_core"], capture_output=True, cwd=tmp_path)
    assert res.returncode != 0  # the stand-in for Blender's Python has no engine of its own
    frames = tmp_path / "frames"
    frames.mkdir()
    small = np.asarray(astronaut, dtype=np.float32).reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    for k in range(3):
        io.write_png(frames / f"astro_{k:04d}.png", io.decode_srgb8(np.roll(small, (k, 2 * k), axis=(0, 1))
                                                                    .round().astype(np.uint8)))
    cwd = tmp_path / "cwd"  # Blender started from a folder holding a `relight_core/` that must not run
    (cwd / "relight_core").mkdir(parents=True)
    (cwd / "relight_core" / "__init__.py").write_text("raise SystemExit('the cwd relight_core ran')\n")
    (cwd / "relight_core" / "__main__.py").write_text("raise SystemExit('the cwd relight_core ran')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RELIGHT_ENGINE_PYTHON", "PYTHONPATH")}
    env["BLENDER_USER_RESOURCES"] = str(tmp_path / "user")
    env["PYTHONPATH"] = str(cwd)  # the user's environment must not leak into the engine either
    out_dir = tmp_path / "out"
    res = subprocess.run([sys.executable, "-c", ARTIST_SESSION, str(built_zip), str(bare_python), str(frames),
                          str(out_dir)], capture_output=True, text=True, env=env, cwd=cwd, timeout=900)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, res.stdout[-3000:] + res.stderr[-3000:]
    out = json.loads(line[7:])
    assert out["install"] == ["FINISHED"] and out["enabled"] and out["engine_python"] == ""
    assert out["lights_from"].startswith(str(tmp_path / "user")) and out["heavy"] == []
    from relight_core import __version__

    assert out["check"] == ["FINISHED"], out
    assert f"relight-core {__version__}" in out["engine_status"] and "bundled" in out["engine_status"]
    assert str(bare_python) in out["engine_status"]
    assert out["relight"] == ["FINISHED"] and "relit 3/3" in out["last_result"], out
    strip = out["strip"]
    assert strip["start"] == 1 and strip["length"] == 3 and len(strip["files"]) == 3
    for f in strip["files"]:
        assert Path(f).is_file() and Path(f).resolve().is_relative_to(out_dir.resolve())
    import cv2

    img = cv2.imread(strip["files"][0], cv2.IMREAD_UNCHANGED)
    assert img is not None and img.shape[:2] == (256, 256) and img.std() > 10
