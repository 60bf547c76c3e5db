#!/usr/bin/env bash
# Set up the development environment (.venv, with bpy), run lint, build and validate the Blender
# extension for every platform (prints each zip's wheels and size; wheels are cached in
# ~/.cache/portrait-relight/wheels, so only the first run downloads them), then the whole test suite.
# Tests that need ../shared/fixtures skip with a reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --dev
.venv/bin/ruff check .
.venv/bin/python build.py
exec .venv/bin/python -m pytest -q -rs "$@"
