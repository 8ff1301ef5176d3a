"""Ablations of Sec. 5.3 as numbers, with analytic denoisers whose right answer is known.

Two prior families, each at p=2 and p=4 (DDPM, 50 steps, several seeds), every method of the
paper's ablation (joint, iterative, independent, naive blending, random noise) plus joint with
an i.i.d. z_T:

* "mixture": K random multi-scale scenes; each level's model is the exact posterior mean of the
  uniform mixture over the scenes' renders. Reported: RMSE to the nearest single consistent
  scene, success rate (RMSE < 0.02: every level is the same scene), detail (finest-band energy
  ÷ that of the nearest scene).
* "gaussian": every level's model is the exact posterior mean of a scale-invariant Gaussian
  field (1/f² spectrum, like natural images). There is no "right scene", but blur is
  measurable: detail = finest-band energy ÷ that of independent sampling (same sampler, so the
  DDPM discretisation cancels); std of the pixels.

Both report inconsistency (RMS of centre(image i) − D_p(image i+1)); the Gaussian family also
the seam ratio (differences across the border of the finer level's footprint ÷ typical
neighbour differences: 1 = seamless; the mixture's random scenes have hard edges of their own).
Prints JSON.

    python benchmarks/ablation.py [--seeds 48] [--steps 50] [--configs close_p2,close_p4]
                                  [--methods joint,iterative,...]

Every success rate and detail ratio comes with its standard error (``*_se``). "close_*": the
mixture with close mean colours (``make_close_scenes``).
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

torch.set_num_threads(1)  # many tiny ops: threads only contend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.zoom.analytic import (  # noqa: E402
    SCENE_PRIORS, GaussianFieldDenoiser, MixtureDenoiser, detail_energy, inconsistency,
    nearest_scene_error, seam_ratio,
)
from core.zoom.sampler import sample_zoom_stack  # noqa: E402

CONFIGS = {
    "mixture_p2": dict(prior="mixture", zoom=2, num_levels=4, shape=(3, 32, 32), scenes=3, detail=8),
    "mixture_p4": dict(prior="mixture", zoom=4, num_levels=3, shape=(3, 64, 64), scenes=3, detail=8),
    # close mean colours: the scenes differ in structure only (core.zoom.analytic.make_close_scenes)
    "close_p2": dict(prior="mixture", kind="close", zoom=2, num_levels=4, shape=(3, 32, 32),
                     scenes=3, detail=8),
    "close_p4": dict(prior="mixture", kind="close", zoom=4, num_levels=3, shape=(3, 64, 64),
                     scenes=3, detail=8),
    "gaussian_p2": dict(prior="gaussian", zoom=2, num_levels=4, shape=(3, 64, 64)),
    "gaussian_p4": dict(prior="gaussian", zoom=4, num_levels=3, shape=(3, 64, 64)),
}
METHODS = {
    "joint": {},
    "iterative": dict(mode="iterative"),
    "independent": dict(mode="independent"),
    "naive_blending": dict(blending="naive"),
    "random_noise": dict(shared_noise=False),
    "joint_iid_init": dict(consistent_init=False),
}
SUCCESS_RMSE = 0.02


def mean(values) -> float:
    return statistics.fmean(values)


def se(values) -> float:
    """Standard error of the mean."""
    values = [float(v) for v in values]
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def run_config(cfg: dict, seeds: int, steps: int, methods=METHODS) -> dict:
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    if cfg["prior"] == "mixture":
        scenes = SCENE_PRIORS[cfg.get("kind", "independent")](
            cfg["scenes"], cfg["num_levels"], cfg["shape"], cfg["zoom"],
            torch.Generator().manual_seed(0), detail=cfg["detail"])
        denoiser = MixtureDenoiser(scenes, scheduler.alphas_cumprod)
    else:
        denoiser = GaussianFieldDenoiser(cfg["shape"], scheduler.alphas_cumprod)
    samples = {}
    for name, kwargs in methods.items():
        start = time.perf_counter()
        samples[name] = [sample_zoom_stack(
            denoiser, scheduler, num_levels=cfg["num_levels"], zoom=cfg["zoom"],
            shape=cfg["shape"], num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed), **kwargs).images
            for seed in range(seeds)]
        samples[name + "_seconds"] = time.perf_counter() - start

    reference = mean(detail_energy(x) for x in samples.get("independent", samples["joint"]))
    table = {}
    for name in methods:
        runs = samples[name]
        row = {"inconsistency": round(mean(inconsistency(x, cfg["zoom"]) for x in runs), 4)}
        if cfg["prior"] == "mixture":
            nearest = [nearest_scene_error(x, scenes) for x in runs]
            row["rmse_to_nearest_scene"] = round(mean(e for e, _ in nearest), 4)
            row["success_rate"] = round(mean(e < SUCCESS_RMSE for e, _ in nearest), 3)
            row["success_se"] = round(se(e < SUCCESS_RMSE for e, _ in nearest), 3)
            row["detail_ratio"] = round(mean(detail_energy(x) / detail_energy(scenes[k])
                                             for x, (_, k) in zip(runs, nearest)), 3)
        else:
            row["detail_ratio"] = round(mean(detail_energy(x) for x in runs) / reference, 3)
            row["detail_se"] = round(se(detail_energy(x) / reference for x in runs), 3)
            row["std"] = round(mean(float(x.std()) for x in runs), 3)
            # only here: the mixture's random scenes have hard layer edges of their own
            row["seam_ratio"] = round(mean(seam_ratio(x, cfg["zoom"]) for x in runs), 3)
        row["seconds"] = round(samples[name + "_seconds"], 2)
        table[name] = row
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=48)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = {m: METHODS[m] for m in args.methods.split(",")}
    result = {"scheduler": "DDPM", "steps": args.steps, "seeds": args.seeds,
              "success_rmse": SUCCESS_RMSE, "configs": {}}
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        result["configs"][name] = {
            "setup": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "methods": run_config(cfg, args.seeds, args.steps, methods)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
