"""Access to the numpy-only engine modules (`relight_core.sh`, `.lights`, `.camera`, `.errors`), and to
where the engine lives.

The packaged extension carries a copy of them as the sub-package `relight_core` next to this file (made by
`build.py`); from the source tree they come from the repository's `relight_core`. Nothing else of the
engine is imported inside Blender: OpenCV and MediaPipe run only in the worker process. The packaged
extension also ships the whole engine as wheels, which Blender installs into the extensions'
site-packages folder (`installed_wheels_dir`); the worker runs from there with Blender's own Python.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

_PACKAGE = __package__ or "portrait_relight"
_BUNDLED = (Path(__file__).resolve().parent / "relight_core" / "__init__.py").is_file()


def core_module(name: str) -> ModuleType:
    """The engine module `relight_core.<name>` (bundled copy first, then the installed/source one)."""
    if _BUNDLED:
        return importlib.import_module(f"{_PACKAGE}.relight_core.{name}")
    return importlib.import_module(f"relight_core.{name}")


def is_bundled() -> bool:
    """True when running from a built extension that carries its own copy of the numpy-only modules."""
    return _BUNDLED


def repo_root() -> Path | None:
    """The source repository holding this add-on (None for an installed extension)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "relight_core" / "__init__.py").is_file() and not _BUNDLED else None


def installed_wheels_dir() -> Path | None:
    """Blender's site-packages folder for extension wheels, when the installed relight_core wheel is there.

    Blender installs every extension's wheels into <user extensions>/.local/lib/pythonX.Y/site-packages
    (addon_utils, `_initialize_extensions_site_packages`). None when running from a source checkout or
    when the wheels are missing (e.g. a zip built without them).
    """
    if not _BUNDLED:
        return None
    import bpy

    base = bpy.utils.user_resource("EXTENSIONS")
    if not base:
        return None
    site = Path(base, ".local", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages")
    return site if (site / "relight_core" / "__main__.py").is_file() else None


def presets_dir() -> Path | None:
    """The lighting presets folder: bundled `presets/` next to this file, else the repository's."""
    here = Path(__file__).resolve().parent / "presets"
    if here.is_dir():
        return here
    root = repo_root()
    return root / "presets" if root is not None and (root / "presets").is_dir() else None


def user_error() -> type[Exception]:
    """The engine's `UserError` class (errors the user can fix, shown as one-sentence reports)."""
    return core_module("errors").UserError
