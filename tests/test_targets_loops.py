"""Off-centre footprints (issue 19) and loops (issue 20): geometry, exactness of Π_image /
Π_noise / blending at offsets and on the cycle, and bit-identity of the centred default."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import InvalidInputError
from core.zoom.cycle_noise import chain_pixels
from core.zoom.geometry import (
    centred_footprint, check_footprints, footprint_offset, footprints_for_targets,
    max_observation_depth, observation_box, scale_footprints,
)
from core.zoom.zoom_stack import (
    BLEND_METHODS, blend, downsample, noise_gain, observe, render_image, render_noise,
)

REFERENCE = Path(__file__).parent / "data" / "centred_reference.pt"


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def region(x, footprint, p):
    left, top = footprint
    h, w = x.shape[-2] // p, x.shape[-1] // p
    return x[..., top:top + h, left:left + w]


# ------------------------------------------------------------------------------ geometry
def test_centred_default_and_footprint_checks_name_the_entry():
    assert centred_footprint(32, 64, 2) == (16, 8)
    assert check_footprints(None, 32, 64, 2, 4) == [(16, 8)] * 3
    assert check_footprints(None, 32, 64, 2, 4, loop=True) == [(16, 8)] * 4
    assert check_footprints([[0, 0], (32, 16.0)], 32, 64, 2, 3) == [(0, 0), (32, 16)]
    bad = {
        "need 2 footprints": [[0, 0]],
        "footprint 1 (level 2 inside level 1) must be whole pixels": [[0, 0], [1.5, 0]],
        "footprint 0 (level 1 inside level 0) [33, 0] leaves the frame": [[33, 0], [0, 0]],
        "footprint 1 (level 2 inside level 1) [0, -1] leaves the frame": [[0, 0], [0, -1]],
        "must be a [left, top] pair": [[0, 0], [1, 2, 3]],
    }
    for message, fps in bad.items():
        with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("(", r"\(")
                           .replace(")", r"\)")):
            check_footprints(fps, 32, 64, 2, 3)
    with pytest.raises(InvalidInputError, match="footprint 2 \\(level 0 inside level 2\\)"):
        check_footprints([[0, 0], [0, 0], [0, 17]], 32, 64, 2, 3, loop=True)
    with pytest.raises(InvalidInputError, match="whole pixels"):
        check_footprints([[0, True], [0, 0]], 32, 64, 2, 3)


def test_footprints_for_targets_centre_as_close_as_the_grid_allows():
    # 64 x 32 frame, p = 4: region 16 x 8
    assert footprints_for_targets([[0.5, 0.5]], 32, 64, 4) == [(24, 12)]
    assert footprints_for_targets([[0, 0], [1, 1]], 32, 64, 4) == [(0, 0), (48, 24)]
    # the eye at (0.3, 0.7): centre 19.2, 22.4 -> start 11.2 -> 11, 18.4 -> 18
    assert footprints_for_targets([[0.3, 0.7]], 32, 64, 4) == [(11, 18)]
    # on an 8 px grid: 11.2 -> 8, 18.4 -> 16; the last start on the grid is 48 / 24
    assert footprints_for_targets([[0.3, 0.7], [0.99, 0.99]], 32, 64, 4, grid=8) == [(8, 16), (48, 24)]
    # a tie between two grid points goes towards the centred footprint
    assert footprints_for_targets([[0.5, 0.5]], 32, 64, 4, grid=16) == [(16, 16)]
    for bad in ([[0.5]], [[0.5, 1.2]], [["a", 0]], [[0.5, None]], 7):
        with pytest.raises(InvalidInputError, match="target"):
            footprints_for_targets(bad, 32, 64, 4)
    with pytest.raises(InvalidInputError, match="grid"):
        footprints_for_targets([[0.5, 0.5]], 32, 64, 4, grid=0)
    assert scale_footprints([(8, 16)], 1, 8) == [(1, 2)]
    assert scale_footprints([(3, 5)], 4) == [(12, 20)]
    with pytest.raises(InvalidInputError, match="footprint 0 \\[12, 16\\].*multiple of 8"):
        scale_footprints([(12, 16)], 1, 8)


def test_composed_offsets_and_aligned_observations():
    fps = [(4, 6), (8, 2), (5, 3)]
    # level 2 inside level 0: f_0 + f_1/2
    assert footprint_offset(fps, 2, 0, 2) == (8, 7)
    assert observation_box(fps, 32, 32, 2, 0, 2) == (7, 8, 8, 8)
    # level 3 inside level 1 at depth 2: f_1 + f_2 / 2 = (8 + 2.5, 2 + 1.5): not aligned
    assert footprint_offset(fps, 2, 1, 2)[0].denominator == 2
    assert observation_box(fps, 32, 32, 2, 1, 2) is None
    assert observation_box(fps, 32, 32, 2, 1, 3) is None  # past the finest level
    assert observation_box(fps, 32, 32, 2, 1, 3, loop=False) is None
    # on a loop the chain wraps: level 0 inside level 2 is footprint 2 (the 4th entry)
    loop_fps = fps + [(2, 4)]
    assert observation_box(loop_fps, 32, 32, 2, 3, 1, loop=True) == (4, 2, 16, 16)
    assert observation_box(loop_fps, 32, 32, 2, 2, 2, loop=True) == (3 + 2, 5 + 1, 8, 8)
    # centred footprints: aligned exactly to max_observation_depth
    for p, h, w in [(2, 64, 64), (4, 64, 32), (2, 24, 40), (8, 64, 64)]:
        centred = [centred_footprint(h, w, p)] * 8
        deepest = max(d for d in range(1, 8) if observation_box(centred, h, w, p, 0, d) or d == 1)
        assert deepest == max(1, max_observation_depth(h, w, p)), (p, h, w)


# ------------------------------------------------------- centred default: bit-identical
@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE)


@pytest.mark.parametrize("key", ["2_4_16_32", "4_3_32_32", "8_2_32_16"])
def test_centred_default_is_bit_identical_to_the_centre_only_code(reference, key):
    p, n, h, w = map(int, key.split("_"))
    layers, obs = reference[f"layers_{key}"], reference[f"obs_{key}"]
    centred = [centred_footprint(h, w, p)] * (n - 1)
    for fps in (None, centred):
        assert torch.equal(render_image(layers, p, fps), reference[f"image_{key}"])
        assert torch.equal(render_noise(layers, p, fps), reference[f"noise_{key}"])
        for m in BLEND_METHODS:
            assert torch.equal(blend(obs, p, m, footprints=fps), reference[f"blend_{m}_{key}"]), m


# -------------------------------------------------------------------- exact at offsets
OFFSET_CASES = [  # (p, H, W, footprints of N-1 transitions)
    (2, 32, 32, [(0, 0), (16, 16), (3, 11), (9, 2)]),
    (4, 32, 64, [(0, 24), (48, 0), (13, 7)]),
    (8, 64, 32, [(0, 56), (27, 1)]),
]


@pytest.mark.parametrize("p,h,w,fps", OFFSET_CASES)
def test_footprint_region_is_the_downsampled_finer_image_at_offsets(p, h, w, fps):
    n = len(fps) + 1
    layers = rand(n, 3, h, w, dtype=torch.float64)
    images = render_image(layers, p, fps)
    for i, f in enumerate(fps):
        assert torch.equal(region(images[i], f, p), downsample(images[i + 1], p))
        outside = images[i].clone()
        region(outside, f, p).copy_(region(layers[i], f, p))
        assert torch.equal(outside, layers[i])  # the rest of the layer untouched
    # deeper: wherever the composed region is aligned it is D_p^d of the finer image
    checked = 0
    for d in range(2, n):
        for i in range(n - d):
            box = observation_box(fps, h, w, p, i, d)
            if box is not None:
                t, l, bh, bw = box
                torch.testing.assert_close(images[i][:, t:t + bh, l:l + bw],
                                           downsample(images[i + d], p, times=d), rtol=0, atol=1e-12)
                checked += 1
    assert checked >= 1 or p == 8
    assert torch.equal(render_image(images, p, fps), images)  # idempotent


@pytest.mark.parametrize("p,h,w,fps", OFFSET_CASES)
def test_render_noise_at_offsets_is_unit_variance_and_consistent(p, h, w, fps):
    n = len(fps) + 1
    eps = render_noise(rand(2000, n, 1, h, w, seed=3).transpose(0, 1).reshape(n, 2000, h, w), p, fps)
    std = eps.std(dim=1)          # per pixel over 2000 draws, every level
    mean = eps.mean(dim=1)
    assert (std - 1).abs().max() < 0.09, float((std - 1).abs().max())
    assert mean.abs().max() < 0.12
    g = noise_gain(p)
    for i, f in enumerate(fps):
        torch.testing.assert_close(region(eps[i], f, p), g * downsample(eps[i + 1], p))
    # neighbours stay uncorrelated (also across a footprint border)
    corr = (eps[0, :, :, 1:] * eps[0, :, :, :-1]).mean(0)
    assert corr.abs().max() < 0.12


@pytest.mark.parametrize("p,h,w,fps", OFFSET_CASES)
@pytest.mark.parametrize("method", ["laplacian", "naive", "laplacian-sr1"])
def test_consistent_stack_is_a_fixed_point_of_blending_at_offsets(p, h, w, fps, method):
    n = len(fps) + 1
    images = render_image(rand(n, 2, h, w, seed=4, dtype=torch.float64), p, fps)
    out = render_image(blend(images, p, method, footprints=fps), p, fps)
    if method == "naive":  # not a fixed point (blurs), but it must honour the footprints
        assert not torch.allclose(out, images, atol=1e-3)
        return
    torch.testing.assert_close(out, images, rtol=0, atol=1e-12)


def test_blend_observes_each_layer_where_its_footprint_is():
    p, h, w, fps = 2, 16, 16, [(0, 0), (8, 8)]
    images = render_image(rand(3, 1, 16, 16, seed=5), p, fps)
    base = blend(images, p, footprints=fps)
    changed = images.clone()
    changed[0, :, 8:16, 8:16] += 1.0     # outside level 1's footprint (top-left 8 x 8)
    assert torch.equal(blend(changed, p, footprints=fps)[1], base[1])
    changed = images.clone()
    changed[0, :, 0:8, 0:8] += 1.0       # inside it: level 1 hears it
    assert (blend(changed, p, footprints=fps)[1] - base[1]).abs().max() > 1e-2
    # observe: level 2's region in level 0 is aligned (offset 0 + 8/2 = 4)
    crops, aligned = observe(images, p, 2, fps)
    assert aligned.flatten().tolist() == [1.0]
    assert torch.equal(crops[0], images[0][:, 4:8, 4:8])


def _reference_sampler_runs(footprints):
    from diffusers import DDIMScheduler, DDPMScheduler

    from core.zoom.analytic import MixtureDenoiser, make_scenes
    from core.zoom.sampler import sample_zoom_stack

    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    ddpm = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    scenes = make_scenes(3, 3, (2, 16, 16), 2, g(0), detail=4)
    den = MixtureDenoiser(scenes, ddpm.alphas_cumprod)
    kw = dict(num_levels=3, zoom=2, shape=(2, 16, 16), num_inference_steps=8, footprints=footprints)
    out = {f"sample_{m}": sample_zoom_stack(den, ddpm, generator=g(3), mode=m, **kw).images
           for m in ("joint", "iterative", "independent")}
    out["sample_photo_ddim"] = sample_zoom_stack(
        den, DDIMScheduler(num_train_timesteps=1000), generator=g(4), photo=scenes[1, 0],
        photo_level=0, **kw).images
    out["sample_known_out_photo"] = sample_zoom_stack(
        den, ddpm, generator=g(5), known={-1: scenes[2, 2]}, known_guidance="photo", **kw).images
    out["sample_known_mid"] = sample_zoom_stack(
        den, ddpm, generator=g(6), known={1: scenes[0, 1]}, known_guidance="photo", **kw).images
    return out


@pytest.mark.parametrize("footprints", [None, [(4, 4), (4, 4)]])
def test_centred_sampler_and_known_levels_are_bit_identical(reference, footprints, monkeypatch):
    import core.zoom.sampler as sampler
    from core.zoom.known import impose_known, level_residuals, make_consistent

    # the per-step stack operators (issue 23) agree to float rounding; the reference functions
    # they replace are still bit-identical to the centre-only code
    for key, images in _reference_sampler_runs(footprints).items():
        assert (images - reference[key]).abs().max() <= 1e-6, key
    monkeypatch.setattr(sampler, "USE_STACK_OPERATORS", False)
    for key, images in _reference_sampler_runs(footprints).items():
        assert torch.equal(images, reference[key]), key
    for key in ["2_4_16_32", "4_3_32_32", "8_2_32_16"]:
        p, n, h, w = map(int, key.split("_"))
        fps = None if footprints is None else [(w // 2 - w // (2 * p), h // 2 - h // (2 * p))] * (n - 1)
        imgs = reference[f"obs_{key}"]
        known = {0: imgs[0], n - 1: imgs[-1]} if n > 2 else {0: imgs[0]}
        assert torch.equal(impose_known(imgs, known, p, footprints=fps), reference[f"impose_{key}"])
        consistent = make_consistent({0: imgs[0], n - 1: imgs[-1]}, p, footprints=fps)
        assert torch.equal(torch.stack(list(consistent.values())), reference[f"consistent_{key}"])
        res = level_residuals(imgs, torch.arange(n), imgs[1 % n], 1 % n, p, footprints=fps)
        assert torch.equal(torch.cat([r.flatten() for r in res if r is not None]),
                           reference[f"resid_{key}"])


# ------------------------------------------------------------------------------- loops
LOOP_CASES = [  # (p, H, W, N footprints: the last places level 0 inside level N-1)
    (2, 32, 32, [(3, 9), (10, 2), (0, 16), (7, 7)]),
    (4, 32, 64, [(0, 24), (48, 0), (13, 7)]),
    (2, 16, 16, [(4, 4), (4, 4)]),
]


def wrap_links(images, fps, p, gain=1.0):
    """Max-abs residual of every link (on a loop the last is the wrap)."""
    n = len(images)
    return [float((region(images[i], fps[i], p) - gain * downsample(images[(i + 1) % n], p))
                  .abs().max()) for i in range(len(fps))]


@pytest.mark.parametrize("p,h,w,fps", LOOP_CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_render_on_the_cycle_is_consistent_round_every_link(p, h, w, fps, dtype, tol):
    n = len(fps)
    layers = rand(n, 3, h, w, seed=7, dtype=dtype)
    images = render_image(layers, p, fps, loop=True)
    links = wrap_links(images, fps, p)
    assert links[:-1] == [0.0] * (n - 1)   # bit for bit
    assert links[-1] <= tol, links         # the wrap: to the dtype's precision
    for i, f in enumerate(fps):            # each level shows its layer outside its footprint
        outside = images[i].clone()
        region(outside, f, p).copy_(region(layers[i], f, p))
        assert torch.equal(outside, layers[i])
    torch.testing.assert_close(render_image(images, p, fps, loop=True), images, rtol=0, atol=tol)
    # not the same as rendering the chain open: level N-1 shows level 0 in its footprint
    assert not torch.allclose(images[-1], render_image(layers, p, fps[:-1])[-1])


@pytest.mark.parametrize("p,h,w,fps", LOOP_CASES[:2] + [(8, 64, 64, [(0, 56), (56, 0)])])
def test_render_noise_on_the_cycle_is_consistent_and_unit_variance(p, h, w, fps):
    n = len(fps)
    eps = render_noise(rand(n, 2000, h, w, seed=8), p, fps, loop=True)
    assert max(wrap_links(eps, fps, p, noise_gain(p))) < 2e-6
    std = eps.std(dim=1)
    assert (std - 1).abs().max() < 0.09, float((std - 1).abs().max())
    assert eps.mean(dim=1).abs().max() < 0.12


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("fps", [None, "target"])
def test_render_noise_on_a_p2_cycle_is_unit_variance_at_the_zoom_centre_too(n, fps):
    # Rendered from i.i.d. noise, the 2 x 2 pixels round each level's vanishing point would carry
    # (1 + 2^-N) / (1 - 2^-N) (1.67 at N = 2); the cycle correction keeps them at 1, and the
    # noise stays exactly zoom-consistent (docs/sampler.md, "Loops").
    p, h = 2, 32
    fps = None if fps is None else [(3, 9)] * n
    eps = render_noise(rand(n, 2000, h, h, seed=9), p, fps, loop=True)
    footprints = check_footprints(fps, h, h, p, n, loop=True)
    assert max(wrap_links(eps, footprints, p, noise_gain(p))) < 2e-6
    var = eps.var(dim=1)
    chain = torch.as_tensor(np.stack(chain_pixels(n, h, h, p, footprints)))
    assert chain.any(dim=(1, 2)).all()  # every level has its vanishing-point pixels
    se = (2 / 1999) ** 0.5  # standard error of a variance estimate from 2000 draws
    assert (var[chain] - 1).abs().max() < 4 * se, var[chain]
    assert (var - 1).abs().max() < 6 * se


@pytest.mark.parametrize("p,n,h,fps,tol", [
    (2, 2, 16, None, 1e-9), (2, 3, 16, [(3, 5), (0, 8), (8, 1)], 1e-9), (4, 2, 32, None, 1e-9),
    (4, 3, 32, [(5, 17)] * 3, 1e-9), (8, 2, 32, None, 1e-9),
    (2, 1, 16, None, 1e-9), (4, 1, 32, None, 1e-9), (2, 1, 32, [(3, 9)], 1e-9),  # one-level loops
    # taps that differ round the cycle: the least-squares loadings, within 2 %
    (4, 3, 16, [(0, 0), (12, 12), (5, 2)], 0.02)])
def test_loop_noise_covariance_has_a_unit_diagonal_exactly(p, n, h, fps, tol):
    # the covariance of Π_noise on the cycle, computed from the linear map itself: every pixel of
    # every level has variance 1 to rounding, and the render stays the reference _render
    from core.zoom.cycle_noise import correct_cycle_noise

    footprints = check_footprints(fps, h, h, p, n, loop=True)
    basis = torch.eye(n * h * h, dtype=torch.float64).view(n * h * h, n, h, h).permute(1, 0, 2, 3)
    rendered = render_noise(basis, p, footprints, loop=True)        # columns of the map
    var = (rendered**2).sum(dim=1)
    assert (var - 1).abs().max() < tol, float((var - 1).abs().max())
    corrected = correct_cycle_noise(basis, p, footprints)
    assert not torch.equal(corrected, basis)  # the inputs were corrected, not the output


@pytest.mark.parametrize("p,h,w,fps", LOOP_CASES)
def test_consistent_cycle_is_a_fixed_point_of_blending(p, h, w, fps):
    n = len(fps)
    images = render_image(rand(n, 2, h, w, seed=10, dtype=torch.float64), p, fps, loop=True)
    for method in ("laplacian", "laplacian-sr1"):
        out = render_image(blend(images, p, method, footprints=fps, loop=True), p, fps, loop=True)
        torch.testing.assert_close(out, images, rtol=0, atol=1e-11)
    # on the cycle level 0 hears from level N-1 (its coarser level round the loop)
    changed = images.clone()
    left, top = fps[-1]
    changed[-1, :, top:top + h // p, left:left + w // p] += 1.0
    moved = blend(changed, p, footprints=fps, loop=True) - blend(images, p, footprints=fps, loop=True)
    assert moved[0].abs().max() > 1e-2
    assert blend(changed, p, footprints=fps[:-1])[0].equal(blend(images, p, footprints=fps[:-1])[0])


# ------------------------------------------------------------------ the sampler, offsets
SAMPLER_GEOMETRY = {  # p = 2, N = 3, 16 x 16: off-centre; off-centre loop
    "targets": ([(0, 8), (6, 2)], False),
    "loop": ([(0, 8), (6, 2), (4, 4)], True),
}


@pytest.fixture(scope="module")
def geometry_scenes():
    return {name: make_scenes_for(fps, loop) for name, (fps, loop) in SAMPLER_GEOMETRY.items()}


def make_scenes_for(fps, loop):
    from core.zoom.analytic import make_scenes
    return make_scenes(3, 3, (2, 16, 16), 2, torch.Generator().manual_seed(0), detail=4,
                       footprints=fps, loop=loop)


def sample(scenes, fps, loop, seed=0, scheduler=None, steps=12, **kw):
    from diffusers import DDPMScheduler

    from core.zoom.analytic import MixtureDenoiser
    from core.zoom.sampler import sample_zoom_stack

    ddpm = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    den = MixtureDenoiser(scenes, ddpm.alphas_cumprod)
    return sample_zoom_stack(den, scheduler or ddpm, num_levels=3, zoom=2, shape=(2, 16, 16),
                             num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                             footprints=fps, loop=loop, **kw)


@pytest.mark.parametrize("name", list(SAMPLER_GEOMETRY))
@pytest.mark.parametrize("mode,scheduler", [("joint", "ddpm"), ("joint", "ddim"),
                                            ("joint", "sde-dpmsolver++"), ("joint", "lcm"),
                                            ("iterative", "ddpm")])
def test_sampled_stack_is_exactly_consistent_at_offsets_and_on_the_cycle(
        geometry_scenes, name, mode, scheduler):
    from core.backends.schedulers import make_scheduler
    from diffusers import DDPMScheduler

    fps, loop = SAMPLER_GEOMETRY[name]
    sched = make_scheduler(scheduler, DDPMScheduler(num_train_timesteps=1000).config)
    out = sample(geometry_scenes[name], fps, loop, scheduler=sched, mode=mode)
    links = wrap_links(out.images, fps, 2)
    assert max(links) < 1e-6, links
    assert torch.equal(render_image(out.layers, 2, fps, loop), out.images) or \
        (render_image(out.layers, 2, fps, loop) - out.images).abs().max() < 1e-6


@pytest.mark.parametrize("name", list(SAMPLER_GEOMETRY))
def test_joint_sampling_lands_on_one_scene_at_offsets_and_round_the_loop(geometry_scenes, name):
    from core.zoom.analytic import nearest_scene_error

    fps, loop = SAMPLER_GEOMETRY[name]
    scenes = geometry_scenes[name]
    hits = [nearest_scene_error(sample(scenes, fps, loop, seed=s, steps=50).images, scenes)[0] < 0.02
            for s in range(6)]
    assert sum(hits) >= 4, hits  # 24 seeds each, with standard errors: docs/sampler.md
    # ... and a sampler that ignored the footprints would not: centred geometry, same scenes
    wrong = [nearest_scene_error(sample(scenes, None, False, seed=s, steps=50).images, scenes)[0]
             < 0.02 for s in range(6)]
    assert sum(wrong) <= 1, wrong


@pytest.mark.parametrize("name", list(SAMPLER_GEOMETRY))
@pytest.mark.parametrize("known_at", [0, -1])  # on the loop: aligned miniature / not aligned
def test_known_level_is_held_at_offsets_and_inside_a_loop(geometry_scenes, name, known_at):
    fps, loop = SAMPLER_GEOMETRY[name]
    scenes = geometry_scenes[name]
    photo = scenes[1, known_at].clone()
    if loop:
        # a photo cannot contain its own miniature: it is shown exactly except there (the
        # H/p^N region the cycle brings back, 2 x 2 px here, rounded out to whole pixels)
        k = known_at % 3
        left, top = footprint_offset(fps, 2, k, 3, loop=True)
        mask = torch.ones(16, 16, dtype=torch.bool)
        mask[math.floor(top):math.ceil(top + 2), math.floor(left):math.ceil(left + 2)] = False
        photo[:, ~mask] += 0.5  # the photo disagrees with its miniature
    out = sample(scenes, fps, loop, seed=1, steps=20, known={known_at: photo})
    shown = out.images[known_at]
    if loop:
        assert (shown - photo)[:, mask].abs().max() < 1e-5
        assert (shown - photo)[:, ~mask].abs().max() > 1e-3
        box = observation_box(fps, 16, 16, 2, k, 3, loop=True)
        if box is not None:  # aligned: the miniature is the level itself, downsampled
            t, l, h, w = box
            torch.testing.assert_close(shown[:, t:t + h, l:l + w], downsample(shown, 2, times=3),
                                       rtol=0, atol=1e-5)
    else:
        assert (shown - photo).abs().max() < 1e-5
    assert max(wrap_links(out.images, fps, 2)) < 1e-6
    # the other levels follow the photo's scene
    from core.zoom.analytic import per_level_scene
    assert per_level_scene(out.images, scenes) == [1, 1, 1]


@pytest.mark.parametrize("loop", [False, True])
def test_photo_loss_terms_vanish_on_a_stack_rendered_with_the_footprints(loop):
    from core.zoom.known import level_residuals
    from core.zoom.sampler import photo_guidance

    p, fps = 2, [(0, 8), (8, 0), (4, 4)]
    fps = fps if loop else fps[:2]
    images = render_image(rand(3, 2, 16, 16, seed=11, dtype=torch.float64), p, fps, loop)
    levels = torch.arange(3)
    for at in range(3):
        terms = level_residuals(images, levels, images[at], at, p, fps, loop)
        assert sum(t is not None for t in terms) == 3
        assert max(float(t.abs().max()) for t in terms) < 1e-12
        centred = level_residuals(images, levels, images[at], at, p)  # the wrong geometry
        assert max(float(t.abs().max()) for t in centred if t is not None) > 1e-2
    # the photo loss pulls perturbed estimates back towards the photo's footprints
    noisy = images + 0.3 * rand(3, 2, 16, 16, seed=12, dtype=torch.float64)
    before = [float(t.pow(2).sum()) for t in level_residuals(noisy, levels, images[0], 0, p, fps, loop)[1:]]
    pulled = photo_guidance(noisy, levels, images[0], p, footprints=fps, loop=loop)
    after = [float(t.pow(2).sum()) for t in level_residuals(pulled, levels, images[0], 0, p, fps, loop)[1:]]
    assert all(a < 0.7 * b for a, b in zip(after, before)), (before, after)
