"""Real-size cost of joint zoom sampling: SD 1.5's UNet (random weights), N levels, 64x64 latents.

    python benchmarks/realsize.py                       # CPU, N=8, 1 step per mode (minutes)
    python benchmarks/realsize.py --device cuda --steps 5 --micro-batch 4

Joint (Alg. 2: blend + render every step) vs independent sampling, both with classifier-free
guidance (2N UNet rows per step). Prints JSON: seconds per step and peak memory per mode
(torch.cuda.max_memory_allocated on GPU; peak process RSS on CPU). Each mode runs in its own
subprocess so that the peaks do not mix. No weights are downloaded: the UNet is random, which
costs exactly what the trained one does.
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

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                      "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                    "CrossAttnUpBlock2D"),
)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, steps_offset=1)


def peak_rss_bytes() -> int:
    import resource

    # Linux reports KiB, macOS bytes
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def run_mode(args) -> dict:
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as dlog

    from core.backends.base import Conditioning
    from core.backends.loading import default_dtype, resolve_device
    from core.backends.stable_diffusion import StableDiffusionBackend
    from core.sampler import sample_zoom_stack

    device = resolve_device(args.device)
    dtype = default_dtype(device) if args.dtype == "auto" else getattr(torch, args.dtype)
    dlog.set_verbosity_error()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD15_UNET).to(device, dtype).eval()
    sched = DDPMScheduler(**SD15_SCHEDULER)
    backend = StableDiffusionBackend(SimpleNamespace(unet=unet, scheduler=sched), device, dtype,
                                     "random SD 1.5 UNet")
    n = args.levels
    emb = torch.randn(n + 1, 77, 768, device=device, dtype=dtype)  # stands in for CLIP output
    cond = Conditioning({"encoder_hidden_states": emb[:n]}, {"encoder_hidden_states": emb[n:]})
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
        sample_zoom_stack(denoiser, sched, num_levels=n, zoom=args.zoom, shape=(4, 64, 64),
                          num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0),
                          mode=args.single, callback=on_step, device=device)
    # the first step pays one-off costs (kernel selection, allocator): report it apart
    steady = times[1:] or times
    out = {
        "mode": args.single, "seconds_per_step": sum(steady) / len(steady),
        "first_step_seconds": times[0], "steps": len(times),
    }
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
    ap.add_argument("--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), float32, ...")
    ap.add_argument("--levels", type=int, default=8)
    ap.add_argument("--zoom", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1, help="sampling steps per mode (default 1)")
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
               "--dtype", args.dtype, "--levels", str(args.levels), "--zoom", str(args.zoom),
               "--steps", str(args.steps), "--guidance", str(args.guidance)]
        if args.micro_batch:
            cmd += ["--micro-batch", str(args.micro_batch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode:
            sys.stderr.write(proc.stderr[-4000:])
            raise SystemExit(proc.returncode)
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {
        "benchmark": "realsize", "unet": "SD 1.5 config, random weights",
        "levels": args.levels, "latent": [4, 64, 64], "zoom": args.zoom,
        "guidance": args.guidance, "unet_batch": args.micro_batch or 2 * args.levels,
        "results": results,
    }
    if "joint" in results and "independent" in results:
        summary["joint_over_independent_time"] = (
            results["joint"]["seconds_per_step"] / results["independent"]["seconds_per_step"])
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
