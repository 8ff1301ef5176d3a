"""Success rate vs model evaluations per level, for every sampler, on both analytic priors.

Every sampler of ``core.settings.SCHEDULERS`` (built by ``make_scheduler`` on a plain DDPM
training schedule, the way generate() builds them) at several step counts, joint sampling:

* "mixture" (K=3 multi-scale scenes, exact posterior mean): success = share of seeds whose
  levels all land on one scene (RMSE to the nearest consistent scene < 0.02).
* "gaussian" (scale-invariant Gaussian field, exact posterior mean): no right answer, but
  blur and missing structure are measurable: detail (finest-band energy) and low-frequency
  RMS (8 x 8 block means), both ÷ those of exact prior draws, and the seam ratio.

Model evaluations per level = steps (× 2 with classifier-free guidance for a real model).
Prints JSON (one object; ``--out`` also writes it).

    nice -n 10 python benchmarks/samplers.py [--seeds 24] [--priors mixture,gaussian]
        [--zooms 2,4] [--samplers ddpm:10,20,50;lcm:4,8;...] [--renoise-spacing grid|even]
        [--flow-spacing shifted|even|unshifted]

Priors: "mixture" (independent random scenes), "mixture-close" (close mean colours),
"mixture-deep" (only the deepest level tells the scenes apart), "gaussian". Every mean comes
with its standard error (``*_se``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)  # many tiny ops: threads only contend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.zoom.sampler as sampler_mod  # noqa: E402
from core.zoom.analytic import (  # noqa: E402
    SCENE_PRIORS, FlowMatchingDenoiser, GaussianFieldDenoiser, MixtureDenoiser, detail_energy,
    nearest_scene_error,
    seam_ratio,
)
from core.backends.schedulers import make_scheduler  # noqa: E402
from core.zoom.sampler import sample_zoom_stack  # noqa: E402
from core.zoom.zoom_stack import downsample  # noqa: E402

TRAIN = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001,
         "beta_end": 0.02, "clip_sample": False}
#: Rectified-flow samplers (SD3, FLUX) run on the same priors on the flow path
#: z_σ = (1−σ) x0 + σ ε (``FlowMatchingDenoiser``), with SD3's shift.
FLOW_TRAIN = {"num_train_timesteps": 1000, "shift": 3.0}
FLOW_SAMPLERS = "flow-euler:28;flow-renoise:28"
SETUPS = {  # (prior, zoom) -> levels, shape
    ("mixture", 2): dict(num_levels=4, shape=(3, 32, 32)),
    ("mixture", 4): dict(num_levels=3, shape=(3, 64, 64)),  # 64 px: the 1/16 overlap must tell scenes apart
    ("mixture-close", 2): dict(num_levels=4, shape=(3, 32, 32)),  # close mean colours
    ("mixture-close", 4): dict(num_levels=3, shape=(3, 64, 64)),
    ("mixture-deep", 2): dict(num_levels=4, shape=(3, 32, 32)),   # only the deepest level
    ("mixture-deep", 4): dict(num_levels=4, shape=(3, 64, 64)),   # tells the scenes apart
    ("gaussian", 2): dict(num_levels=3, shape=(3, 32, 32)),
    ("gaussian", 4): dict(num_levels=3, shape=(3, 32, 32)),
}
DEFAULT_SAMPLERS = ("ddpm:10,15,25,50;ddim:25;dpmsolver++:10,20;euler:25;"
                    "sde-dpmsolver++:10,15,20;lcm:4,8")
SUCCESS_RMSE = 0.02


def parse_samplers(text: str) -> list[tuple[str, int]]:
    out = []
    for part in filter(None, text.split(";")):
        name, steps = part.split(":")
        out += [(name, int(s)) for s in steps.split(",")]
    return out


def mean_se(values) -> tuple[float, float]:
    """Mean and its standard error over seeds."""
    values = [float(v) for v in values]
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return statistics.fmean(values), se


def low_rms(x: torch.Tensor) -> float:
    return float(downsample(x, 2, times=3).pow(2).mean().sqrt())


#: Timesteps of the flow samplers (measurement only, "Rectified flow" in docs/sampler.md):
#: "shifted" = the family's own shifted σ schedule (what the sampler does); "even" = σ evenly
#: spaced from 1 to the shifted schedule's last σ (the same end); "unshifted" = σ = linspace(1,
#: 1/n, n) without the shift (a smaller last σ, LCM's "last step" question).
FLOW_SPACINGS = ("shifted", "even", "unshifted")


def use_flow_spacing(spacing: str) -> None:
    """Make the sampler's flow timesteps ``spacing`` (``FLOW_SPACINGS``)."""
    if spacing == "shifted":
        return
    own = sampler_mod._flow_timesteps

    def timesteps(sched, n, device):
        own(sched, n, device)  # the family's schedule: its last σ before 0
        last = float(sched.sigmas[n - 1]) if spacing == "even" else 1.0 / n
        sigmas = torch.linspace(1.0, last, n, dtype=torch.float64).to(sched.sigmas.dtype)
        sched.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)]).to(device)
        sched.timesteps = (sigmas * sched.config.num_train_timesteps).to(device)
    sampler_mod._flow_timesteps = timesteps


def run_setup(prior: str, zoom: int, samplers, seeds: int, first_seed: int = 0) -> list[dict]:
    setup = SETUPS[(prior, zoom)]
    probe = make_scheduler("ddpm", TRAIN)
    if prior.startswith("mixture"):
        kind = prior.partition("-")[2] or "independent"
        scenes = SCENE_PRIORS[kind](3, setup["num_levels"], setup["shape"], zoom,
                                    torch.Generator().manual_seed(0), detail=8)
        denoiser = MixtureDenoiser(scenes, probe.alphas_cumprod)
    else:
        denoiser = GaussianFieldDenoiser(setup["shape"], probe.alphas_cumprod)
        prior_draws = denoiser.sample_prior(128, torch.Generator().manual_seed(123))
        ref_detail, ref_low = detail_energy(prior_draws), low_rms(prior_draws)
    rows = []
    for name, steps in samplers:
        start = time.perf_counter()
        flow = name.startswith("flow")
        images = [sample_zoom_stack(FlowMatchingDenoiser(denoiser) if flow else denoiser,
                                    make_scheduler(name, FLOW_TRAIN if flow else TRAIN), zoom=zoom,
                                    num_inference_steps=steps,
                                    generator=torch.Generator().manual_seed(s), **setup).images
                  for s in range(first_seed, first_seed + seeds)]
        row = {"sampler": name, "steps": steps, "evaluations_per_level": steps}
        if prior.startswith("mixture"):
            errors = [nearest_scene_error(x, scenes)[0] for x in images]
            rate, rate_se = mean_se(e < SUCCESS_RMSE for e in errors)
            row["success_rate"], row["success_se"] = round(rate, 3), round(rate_se, 3)
            row["rmse"] = round(statistics.fmean(errors), 4)
        else:
            for key, values, ref in (
                    ("detail_vs_prior", map(detail_energy, images), ref_detail),
                    ("low_freq_rms_vs_prior", map(low_rms, images), ref_low),
                    ("seam_ratio", (seam_ratio(x, zoom) for x in images), 1.0)):
                mean, se = mean_se(v / ref for v in values)
                row[key], row[key.replace("_vs_prior", "") + "_se"] = round(mean, 3), round(se, 3)
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(json.dumps({"prior": prior, "zoom": zoom, **row}), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=24)
    parser.add_argument("--priors", default="mixture,gaussian")
    parser.add_argument("--zooms", default="2,4")
    parser.add_argument("--samplers", default=DEFAULT_SAMPLERS,
                        help=f"name:steps,...;... (flow samplers: {FLOW_SAMPLERS})")
    parser.add_argument("--out", default=None)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--renoise-spacing", default=sampler_mod.RENOISE_SPACING,
                        choices=sampler_mod.RENOISE_SPACINGS,
                        help="timesteps of the renoise (lcm) sampler: distillation grid or even")
    parser.add_argument("--flow-spacing", default="shifted", choices=FLOW_SPACINGS,
                        help="timesteps of the flow samplers: the family's shifted σ schedule, "
                             "evenly spaced σ to the same last σ, or unshifted linspace(1, 1/n)")
    args = parser.parse_args()
    sampler_mod.RENOISE_SPACING = args.renoise_spacing
    use_flow_spacing(args.flow_spacing)
    samplers = parse_samplers(args.samplers)
    result = {"seeds": args.seeds, "first_seed": args.first_seed,
              "renoise_spacing": args.renoise_spacing, "flow_spacing": args.flow_spacing,
              "train_schedule": TRAIN,
              "flow_schedule": FLOW_TRAIN, "success_rmse": SUCCESS_RMSE,
              "setups": {}}
    for prior in args.priors.split(","):
        for zoom in map(int, args.zooms.split(",")):
            setup = SETUPS[(prior, zoom)]
            result["setups"][f"{prior}_p{zoom}"] = {
                "num_levels": setup["num_levels"], "shape": list(setup["shape"]),
                "rows": run_setup(prior, zoom, samplers, args.seeds, args.first_seed)}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
