#!/usr/bin/env bash
# Create .venv-bpy-<VERSION>: the runtime requirements plus an older bpy (Blender as a Python
# module), to run the Blender tests against Blender 4.2 LTS / 4.5 LTS as well as 5.0.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
venv=.venv-bpy-$version
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$venv/bin/python" ]; then
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
fi
stamp=$venv/.requirements.sha
want=$( (cat requirements.txt requirements-dev.txt; echo "$version") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet "$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)"
  "$venv/bin/python" -m pip install --quiet -r requirements.txt \
    "$(grep -E '^pytest==' requirements-dev.txt | cut -d' ' -f1)" "bpy==$version"
  echo "$want" > "$stamp"
fi
