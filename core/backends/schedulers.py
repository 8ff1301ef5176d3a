"""Schedulers by name, built from the loaded pipeline's own scheduler config."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInputError
from ..zoom.sampler import FLOW_MU, FLOW_SIGMAS, SPACING_OVERRIDES
from ..settings import FLOW_SCHEDULERS, SCHEDULERS

# name -> diffusers class and the overrides that make it a plain sampler of the model's
# training schedule: the zoom sampler feeds it consolidated x0 (as ε), so clipping,
# thresholding and learned variances belong to the denoiser (or are not used at all).
_CLASSES = {
    "ddpm": ("DDPMScheduler", {"variance_type": "fixed_small", "clip_sample": False,
                               "thresholding": False}),
    "ddim": ("DDIMScheduler", {"clip_sample": False, "thresholding": False}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++",
                                                    "solver_order": 2, "thresholding": False,
                                                    "variance_type": None}),
    "euler": ("EulerDiscreteScheduler", {}),
    # the stochastic DPM-Solver++(2M) SDE: the sampler hands it Π_noise as its fresh noise
    "sde-dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++",
                                                        "solver_order": 2, "thresholding": False,
                                                        "variance_type": None}),
    # LCM / consistency sampling: x̂ → blend → render → re-noise with Π_noise (update_renoise)
    "lcm": ("LCMScheduler", {"clip_sample": False, "thresholding": False}),
    # rectified flow (SD3, FLUX; update_flow): Euler through the implied ε, or x̂ re-noised
    # to the next σ with Π_noise (diffusers' stochastic_sampling, its noise replaced)
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    "flow-renoise": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
}


def scheduler_names() -> list[str]:
    return list(SCHEDULERS)


def default_steps(name: str) -> int:
    check_scheduler_name(name)
    return SCHEDULERS[name]


def check_scheduler_name(name: str) -> str:
    if name not in _CLASSES:
        raise InvalidInputError(
            f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}"
        )
    return name


def make_scheduler(name: str, config: dict[str, Any]):
    """A fresh scheduler ``name`` ("ddpm", "ddim", "dpmsolver++", "euler") on ``config``'s
    training schedule (betas, prediction type), spaced "trailing" from T (``SPACING_OVERRIDES``)."""
    import diffusers

    cls_name, overrides = _CLASSES[check_scheduler_name(name)]
    flow = name in FLOW_SCHEDULERS
    if flow != is_flow_config(config):
        raise InvalidInputError(
            f"scheduler {name!r} does not fit this model: rectified-flow models (SD3, FLUX) take "
            f"{' or '.join(FLOW_SCHEDULERS)}, the others any scheduler but those")
    # a flow backend's hidden keys (μ of the resolution shift, FLUX's σ spacing) travel along
    base = {k: v for k, v in dict(config).items()
            if not k.startswith("_") or k in (FLOW_MU, FLOW_SIGMAS)}
    if flow:  # its own timestep spacing: no "trailing"/steps_offset keys
        return getattr(diffusers, cls_name).from_config({**base, **overrides})
    # DeepFloyd IF's schedule is squaredcos_cap_v2; everything else keeps its own betas.
    # Timesteps from T whatever the config's spacing (the sampler enforces it too).
    return getattr(diffusers, cls_name).from_config({**base, **overrides, **SPACING_OVERRIDES})


def is_flow_config(config: dict[str, Any]) -> bool:
    """A rectified-flow scheduler config (FlowMatchEulerDiscreteScheduler's keys, no betas)."""
    return "shift" in config and "beta_start" not in config


__all__ = ["is_flow_config", "check_scheduler_name", "default_steps", "make_scheduler", "scheduler_names"]
