"""Chain terms of the reconstruction guidance (core.zoom.known.chain_residuals): an unknown
level coarser than a known one is pulled towards the next finer level's consolidated estimate
through its whole aligned footprint, so zooming out of a deep known level the outermost level
follows the intermediate levels' choice instead of deciding alone (docs/sampler.md, "Known
levels")."""

import torch
from diffusers import DDPMScheduler

from core.zoom.analytic import MixtureDenoiser, make_scenes, nearest_scene_error
from core.zoom.known import (chain_residuals, guidance_loss, impose_known, known_loss,
                             reconstruction_gradient)
from core.zoom.sampler import sample_zoom_stack
from core.zoom.zoom_stack import crop_centre, downsample, render_image

DDPM = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)


def _stack(n=4, p=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return render_image(torch.rand(n, 3, size, size, generator=g), p)


def test_chain_residual_is_the_centre_against_the_next_consolidated_level():
    images = _stack()
    x = images + 0.3 * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    known = {3: images[3]}
    terms = chain_residuals(x, torch.arange(4), known, 2)
    target = impose_known(x, known, 2)  # every centre shows the finer levels, level 3 known
    for i in (0, 1):
        expected = crop_centre(x[i], 2) - downsample(target[i + 1], 2)
        torch.testing.assert_close(terms[i], expected, atol=1e-6, rtol=0)
    assert terms[2] is None and terms[3] is None  # level 2's finer level is known; 3 is known
    # zooming in (the known level is the coarsest) there is nothing to hand on
    assert chain_residuals(x, torch.arange(4), {0: images[0]}, 2) == [None] * 4
    # a batch that is not the whole stack (iterative mode: one level) has no target
    assert chain_residuals(x[:1], torch.tensor([0]), known, 2) == [None]
    # a consistent stack that shows the known image has no residual at all
    assert all(float(t.abs().max()) < 1e-6 for t in chain_residuals(images, torch.arange(4),
                                                                     known, 2) if t is not None)


def test_guidance_direction_matches_the_reference_formula():
    # x̂ = z (identity denoiser): row i's direction is ∇‖r_i‖² / ‖r_i‖ with r_i its known-level
    # terms and its chain term; the chain target is held fixed (no gradient through it)
    images = _stack()
    known = {3: images[3]}
    z = (images + 0.5 * torch.randn(images.shape, generator=torch.Generator().manual_seed(2)))
    z.requires_grad_(True)
    got = reconstruction_gradient(z, z, torch.arange(4), known, 2)
    target = impose_known(z.detach(), known, 2)
    for i in range(3):
        zi = z.detach()[i].clone().requires_grad_(True)
        loss = ((crop_centre(zi, 2 ** (3 - i)) - downsample(images[3], 2, times=3 - i)) ** 2).sum()
        if i < 2:
            loss = loss + ((crop_centre(zi, 2) - downsample(target[i + 1], 2)) ** 2).sum()
        (g,) = torch.autograd.grad(loss, zi)
        torch.testing.assert_close(got[i], g / loss.detach().sqrt(), atol=1e-5, rtol=1e-5)
    # the loss per row is the known-level loss plus the chain terms
    extra = guidance_loss(z.detach(), torch.arange(4), known, 2) - known_loss(
        z.detach(), torch.arange(4), known, 2)
    assert float(extra[0]) > 0 and float(extra[1]) > 0 and float(extra[2].abs()) == 0


def test_zoom_out_at_p4_lands_the_outermost_level_on_the_known_scene():
    # 64 px, p = 4, N = 4, finest known: level 0 sees level 3 only as one straddling pixel.
    # Without the chain terms these four seeds all land level 0 on another scene.
    shape = (3, 64, 64)
    scenes = make_scenes(3, 4, shape, 4, torch.Generator().manual_seed(0), detail=4)
    den = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    for seed in range(4):
        scene = seed % 3
        out = sample_zoom_stack(den, DDPM, num_levels=4, zoom=4, shape=shape,
                                num_inference_steps=50,
                                generator=torch.Generator().manual_seed(seed),
                                known={3: scenes[scene, 3]})
        error, nearest = nearest_scene_error(out.images, scenes)
        assert nearest == scene and error < 0.02, (seed, nearest, error)


def test_micro_batched_guidance_gives_the_whole_batch_result():
    # levels_per_call = 1: one forward + backward per level, finest first, so each level's
    # chain term reads this step's finer estimates; on a Gaussian field (no scene to snap to)
    # any difference in the direction shows in the sample
    from core.zoom.analytic import GaussianFieldDenoiser

    shape = (3, 16, 16)
    inner = GaussianFieldDenoiser(shape, DDPM.alphas_cumprod)
    known = inner.sample_prior(1, torch.Generator().manual_seed(5))[0]

    def chunked(z, t, levels):
        return inner(z, t, levels)

    chunked.levels_per_call = 1
    kw = dict(num_levels=4, zoom=2, shape=shape, num_inference_steps=6, known={3: known},
              known_guidance="reconstruction")
    whole = sample_zoom_stack(inner, DDPM, generator=torch.Generator().manual_seed(3), **kw)
    parts = sample_zoom_stack(chunked, DDPM, generator=torch.Generator().manual_seed(3), **kw)
    torch.testing.assert_close(parts.images, whole.images, rtol=0, atol=1e-5)
