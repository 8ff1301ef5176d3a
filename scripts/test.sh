#!/usr/bin/env bash
# Set up the venv if needed, then run the whole test suite (core, CLI, Blender add-on headless
# on bpy 5.0.1). With no arguments it then reruns the Blender tests on the older supported
# Blender releases (bpy 4.2 LTS and 4.5 LTS); P10_OLDER_BLENDERS="" skips that.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
if [ $# -eq 0 ]; then
  for version in ${P10_OLDER_BLENDERS-4.2.23 4.5.15}; do
    echo "--- Blender tests on bpy $version ---"
    bash scripts/setup_bpy.sh "$version"
    ".venv-bpy-$version/bin/python" -m pytest -q tests/test_addon_*.py tests/test_scene_*.py
  done
fi
