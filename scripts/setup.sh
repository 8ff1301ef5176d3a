#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the pinned dependencies. Idempotent: re-runs only
# reinstall when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first and pinned, so nothing later resolves a (multi-GB) CUDA build instead
  .venv/bin/python -m pip install --quiet "$(grep -E '^torch==' requirements.txt | cut -d' ' -f1)"
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
