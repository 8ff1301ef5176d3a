#!/usr/bin/env bash
# Set up the venv if needed, then run the whole test suite (core, CLI, Blender add-on headless).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
