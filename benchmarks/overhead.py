"""Cost of joint sampling over independent sampling, per step, with the same UNet and batch.

A UNet2DConditionModel with random weights (tiny, SD 1.5, SD 2.1-base or SDXL config:
benchmarks/unets.py) denoises N levels in one batch (in chunks of --micro-batch rows). Per N we time, in the same process:
  model   one UNet forward of batch N (what both modes pay),
  stack   blend + render_image + render_noise + the DDPM update (what joint adds),
  joint / independent   end-to-end sample_zoom_stack seconds per step,
and report ratio = (model + stack) / model and the end-to-end ratio. Prints JSON.

    python benchmarks/overhead.py [--configs tiny,sd15] [--levels 2,4,8,16] [--device cpu]
    python benchmarks/overhead.py --device cuda --dtype fp16 --configs sdxl --levels 8 [--micro-batch 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from unets import UNETS, latent_size, make_unet, parse_dtype, unet_call, unet_inputs  # noqa: E402

from core.backends.guidance import batched_call  # noqa: E402
from core.zoom.sampler import ddpm_update, sample_zoom_stack  # noqa: E402
from core.zoom.zoom_stack import blend, render_image, render_noise  # noqa: E402

def timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, levels: list[int], steps: int, device: str, zoom: int,
            dtype_name: str = "auto", micro_batch: int | None = None) -> list[dict]:
    dtype = parse_dtype(dtype_name, torch.device(device))
    unet = make_unet(name, device, dtype)
    size = latent_size(name)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    rows = []
    for n in levels:
        cond = unet_inputs(name, n, device, dtype)

        @torch.no_grad()
        def denoiser(z, t, lv):
            t_b = torch.full((len(lv),), t, device=device)
            eps = batched_call(lambda x, tt, **r: unet_call(unet, x, tt, **r), z.to(dtype), t_b,
                               {k: v[lv] for k, v in cond.items()}, micro_batch).float()
            ab = sched.alphas_cumprod[t]
            return (z - (1 - ab).sqrt() * eps) / ab.sqrt()

        z = torch.randn(n, 4, size, size, device=device)
        big = name != "tiny" and device == "cpu"
        reps = 3 if big else 10
        model = timed(lambda: denoiser(z, 500, torch.arange(n, device=device)), reps, sync)
        ab = torch.tensor(0.5, dtype=torch.float64, device=device)

        def stack_ops():
            x = render_image(blend(z, zoom), zoom)
            noise = render_noise(torch.randn_like(z), zoom)
            ddpm_update(z.double(), x.double(), noise.double(), ab, ab * 1.1)

        stack = timed(stack_ops, 20, sync)
        repeats = 1 if big else 3
        per_step = {"joint": [], "independent": []}
        for _ in range(repeats):  # interleaved, so drifting machine load hits both modes
            for mode in per_step:
                def sample():
                    sample_zoom_stack(denoiser, sched, num_levels=n, zoom=zoom,
                                      shape=(4, size, size), num_inference_steps=steps,
                                      generator=torch.Generator(device).manual_seed(0),
                                      mode=mode, device=device)
                per_step[mode].append(timed(sample, 1, sync) / steps)
        per_step = {mode: statistics.median(v) for mode, v in per_step.items()}
        rows.append({
            "unet": name, "levels": n, "latent": [4, size, size], "device": device,
            "dtype": str(dtype).replace("torch.", ""), "micro_batch": micro_batch,
            "model_s": round(model, 5), "stack_s": round(stack, 6),
            "stack_share": round(stack / (model + stack), 4),
            "ratio_model_plus_stack": round((model + stack) / model, 4),
            "joint_s_per_step": round(per_step["joint"], 5),
            "independent_s_per_step": round(per_step["independent"], 5),
            "ratio_end_to_end": round(per_step["joint"] / per_step["independent"], 4),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="tiny,sd15", help=f"any of {','.join(UNETS)}")
    parser.add_argument("--levels", default="2,4,8,16")
    parser.add_argument("--sd15-levels", default=None,
                        help="levels for the real-size configs (default: same as --levels)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on GPU), fp16, bf16, fp32")
    parser.add_argument("--micro-batch", type=int, default=None, help="UNet rows per call")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    rows = []
    for name in args.configs.split(","):
        lv = [int(v) for v in args.sd15_levels.split(",")] if name != "tiny" and args.sd15_levels else levels
        rows += measure(name, lv, args.steps, args.device, args.zoom, args.dtype, args.micro_batch)
    print(json.dumps({"target": "ratio <= 1.05 at N=8 with sd15", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
