#!/bin/sh
# GPU rows of the real-size benchmarks, as JSON lines in OUT_DIR/gpu_suite.jsonl.
#
#   sh benchmarks/gpu_suite.sh OUT_DIR          # one CUDA GPU; about 3-4 minutes on an H100
#
# Random-weight UNets (SD 2.1-base and SDXL configs), fp16, N = 8 levels, with and without
# micro-batching: joint-vs-independent overhead (overhead.py), seconds per step and peak memory
# (realsize.py), and seconds per zoom for DDPM 256 (the paper), the default sampler (SDE
# DPM-Solver++ 20: the same UNet batch per step as DDPM) and LCM 8 (no CFG: half the batch).
# Each line is one script's JSON plus "row" (what ran) and "gpu" (the card's name).
# PYTHON overrides the interpreter (default .venv/bin/python, else python3).
set -eu
out=${1:?usage: sh benchmarks/gpu_suite.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
dest="$out/gpu_suite.jsonl"
: > "$dest"

row() {  # row NAME SCRIPT ARGS...: run, tag, append one JSON line
  name=$1; shift
  echo "== $name" >&2
  start=$(date +%s)
  "$PYTHON" "$@" > "$out/$name.json"
  "$PYTHON" - "$name" "$out/$name.json" "$start" >> "$dest" <<'PY'
import json, sys, time, torch
name, path, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = json.load(open(path))
data.update(row=name, gpu=torch.cuda.get_device_name(), wall_seconds=round(time.time() - start, 1))
print(json.dumps(data))
PY
}

common="--device cuda --dtype fp16"
row overhead_sd21_sdxl_n8        benchmarks/overhead.py $common --configs sd21,sdxl --levels 8 --steps 3
row overhead_sd21_sdxl_n8_mb4    benchmarks/overhead.py $common --configs sd21,sdxl --levels 8 --steps 3 --micro-batch 4
row overhead_sd21_n8_reference   benchmarks/overhead.py $common --configs sd21 --levels 8 --steps 3 --reference
row overhead_sd21_n8_compiled    benchmarks/overhead.py $common --configs sd21 --levels 8 --steps 3 --compile
row realsize_sd21_n8_ddpm256     benchmarks/realsize.py $common --config sd21 --levels 8 --steps 5 --zoom-steps 256
row realsize_sd21_n8_mb4         benchmarks/realsize.py $common --config sd21 --levels 8 --steps 5 --micro-batch 4
row realsize_sd21_n8_default20   benchmarks/realsize.py $common --config sd21 --levels 8 --steps 5 --modes joint --scheduler sde-dpmsolver++ --zoom-steps 20
row realsize_sd21_n8_lcm8        benchmarks/realsize.py $common --config sd21 --levels 8 --steps 5 --modes joint --scheduler lcm --guidance 1 --zoom-steps 8
row realsize_sdxl_n8             benchmarks/realsize.py $common --config sdxl --levels 8 --steps 3
row realsize_sdxl_n8_mb4         benchmarks/realsize.py $common --config sdxl --levels 8 --steps 3 --micro-batch 4
echo "wrote $dest" >&2
