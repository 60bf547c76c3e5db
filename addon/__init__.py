"""Portrait Relight: relight portrait footage in Blender's sequencer with scene lights and a novel camera.

The add-on turns Blender state (the selected strip, the scene's lights and World at the head anchor, the
camera relative to the anchor) into requests for the engine, which runs as a separate process started
through `engine_boot.py` (Blender's own Python with the extension's wheels, or an external engine Python):
`worker` for a relight, whose frames come back as an image strip, and `serve` for the Live Preview.
It imports only bpy, numpy, the standard library and the numpy-only engine modules (`sh`, `lights`,
`camera`). See the README, "Blender workflow".
"""

from __future__ import annotations

from . import compositing, farm, handlers, live_preview, operators, panels, properties, scene3d

_MODULES = (properties, operators, farm, panels, handlers, scene3d, compositing, live_preview)


def register() -> None:
    """Register classes, the scene settings and the preview handlers."""
    done = []
    try:
        for mod in _MODULES:
            mod.register()
            done.append(mod)
    except Exception:
        for mod in reversed(done):
            mod.unregister()
        raise


def unregister() -> None:
    """Remove everything `register` added (reload-safe: stops a running worker, removes handlers)."""
    for mod in reversed(_MODULES):
        mod.unregister()
