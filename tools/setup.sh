#!/usr/bin/env bash
# Create (or update) the project environment in .venv.
#   bash tools/setup.sh         engine only (what the CLI and the Blender add-on's worker need)
#   bash tools/setup.sh --dev   engine + tests, lint, bpy and the optional identity metric
# Re-running is cheap: a stamp file records what was installed for which requirement files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
dev=0; [ "${1:-}" = "--dev" ] && dev=1
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
stamp=.venv/.relight-stamp
reqs=(requirements.txt pyproject.toml)
if [ $dev = 1 ]; then reqs+=(requirements-dev.txt); fi
want=$(cat "${reqs[@]}" | sha1sum | cut -c1-16)
if [ -f "$stamp" ] && grep -qx "$want" "$stamp"; then exit 0; fi
echo "Setting up .venv (first run downloads a few hundred MB)..." >&2
"${pip[@]}" -r requirements.txt
"${pip[@]}" --no-deps mediapipe==0.10.21
if [ $dev = 1 ]; then "${pip[@]}" -r requirements-dev.txt; fi
"${pip[@]}" --no-deps -e .
echo "$want" >> "$stamp"
