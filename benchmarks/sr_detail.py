"""Synthetic 4x super-resolution of a zoom stack: is the upscaler's detail kept, and seamless?

A consistent 64 px base stack (N = 5, p = 2, jointly sampled from the Gaussian-field prior)
is super-resolved 4x to 256 px by an analytic SR model (core.zoom.analytic.SuperResolutionDenoiser:
exact posterior mean of "bilinear upsampling of the base + independent Gaussian detail above
its band"), then turned into a zoom-consistent stack by:

* before — ``independent_blend_all``: every level upscaled on its own, then the old final pass
  (Π_image ∘ Blending in pixel space, all bands averaged);
  ``independent_render_only``: the same without blending (Π_image alone);
* after — the SR model's denoiser through sample_zoom_stack (blend + Π_noise at every SR
  step, per-level conditioning), no final averaging needed: ``joint_plain_blend`` with the
  stage-I blending, ``joint_sr_blend`` with the SR stage's blending (``laplacian-sr2``: a
  coarser level's invented bands do not count in a finer layer, except in a 1 band-pixel
  rim); ``joint_sr+disagreement_*``: that result with independent
  per-level noise of std ``--disagreement`` (a decoder's rounding-level disagreement), then
  a final pass that blends all bands / only the coarse bands (the 2 finest, i.e. the SR
  octaves, kept per level) / nothing (render only).

Metrics: ``energy_band_k`` = energy of Laplacian band k (1 = finest) ÷ that of the
independently upscaled levels (the SR model's own detail; same sampler, so its
discretisation cancels); ``seam_ratio`` = differences across the border of the finer level's
footprint ÷ typical neighbour differences (1 = seamless); ``inconsistency`` = RMS of
centre(image i) − D_p(image i+1); ``stage_1_seam_ratio`` = the seam of the base stack the SR
stage starts from. Prints JSON.

    python benchmarks/sr_detail.py [--seeds 8] [--steps 50] [--scheduler ddpm] [--out FILE]

``--continued``: the SR model's detail continues the base's spectrum at the same energy per
octave (``SuperResolutionDenoiser(continued=True)``); by default it has 1/1.39 of it, which
makes a finer level's base content inside a footprint look rougher than the coarser level's
invented detail around it at p = 4. ``--scheduler`` takes the CLI's names
(``sde-dpmsolver++`` is what ``auto``, the default, picks for these models, at 20 steps);
both stages use it and ``--steps``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from diffusers import DDPMScheduler  # noqa: E402

from core.backends.schedulers import make_scheduler, scheduler_names  # noqa: E402
from core.zoom.analytic import (GaussianFieldDenoiser, SuperResolutionDenoiser,  # noqa: E402
                           band_energies, inconsistency, seam_ratio)
from core.zoom.sampler import sample_zoom_stack  # noqa: E402
from core.zoom.zoom_stack import blend, blend_coarse, render_image, sr_blend_method  # noqa: E402

BANDS = 3


def base_stack(seed: int, args, scheduler) -> tuple[torch.Tensor, torch.Generator]:
    """Stage I: the seed's consistent base stack, and its generator to go on with."""
    p, n, size = args.zoom, args.levels, args.size
    g = torch.Generator().manual_seed(seed)
    base = sample_zoom_stack(GaussianFieldDenoiser((3, size, size), scheduler.alphas_cumprod),
                             scheduler, num_levels=n, zoom=p, shape=(3, size, size),
                             num_inference_steps=args.steps, generator=g).images
    return base, g


def run_seed(base: torch.Tensor, g: torch.Generator, args, scheduler) -> dict[str, torch.Tensor]:
    p, n, size, f = args.zoom, args.levels, args.size, 4
    sr = SuperResolutionDenoiser(base, f, scheduler.alphas_cumprod, continued=args.continued)
    shape = (3, size * f, size * f)
    indep = sample_zoom_stack(sr, scheduler, num_levels=n, zoom=p, shape=shape,
                              num_inference_steps=args.steps, generator=g, mode="independent").images
    joint = sample_zoom_stack(sr, scheduler, num_levels=n, zoom=p, shape=shape,
                              num_inference_steps=args.steps, generator=g).images
    joint_sr = sample_zoom_stack(sr, scheduler, num_levels=n, zoom=p, shape=shape,
                                 num_inference_steps=args.steps, generator=g,
                                 blending=sr_blend_method(p)).images
    noisy = joint_sr + args.disagreement * torch.randn(joint_sr.shape, generator=g)
    return {
        "stage_1_base": base,  # not a method: its seam is stage I's own (the SR input's)
        "reference_independent_unconsolidated": indep,
        "independent_blend_all": render_image(blend(indep, p), p),
        "independent_render_only": render_image(indep, p),
        "joint_plain_blend": joint,
        "joint_sr_blend": joint_sr,
        "joint_sr+disagreement_blend_all": render_image(blend(noisy, p), p),
        "joint_sr+disagreement_blend_coarse": render_image(blend_coarse(noisy, p, 2), p),
        "joint_sr+disagreement_render_only": render_image(noisy, p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="base size in px (SR: 4x)")
    parser.add_argument("--scheduler", default="ddpm", choices=scheduler_names())
    parser.add_argument("--continued", action="store_true",
                        help="SR detail continues the base's 1/f² law (same energy per octave)")
    parser.add_argument("--disagreement", type=float, default=0.02)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    if args.scheduler != "ddpm":
        scheduler = make_scheduler(args.scheduler, dict(scheduler.config))
    start = time.perf_counter()
    # every base first: the SR runs then reuse their two blend operators (the sampler caches
    # two configurations) instead of rebuilding three per seed; each seed keeps its generator
    bases = [base_stack(seed, args, scheduler) for seed in range(args.seeds)]
    runs = [run_seed(base, g, args, scheduler) for base, g in bases]
    ref = [statistics.fmean(band_energies(r["reference_independent_unconsolidated"], args.zoom,
                                          BANDS)[k] for r in runs) for k in range(BANDS)]
    table = {}
    base_seam = statistics.fmean(seam_ratio(r.pop("stage_1_base"), args.zoom) for r in runs)
    for name in runs[0]:
        energy = [statistics.fmean(band_energies(r[name], args.zoom, BANDS)[k] for r in runs)
                  for k in range(BANDS)]
        row = {f"energy_band_{k + 1}": round(energy[k] / ref[k], 3) for k in range(BANDS)}
        row["seam_ratio"] = round(statistics.fmean(seam_ratio(r[name], args.zoom) for r in runs), 3)
        row["inconsistency"] = round(statistics.fmean(inconsistency(r[name], args.zoom)
                                                      for r in runs), 4)
        table[name] = row
    result = {"levels": args.levels, "zoom": args.zoom, "base_px": args.size,
              "sr_px": args.size * 4, "scheduler": args.scheduler, "steps": args.steps,
              "seeds": args.seeds, "continued_detail": args.continued,
              "stage_1_seam_ratio": round(base_seam, 3),
              "disagreement_std": args.disagreement,
              "seconds": round(time.perf_counter() - start, 1), "methods": table}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
