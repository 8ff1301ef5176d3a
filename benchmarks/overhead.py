"""Cost of joint sampling over independent sampling, per step, with the same UNet and batch.

A UNet2DConditionModel with random weights (tiny config, and Stable Diffusion 1.5's config
at 64x64 latents) denoises N levels in one batch. Per N we time, in the same process:
  model   one UNet forward of batch N (what both modes pay),
  stack   blend + render_image + render_noise + the DDPM update (what joint adds),
  joint / independent   end-to-end sample_zoom_stack seconds per step,
and report ratio = (model + stack) / model and the end-to-end ratio. Prints JSON.

    python benchmarks/overhead.py [--configs tiny,sd15] [--levels 2,4,8,16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.sampler import ddpm_update, sample_zoom_stack  # noqa: E402
from core.zoom_stack import blend, render_image, render_noise  # noqa: E402

UNETS = {
    "tiny": dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                 block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
    "sd15": dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3),
}


def timed(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, levels: list[int], steps: int, device: str, zoom: int) -> list[dict]:
    cfg = UNETS[name]
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    unet = UNet2DConditionModel(**cfg).eval().to(device)
    if dtype != torch.float32:
        unet = unet.half()
    size = cfg["sample_size"]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    rows = []
    for n in levels:
        text = torch.randn(n, 77, cfg["cross_attention_dim"], device=device, dtype=dtype)

        @torch.no_grad()
        def denoiser(z, t, lv):
            eps = unet(z.to(dtype), t, encoder_hidden_states=text[lv]).sample.float()
            ab = sched.alphas_cumprod[t]
            return (z - (1 - ab).sqrt() * eps) / ab.sqrt()

        z = torch.randn(n, 4, size, size, device=device)
        reps = 3 if name == "sd15" and device == "cpu" else 10
        model = timed(lambda: denoiser(z, 500, torch.arange(n, device=device)), reps, sync)
        ab = torch.tensor(0.5, dtype=torch.float64, device=device)

        def stack_ops():
            x = render_image(blend(z, zoom), zoom)
            noise = render_noise(torch.randn_like(z), zoom)
            ddpm_update(z.double(), x.double(), noise.double(), ab, ab * 1.1)

        stack = timed(stack_ops, 20, sync)
        repeats = 1 if name == "sd15" and device == "cpu" else 3
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
    parser.add_argument("--configs", default="tiny,sd15")
    parser.add_argument("--levels", default="2,4,8,16")
    parser.add_argument("--sd15-levels", default=None,
                        help="levels for sd15 (default: same as --levels)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    levels = [int(v) for v in args.levels.split(",")]
    rows = []
    for name in args.configs.split(","):
        lv = [int(v) for v in args.sd15_levels.split(",")] if name == "sd15" and args.sd15_levels else levels
        rows += measure(name, lv, args.steps, args.device, args.zoom)
    print(json.dumps({"target": "ratio <= 1.05 at N=8 with sd15", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
