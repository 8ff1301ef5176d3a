"""Where sampling starts: "leading" (the SD/SDXL/IF configs) vs "trailing" timestep spacing.

On the exact Gaussian-field denoiser (core.zoom.analytic, SD's scaled-linear schedule) a sample's
low-frequency RMS (RMS of its 8 x 8 block means, D_2 three times) is compared with that of
exact prior draws. With "leading" spacing and steps_offset=1 the first timestep at 256 steps
is t=766 (ᾱ=0.05), at 512 steps t=512: the coarse structure of z_T is never removed, and the
posterior mean at that t shrinks it. The sampler now always runs "trailing" (t=999 first).
Prints JSON.

    nice -n 10 python benchmarks/timesteps.py [--seeds 16] [--steps 256,512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)  # many tiny ops: threads only contend
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.zoom.sampler as sampler  # noqa: E402
from core.zoom.analytic import GaussianFieldDenoiser  # noqa: E402
from core.zoom.zoom_stack import downsample  # noqa: E402

SD_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                 timestep_spacing="leading")
SHAPE = (3, 32, 32)


def low_rms(x: torch.Tensor) -> float:
    return float(downsample(x, 2, times=3).pow(2).mean().sqrt())


def run(spacing: str, steps: int, seeds: int, levels: int, first_seed: int = 0) -> dict:
    sched = DDPMScheduler.from_config(SD_CONFIG)
    gauss = GaussianFieldDenoiser(SHAPE, sched.alphas_cumprod)
    saved = sampler.SPACING_OVERRIDES
    # "leading": what the sampler did before it forced trailing spacing
    sampler.SPACING_OVERRIDES = {} if spacing == "leading" else saved
    try:
        seen = []
        samples = [sampler.sample_zoom_stack(
            lambda z, t, lv: (seen.append(t), gauss(z, t, lv))[1], sched, num_levels=levels,
            zoom=2, shape=SHAPE, num_inference_steps=steps,
            generator=torch.Generator().manual_seed(s)).images
            for s in range(first_seed, first_seed + seeds)]
    finally:
        sampler.SPACING_OVERRIDES = saved
    prior = gauss.sample_prior(256, torch.Generator().manual_seed(123))
    ratio = statistics.fmean(low_rms(x) for x in samples) / low_rms(prior)
    return {"spacing": spacing, "steps": steps, "first_t": seen[0], "last_t": seen[-1],
            "alpha_bar_first": round(float(sched.alphas_cumprod[seen[0]]), 4),
            "low_freq_rms_vs_prior": round(ratio, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", default="256,512")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="to split a run over processes")
    args = parser.parse_args()
    rows = [run(sp, int(n), args.seeds, args.levels, args.first_seed)
            for n in args.steps.split(",") for sp in ("leading", "trailing")]
    print(json.dumps({"prior": "gaussian field", "shape": list(SHAPE), "levels": args.levels,
                      "seeds": args.seeds, "first_seed": args.first_seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
