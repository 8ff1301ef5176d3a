"""Cost of joint sampling over independent sampling, per step, with the same UNet and batch.

``--ops``: top-level aten ops per sampling step (torch.profiler, eager, CPU, a trivial denoiser,
DDPM, 4x64x64), with the stack operators and with the reference functions — the launch count
that bounds the zoom-stack operations on a GPU (docs/overhead.md).

A UNet2DConditionModel with random weights (tiny, SD 1.5, SD 2.1-base or SDXL config:
benchmarks/unets.py) denoises N levels in one batch (in chunks of --micro-batch rows). Per N we time, in the same process:
  model   one UNet forward of batch N (what both modes pay),
  stack   blend + render_image + render_noise + the DDPM update (what joint adds),
  joint / independent   end-to-end sample_zoom_stack seconds per step,
and report ratio = (model + stack) / model and the end-to-end ratio. Prints JSON.

    python benchmarks/overhead.py [--configs tiny,sd15] [--levels 2,4,8,16] [--device cpu]
    python benchmarks/overhead.py --device cuda --dtype fp16 --configs sdxl --levels 8 [--micro-batch 4]
    python benchmarks/overhead.py --ops
    add --reference to time the reference stack functions, --compile for torch.compile
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

import core.zoom.sampler as sampler  # noqa: E402
from core.backends.guidance import batched_call  # noqa: E402
from core.zoom.geometry import check_footprints  # noqa: E402
from core.zoom.sampler import ddpm_update, sample_zoom_stack  # noqa: E402
from core.zoom.stack_operators import stack_operators  # noqa: E402
from core.zoom.zoom_stack import blend, render_image, render_noise  # noqa: E402


def top_level_ops(fn) -> int:
    """aten ops with no aten op above them: the kernels one Python call launches."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    count = 0
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def ops_per_step(levels: int, zoom: int, size: int = 64, operators: bool = True) -> float:
    """Top-level ops of one DDPM step of sample_zoom_stack (trivial denoiser, 4 x size²): the
    difference between a 6- and a 2-step run, over 4 (setup and the final render cancel)."""
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    sampler.USE_STACK_OPERATORS = operators

    def run(steps):
        sample_zoom_stack(lambda z, t, lv: z * 0.5, sched, num_levels=levels, zoom=zoom,
                          shape=(4, size, size), num_inference_steps=steps,
                          generator=torch.Generator().manual_seed(0))
    try:
        run(2)
        return (top_level_ops(lambda: run(6)) - top_level_ops(lambda: run(2))) / 4
    finally:
        sampler.USE_STACK_OPERATORS = True

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
            dtype_name: str = "auto", micro_batch: int | None = None, reference: bool = False,
            compile_stack: bool = False) -> list[dict]:
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

        fps = check_footprints(None, size, size, zoom, n)
        ops = stack_operators(n, size, size, zoom, fps, device=device, dtype=z.dtype)
        consolidate = torch.compile(ops.consolidate) if compile_stack else ops.consolidate

        def stack_ops():
            if reference:
                x = render_image(blend(z, zoom), zoom)
                noise = render_noise(torch.randn_like(z), zoom)
            else:
                x = consolidate(z)[1]
                noise = ops.render_noise(torch.randn_like(z))
            ddpm_update(z.double(), x.double(), noise.double(), ab, ab * 1.1)

        stack_ops()  # builds / compiles outside the timing

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
            "stack": "reference" if reference else ("compiled" if compile_stack else "operators"),
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
    parser.add_argument("--ops", action="store_true", help="print top-level ops per step only")
    parser.add_argument("--reference", action="store_true",
                        help="time the reference stack functions instead of the operators")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stack step")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    if args.ops:
        rows = [{"levels": n, "zoom": p, "latent": [4, 64, 64],
                 "ops_per_step": ops_per_step(n, p),
                 "ops_per_step_reference": ops_per_step(n, p, operators=False)}
                for n, p in [(8, 2), (16, 2), (8, 4)]]
        print(json.dumps({"target": "<= 150 ops per step at N=8, 16 (p=2) and N=8 (p=4)",
                          "rows": rows}, indent=2))
        return
    rows = []
    for name in args.configs.split(","):
        lv = [int(v) for v in args.sd15_levels.split(",")] if name != "tiny" and args.sd15_levels else levels
        rows += measure(name, lv, args.steps, args.device, args.zoom, args.dtype, args.micro_batch,
                        args.reference, args.compile)
    print(json.dumps({"target": "ratio <= 1.05 at N=8 with sd15", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
