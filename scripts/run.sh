#!/usr/bin/env bash
# Set up the venv if needed, then generate a zoom stack (and preview video) from the command line.
# Example: bash scripts/run.sh --prompts core/examples/galaxy.json --out out/galaxy --video
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m core generate "$@"
