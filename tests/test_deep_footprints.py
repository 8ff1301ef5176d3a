"""Deep observations (core.zoom.footprint_area): the guidance loss sees a known level at every
depth down to one pixel, also where its footprint straddles pixels; and the analytic scene
priors of different structure (core.zoom.analytic.SCENE_PRIORS)."""

import pytest
import torch
from diffusers import DDPMScheduler

from core.zoom.analytic import (MixtureDenoiser, SCENE_PRIORS, make_close_scenes,
                                make_deep_scenes)
from core.zoom.footprint_area import footprint_rect, guidance_depth, sample_area
from core.zoom.geometry import centre_box, max_observation_depth
from core.zoom.known import level_residuals, reconstruction_gradient
from core.zoom.zoom_stack import crop_centre, downsample, render_image

DDPM = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
SHAPE = (3, 64, 64)


def test_footprint_rect_centred_and_composed():
    # aligned depths: the centre box of ``centre_box``
    for d in (1, 2):
        top, left, h, w = footprint_rect(64, 32, 4, d)
        assert (top, left, h, w) == tuple(float(v) for v in centre_box(64, 32, 4**d))
    # depth 3 at 64 px, p = 4: the 1-pixel square centred on the corner of the centre pixels
    assert footprint_rect(64, 64, 4, 3) == (31.5, 31.5, 1.0, 1.0)
    # off-centre footprints (left, top) per transition compose as Σ offset_j / p^j
    rect = footprint_rect(64, 64, 4, 2, footprints=[(0, 8), (40, 4), (0, 0)], level=0)
    assert rect == (8 + 4 / 4, 0 + 40 / 4, 4.0, 4.0)
    rect1 = footprint_rect(64, 64, 4, 1, footprints=[(0, 8), (40, 4)], level=1)
    assert rect1 == (4.0, 40.0, 16.0, 16.0)
    assert guidance_depth(64, 64, 4) == 3 > max_observation_depth(64, 64, 4) == 2


def test_sample_area_is_the_crop_when_aligned_and_bilinear_when_straddling():
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    assert torch.allclose(sample_area(x, footprint_rect(64, 64, 4, 1), (16, 16)),
                          crop_centre(x, 4), atol=1e-12)
    one = sample_area(x, (31.5, 31.5, 1.0, 1.0), (1, 1))
    assert torch.allclose(one[..., 0, 0], x[..., 31:33, 31:33].mean(dim=(-2, -1)), atol=1e-12)
    # a box of 2 x 2 output pixels over 4 x 4 input pixels is the 2 x 2 block mean
    two = sample_area(x, (30.0, 30.0, 4.0, 4.0), (2, 2))
    assert torch.allclose(two[..., 1, 0], x[..., 32:34, 30:32].mean(dim=(-2, -1)), atol=1e-12)
    # differentiable and linear: the weights of one output pixel sum to one
    ones = torch.ones(1, 64, 64, requires_grad=True)
    sample_area(ones, (31.25, 10.5, 3.0, 5.0), (3, 5)).sum().backward()
    assert abs(float(ones.grad.sum()) - 15.0) < 1e-5


def test_outermost_level_sees_a_deep_known_level():
    scenes = make_deep_scenes(3, 4, SHAPE, 4, torch.Generator().manual_seed(0))
    known = scenes[1, 3]
    levels = torch.arange(4)
    terms = level_residuals(scenes[0], levels, known, 3, 4)
    assert all(t is not None for t in terms)  # depth 3 (1 pixel, straddling) included
    expected = scenes[0, 0, :, 31:33, 31:33].mean(dim=(-2, -1)) - downsample(known, 4, times=3)[:, 0, 0]
    assert torch.allclose(terms[0][:, 0, 0], expected, atol=1e-6)
    # zooming in: the known outermost level seen from level 3 through D_p^3
    up = level_residuals(scenes[0], levels, scenes[0, 0], 0, 4)
    assert up[3].shape == (3, 1, 1)


def test_reconstruction_guidance_moves_the_outermost_level():
    # before: no term reached level 0 (depth 3 is not pixel-aligned), its direction was zero
    scenes = make_deep_scenes(3, 4, SHAPE, 4, torch.Generator().manual_seed(0))
    den = MixtureDenoiser(scenes, DDPM.alphas_cumprod)
    z = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1)) * 0.9
    z.requires_grad_(True)
    with torch.enable_grad():
        x0 = den(z, 700, torch.arange(4))
        g = reconstruction_gradient(x0, z, torch.arange(4), {3: scenes[2, 3]}, 4)
    assert float(g[0].abs().max()) > 0
    assert torch.isfinite(g).all()


def test_deep_prior_only_the_deepest_level_tells_scenes_apart():
    scenes = make_deep_scenes(3, 4, SHAPE, 4, torch.Generator().manual_seed(0))
    top, left, h, w = centre_box(64, 64, 4)
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[top:top + h, left:left + w] = False
    for level in (1, 2):  # the intermediate levels agree outside their centres
        assert torch.equal(scenes[0, level][:, outside], scenes[1, level][:, outside])
    assert float((scenes[0, 0] - scenes[1, 0])[:, outside].abs().mean()) > 0.1  # level 0 differs
    colours = scenes[:, 3].mean(dim=(-2, -1))  # the deepest level's colour is the scene's
    assert float(torch.cdist(colours, colours).topk(2, largest=False).values[:, 1].min()) > 0.1
    for k in range(3):  # consistent stacks
        assert torch.allclose(render_image(scenes[k], 4), scenes[k], atol=1e-6)
    with pytest.raises(ValueError):
        make_deep_scenes(3, 2, SHAPE, 4)


def test_close_prior_has_close_mean_colours():
    scenes = make_close_scenes(3, 3, (3, 32, 32), 2, torch.Generator().manual_seed(0))
    means = scenes.mean(dim=(-2, -1))  # (K, N, C)
    assert float((means - means.mean(0)).abs().max()) < 0.1
    assert float((scenes[0] - scenes[1]).abs().mean()) > 0.1  # the structure differs
    assert set(SCENE_PRIORS) >= {"independent", "deep", "close"}
