"""Portrait Relight engine: 3D-aware relighting and novel views of portrait footage.

See ARCHITECTURE.md (in the shared design) and README.md. `sh`, `lights` and `camera` are numpy-only
and importable inside Blender; the other modules need the full engine environment.
"""

__version__ = "0.1.0"
