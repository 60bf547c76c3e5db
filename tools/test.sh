#!/usr/bin/env bash
# Set up the development environment (.venv, with bpy) and run lint and the whole test suite.
# Tests that need ../shared/fixtures skip with a reason when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -rs "$@"
