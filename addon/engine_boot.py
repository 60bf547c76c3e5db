"""Start the relight engine: `<python> -I -u engine_boot.py PATH ARGS...` runs `relight_core ARGS...`.

Run by the add-on (see worker_client.Engine), never imported inside Blender. `-I` keeps PYTHONPATH,
the user's site-packages and the current directory off `sys.path`; PATH ('' for none) goes first on it:
the extension's installed wheels (run with Blender's own Python) or a source checkout. MediaPipe imports
matplotlib for its drawing helpers only; the extension does not ship matplotlib, so when it is missing a
placeholder stands in that says so if anything does use it. Standard library only.
"""

import importlib.util
import runpy
import sys
import types


def _matplotlib_placeholder() -> None:
    """Put modules `matplotlib` and `matplotlib.pyplot` in sys.modules that fail on use, not on import."""

    def missing(name: str):
        def __getattr__(attr: str):
            if attr.startswith("__"):
                raise AttributeError(attr)
            raise AttributeError(f"{name}.{attr}: matplotlib is not part of the bundled engine (MediaPipe's "
                                 "drawing helpers need it; the relight engine does not).")
        return __getattr__

    top = types.ModuleType("matplotlib")
    pyplot = types.ModuleType("matplotlib.pyplot")
    top.__getattr__ = missing("matplotlib")
    pyplot.__getattr__ = missing("matplotlib.pyplot")
    top.__path__ = []  # a package, so `import matplotlib.pyplot` resolves
    top.pyplot = pyplot
    sys.modules["matplotlib"] = top
    sys.modules["matplotlib.pyplot"] = pyplot


def main() -> None:
    """Put PATH first on sys.path, then run `python -m relight_core` with the remaining arguments."""
    path = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if path:
        sys.path.insert(0, path)
    if importlib.util.find_spec("matplotlib") is None:
        _matplotlib_placeholder()
    runpy.run_module("relight_core", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
