"""Seconds per sampling step of one zoom in 1 process and in G processes (torchrun, gloo on the
CPU; NCCL where GPUs are), on a tiny random-weight SD pipeline or a model you name.

    python benchmarks/distributed.py [--processes 2] [--levels 4] [--size 64] [--model PATH]

Each configuration runs `python -m core generate` twice, with --steps S and 2S; the difference
of the wall times over S steps is the time per step without loading and writing. Prints JSON.
Here (2 CPU cores) it measures the overhead of sharding and gathering, not a speed-up: every
process competes for the same cores. GPU rows need a machine with several GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--model", default=None, help="default: a tiny random-weight SD pipeline")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("WORLD_SIZE", None)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from tests.tiny_models import make_tiny_sd
            model = make_tiny_sd(Path(tmp) / "tiny_sd")
        rows = []
        for procs in (1, args.processes):
            launch = ([sys.executable] if procs == 1 else
                      [sys.executable, "-m", "torch.distributed.run", "--standalone",
                       "--nproc-per-node", str(procs)])
            times = []
            for steps in (args.steps, 2 * args.steps):
                out = Path(tmp) / f"out_{procs}_{steps}"
                cmd = [*launch, "-m", "core", "generate", "--model", model, "--size",
                       str(args.size), "--steps", str(steps), "--scheduler", "ddpm", "--device",
                       args.device, "--quiet", "--out", str(out),
                       *[a for i in range(args.levels) for a in ("--prompt", f"level {i}")]]
                times.append(_run(cmd, env))
            rows.append({"processes": procs, "seconds_per_step": (times[1] - times[0]) / args.steps,
                         "wall_s": times})
    print(json.dumps({"benchmark": "distributed", "levels": args.levels, "size": args.size,
                      "device": args.device, "cpu_cores": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
