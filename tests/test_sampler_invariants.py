"""Invariants of the joint sampler that hold whatever the implementation: what the denoiser is
shown and what comes back, for denoisers whose answer is fixed. Fast (16 px, few steps)."""

import pytest
import torch
from diffusers import (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
)

from core import sample_zoom_stack
from core.zoom.zoom_stack import consolidate, crop_centre, downsample, noise_gain, render_image

T = 1000
ALPHAS_CUMPROD = DDPMScheduler(num_train_timesteps=T).alphas_cumprod.double()
SHAPE = (3, 16, 16)
N, P = 3, 2

DETERMINISTIC = {
    "ddim": lambda: DDIMScheduler(num_train_timesteps=T),
    # a v-prediction model's scheduler with x0 clipping on: the sampler must still hand it ε
    # and must not clip the consolidated x0 (the targets below reach ±2, like latents)
    "ddim-v-clip": lambda: DDIMScheduler(num_train_timesteps=T, prediction_type="v_prediction",
                                         clip_sample=True),
    "dpmsolver++": lambda: DPMSolverMultistepScheduler(num_train_timesteps=T,
                                                       algorithm_type="dpmsolver++"),
    "euler": lambda: EulerDiscreteScheduler(num_train_timesteps=T),
    "euler-leading": lambda: EulerDiscreteScheduler(num_train_timesteps=T, steps_offset=1,
                                                    timestep_spacing="leading"),
}


def consistent_target(seed=4, scale=2.0):
    """A zoom-consistent x0 for N levels, values in [-scale, scale]."""
    g = torch.Generator().manual_seed(seed)
    return render_image((torch.rand(N, *SHAPE, generator=g) * 2 - 1) * scale, P)


class FixedTarget:
    """A denoiser that always answers ``target[levels]`` and records the noise it was shown:
    ε = (z_t − √ᾱ_t x0) / √(1 − ᾱ_t), the ε of z_t's variance-preserving form."""

    def __init__(self, target):
        self.target, self.eps, self.z, self.t = target, [], [], []

    def __call__(self, z, t, levels):
        ab = ALPHAS_CUMPROD[t]
        x0 = self.target[levels]
        self.eps.append((z.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt())
        self.z.append(z.clone())
        self.t.append(t)
        return x0


def run(denoiser, scheduler, steps=10, seed=0, **kw):
    return sample_zoom_stack(denoiser, scheduler, num_levels=N, zoom=P, shape=SHAPE,
                             num_inference_steps=steps,
                             generator=torch.Generator().manual_seed(seed), **kw)


def zoom_consistent_noise(eps, atol):
    """Π_noise structure: the centre of ε_i is gain · D_p(ε_{i+1}) at every level."""
    g = noise_gain(P)
    return all(torch.allclose(crop_centre(eps[i], P), g * downsample(eps[i + 1], P), atol=atol)
               for i in range(len(eps) - 1))


def consistent(images, atol=1e-5):
    return all(torch.allclose(crop_centre(images[i], P), downsample(images[i + 1], P), atol=atol)
               for i in range(len(images) - 1))


@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_schedulers_keep_the_implied_noise_constant(name):
    # With x0 fixed, a deterministic sampler moves z_t along α_t x0 + σ_t ε with one ε: the
    # noise the denoiser sees at every step is the first one, and that is unit Gaussian noise.
    den = FixedTarget(consistent_target())
    out = run(den, DETERMINISTIC[name]())
    first = den.eps[0]
    assert abs(float(first.std()) - 1) < 0.1 and abs(float(first.mean())) < 0.1
    drift = [float((e - first).abs().max()) for e in den.eps]
    assert max(drift) < 1e-3, drift
    assert den.t == sorted(den.t, reverse=True) and len(den.t) == 10
    torch.testing.assert_close(out.images, den.target, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shared_noise", [True, False])
def test_ddpm_shows_the_denoiser_zoom_consistent_unit_noise_at_every_step(shared_noise):
    # DDPM with x0 fixed: z_{t-1} ~ q(z_{t-1} | x0), so the implied ε is fresh unit noise each
    # step; with shared (Π_noise) noise it has the zoom-consistent structure at every step.
    # (x0 = 0: a consistent image is not Π_noise-consistent, and z_T carries a trace of it.)
    den = FixedTarget(torch.zeros(N, *SHAPE))
    run(den, DDPMScheduler(num_train_timesteps=T, clip_sample=False), steps=8,
        shared_noise=shared_noise)
    for e in den.eps:
        assert abs(float(e.std()) - 1) < 0.1
    assert zoom_consistent_noise(den.eps[0], 1e-4)  # z_T: consistent by default
    later = [zoom_consistent_noise(e, 1e-3) for e in den.eps[1:]]
    assert all(later) if shared_noise else not any(later)
    assert float((den.eps[1] - den.eps[0]).std()) > 0.1  # fresh noise, not the same ε


@pytest.mark.parametrize("scheduler", [DDPMScheduler, DDIMScheduler])
def test_first_z_T_is_zoom_consistent_by_default_and_iid_on_request(scheduler):
    for consistent_init, expected in ((True, True), (False, False)):
        den = FixedTarget(consistent_target())
        run(den, scheduler(num_train_timesteps=T), steps=2, consistent_init=consistent_init)
        z_T = den.z[0]
        assert abs(float(z_T.std()) - 1) < 0.1
        assert zoom_consistent_noise(z_T, 1e-5) is expected
    # independent sampling has no zoom stack: its z_T is i.i.d. whatever the flag says
    den = FixedTarget(consistent_target())
    run(den, scheduler(num_train_timesteps=T), steps=2, mode="independent")
    assert not zoom_consistent_noise(den.z[0], 1e-2)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "euler"])
@pytest.mark.parametrize("mode", ["joint", "iterative"])
def test_inconsistent_denoiser_still_yields_consistent_images(name, mode):
    # A model whose levels disagree: the stack must still render consistent images, and the
    # result's images are what its layers render to.
    g = torch.Generator().manual_seed(7)
    target = torch.rand(N, *SHAPE, generator=g) * 2 - 1
    assert not consistent(target, atol=0.05)
    sched = {"ddpm": lambda: DDPMScheduler(num_train_timesteps=T, clip_sample=False),
             "ddim": lambda: DDIMScheduler(num_train_timesteps=T),
             "euler": lambda: EulerDiscreteScheduler(num_train_timesteps=T)}[name]()
    out = run(lambda z, t, lv: target[lv], sched, steps=4, mode=mode)
    assert consistent(out.images)
    torch.testing.assert_close(out.images, render_image(out.layers, P), atol=1e-6, rtol=0)
    if mode == "joint":
        # a fixed estimate is consolidated every step: the result is its consolidation,
        # which keeps what the levels agree on and differs from every raw level
        torch.testing.assert_close(out.images, consolidate(target, P), atol=1e-5, rtol=0)
        assert (out.images - target).abs().amax(dim=(1, 2, 3)).min() > 0.05


def test_independent_mode_hands_back_the_raw_estimates():
    g = torch.Generator().manual_seed(8)
    target = torch.rand(N, *SHAPE, generator=g) * 2 - 1
    out = run(lambda z, t, lv: target[lv], DDIMScheduler(num_train_timesteps=T), steps=3,
              mode="independent")
    torch.testing.assert_close(out.images, target, atol=1e-5, rtol=0)


def test_the_blending_switch_reaches_the_stack():
    g = torch.Generator().manual_seed(9)
    target = torch.rand(N, *SHAPE, generator=g) * 2 - 1
    out = run(lambda z, t, lv: target[lv], DDIMScheduler(num_train_timesteps=T), steps=3,
              blending="naive")
    naive = consolidate(target, P, "naive")
    torch.testing.assert_close(out.images, naive, atol=1e-5, rtol=0)
    assert (naive - consolidate(target, P)).abs().max() > 0.05


@pytest.mark.parametrize("mode", ["joint", "iterative"])
def test_each_update_moves_towards_the_rendered_stack(mode):
    # DDIM (η = 0) takes z_k to z_{k+1} = α' x + σ' (z_k − α x)/σ: the clean image x each
    # update used can be read back from two consecutive inputs of the denoiser. It must be
    # the stack's render (Alg. 2 line 5), not the raw per-level estimates.
    g = torch.Generator().manual_seed(11)
    target = torch.rand(N, *SHAPE, generator=g) * 2 - 1
    seen = []

    def denoiser(z, t, levels):
        seen.append((t, levels.tolist(), z.double().clone()))
        return target[levels]

    run(denoiser, DDIMScheduler(num_train_timesteps=T), steps=4, mode=mode)
    if mode == "iterative":  # one call per level, finest first: regroup per step
        steps = [seen[k:k + N] for k in range(0, len(seen), N)]
        seen = [(s[0][0], None, torch.cat([z for _, _, z in reversed(s)])) for s in steps]
    expected = consolidate(target, P) if mode == "joint" else render_image(target, P)
    for (t0, _, z0), (t1, _, z1) in zip(seen, seen[1:]):
        a0, s0 = ALPHAS_CUMPROD[t0].sqrt(), (1 - ALPHAS_CUMPROD[t0]).sqrt()
        a1, s1 = ALPHAS_CUMPROD[t1].sqrt(), (1 - ALPHAS_CUMPROD[t1]).sqrt()
        x = (z1 - s1 / s0 * z0) / (a1 - s1 * a0 / s0)
        torch.testing.assert_close(x.float(), expected, atol=1e-3, rtol=0)
