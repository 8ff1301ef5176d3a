"""Few-step samplers: the renoise (LCM) update, stochastic solvers with Π_noise, on analytic scenes."""

import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler

from core.zoom.analytic import MixtureDenoiser, make_scenes, nearest_scene_error
from core.backends.schedulers import make_scheduler
from core.zoom.sampler import renoise_timesteps, sample_zoom_stack, update_renoise, update_rule
from core.zoom.zoom_stack import crop_centre, downsample, noise_gain, render_image

torch.set_num_threads(1)
# a model's saved config (no ``_use_default_values``: from_config would drop those keys)
DDPM_CONFIG = {k: v for k, v in DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
               .config.items() if not k.startswith("_")}
ALPHAS = DDPMScheduler.from_config(DDPM_CONFIG).alphas_cumprod
# p=4 needs 64 px so that the 1/16 overlap still tells the scenes apart (docs/sampler.md)
SETUPS = {2: dict(num_levels=4, shape=(3, 32, 32)), 4: dict(num_levels=3, shape=(3, 64, 64))}
# chance that independent levels agree: 1/27 (p=2), 1/9 (p=4); 8 seeds each
MIN_HITS = {2: 6, 4: 3}


@pytest.fixture(scope="module", params=[2, 4])
def mixture(request):
    p = request.param
    setup = SETUPS[p]
    scenes = make_scenes(3, setup["num_levels"], setup["shape"], p,
                         torch.Generator().manual_seed(0), detail=8)
    return p, setup, scenes


def success(denoiser_scenes, scheduler, steps, seeds):
    p, setup, scenes = denoiser_scenes
    denoiser = MixtureDenoiser(scenes, ALPHAS)
    errors = [nearest_scene_error(sample_zoom_stack(
        denoiser, scheduler, zoom=p, num_inference_steps=steps,
        generator=torch.Generator().manual_seed(s), **setup).images, scenes)[0]
        for s in range(seeds)]
    return sum(e < 0.02 for e in errors)


def test_plain_diffusers_lcm_scheduler_runs_the_renoise_rule_with_zoom_consistent_noise():
    sched = LCMScheduler.from_config(DDPM_CONFIG)
    assert update_rule(sched) is update_renoise
    target = render_image(torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1, 2)
    seen = []

    def denoiser(z, t, levels):
        seen.append((t, z.clone()))
        return target[levels]

    torch.manual_seed(0)
    global_rng = torch.random.get_rng_state()
    out = sample_zoom_stack(denoiser, sched, num_levels=3, zoom=2, shape=(3, 16, 16),
                            num_inference_steps=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), global_rng)  # never the scheduler's draw
    torch.testing.assert_close(out.images, target, atol=1e-6, rtol=0)
    ts = [t for t, _ in seen]
    assert ts == renoise_timesteps(sched.config, 8) and ts[0] == 999 and ts[-1] == 19
    g = noise_gain(2)
    for t, z in seen[1:]:  # z_t = α_t x + σ_t Π_noise(E): the noise part is zoom-consistent
        ab = float(ALPHAS[t])
        eps = (z - ab**0.5 * target) / (1 - ab) ** 0.5
        for i in range(2):
            torch.testing.assert_close(crop_centre(eps[i], 2), g * downsample(eps[i + 1], 2),
                                       atol=1e-4, rtol=0)
        assert 0.8 < float(eps.std()) < 1.2


def test_renoise_timesteps_start_at_T_and_end_near_0():
    cfg = LCMScheduler.from_config(DDPM_CONFIG).config
    assert renoise_timesteps(cfg, 1) == [999]
    assert renoise_timesteps(cfg, 4) == [999, 679, 339, 19]
    for n in (2, 8, 25, 50, 100, 256, 1000):
        ts = renoise_timesteps(cfg, n)
        assert len(ts) == n and ts[0] == 999 and ts[-1] <= 1000 / n
        assert all(a > b for a, b in zip(ts, ts[1:]))


def test_renoise_spacings_grid_and_even(monkeypatch):
    import core.zoom.sampler as sampler_mod

    cfg = LCMScheduler.from_config(DDPM_CONFIG).config
    assert renoise_timesteps(cfg, 8, "grid") == [999, 859, 719, 579, 439, 299, 159, 19]
    assert renoise_timesteps(cfg, 8, "even") == [999, 874, 749, 624, 499, 374, 249, 124]
    assert renoise_timesteps(cfg, 4, "even") == [999, 749, 499, 249]
    with pytest.raises(ValueError):
        renoise_timesteps(cfg, 8, "leading")
    for spacing in ("grid", "even"):  # the sampler runs the module's spacing
        monkeypatch.setattr(sampler_mod, "RENOISE_SPACING", spacing)
        seen = []
        sample_zoom_stack(lambda z, t, lv: seen.append(t) or torch.zeros_like(z),
                          LCMScheduler.from_config(DDPM_CONFIG), num_levels=2, zoom=2,
                          shape=(1, 8, 8), num_inference_steps=8)
        assert seen == renoise_timesteps(cfg, 8, spacing)


def test_stochastic_dpmsolver_takes_pi_noise_not_its_own_draw():
    target = render_image(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)), 2)
    torch.manual_seed(0)
    global_rng = torch.random.get_rng_state()
    sched = make_scheduler("sde-dpmsolver++", DDPM_CONFIG)
    runs = [sample_zoom_stack(lambda z, t, lv: target[lv] + 0.1 * z, sched, num_levels=2,
                              zoom=2, shape=(1, 8, 8), num_inference_steps=10,
                              generator=torch.Generator().manual_seed(s)).layers for s in (0, 0, 1)]
    assert torch.equal(torch.random.get_rng_state(), global_rng)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_lcm_8_steps_lands_every_level_on_one_scene(mixture):
    hits = success(mixture, LCMScheduler.from_config(DDPM_CONFIG), 8, 8)
    assert hits >= MIN_HITS[mixture[0]], hits


def test_dpmsolver_20_steps_lands_every_level_on_one_scene(mixture):
    hits = success(mixture, make_scheduler("dpmsolver++", DDPM_CONFIG), 20, 8)
    assert hits >= MIN_HITS[mixture[0]], hits
