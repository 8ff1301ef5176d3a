"""Known levels (sample_zoom_stack(known=...)) on the analytic mixture model: the pinned level
is held exactly and every other level lands on the pinned level's scene, zooming in, out and
from the middle, at p = 2 and p = 4; plus the pure functions of core.zoom.known."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

from core.zoom.analytic import MixtureDenoiser, make_scenes, nearest_scene_error
from core.errors import InvalidInputError
from core.zoom.known import (
    check_known, impose_known, known_loss, make_consistent, needs_reconstruction,
)
from core.zoom.sampler import photo_guidance, sample_zoom_stack
from core.zoom.zoom_stack import crop_centre, downsample, render_image

DDPM = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
SHAPE = (3, 32, 32)
CONFIGS = {2: 4, 4: 3}  # zoom -> levels (as in the ablation)


@pytest.fixture(scope="module")
def scenes():
    return {p: make_scenes(3, n, SHAPE, p, torch.Generator().manual_seed(0), detail=8)
            for p, n in CONFIGS.items()}


def run(scenes, p, known_at, seed, scheduler=DDPM, steps=50, **kw):
    n = CONFIGS[p]
    k = known_at % n
    scene = seed % 3
    out = sample_zoom_stack(MixtureDenoiser(scenes[p], DDPM.alphas_cumprod), scheduler,
                            num_levels=n, zoom=p, shape=SHAPE, num_inference_steps=steps,
                            generator=torch.Generator().manual_seed(seed),
                            known={known_at: scenes[p][scene, k]}, **kw)
    error, nearest = nearest_scene_error(out.images, scenes[p])
    held = float((out.images[k] - scenes[p][scene, k]).abs().max())
    return out, error < 0.02 and nearest == scene, held


def consistent(images, p):
    return float((crop_centre(images[:-1], p) - downsample(images[1:], p)).abs().max()) < 1e-5


@pytest.mark.parametrize("p", [2, 4])
@pytest.mark.parametrize("where, known_at", [("in", 0), ("out", -1), ("middle", 1)])
def test_pinned_level_is_held_and_the_rest_lands_on_its_scene(scenes, p, where, known_at):
    hits = 0
    for seed in range(2):  # 24 seeds each: docs/sampler.md "Known levels"
        out, hit, held = run(scenes, p, known_at, seed)
        assert held <= 1e-6, held  # exact (required: 0.02)
        assert consistent(out.images, p)
        hits += hit
    assert hits == 2, (where, p)


def test_photo_loss_alone_fails_zooming_out_reconstruction_succeeds(scenes):
    # the method choice in docs/sampler.md: x̂-side photo loss cannot pull coarser levels over
    # (24 seeds, docs/sampler.md: photo loss 5/24, reconstruction 23/24 at p = 4)
    photo = [run(scenes, 4, -1, s, known_guidance="photo")[1] for s in range(6)]
    recon = [run(scenes, 4, -1, s, known_guidance="reconstruction")[1] for s in range(6)]
    assert sum(recon) == 6 and sum(photo) <= 2, (photo, recon)


@pytest.mark.parametrize("scheduler", [
    DDIMScheduler(num_train_timesteps=1000),
    DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++"),
    EulerDiscreteScheduler(num_train_timesteps=1000),
], ids=["ddim", "dpmsolver++", "euler"])
def test_known_levels_with_deterministic_schedulers(scenes, scheduler):
    results = [run(scenes, 2, known_at, seed, scheduler=scheduler, steps=30)
               for known_at, seed in ((-1, 0), (1, 1), (0, 2))]
    for out, _, held in results:
        assert held <= 1e-6 and consistent(out.images, 2)
    assert sum(hit for _, hit, _ in results) >= 2


def test_iterative_mode_holds_known_levels_independent_refuses(scenes):
    out, _, held = run(scenes, 2, -1, 0, mode="iterative", steps=20)
    assert held <= 1e-6 and consistent(out.images, 2)
    with pytest.raises(InvalidInputError, match="coupled mode"):
        run(scenes, 2, -1, 0, mode="independent", steps=2)


def test_non_differentiable_denoiser_needs_photo_guidance(scenes):
    inner = MixtureDenoiser(scenes[2], DDPM.alphas_cumprod)

    @torch.no_grad()
    def frozen(z, t, levels):
        return inner(z, t, levels)

    kw = dict(num_levels=4, zoom=2, shape=SHAPE, num_inference_steps=3,
              known={3: scenes[2][0, 3]})
    with pytest.raises(InvalidInputError, match="not differentiable"):
        sample_zoom_stack(frozen, DDPM, **kw)
    out = sample_zoom_stack(frozen, DDPM, known_guidance="photo", **kw)  # the weaker method runs
    assert torch.equal(out.images[3], scenes[2][0, 3])
    # zooming in needs no gradient: auto picks the photo loss
    out = sample_zoom_stack(frozen, DDPM, **{**kw, "known": {0: scenes[2][1, 0]}})
    assert torch.equal(out.images[0], scenes[2][1, 0])


def test_bad_known_input_is_one_line(scenes):
    s = scenes[2]
    kw = dict(num_levels=4, zoom=2, shape=SHAPE, num_inference_steps=2)
    den = MixtureDenoiser(s, DDPM.alphas_cumprod)
    cases = [({4: s[0, 0]}, "known level 4 is out of range"),
             ({-5: s[0, 0]}, "out of range"),
             ({1: s[0, 0, :, :16]}, "must have shape"),
             ({0: s[0, 0], 2: s[1, 2]}, "levels 0 and 2 disagree"),
             ({1: s[0, 1] * float("nan")}, "NaN")]
    for known, message in cases:
        with pytest.raises(InvalidInputError, match=message) as info:
            sample_zoom_stack(den, DDPM, known=known, **kw)
        assert "\n" not in str(info.value)
    with pytest.raises(InvalidInputError, match="photo level 4"):
        sample_zoom_stack(den, DDPM, photo=s[0, 0], photo_level=4, **kw)
    # two levels of one scene agree, also when not adjacent
    assert sorted(check_known({0: s[0, 0], 3: s[0, 3], -2: s[0, 2]}, 4, SHAPE, 2)) == [0, 2, 3]


# ----------------------------------------------------------------------- pure functions
def _rand(n, seed, shape=SHAPE):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("p, known_levels", [
    (2, [0]), (2, [3]), (2, [1]), (2, [1, 2]), (2, [0, 2, 3]), (4, [1]), (4, [0, 2]),
])
def test_impose_known_is_exact_and_consistent(p, known_levels):
    truth = render_image(_rand(4, 1), p)          # a consistent stack supplies the known images
    known = {k: truth[k] for k in known_levels}
    start = render_image(_rand(4, 2), p)          # some other consistent stack
    out = impose_known(start, known, p)
    for k in known_levels:
        assert torch.equal(out[k], truth[k])
    assert consistent(out, p)
    # pixels: the same, and every pixel stays in [0, 1]
    out = impose_known(start, known, p, bounds=(0.0, 1.0))
    assert out.min() >= 0 and out.max() <= 1 and consistent(out, p)
    assert all(float((out[k] - truth[k]).abs().max()) < 1e-6 for k in known_levels)


def test_make_consistent_keeps_the_finest_and_the_outside():
    truth = render_image(_rand(3, 3), 2)
    noisy = {0: truth[0] + 0.01, 2: truth[2]}
    fixed = make_consistent(noisy, 2)
    assert torch.equal(fixed[2], truth[2])
    assert torch.allclose(crop_centre(fixed[0], 4), downsample(truth[2], 2, times=2))
    assert torch.equal(fixed[0][:, 0], noisy[0][:, 0])  # outside the footprint: untouched
    check_known(fixed, 3, SHAPE, 2, tolerance=1e-6)


def test_known_loss_and_photo_at_a_level():
    truth = render_image(_rand(4, 4), 2)
    levels = torch.arange(4)
    assert float(known_loss(truth, levels, {3: truth[3]}, 2).abs().max()) < 1e-9
    x0 = torch.zeros(4, *SHAPE)
    before = known_loss(x0, levels, {3: truth[3]}, 2)
    after = known_loss(photo_guidance(x0, levels, truth[3], 2, photo_level=3), levels,
                       {3: truth[3]}, 2)
    assert (after < 0.5 * before).all()  # every level moves towards the finest photo
    assert needs_reconstruction({3: 0}, 4) and needs_reconstruction({-1: 0}, 4)
    assert not needs_reconstruction({0: 0, 1: 0}, 4) and not needs_reconstruction({}, 4)


# ------------------------------------------------------- the pure functions, row by row
def _consistent_images(n, p=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return render_image(torch.rand(n, 3, size, size, generator=g), p)


def test_reconstruction_gradient_is_normalised_per_row():
    # x̂ = z (identity denoiser), one known level (the finest): each coarser row's residual is
    # a crop, so ∇‖r‖² / ‖r‖ = 2 r / ‖r‖ has norm exactly 2 whatever the residual's size
    from core.zoom.known import reconstruction_gradient

    images = _consistent_images(3)
    offsets = torch.tensor([1e-3, 1.0, 30.0]).view(3, 1, 1, 1)
    z = (images + offsets * torch.randn(images.shape, generator=torch.Generator().manual_seed(1)))
    z = z.requires_grad_(True)
    grad = reconstruction_gradient(z, z, torch.arange(3), {2: images[2]}, 2)
    norms = grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((3,), 2.0), atol=1e-3, rtol=1e-3)
    z2 = images.clone().requires_grad_(True)  # rows that already agree get no push
    assert float(reconstruction_gradient(z2, z2, torch.arange(3), {2: images[2]}, 2).abs().max()) == 0


def test_regenerating_a_middle_level_uses_reconstruction_guidance():
    images = _consistent_images(3)
    seen = []

    def denoiser(z, t, levels):
        seen.append((sorted(levels.tolist()), z.requires_grad))
        return z * 0.5

    def sample(known):
        seen.clear()
        sample_zoom_stack(denoiser, DDPM, num_levels=3, zoom=2, shape=SHAPE,
                          num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                          known=known)
        return any(grad for _, grad in seen)

    assert needs_reconstruction([0, 2], 3) and needs_reconstruction([2], 3)
    assert sample({0: images[0], 2: images[2]})  # level 1 is coarser than level 2: gradient
    assert sample({1: images[1]})                # zooming out of the middle
    assert not needs_reconstruction([0, 1], 3) and not sample({0: images[0]})  # zoom in: x̂ loss


def test_known_images_at_the_deepest_aligned_distance_must_agree():
    from core.zoom.geometry import max_observation_depth

    depth = max_observation_depth(32, 32, 2)
    images = _consistent_images(depth + 1)
    check_known({0: images[0], depth: images[depth]}, depth + 1, SHAPE, 2)  # they agree
    bad = images[depth].clone()
    bad[:, :16] = 1 - bad[:, :16]
    with pytest.raises(InvalidInputError, match=f"levels 0 and {depth} disagree"):
        check_known({0: images[0], depth: bad}, depth + 1, SHAPE, 2)


def test_make_consistent_makes_three_encoded_levels_agree_exactly():
    images = _consistent_images(3)
    g = torch.Generator().manual_seed(2)
    noisy = {k: images[k] + 0.01 * torch.randn(images[k].shape, generator=g) for k in range(3)}
    fixed = make_consistent(noisy, 2)
    torch.testing.assert_close(fixed[2], noisy[2], atol=0, rtol=0)  # the finest is kept
    for k in (0, 1):
        assert float((crop_centre(fixed[k], 2) - downsample(fixed[k + 1], 2)).abs().max()) < 1e-6


def test_reconstruction_guidance_runs_its_backward_pass_per_micro_batch(scenes):
    # each level's loss depends on its own x̂: one backward pass per micro-batch of levels gives
    # the same gradient while keeping only that micro-batch's activations
    p, n = 2, CONFIGS[2]
    inner = MixtureDenoiser(scenes[p], DDPM.alphas_cumprod)
    batches = []

    def chunked(z, t, levels):
        batches.append(len(levels))
        return inner(z, t, levels)

    chunked.levels_per_call = 1
    kw = dict(num_levels=n, zoom=p, shape=SHAPE, num_inference_steps=10,
              known={-1: scenes[p][1, n - 1]}, known_guidance="reconstruction")
    whole = sample_zoom_stack(inner, DDPM, generator=torch.Generator().manual_seed(3), **kw)
    parts = sample_zoom_stack(chunked, DDPM, generator=torch.Generator().manual_seed(3), **kw)
    assert set(batches) == {1} and len(batches) == 10 * n
    torch.testing.assert_close(parts.images, whole.images, rtol=0, atol=1e-5)
