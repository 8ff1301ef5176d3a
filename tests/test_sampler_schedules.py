"""Every scheduler the sampler runs starts at T and ends at 0, whatever the model's config says.

SD/SDXL configs use "leading" spacing with steps_offset=1 (at 256 steps the first timestep
would be t=766, ᾱ=0.05); IF's config (squaredcos_cap_v2) likewise. A denoiser that records
its timesteps checks the schedules the sampler actually runs.
"""

import pytest
import torch
from diffusers import (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
    LCMScheduler,
)

from core.backends.schedulers import make_scheduler
from core.zoom.sampler import sample_zoom_stack
from core.settings import FLOW_SCHEDULERS, SCHEDULERS
from core.zoom.zoom_stack import render_image

T = 1000
SD_CONFIG = dict(num_train_timesteps=T, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                 steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
IF_CONFIG = dict(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                 variance_type="learned_range", thresholding=True, clip_sample=True,
                 timestep_spacing="leading", prediction_type="epsilon")
CONFIGS = {"sd": SD_CONFIG, "if": IF_CONFIG}
PLAIN = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
         LCMScheduler]
TARGET = render_image(torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)), 2)


def timesteps_run(scheduler, steps):
    seen = []

    def denoiser(z, t, levels):
        seen.append(t)
        return TARGET[levels]

    out = sample_zoom_stack(denoiser, scheduler, num_levels=2, zoom=2, shape=(1, 4, 4),
                            num_inference_steps=steps,
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, TARGET, atol=1e-5, rtol=0)
    return seen


def check_schedule(seen, steps, what):
    assert len(seen) == steps, what
    assert seen[0] >= T - T / steps, f"{what}: starts at t={seen[0]}"   # within one step of T
    assert seen[-1] <= T / steps, f"{what}: ends at t={seen[-1]}"       # last step lands on 0
    assert all(a > b for a, b in zip(seen, seen[1:])), what


@pytest.mark.parametrize("steps", [25, 100, 256, 500])
@pytest.mark.parametrize("config", ["sd", "if"])
def test_every_scheduler_starts_at_T_and_ends_near_0(config, steps):
    cfg = CONFIGS[config]
    for cls in PLAIN:  # plain diffusers schedulers handed to the sampler
        check_schedule(timesteps_run(cls.from_config(cfg), steps), steps,
                       f"{cls.__name__} on {config} at {steps}")
    for name in SCHEDULERS:  # the ones generate() builds (flow ones: tests/test_flow_models.py)
        if name in FLOW_SCHEDULERS:
            continue
        sched = make_scheduler(name, cfg)
        assert sched.config.timestep_spacing == "trailing" and sched.config.steps_offset == 0
        check_schedule(timesteps_run(sched, steps), steps, f"{name} on {config} at {steps}")


def test_the_users_scheduler_is_not_modified():
    sched = DDPMScheduler.from_config(SD_CONFIG)
    timesteps_run(sched, 25)
    assert sched.config.timestep_spacing == "leading" and sched.config.steps_offset == 1
