"""Off-centre targets (issue 19) and loops (issue 20) on analytic priors: as good as centred?

Geometries, each sampled jointly (DDPM, every seed with its own noise):
* "centred": the paper's stack;
* "targets": footprints from ``footprints_for_targets`` at TARGETS (off-centre, unaligned);
* "loop": the same footprints plus a wrap transition (level 0 inside level N-1) - a cycle;
* "targets_aligned" (--geometry): the targets on a grid of p^(N-2) px, which keeps every
  observation depth of the blending pixel-aligned (off-centre footprints lose depths >= 2);
  "targets_grid_p": on a grid of p px (keeps the depth-2 observations).
Priors (each level's model is the exact posterior mean; the scenes are rendered with the
geometry under test, on a loop each scene is a cycle - a self-similar prior):
* "mixture_smooth": K = 3 scenes of smooth random blobs (``make_scenes``, detail 8);
* "mixture_field": K = 3 scenes whose layers are 1/f² Gaussian-field textures
  (``make_field_scenes``).
Success = every level on one scene (RMSE to the nearest scene < 0.02; on a loop that is one
scene round the whole cycle), reported as a rate with its standard error sqrt(r(1-r)/n).
Also: the largest inconsistency of any link (the wrap included), the seam ratio at the
footprints' borders. And the scale-invariant Gaussian field prior itself ("gaussian", no
right answer): detail (finest-band energy ÷ independent sampling) and seam ratio, mean ± SE.
Prints JSON.

    nice python benchmarks/targets_loops.py [--seeds 24] [--steps 50] [--zoom 2 4]
                                            [--field-seeds N]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.zoom.analytic import (  # noqa: E402
    GaussianFieldDenoiser, MixtureDenoiser, detail_energy, inconsistency, make_field_scenes,
    make_scenes, nearest_scene_error, seam_ratio,
)
from core.zoom.geometry import footprints_for_targets  # noqa: E402
from core.zoom.sampler import sample_zoom_stack  # noqa: E402

SHAPE = (3, 32, 32)
LEVELS = {2: 4, 4: 3}  # zoom -> N
TARGETS = [(0.3, 0.7), (0.75, 0.3), (0.6, 0.55), (0.25, 0.35)]
SUCCESS_RMSE = 0.02


def geometries(p: int) -> dict[str, tuple[list | None, bool]]:
    n = LEVELS[p]
    fps = footprints_for_targets(TARGETS[:n], SHAPE[1], SHAPE[2], p)
    # on a grid of p^(N-2) px every observation depth of the N levels stays pixel-aligned
    aligned = footprints_for_targets(TARGETS[:n - 1], SHAPE[1], SHAPE[2], p, grid=p ** (n - 2))
    on_p = footprints_for_targets(TARGETS[:n - 1], SHAPE[1], SHAPE[2], p, grid=p)
    return {"centred": (None, False), "targets": (fps[: n - 1], False), "loop": (fps, True),
            "targets_aligned": (aligned, False), "targets_grid_p": (on_p, False)}


def rate(hits: list[bool]) -> dict:
    r = sum(hits) / len(hits)
    return {"success": round(r, 3), "se": round(math.sqrt(r * (1 - r) / len(hits)), 3)}


def mean_se(values: list[float]) -> dict:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": round(m, 4), "se": round(se, 4)}


def sample(denoiser, sched, p, fps, loop, seed, steps, mode="joint"):
    return sample_zoom_stack(denoiser, sched, num_levels=LEVELS[p], zoom=p, shape=SHAPE,
                             num_inference_steps=steps, footprints=fps, loop=loop, mode=mode,
                             generator=torch.Generator().manual_seed(seed)).images


def run(seeds: int, steps: int, zooms: list[int], field_seeds: int,
        only: list[str] | None = None, priors: tuple[str, ...] = ("mixture_smooth", "mixture_field")
        ) -> dict:
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    out: dict = {}
    for p in zooms:
        for geo, (fps, loop) in geometries(p).items():
            if geo not in (only or ("centred", "targets", "loop")):
                continue
            for prior in priors:
                g = torch.Generator().manual_seed(0)
                make = (lambda: make_scenes(3, LEVELS[p], SHAPE, p, g, detail=8, footprints=fps,
                                            loop=loop)) if prior == "mixture_smooth" else (
                    lambda: make_field_scenes(3, LEVELS[p], SHAPE, p, g, footprints=fps, loop=loop))
                scenes = make()
                den = MixtureDenoiser(scenes, sched.alphas_cumprod)
                t0 = time.perf_counter()
                runs = [sample(den, sched, p, fps, loop, s, steps) for s in range(seeds)]
                out[f"{prior}_p{p}_{geo}"] = {
                    **rate([nearest_scene_error(x, scenes)[0] < SUCCESS_RMSE for x in runs]),
                    "inconsistency_max": float(max(inconsistency(x, p, fps, loop) for x in runs)),
                    "seam_ratio": mean_se([seam_ratio(x, p, fps, loop) for x in runs]),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                print(f"{prior}_p{p}_{geo}", out[f"{prior}_p{p}_{geo}"], file=sys.stderr)
            if not field_seeds:
                continue
            field = GaussianFieldDenoiser(SHAPE, sched.alphas_cumprod)
            reference = statistics.fmean(
                detail_energy(sample(field, sched, p, fps, loop, s, steps, "independent"))
                for s in range(min(field_seeds, 8)))
            runs = [sample(field, sched, p, fps, loop, s, steps) for s in range(field_seeds)]
            out[f"gaussian_p{p}_{geo}"] = {
                "detail_ratio": mean_se([detail_energy(x) / reference for x in runs]),
                "seam_ratio": mean_se([seam_ratio(x, p, fps, loop) for x in runs]),
                "inconsistency_max": float(max(inconsistency(x, p, fps, loop) for x in runs)),
            }
            print(f"gaussian_p{p}_{geo}", out[f"gaussian_p{p}_{geo}"], file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--zoom", type=int, nargs="*", default=list(LEVELS))
    ap.add_argument("--field-seeds", type=int, default=None,
                    help="seeds of the Gaussian-field prior (default: --seeds; 0 = skip it)")
    ap.add_argument("--geometry", nargs="*", default=None,
                    help="centred, targets, loop, targets_aligned, targets_grid_p (default: the first three)")
    ap.add_argument("--prior", nargs="*", default=["mixture_smooth", "mixture_field"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    result = {"seeds": args.seeds, "steps": args.steps, "shape": list(SHAPE),
              "levels": LEVELS, "targets": TARGETS,
              "footprints": {p: {g: f for g, (f, _) in geometries(p).items()} for p in LEVELS},
              "results": run(args.seeds, args.steps, args.zoom,
                             args.seeds if args.field_seeds is None else args.field_seeds,
                             args.geometry, tuple(args.prior))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
