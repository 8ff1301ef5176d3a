"""The joint sampler, checked with analytic denoisers whose right answer is known."""

import threading

import pytest
import torch
from diffusers import (
    DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
)

from core import Cancelled, sample_zoom_stack
from core.zoom.analytic import (
    GaussianFieldDenoiser, MixtureDenoiser, detail_energy, make_scenes, nearest_scene_error,
    per_level_scene, seam_ratio,
)
from core.errors import ModelOutputError
from core.zoom.sampler import ddpm_update, photo_guidance
from core.zoom.zoom_stack import crop_centre, downsample, render_image

DDPM = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
SCHEDULERS = {
    "ddpm": DDPM,
    "ddim": DDIMScheduler(num_train_timesteps=1000),
    "dpmsolver++": DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++"),
    "euler": EulerDiscreteScheduler(num_train_timesteps=1000),
}
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def scenes():
    """K=3 smooth multi-scale scenes, N=4 levels, p=2 (content at every level)."""
    return make_scenes(3, 4, SHAPE, 2, torch.Generator().manual_seed(0), detail=8)


def run(denoiser, scheduler=DDPM, seed=0, steps=50, **kw):
    kw = {"num_levels": 4, "zoom": 2, "shape": SHAPE, **kw}
    return sample_zoom_stack(denoiser, scheduler, num_inference_steps=steps,
                             generator=torch.Generator().manual_seed(seed), **kw)


def consistent(images, zoom):
    return all(torch.allclose(crop_centre(images[i], zoom), downsample(images[i + 1], zoom),
                              atol=1e-5) for i in range(len(images) - 1))


def test_joint_sampling_lands_every_level_on_one_scene_independent_mixes(scenes):
    denoiser = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    seeds = range(16)
    joint = [nearest_scene_error(run(denoiser, seed=s).images, scenes)[0] for s in seeds]
    indep = [run(denoiser, seed=s, mode="independent").images for s in seeds]
    joint_hits = sum(e < 0.02 for e in joint)
    indep_hits = sum(nearest_scene_error(x, scenes)[0] < 0.02 for x in indep)
    # independent: every level is a clean sample of *some* scene, but they disagree
    per_level = [per_level_scene(x, scenes) for x in indep]
    assert all(((x[i] - scenes[k, i]).abs().max() < 0.02)
               for x, ks in zip(indep, per_level) for i, k in enumerate(ks))
    assert sum(len(set(ks)) > 1 for ks in per_level) >= 12
    assert joint_hits >= 11, joint
    assert indep_hits <= 3
    assert sum(joint) / len(joint) < 0.3 * sum(
        nearest_scene_error(x, scenes)[0] for x in indep) / len(indep)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++", "euler"])
def test_every_scheduler_reproduces_a_fixed_consistent_target(name):
    target = render_image(torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(4)) * 2 - 1, 2)
    calls = []

    def denoiser(z, t, levels):
        calls.append((t, levels.tolist()))
        assert isinstance(t, int) and z.shape == (3, *SHAPE)
        return target[levels]

    out = run(denoiser, SCHEDULERS[name], steps=8, num_levels=3)
    torch.testing.assert_close(out.images, target, atol=1e-5, rtol=0)
    assert len(calls) == 8 and all(lv == [0, 1, 2] for _, lv in calls)
    assert calls[0][0] > calls[-1][0]  # timesteps descend


@pytest.mark.parametrize("name", ["ddim", "dpmsolver++", "euler"])
def test_deterministic_schedulers_land_on_one_scene(scenes, name):
    denoiser = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    errors = [nearest_scene_error(run(denoiser, SCHEDULERS[name], seed=s, steps=30).images,
                                  scenes)[0] for s in range(8)]
    assert sum(e < 0.02 for e in errors) >= 4, errors


def test_ddpm_update_matches_diffusers_step():
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    sched.set_timesteps(20)
    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x0 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    t = int(sched.timesteps[5])
    ab_t = sched.alphas_cumprod[t].double()
    ab_prev = sched.alphas_cumprod[sched.previous_timestep(t)].double()
    eps = (z - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    ours = ddpm_update(z.double(), x0.double(), noise.double(), ab_t, ab_prev)
    theirs = sched.step(eps, t, z, generator=torch.Generator().manual_seed(3)).prev_sample
    torch.testing.assert_close(ours.float(), theirs, atol=1e-5, rtol=1e-5)


def test_same_seed_is_bit_identical_and_results_are_consistent(scenes):
    denoiser = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    for mode in ("joint", "iterative"):
        a, b = run(denoiser, seed=3, mode=mode), run(denoiser, seed=3, mode=mode)
        assert torch.equal(a.layers, b.layers) and torch.equal(a.images, b.images)
        assert consistent(a.images, 2)
    # another seed takes another path (the final scene may coincide, the path does not)
    first = {}
    for seed in (3, 4):
        run(denoiser, seed=seed, steps=5, callback=lambda s, n, layers, seed=seed:
            first.setdefault(seed, layers.clone()))
    assert not torch.equal(first[3], first[4])


def test_independent_mode_returns_raw_samples(scenes):
    out = run(MixtureDenoiser(scenes, DDPM.alphas_cumprod), mode="independent", seed=1)
    assert torch.equal(out.images, out.layers)
    assert not consistent(out.images, 2)


def test_iterative_mode_steps_one_level_at_a_time(scenes):
    seen = []
    inner = MixtureDenoiser(scenes, DDPM.alphas_cumprod)

    def denoiser(z, t, levels):
        seen.append(levels.tolist())
        return inner(z, t, levels)

    run(denoiser, mode="iterative", steps=3)
    assert seen == [[3], [2], [1], [0]] * 3


def test_photo_zoom_follows_the_photo(scenes):
    denoiser = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    for k in range(3):
        out = run(denoiser, seed=k, photo=scenes[k, 0])
        error, nearest = nearest_scene_error(out.images, scenes)
        assert nearest == k and error < 0.05


def test_photo_guidance_reduces_the_photo_loss_down_to_one_pixel():
    photo = torch.rand(3, 8, 8) * 2 - 1
    x0 = torch.zeros(4, 3, 8, 8)
    levels = torch.arange(4)
    out = photo_guidance(x0, levels, photo, 2)

    def loss(x, i):
        return float(((downsample(x[i], 2, times=i) - crop_centre(photo, 2**i)) ** 2).sum())

    for i in range(3):
        assert loss(out, i) < 0.5 * loss(x0, i)
    # 8x8 at p=2: level 3's footprint in the photo is the 1-pixel square straddling its four
    # centre pixels; it is sampled by area (their mean), and D^3 of level 3 moves towards it
    centre = photo[:, 3:5, 3:5].mean(dim=(-2, -1))
    before = float(((downsample(x0[3], 2, times=3)[:, 0, 0] - centre) ** 2).sum())
    after = float(((downsample(out[3], 2, times=3)[:, 0, 0] - centre) ** 2).sum())
    assert after < 0.5 * before


def test_callback_and_cancel(scenes):
    denoiser = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    steps = []
    run(denoiser, steps=5, callback=lambda s, total, layers: steps.append((s, total, layers.shape)))
    assert steps == [(s, 5, (4, *SHAPE)) for s in range(1, 6)]

    stop = threading.Event()
    seen = []

    def callback(step, total, layers):
        seen.append(step)
        if step == 2:
            stop.set()

    with pytest.raises(Cancelled):
        run(denoiser, steps=10, callback=callback, cancel=stop)
    assert seen == [1, 2]
    with pytest.raises(Cancelled):
        run(denoiser, steps=10, cancel=lambda: True, mode="iterative")


def test_bad_input_is_named(scenes):
    good = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    with pytest.raises(ValueError, match="power of two"):
        run(good, zoom=3)
    with pytest.raises(ValueError, match="num_levels"):
        run(good, num_levels=0)
    with pytest.raises(ValueError, match="height 30"):
        run(good, shape=(3, 30, 32))
    with pytest.raises(ValueError, match="photo must have shape"):
        run(good, photo=torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        run(good, mode="parallel")
    with pytest.raises(ValueError, match="num_inference_steps"):
        run(good, steps=0)
    with pytest.raises(ModelOutputError, match="shape"):
        run(lambda z, t, lv: z[:, :1], steps=2)
    with pytest.raises(ModelOutputError, match="NaN"):
        run(lambda z, t, lv: z * float("nan"), steps=2)


def test_as_many_steps_as_training_steps_with_leading_spacing():
    # SD's scheduler config ("leading", steps_offset=1) yields t = 1000 at 1000 steps.
    sched = DDPMScheduler(num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    target = render_image(torch.zeros(2, 1, 8, 8), 2)
    seen = []

    def denoiser(z, t, lv):
        seen.append(t)
        return target[lv]

    out = sample_zoom_stack(denoiser, sched, num_levels=2, zoom=2, shape=(1, 8, 8),
                            num_inference_steps=1000)
    assert max(seen) == 999 and torch.allclose(out.images, target)
    with pytest.raises(ValueError, match="at most the scheduler's 1000"):
        sample_zoom_stack(denoiser, sched, num_levels=2, zoom=2, shape=(1, 8, 8),
                          num_inference_steps=1001)


# --------------------------------------------- a continuous prior: blur and seams are measurable
GAUSS_SHAPE = (3, 64, 64)


@pytest.fixture(scope="module")
def gaussian():
    return GaussianFieldDenoiser(GAUSS_SHAPE, DDPM.alphas_cumprod)


def test_gaussian_field_denoiser_is_the_posterior_mean(gaussian):
    g = torch.Generator().manual_seed(0)
    x = gaussian.sample_prior(512, g)
    assert abs(float(x.std()) - 0.5) < 0.02
    t = 400
    ab = DDPM.alphas_cumprod[t]
    z = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=g)
    x_hat = gaussian(z, t, torch.zeros(len(z), dtype=torch.long))
    # orthogonality principle: the MMSE error is uncorrelated with the observation
    assert abs(float(((x - x_hat) * z).mean())) < 2e-3
    naive = z / ab.sqrt()
    assert abs(float(((x - naive) * z).mean())) > 0.1
    assert float((x - x_hat).pow(2).mean()) < float((x - naive).pow(2).mean())


def _runs(denoiser, seeds=6, **kw):
    return [run(denoiser, seed=s, num_levels=4, shape=GAUSS_SHAPE, **kw).images for s in range(seeds)]


def test_unshared_noise_and_naive_blending_blur_a_continuous_prior(gaussian):
    detail = {name: sum(map(detail_energy, _runs(gaussian, **kw)))
              for name, kw in [("joint", {}), ("random_noise", {"shared_noise": False}),
                               ("naive", {"blending": "naive"}),
                               ("independent", {"mode": "independent"})]}
    assert detail["joint"] > 0.9 * detail["independent"]  # joint keeps the detail
    assert detail["random_noise"] < 0.92 * detail["joint"]  # Sec. 5.3: unshared noise blurs
    assert detail["naive"] < 0.4 * detail["joint"]  # Sec. 5.3: naive blending blurs more


def test_iterative_leaves_seams_at_layer_boundaries_joint_does_not(gaussian):
    joint = sum(seam_ratio(x, 2) for x in _runs(gaussian)) / 6
    iterative = sum(seam_ratio(x, 2) for x in _runs(gaussian, mode="iterative")) / 6
    assert joint < 1.25 and iterative > 1.35
