#!/usr/bin/env python3
"""Build the Blender extension: one zip per platform, each carrying the engine's wheels, validated.

    python build.py                          # dist/portrait_relight-<version>-<platform>.zip for all four
    python build.py --platform linux-x64     # just one (repeatable)
    python build.py --no-validate            # skip Blender's validator
    python build.py --blender /path/to/blender   # use `blender --command extension ...` instead of bpy's copy

The package is staged in build/extension/portrait_relight/: the add-on (addon/*.py), the manifest, the
lighting presets (presets/), a copy of the numpy-only engine modules (relight_core/__init__, sh, lights,
camera, errors, farm) as the sub-package `relight_core` (their `relight_core.` imports made relative so they
cannot clash with another installation), and wheels/: a wheel of relight_core itself plus the engine's
runtime wheels for Python 3.11 (requirements-extension.txt, exact pins, no numpy: Blender's own is used).
Blender installs those wheels when the extension is installed; the add-on then runs the engine with
Blender's Python. The runtime wheels come from `pip download --only-binary=:all: --no-deps` into a wheel
cache ($RELIGHT_WHEEL_CACHE, else ~/.cache/portrait-relight/wheels/<platform>), so a rebuild downloads
nothing. Blender's `extension build --split-platforms` writes one zip per platform with only the wheels
that platform can use, and `extension validate` checks each. The tool is Blender's `blender_ext.py`, taken
from the `bpy` module's bundled `addons_core/bl_pkg` when no Blender executable is given.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent
VENDORED = ("__init__", "errors", "sh", "lights", "camera", "farm")
ALLOWED_IMPORTS = {"numpy", "relight_core", "__future__"} | set(sys.stdlib_module_names)
PINS = ROOT / "requirements-extension.txt"
PYTHON_VERSION = "3.11"  # Blender 4.5 and 5.0
# pip --platform tags per Blender platform. Linux: Blender needs glibc 2.28, so manylinux up to 2_28.
# macOS: pip expands macosx_13_0 to every older macOS and universal2; 13.0 because opencv-python-headless
# 4.11 ships macOS 13 wheels only (the engine thus needs macOS 13 on a Mac).
PLATFORM_TAGS = {
    "linux-x64": [f"manylinux_2_{v}_x86_64" for v in range(28, 16, -1)] + ["manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": ["macosx_13_0_arm64"],
    "macos-x64": ["macosx_13_0_x86_64"],
}


def find_blender_ext() -> Path:
    """Path of Blender's extension command-line tool inside the installed `bpy` module."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("build.py: the bpy module is not installed; pass --blender /path/to/blender.")
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if hits:
            return hits[-1]
    raise SystemExit("build.py: bpy has no addons_core/bl_pkg/cli/blender_ext.py; pass --blender.")


def check_imports(path: Path) -> None:
    """Refuse to vendor a module that imports anything but numpy, the stdlib and relight_core."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for n in names:
            if n.split(".")[0] not in ALLOWED_IMPORTS:
                raise SystemExit(f"build.py: {path} imports {n}; only numpy-only modules can be bundled.")


def make_relative(source: str) -> str:
    """Rewrite `relight_core` absolute imports into relative ones (the copy is a sub-package)."""
    source = re.sub(r"^(\s*)from relight_core\.([\w.]+) import", r"\1from .\2 import", source, flags=re.M)
    source = re.sub(r"^(\s*)from relight_core import", r"\1from . import", source, flags=re.M)
    source = re.sub(r"^(\s*)import relight_core\.(\w+) as (\w+)", r"\1from . import \2 as \3", source,
                    flags=re.M)
    if re.search(r"^\s*import relight_core", source, flags=re.M):
        raise SystemExit("build.py: a vendored module uses `import relight_core...`; use from-imports.")
    return source


def read_pins(path: Path = PINS) -> list[tuple[str, str]]:
    """The (name, version) pairs of requirements-extension.txt (every line `name==version`)."""
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip():
            raise SystemExit(f"build.py: {path.name}: '{line}' is not name==version; pin it exactly.")
        pins.append((name.strip(), version.strip()))
    return pins


def _norm(name: str) -> str:
    """A distribution name as it appears in a wheel file name (PEP 427 escaping, lower case)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def cached_wheel(folder: Path, name: str, version: str) -> Path | None:
    """The wheel of `name`==`version` in `folder`, if there is one."""
    if not folder.is_dir():
        return None
    for f in folder.glob("*.whl"):
        parts = f.name.split("-")
        if _norm(parts[0]) == _norm(name) and parts[1] == version:
            return f
    return None


def wheel_cache(root: Path | None = None) -> Path:
    """Where downloaded wheels are kept between builds."""
    if root is not None:
        return root
    if os.environ.get("RELIGHT_WHEEL_CACHE"):
        return Path(os.environ["RELIGHT_WHEEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "portrait-relight" / "wheels"


def platform_wheels(platform: str, cache: Path) -> list[Path]:
    """The pinned runtime wheels for one Blender platform (downloading only those not cached yet)."""
    folder = cache / platform
    pins = read_pins()
    missing = [f"{n}=={v}" for n, v in pins if cached_wheel(folder, n, v) is None]
    if missing:
        print(f"downloading {len(missing)} wheel(s) for {platform} into {folder}", flush=True)
        tags = [a for t in PLATFORM_TAGS[platform] for a in ("--platform", t)]
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
               "--only-binary=:all:", "--no-deps", "--python-version", PYTHON_VERSION,
               "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""), *tags,
               "--dest", str(folder), *missing]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            err = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR")]
            raise SystemExit(f"build.py: pip could not download the {platform} wheels "
                             f"({(err or ['exit ' + str(res.returncode)])[0]}).")
    found = [cached_wheel(folder, n, v) for n, v in pins]
    lost = [f"{n}=={v}" for (n, v), f in zip(pins, found, strict=True) if f is None]
    if lost:
        raise SystemExit(f"build.py: no {platform} wheel for {', '.join(lost)}; check the pins.")
    return [f for f in found if f is not None]


def _can_build_here() -> bool:
    """True when this environment can build a wheel itself (setuptools >= 70.1, or with `wheel`), so pip
    needs no isolated build environment (which it would download)."""
    try:
        import setuptools
    except ImportError:
        return False
    major_minor = tuple(int(x) for x in re.findall(r"\d+", setuptools.__version__)[:2])
    return major_minor >= (70, 1) or importlib.util.find_spec("wheel") is not None


def core_wheel(dest: Path) -> Path:
    """Build the pure-Python wheel of relight_core (this checkout) into `dest`; returns it."""
    shutil.rmtree(ROOT / "build" / "lib", ignore_errors=True)  # setuptools never prunes stale files there
    local = ["--no-build-isolation"] if _can_build_here() else []  # else pip fetches setuptools itself
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--quiet", "--no-deps",
           *local, "--wheel-dir", str(dest), str(ROOT)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    hits = sorted(dest.glob("relight_core-*.whl"))
    if res.returncode != 0 or not hits:
        raise SystemExit(f"build.py: could not build the relight_core wheel ({res.stderr.strip()[-300:]}).")
    return hits[-1]


def manifest_with_wheels(text: str, wheels: list[str], platforms: list[str]) -> str:
    """The manifest text with top-level `platforms` and `wheels` keys added before the first table."""
    if re.search(r"^\s*(wheels|platforms)\s*=", text, flags=re.M):
        raise SystemExit("build.py: blender_manifest.toml must not list wheels or platforms; "
                         "build.py adds them.")
    keys = ("platforms = [" + ", ".join(f'"{p}"' for p in platforms) + "]\n"
            + "wheels = [\n" + "".join(f'  "./wheels/{w}",\n' for w in wheels) + "]\n\n")
    m = re.search(r"^\[", text, flags=re.M)
    at = m.start() if m else len(text)
    return text[:at] + keys + text[at:]


def stage(out: Path, wheels: list[Path], platforms: list[str]) -> Path:
    """Copy everything the extension needs into `out`/portrait_relight; returns that folder."""
    pkg = out / "portrait_relight"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for f in sorted((ROOT / "addon").glob("*.py")):
        shutil.copy2(f, pkg / f.name)
    names = sorted({w.name: w for w in wheels})
    text = (ROOT / "blender_manifest.toml").read_text(encoding="utf-8")
    (pkg / "blender_manifest.toml").write_text(manifest_with_wheels(text, names, platforms), encoding="utf-8")
    (pkg / "wheels").mkdir()
    for w in wheels:
        dst = pkg / "wheels" / w.name
        if not dst.exists():
            try:
                os.link(w, dst)  # wheels are big and never modified: a hard link when the disk allows
            except OSError:
                shutil.copy2(w, dst)
    for extra in ("LICENSE", "COPYING"):
        if (ROOT / extra).is_file():
            shutil.copy2(ROOT / extra, pkg / extra)
    core = pkg / "relight_core"
    core.mkdir()
    for name in VENDORED:
        src = ROOT / "relight_core" / f"{name}.py"
        if not src.is_file():
            raise SystemExit(f"build.py: {src} is missing; the add-on needs it.")
        check_imports(src)
        (core / src.name).write_text(make_relative(src.read_text(encoding="utf-8")), encoding="utf-8")
    if (ROOT / "presets").is_dir():
        shutil.copytree(ROOT / "presets", pkg / "presets",
                        ignore=shutil.ignore_patterns("__pycache__", "*.py", "*.pyc", ".*"))
    return pkg


def run_tool(cmd: list[str]) -> None:
    """Run a Blender extension command; exit with its message on failure."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    out = (res.stdout + res.stderr).strip()
    if out:
        print(out)
    if res.returncode != 0:
        raise SystemExit(f"build.py: `{' '.join(cmd[-3:])}` failed (exit {res.returncode}).")


def tool_prefix(blender: str | None) -> list[str]:
    """Command prefix for Blender's extension tool: bpy's blender_ext.py or `blender --command extension`."""
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    return [sys.executable, str(find_blender_ext())]


def zip_name(manifest: dict, platform: str) -> str:
    """File name Blender's `build --split-platforms` gives the zip of one platform."""
    return f"{manifest['id']}-{manifest['version']}-{platform.replace('-', '_')}.zip"


def zip_wheels(zip_path: Path) -> dict[str, int]:
    """The wheels an extension zip carries: file name -> size in bytes."""
    import zipfile

    with zipfile.ZipFile(zip_path) as zf:
        return {i.filename.split("/")[-1]: i.file_size for i in zf.infolist() if i.filename.endswith(".whl")}


def describe(zip_path: Path) -> str:
    """One line with the zip's size, then one line per wheel it carries (name and size)."""
    wheels = sorted(zip_wheels(zip_path).items())
    lines = [f"{zip_path.name}: {zip_path.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels"]
    lines += [f"    {n}  {s / 1e6:.1f} MB" for n, s in wheels]
    return "\n".join(lines)


def build(output_dir: Path, validate: bool = True, blender: str | None = None,
          platforms: list[str] | None = None, cache: Path | None = None) -> list[Path]:
    """Stage, build one zip per platform into `output_dir` and (by default) validate each; returns them."""
    platforms = platforms or list(PLATFORM_TAGS)
    unknown = [p for p in platforms if p not in PLATFORM_TAGS]
    if unknown:
        raise SystemExit(f"build.py: unknown platform {unknown[0]}; choose from {', '.join(PLATFORM_TAGS)}.")
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    cache = wheel_cache(cache)
    output_dir.mkdir(parents=True, exist_ok=True)
    prefix = tool_prefix(blender)
    zips = []
    with tempfile.TemporaryDirectory(prefix="relight-core-wheel-") as tmp:
        core = core_wheel(Path(tmp))
        for platform in platforms:  # one staging per platform: a universal2 wheel of another must not leak in
            wheels = platform_wheels(platform, cache) + [core]
            pkg = stage(ROOT / "build" / "extension", wheels, [platform])
            z = output_dir / zip_name(manifest, platform)
            z.unlink(missing_ok=True)
            run_tool(prefix + ["build", "--split-platforms", "--source-dir", str(pkg),
                               "--output-dir", str(output_dir)])
            if not z.is_file():
                raise SystemExit(f"build.py: Blender's build did not write {z.name}.")
            dropped = sorted({w.name for w in wheels} - set(zip_wheels(z)))
            if dropped:
                raise SystemExit(f"build.py: Blender's build left {', '.join(dropped)} out of {z.name} (not "
                                 f"a {platform} wheel to Blender); pin a version with a wheel for it.")
            if validate:
                run_tool(prefix + ["validate", str(z)])
            zips.append(z)
    return zips


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="where the zips go (dist/)")
    ap.add_argument("--platform", action="append", choices=list(PLATFORM_TAGS), default=None,
                    help="build only this platform (repeatable; default: all four)")
    ap.add_argument("--wheel-cache", type=Path, default=None,
                    help="downloaded wheels (default: $RELIGHT_WHEEL_CACHE, else "
                         "~/.cache/portrait-relight/wheels)")
    ap.add_argument("--no-validate", action="store_true", help="skip Blender's validator")
    ap.add_argument("--blender", default=None, help="Blender executable (default: bpy's bundled tool)")
    args = ap.parse_args(argv)
    zips = build(args.output_dir, validate=not args.no_validate, blender=args.blender,
                 platforms=args.platform, cache=args.wheel_cache)
    for z in zips:
        print(describe(z))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
