"""Ablations of Sec. 5.3 as numbers, on analytic multi-scale scenes (exact posterior denoiser).

For each configuration (p=2 and p=4) and method, over several seeds: the RMSE of the result to
the nearest single consistent scene, the success rate (RMSE < 0.02: every level is the same
scene), and the detail ratio (finest-band energy of the result ÷ that of the nearest scene;
< 1 means blurrier). Prints JSON.

    python benchmarks/ablation.py [--seeds 48] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.analytic import MixtureDenoiser, make_scenes, nearest_scene_error  # noqa: E402
from core.sampler import sample_zoom_stack  # noqa: E402
from core.zoom_stack import laplacian_pyramid  # noqa: E402

CONFIGS = {
    "p2": dict(zoom=2, num_levels=4, scenes=3, shape=(3, 32, 32), detail=8),
    "p4": dict(zoom=4, num_levels=3, scenes=3, shape=(3, 64, 64), detail=8),
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


def detail(x: torch.Tensor) -> float:
    return float(laplacian_pyramid(x, 2, 1)[0].pow(2).mean())


def run_config(cfg: dict, seeds: int, steps: int) -> dict:
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    scenes = make_scenes(cfg["scenes"], cfg["num_levels"], cfg["shape"], cfg["zoom"],
                         torch.Generator().manual_seed(0), detail=cfg["detail"])
    denoiser = MixtureDenoiser(scenes, scheduler.alphas_cumprod)
    table = {}
    for name, kwargs in METHODS.items():
        errors, ratios, start = [], [], time.perf_counter()
        for seed in range(seeds):
            out = sample_zoom_stack(
                denoiser, scheduler, num_levels=cfg["num_levels"], zoom=cfg["zoom"],
                shape=cfg["shape"], num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed), **kwargs)
            error, k = nearest_scene_error(out.images, scenes)
            errors.append(error)
            ratios.append(detail(out.images) / detail(scenes[k]))
        table[name] = {
            "rmse_to_nearest_scene": round(sum(errors) / seeds, 4),
            "success_rate": round(sum(e < SUCCESS_RMSE for e in errors) / seeds, 3),
            "detail_ratio": round(sum(ratios) / seeds, 3),
            "seconds": round(time.perf_counter() - start, 2),
        }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=48)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = {"scheduler": "DDPM", "steps": args.steps, "seeds": args.seeds,
              "success_rmse": SUCCESS_RMSE, "configs": {}}
    for name, cfg in CONFIGS.items():
        result["configs"][name] = {"setup": {k: list(v) if isinstance(v, tuple) else v
                                             for k, v in cfg.items()},
                                   "methods": run_config(cfg, args.seeds, args.steps)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
