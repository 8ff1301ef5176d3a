"""Real-size cost of joint zoom sampling: SD 1.5 / SD 2.1 / SDXL UNets (random weights), N levels.

    python benchmarks/realsize.py                       # CPU, SD 1.5, N=8, 1 step per mode
    python benchmarks/realsize.py --device cuda --dtype fp16 --config sdxl --steps 5 --micro-batch 4
    python benchmarks/realsize.py --modes joint --steps 2 --scheduler lcm --guidance 1 --zoom-steps 8

Joint (Alg. 2: blend + render every step) vs independent sampling, with classifier-free
guidance when --guidance > 1 (2N UNet rows per step; N without). Prints JSON: seconds per step
and peak memory per mode (torch.cuda.max_memory_allocated on GPU; peak process RSS on CPU).
With --zoom-steps S, also seconds_per_zoom = S x the steady per-step time (extrapolated from
--steps measured steps: every step of a sampler costs the same UNet batch). Each mode runs in
its own subprocess so that the peaks do not mix. No weights are downloaded: the UNet is random,
which costs exactly what the trained one does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def peak_rss_bytes() -> int:
    import resource

    # Linux reports KiB, macOS bytes
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def run_mode(args) -> dict:
    import torch
    from diffusers import DDPMScheduler
    from diffusers.utils import logging as dlog
    from unets import SD_SCHEDULER, latent_size, make_unet, parse_dtype, unet_call, unet_inputs

    from core.backends.base import Backend, Conditioning
    from core.backends.loading import resolve_device
    from core.backends.schedulers import make_scheduler
    from core.zoom.sampler import sample_zoom_stack

    class RandomBackend(Backend):
        def _unet(self, x, t, **rows):
            return unet_call(self.unet, x, t, **rows)

    device = resolve_device(args.device)
    dtype = parse_dtype(args.dtype, device)
    dlog.set_verbosity_error()
    unet = make_unet(args.config, device, dtype)
    backend = RandomBackend(SimpleNamespace(unet=unet, scheduler=DDPMScheduler.from_config(SD_SCHEDULER)),
                            device, dtype, f"random {args.config} UNet")
    sched = make_scheduler(args.scheduler, SD_SCHEDULER)
    n, size = args.levels, latent_size(args.config)
    rows = unet_inputs(args.config, n + 1, device, dtype)  # stand-ins for the text encoders
    cond = Conditioning({k: v[:n] for k, v in rows.items()}, {k: v[n:] for k, v in rows.items()})
    denoiser = backend.make_denoiser(cond, args.guidance, args.micro_batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(step, total, layers):
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with torch.inference_mode():
        last[0] = time.perf_counter()
        sample_zoom_stack(denoiser, sched, num_levels=n, zoom=args.zoom, shape=(4, size, size),
                          num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
                          mode=args.single, callback=on_step, device=device)
    # the first step pays one-off costs (kernel selection, allocator): report it apart
    steady = times[1:] or times
    out = {
        "mode": args.single, "seconds_per_step": sum(steady) / len(steady),
        "first_step_seconds": times[0], "steps": len(times),
    }
    if args.zoom_steps:
        out["zoom_steps"] = args.zoom_steps
        out["seconds_per_zoom"] = out["seconds_per_step"] * args.zoom_steps
        out["seconds_per_zoom_kind"] = f"extrapolated from {len(steady)} steady step(s)"
    if device.type == "cuda":
        out["peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
        out["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_memory_bytes"] = peak_rss_bytes()
        out["peak_memory_kind"] = "process peak RSS"
    out["device"] = str(device) if device.type != "cuda" else torch.cuda.get_device_name(device)
    out["dtype"] = str(dtype).replace("torch.", "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    ap.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp16, bf16, fp32")
    ap.add_argument("--config", default="sd15", choices=("tiny", "sd15", "sd21", "sdxl"),
                    help="UNet config with random weights (default sd15)")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1, help="sampling steps per mode (default 1)")
    ap.add_argument("--scheduler", default="ddpm", help="core scheduler name (default ddpm)")
    ap.add_argument("--zoom-steps", type=int, default=None,
                    help="also report seconds per zoom at this many steps (extrapolated)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--micro-batch", type=int, default=None)
    ap.add_argument("--modes", default="joint,independent")
    ap.add_argument("--single", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.single:
        print(json.dumps(run_mode(args)))
        return
    results = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--single", mode, "--device", args.device,
               "--dtype", args.dtype, "--config", args.config, "--levels", str(args.levels),
               "--zoom", str(args.zoom), "--steps", str(args.steps), "--scheduler",
               args.scheduler, "--guidance", str(args.guidance)]
        if args.micro_batch:
            cmd += ["--micro-batch", str(args.micro_batch)]
        if args.zoom_steps:
            cmd += ["--zoom-steps", str(args.zoom_steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(proc.returncode)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {
        "benchmark": "realsize", "unet": f"{args.config} config, random weights",
        "levels": args.levels, "zoom": args.zoom, "scheduler": args.scheduler,
        "guidance": args.guidance, "micro_batch": args.micro_batch,
        "unet_rows_per_step": (2 if args.guidance > 1 else 1) * args.levels,
        "results": results,
    }
    if "joint" in results and "independent" in results:
        summary["joint_over_independent_time"] = (
            results["joint"]["seconds_per_step"] / results["independent"]["seconds_per_step"])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
