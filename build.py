#!/usr/bin/env python3
"""Build the Blender extension zip into dist/ and check it with Blender's own validator.

    python build.py                 # -> dist/portrait_relight-<version>.zip, validated
    python build.py --no-validate   # skip the validator
    python build.py --blender /path/to/blender   # use `blender --command extension ...` instead of bpy's copy

The package is staged in build/extension/portrait_relight/: the add-on (addon/*.py), the manifest,
the lighting presets (presets/) and a copy of the numpy-only engine modules (relight_core/__init__, sh,
lights, camera, errors, farm) as the sub-package `relight_core`, with their `relight_core.` imports made
relative so they cannot clash with another installation. The add-on bundles no wheels, so one zip serves
every platform. The validator is Blender's `blender_ext.py` (the `extension build/validate` command),
taken from the `bpy` module's bundled `addons_core/bl_pkg` when no Blender executable is given.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent
VENDORED = ("__init__", "errors", "sh", "lights", "camera", "farm")
ALLOWED_IMPORTS = {"numpy", "relight_core", "__future__"} | set(sys.stdlib_module_names)


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


def stage(out: Path) -> Path:
    """Copy everything the extension needs into `out`/portrait_relight; returns that folder."""
    pkg = out / "portrait_relight"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for f in sorted((ROOT / "addon").glob("*.py")):
        shutil.copy2(f, pkg / f.name)
    shutil.copy2(ROOT / "blender_manifest.toml", pkg / "blender_manifest.toml")
    for extra in ("LICENSE", "COPYING"):
        if (ROOT / extra).is_file():
            shutil.copy2(ROOT / extra, pkg / extra)
    core = pkg / "relight_core"
    core.mkdir()
    for name in VENDORED:
        src = ROOT / "relight_core" / f"{name}.py"
        if not src.is_file():
            if name in ("sh", "lights", "camera", "errors"):
                raise SystemExit(f"build.py: {src} is missing; the add-on needs it.")
            continue
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


def build(output_dir: Path, validate: bool = True, blender: str | None = None) -> Path:
    """Stage, build the zip into `output_dir` and (by default) validate it; returns the zip path."""
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    pkg = stage(ROOT / "build" / "extension")
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    if zip_path.exists():
        zip_path.unlink()
    prefix = tool_prefix(blender)
    run_tool(prefix + ["build", "--source-dir", str(pkg), "--output-filepath", str(zip_path)])
    if validate:
        run_tool(prefix + ["validate", str(zip_path)])
    return zip_path


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output-dir", type=Path, default=ROOT / "dist", help="where the zip goes (dist/)")
    ap.add_argument("--no-validate", action="store_true", help="skip Blender's validator")
    ap.add_argument("--blender", default=None, help="Blender executable (default: bpy's bundled tool)")
    args = ap.parse_args(argv)
    path = build(args.output_dir, validate=not args.no_validate, blender=args.blender)
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
