"""×4 super-resolution stages sampled jointly: tiling, blending, tiny IF stage II and x4-upscaler
pipelines end to end (CLI), determinism, cancel, the backend hook."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest
import torch

import core.generate as gen_mod
from core.cli import main as cli
from core.zoom.analytic import GaussianFieldDenoiser, SuperResolutionDenoiser, band_energies, seam_ratio
from core.backends.loading import ModelCache
from core.backends.super_resolution import X4Upscaler, tile_starts, tiled_unet
from core.errors import InvalidInputError, ModelNotFoundError
from core.generate import consolidate_pixels, generate
from core.zoom.sampler import sample_zoom_stack
from core.settings import GenerateSettings
from core.stack.stack_io import ZoomStack
from core.zoom.zoom_stack import (blend, blend_coarse, crop_centre, downsample, render_image,
                             sr_blend_method)
from tests.test_cli import _interrupt_when
from tests.tiny_models import make_tiny_if, make_tiny_sd, make_tiny_x4_upscaler

PROMPTS = ["a forest", "a tree", "a leaf"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_sr")
    s1, s2 = make_tiny_if(root / "if")
    return {"sd": make_tiny_sd(root / "sd"), "if": s1, "if2": s2,
            "x4": make_tiny_x4_upscaler(root / "x4")}


@pytest.fixture(scope="module")
def cache():
    c = ModelCache()
    yield c
    c.release()


def inconsistency(layers: np.ndarray, zoom: int = 2) -> float:
    x = torch.from_numpy(np.asarray(layers, np.float32)).permute(0, 3, 1, 2)
    return float((crop_centre(x[:-1], zoom) - downsample(x[1:], zoom)).abs().max())


# ------------------------------------------------------------------------------- tiling
def test_tile_starts_cover_with_overlap():
    assert tile_starts(64, 128, 16) == [0]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))


def test_tiled_unet_pointwise_model_is_exact():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 3, 1)

    def model(x, t, *, emb):
        return conv(x) * (1 + t.view(-1, 1, 1, 1)) + emb.view(-1, 1, 1, 1)

    x, t, emb = torch.randn(2, 5, 40, 56), torch.tensor([0.5, 2.0]), torch.tensor([1.0, -1.0])
    with torch.no_grad():
        full = model(x, t, emb=emb)
        for mb in (None, 3):
            tiled = tiled_unet(model, 16, 4, micro_batch=mb)(x, t, emb=emb)
            torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)


def test_tiled_unet_local_model_leaves_no_seams():
    """A 3x3 convolution is wrong at a tile's own edge (zero padding); the ramps hide it."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.nn.functional.interpolate(torch.randn(1, 3, 12, 12), (64, 64), mode="bilinear")
    with torch.no_grad():
        full = conv(x)
        tiled = tiled_unet(lambda x, t: conv(x), 24, 8)(x, torch.zeros(1))
        hard = tiled_unet(lambda x, t: conv(x), 24, 1)(x, torch.zeros(1))  # no feathering
    err, err_hard = (tiled - full).abs(), (hard - full).abs()
    assert err.max() < 0.1 * err_hard.max()
    assert err.mean() < 0.01 * full.abs().mean()


# ----------------------------------------------------------------------------- blending
def test_invented_bands_of_coarser_levels_stay_out_of_known_bands():
    torch.manual_seed(0)
    layers = torch.nn.functional.interpolate(torch.randn(3, 3, 8, 8), (32, 32), mode="bilinear")
    images = render_image(layers, 2)
    for s in (0, 2):  # a consistent stack is still a fixed point
        torch.testing.assert_close(render_image(blend(images, 2, invented_bands=s), 2), images,
                                   atol=1e-5, rtol=0)
    # level 0's upscaler invents fine detail (its two finest bands) of its own
    noisy = images.clone()
    noisy[:1] += 0.3 * _fine(torch.randn(1, 3, 32, 32))

    def known_part_change(**kw):  # how much layer 1's stage-I bands (>= 2) move
        change = (blend(noisy, 2, **kw) - blend(images, 2, **kw))[1:2]
        return float((change - _fine(change)).pow(2).mean())

    plain, sr = known_part_change(), known_part_change(invented_bands=2)
    assert sr < 0.3 * plain  # plain blending averages the guess into what layer 1 knows


def test_coarser_guess_does_not_enter_bands_the_finer_level_invented_too():
    """Layer 1's two finest bands are its own upscaler's guess from 2x the pixels: level 0's
    guess of the same content stays out of them too (not averaged, as Alg. 2 would), except
    in the rim along the layer's border."""
    torch.manual_seed(0)
    layers = torch.nn.functional.interpolate(torch.randn(3, 3, 8, 8), (32, 32), mode="bilinear")
    images = render_image(layers, 2)
    noisy = images.clone()
    noisy[:1] += 0.3 * _fine(torch.randn(1, 3, 32, 32))  # level 0's own invented detail

    def fine_change(**kw):  # how much layer 1's two finest bands move, inside / near the border
        change = _fine((blend(noisy, 2, **kw) - blend(images, 2, **kw))[1:2]).pow(2)
        return float(change[..., 6:-6, 6:-6].mean()), float(change.mean())

    plain, hard, rim = fine_change(), fine_change(invented_bands=2), fine_change(invented_bands=2,
                                                                                feather=1)
    assert plain[0] > 1e-4
    assert hard[1] < 0.02 * plain[1]  # no rim: level 0's guess is not in layer 1 at all
    assert rim[0] < 0.05 * plain[0] and rim[1] > 2 * hard[1]  # the rim lets it in at the border


def test_rim_weight_sets_the_coarser_share_at_the_layer_border():
    """Level 1 all zero, level 0 fine detail: layer 1's border pixels show level 0's guess in
    proportion to w / (1 + w) for the rim weight w, which SR blending sets to SR_RIM_WEIGHT."""
    from core.zoom.zoom_stack import SR_RIM_WEIGHT, laplacian_pyramid

    torch.manual_seed(0)
    images = torch.zeros(2, 3, 32, 32)
    images[0] = _fine(torch.randn(1, 3, 32, 32))[0]
    observed = laplacian_pyramid(images[:1, :, 8:24, 8:24], 2, 1)[0]  # level 0's band in view

    def border_share(**kw):  # fitted share of that band in layer 1's band 1, on the border ring
        band = laplacian_pyramid(blend(images, 2, **kw)[1:2], 2, 2)[1]
        ring = torch.ones(16, 16, dtype=torch.bool)
        ring[1:-1, 1:-1] = False
        a, b = band[..., ring], observed[..., ring]
        return float((a * b).sum() / (b * b).sum())

    one, two = border_share(invented_bands=2, feather=1), border_share(invented_bands=2, feather=1,
                                                                        rim_weight=2)
    # the band's own border is smeared by the pyramid's expand step, by the same factor for
    # every w: the shares keep the ratio of w / (1 + w) (w = 1: 1/2, w = 2: 2/3)
    assert one > 0.1 and two / one == pytest.approx((2 / 3) / (1 / 2), rel=0.02)
    assert border_share(method="laplacian-sr2") == pytest.approx(
        border_share(invented_bands=2, feather=1, rim_weight=SR_RIM_WEIGHT))


@pytest.mark.parametrize("p,size,method", [(2, 32, "laplacian-sr2"), (4, 64, "laplacian-sr1")])
def test_only_the_next_coarser_levels_guess_enters_the_rim(p, size, method):
    """Around layer 2, image 1 shows level 1's content, which left level 0's guesses out: in
    layer 2's border rim level 1's invented detail counts, level 0's guess of the same region
    (two levels up) does not (docs/backends.md: at p = 4 it cost band 3 and the seam)."""
    from core.zoom.zoom_stack import _detail

    torch.manual_seed(0)
    layers = torch.nn.functional.interpolate(torch.randn(3, 3, size // 4, size // 4), (size, size),
                                             mode="bilinear")
    images = render_image(layers, p)
    invented = 2 if p == 2 else 1  # the upscaler's bands (two octaves)
    ring = torch.ones(size, size, dtype=torch.bool)
    ring[3:-3, 3:-3] = False

    def rim_change(d):  # invented detail in image 2 - d over layer 2's region: layer 2's rim moves
        h = size // p**d
        top = (size - h) // 2
        guess = torch.zeros_like(images)
        guess[2 - d, :, top:top + h, top:top + h] = 0.3 * _detail(torch.randn(1, 3, h, h), p,
                                                                   invented)[0]
        change = (blend(images + guess, p, method) - blend(images, p, method))[2:]
        return float(_detail(change, p, invented)[0][..., ring].pow(2).mean())

    next_coarser, two_up = rim_change(1), rim_change(2)
    assert next_coarser > 1e-4
    assert two_up < 1e-4 * next_coarser


def test_sr_blending_counts_the_upscalers_octaves_in_p_bands():
    """×4 = two octaves: two bands at p = 2, one p-band at p ≥ 4 (sr2 at p = 4 would call the
    stage-I band invented too: docs/backends.md measured it worse); a ×16 IF chain's ×4 stages
    and a ×2 upscaler the same way."""
    assert [sr_blend_method(p) for p in (2, 4, 8, 16)] == [
        "laplacian-sr2", "laplacian-sr1", "laplacian-sr1", "laplacian-sr1"]
    assert sr_blend_method(2, factor=2) == "laplacian-sr1"
    assert sr_blend_method(2, factor=16) == "laplacian-sr2"  # at most the two SR methods


def test_rim_is_the_border_ring_fading_inwards_on_every_side():
    from core.zoom.zoom_stack import _rim

    like = torch.empty(0, dtype=torch.float64)
    one, two = _rim(6, 7, 1, like), _rim(6, 7, 2, like)
    ring = torch.ones(6, 7, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    assert one[ring].eq(1).all() and one[~ring].eq(0).all()
    h = 0.5  # one pixel in: 1 - 1/2
    torch.testing.assert_close(two, torch.tensor([
        [1, 1, 1, 1, 1, 1, 1], [1, h, h, h, h, h, 1], [1, h, 0, 0, 0, h, 1],
        [1, h, 0, 0, 0, h, 1], [1, h, h, h, h, h, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.float64),
        rtol=0, atol=0)
    assert torch.equal(two, two.flip(0)) and torch.equal(two, two.flip(1))


def _fine(x):
    """The two finest Laplacian bands of x, collapsed (x minus its twice-reduced remainder)."""
    from core.zoom.zoom_stack import _detail

    return _detail(x, 2, 2)


def test_continued_sr_detail_keeps_the_bases_energy_per_octave():
    """The synthetic SR model's detail, ``continued``: the 64 px base field's spectrum, read at
    the same physical frequency 4x finer (S_256(f) = 16 S_64(4 f), times the high-pass); by
    default the 256 px field has less energy per octave (it is normalised on its own grid)."""
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
    base = torch.zeros(2, 3, 16, 16)
    plain = SuperResolutionDenoiser(base, 4, ac)
    continued = SuperResolutionDenoiser(base, 4, ac, continued=True)
    small = GaussianFieldDenoiser((3, 16, 16), ac).spectrum
    k = torch.tensor([1, 3, 5])  # index k: frequency k/64 on the 64 px grid, k/16 on the base's
    r4 = ((k.double() / 64) ** 2 * 8**2) ** 2  # the high-pass above the base's Nyquist
    torch.testing.assert_close(continued.spectrum[0, k], 16 * small[0, k] * r4 / (1 + r4),
                               rtol=1e-9, atol=0)
    ratio = float(continued.spectrum.sum() / plain.spectrum.sum())
    assert 1.2 < ratio < 1.8  # the default's detail is weaker per octave


def test_consolidation_keeps_each_levels_detail_bands():
    torch.manual_seed(0)
    base = render_image(torch.nn.functional.interpolate(torch.rand(3, 3, 4, 4), (32, 32),
                                                        mode="bilinear"), 2)
    detail = torch.nn.functional.interpolate(torch.randn(3, 3, 16, 16), (32, 32), mode="bilinear")
    x = (base * 0.6 + 0.2 + 0.1 * detail).clamp(0, 1)  # independent detail per level
    for bands in (0, 2):
        out = consolidate_pixels(x, 2, detail_bands=bands)
        assert inconsistency(out.permute(0, 2, 3, 1).numpy()) < 1e-5
    own = band_energies(x, 2, 2)[1]
    kept = band_energies(consolidate_pixels(x, 2, detail_bands=2), 2, 2)[1]
    averaged = band_energies(consolidate_pixels(x, 2), 2, 2)[1]
    assert kept > 0.88 * own and averaged < 0.8 * own  # (measured: 0.92 and 0.74)
    torch.testing.assert_close(blend_coarse(x, 2, 0), blend(x, 2))


def test_joint_sr_keeps_detail_that_consolidation_averages_away():
    """The synthetic SR benchmark, small: 16 px base, 4x, N = 3, p = 2 (docs: N = 5, 64 px)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
    ratios, seams = {"before": [], "after": []}, {"before": [], "after": []}
    for seed in range(2):
        g = torch.Generator().manual_seed(seed)
        base = sample_zoom_stack(GaussianFieldDenoiser((3, 16, 16), sched.alphas_cumprod), sched,
                                 num_levels=3, zoom=2, shape=(3, 16, 16),
                                 num_inference_steps=20, generator=g).images
        sr = SuperResolutionDenoiser(base, 4, sched.alphas_cumprod)
        kw = dict(num_levels=3, zoom=2, shape=(3, 64, 64), num_inference_steps=20, generator=g)
        indep = sample_zoom_stack(sr, sched, mode="independent", **kw).images
        joint = sample_zoom_stack(sr, sched, blending=sr_blend_method(2), **kw).images
        before = render_image(blend(indep, 2), 2)
        ref = band_energies(indep, 2, 2)
        for name, x in (("before", before), ("after", joint)):
            ratios[name].append([e / r for e, r in zip(band_energies(x, 2, 2), ref)])
            seams[name].append(seam_ratio(x, 2))
    before, after = np.mean(ratios["before"], 0), np.mean(ratios["after"], 0)
    assert before[1] < 0.8  # averaging independent detail loses energy ...
    assert after.min() > 0.85 and after[1] > before[1] + 0.1  # ... joint SR keeps it
    assert np.mean(seams["after"]) < 1.5


# ------------------------------------------------------------------- settings and plan
def test_upscale_settings_validation():
    s = GenerateSettings(prompts=["a"], upscale="x4").validate()
    assert s.upscale == 4
    assert GenerateSettings(prompts=["a"], upscale="none").validate().upscale == 1
    with pytest.raises(InvalidInputError, match="upscale must be one of 1, 4, 16"):
        GenerateSettings(prompts=["a"], upscale=8).validate()
    with pytest.raises(InvalidInputError, match="DeepFloyd IF only"):
        GenerateSettings(prompts=["a"], upscale=16).validate()
    with pytest.raises(InvalidInputError, match="contradicts"):
        GenerateSettings(prompts=["a"], upscale=4, upscaler="none").validate()
    with pytest.raises(InvalidInputError, match="pixel blend"):
        GenerateSettings(prompts=["a"], pixel_blend=2.0).validate()


def test_upscale_plan_checks_models_before_sampling(tiny, cache, monkeypatch):
    seen = []
    monkeypatch.setattr(gen_mod, "sample_zoom_stack", lambda *a, **k: seen.append(1))
    with pytest.raises(ModelNotFoundError, match="stable-diffusion-x4-upscaler"):
        generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"], upscale=4, steps=1),
                 models=cache)
    with pytest.raises(InvalidInputError, match="not a Stable Diffusion x4 upscaler"):
        generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"], upscale=4,
                                  upscaler=tiny["if2"], steps=1), models=cache)
    with pytest.raises(InvalidInputError, match="2 upscaler models given for 1"):
        generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"], upscale=4, steps=1,
                                  upscaler=f"{tiny['x4']},{tiny['x4']}"), models=cache)
    assert not seen


def test_generate_has_no_family_branches():
    src = inspect.getsource(gen_mod)
    for word in ("deepfloyd", "family ==", '"if"', "super_resolve", "from .backends.sdxl",
                 "from .backends.stable_diffusion"):
        assert word not in src, word


# ------------------------------------------------------------------------ end to end
def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _load_pngs(folder) -> np.ndarray:
    from PIL import Image

    stack = ZoomStack.load(folder)
    return np.stack([np.asarray(Image.open(folder / name)) for name in stack.manifest["layers"]])


@pytest.mark.parametrize("family", ["if", "sd"])
def test_cli_upscale_end_to_end(tiny, capsys, tmp_path, family):
    """IF stage II (8 -> 32 px) and SD + x4 upscaler (32 -> 128 px) through the CLI."""
    model, size, upscaler = {"if": (tiny["if"], 8, tiny["if2"]),
                             "sd": (tiny["sd"], 32, tiny["x4"])}[family]
    argv = ["generate", "--model", model, "--size", size, "--upscale", "4", "--upscaler",
            upscaler, "--steps", "2", "--seed", "5", "--device", "cpu", "--quiet",
            "--prompt", "a forest", "--prompt", "a tree", "--prompt", "a leaf"]
    code, _, err = _cli(capsys, *argv, "--out", tmp_path / "a")
    assert code == 0, err
    pngs = _load_pngs(tmp_path / "a")
    assert pngs.shape == (3, 4 * size, 4 * size, 3)
    m = ZoomStack.load(tmp_path / "a").manifest
    assert (m["width"], m["height"], m["sample_width"], m["sample_height"], m["upscale"]) == (
        4 * size, 4 * size, size, size, 4)
    assert m["upscaler"] == upscaler
    # consistent after 8-bit rounding: centre of PNG i = D_p(PNG i+1) to a rounding step
    assert inconsistency(pngs / 255.0) <= 1 / 255 + 1e-6
    code, _, err = _cli(capsys, *argv, "--out", tmp_path / "b")
    assert code == 0, err
    np.testing.assert_array_equal(_load_pngs(tmp_path / "b"), pngs)  # same seed, same pixels


def test_if_sixteen_times_through_both_stages(tiny, cache, monkeypatch):
    import core.backends.upscale as up

    blendings, real = [], up.sample_zoom_stack
    monkeypatch.setattr(up, "sample_zoom_stack",
                        lambda *a, **k: blendings.append(k["blending"]) or real(*a, **k))
    s = GenerateSettings(prompts=PROMPTS[:2], model=tiny["if"], width=8, height=8, steps=2,
                         upscale=16, upscaler=f"{tiny['if2']},{tiny['x4']}")
    events = []
    stack = generate(s, models=cache, progress=lambda *a: events.append(a[:3]))
    assert stack.layers.shape == (2, 128, 128, 3) and inconsistency(stack.layers) < 1e-5
    assert stack.manifest["upscale"] == 16 and stack.manifest["sample_width"] == 8
    assert [e for e in events if e[0] == "super-resolution"].count(("super-resolution", 2, 2)) == 2
    assert blendings == ["laplacian-sr2", "laplacian-sr2"]  # both stages jointly, SR blending


def test_sr_stage_conditions_each_level_on_its_own_image(tiny, cache):
    from core.backends.loading import load_stage

    stage = load_stage(cache.get(tiny["if"], device="cpu"), "if-ii", tiny["if2"])
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.5, 0.9)])
    stage.prepare(images, 2, torch.Generator().manual_seed(0))
    assert stage._low_res.shape == (3, 3, 32, 32)  # upscaled 4x, noise-augmented
    x = stage._model_input(torch.zeros(2, 3, 32, 32), torch.tensor([2, 0]))
    torch.testing.assert_close(x[:, 3:], stage._low_res[[2, 0]].to(x.dtype))
    assert x[0, 3:].mean() > x[1, 3:].mean() + 0.5  # level 2's bright image, level 0's dark one


def test_sr_tiles_are_blended_without_seams(tiny, cache, monkeypatch):
    """x4 latents of 32 px in 16 px tiles (overlap 6): the tile grid leaves no visible edge."""
    s = GenerateSettings(prompts=PROMPTS[:2], model=tiny["sd"], width=32, height=32, steps=1,
                         upscale=4, upscaler=tiny["x4"], seed=1)
    whole = generate(s, models=cache, consolidate=False).layers
    monkeypatch.setattr(X4Upscaler, "tile_size", 16)
    monkeypatch.setattr(X4Upscaler, "tile_overlap", 6)
    from diffusers import UNet2DConditionModel

    calls, real = [], UNet2DConditionModel.forward
    monkeypatch.setattr(UNet2DConditionModel, "forward",
                        lambda self, x, *a, **k: calls.append(tuple(x.shape)) or real(self, x, *a, **k))
    tiled = generate(s, models=cache, consolidate=False).layers
    assert {c[1:] for c in calls if c[1] == 7} == {(7, 16, 16)}  # the upscaler saw tiles only
    x = torch.from_numpy(tiled).permute(0, 3, 1, 2)
    # at the tile borders (latent 16 -> pixel 64) no edge shows:
    dx = (x[..., 1:] - x[..., :-1]).pow(2).mean(dim=(0, 1, 2))  # per column boundary
    starts = tile_starts(32, 16, 6)
    borders = sorted({4 * (a + 16) - 1 for a in starts[:-1]} | {4 * a - 1 for a in starts[1:]})
    assert float(dx[borders].mean() / dx.mean()) < 1.5
    assert np.abs(tiled - whole).mean() < 0.1  # and the picture is the untiled one, nearly


def test_sr_stage_fits_its_own_tile_micro_batch(tiny, cache, monkeypatch):
    """Stage I's micro-batch (None on a roomy device) says nothing of the SR stage's tiles:
    with little free memory the stage cuts its tile rows itself, same picture."""
    import core.backends.upscale as up
    from core.backends.loading import load_stage
    from core.models.estimate import spec_from_backend

    monkeypatch.setattr(X4Upscaler, "tile_size", 16)
    monkeypatch.setattr(X4Upscaler, "tile_overlap", 6)
    stage = load_stage(cache.get(tiny["sd"], device="cpu"), "x4", tiny["x4"])
    row = spec_from_backend(stage).k_unet() * 16 * 16 * 4  # one 16 x 16 fp32 tile row
    assert up.fit_tile_micro_batch(stage, 2, (32, 32), free_bytes=10**13) is None
    tight = int((5 * row + up.TILE_FIXED_BYTES) / 0.9) + 8  # 5 of the 2 x 2 x 9 tile rows
    assert up.fit_tile_micro_batch(stage, 2, (32, 32), free_bytes=tight) == 5
    assert up.fit_tile_micro_batch(stage, 2, (32, 32), free_bytes=10) == 1

    s = GenerateSettings(prompts=PROMPTS[:2], model=tiny["sd"], width=32, height=32, steps=1,
                         upscale=4, upscaler=tiny["x4"], seed=3)
    whole = generate(s, models=cache, consolidate=False).layers
    from diffusers import UNet2DConditionModel

    calls, real = [], UNet2DConditionModel.forward
    monkeypatch.setattr(UNet2DConditionModel, "forward",
                        lambda self, x, *a, **k: calls.append(tuple(x.shape)) or real(self, x, *a, **k))
    monkeypatch.setattr(up, "free_bytes_now", lambda device: tight)
    cut = generate(s, models=cache, consolidate=False).layers
    sr_calls = [c[0] for c in calls if c[1] == 7]
    assert max(sr_calls) == 5 and sum(sr_calls) % 36 == 0  # 36 tile rows per step, in fives
    np.testing.assert_allclose(cut, whole, atol=2e-3)


def test_cancel_during_super_resolution_writes_nothing(tiny, capsys, tmp_path, monkeypatch):
    in_sr, phases = threading.Event(), []

    def watched(settings, *, progress=None, cancel=None, models=None):
        def spy(phase, step, total, preview=None):
            phases.append(phase)
            if phase == "super-resolution" and step == 1:
                in_sr.set()
                threading.Event().wait(1.0)  # let the Ctrl-C arrive mid-stage
            progress(phase, step, total, preview)
        return gen_mod.generate(settings, progress=spy, cancel=cancel, models=models)

    monkeypatch.setattr(cli, "_load_generate", lambda: watched)
    t = _interrupt_when(in_sr)
    code, out, err = _cli(capsys, "generate", "--model", tiny["if"], "--size", "8", "--upscale",
                          "--upscaler", tiny["if2"], "--steps", "4", "--device", "cpu",
                          "--prompt", "a", "--prompt", "b", "--out", tmp_path / "o")
    t.join()
    assert code == 130 and "nothing was written" in err
    assert "super-resolution" in phases and "consolidating" not in phases
    assert list(tmp_path.iterdir()) == []


def test_pixel_space_blending_option(tiny, cache):
    s = dict(prompts=PROMPTS[:2], model=tiny["sd"], steps=2, scheduler="ddim", width=32, height=32)
    latent = generate(GenerateSettings(**s), models=cache, consolidate=False).layers
    pixel = generate(GenerateSettings(**s, pixel_blend=1.0), models=cache, consolidate=False).layers
    assert np.abs(pixel - latent).max() > 1e-3  # decode -> blend -> encode ran
    done = generate(GenerateSettings(**s, pixel_blend=0.5), models=cache)
    assert inconsistency(done.layers) < 1e-5


class _RecordingStage:
    """An SR stage without a model: an estimate that differs per level (so the blended layers
    are not zoom-consistent), and a decode that records what it is given."""

    default_steps, guidance, device, dtype = 5, 1.0, torch.device("cpu"), torch.float32
    tile_size, tile_overlap, factor = 64, 8, 4
    scheduler_config = {"num_train_timesteps": 1000, "beta_schedule": "linear",
                        "beta_start": 0.0001, "beta_end": 0.02}

    def __init__(self):
        self.decoded = []

    def conditioning(self, prompts, negative_prompt, cond):
        return None

    def prepare(self, images, zoom, generator, footprints=None, loop=False):
        pass

    def sample_shape(self, h, w):
        return (3, 4 * h, 4 * w)

    def make_denoiser(self, cond, guidance, micro):
        def denoiser(z, t, levels):
            g = torch.Generator().manual_seed(int(t))
            return torch.rand(z.shape, generator=g) + levels.view(-1, 1, 1, 1).to(z)
        return denoiser

    def decode(self, x, micro):
        self.decoded.append(x.clone())
        return x.clamp(0, 1)


def test_sr_stage_decodes_the_rendered_images_for_its_own_step_count(monkeypatch):
    import core.backends.upscale as up

    stage = _RecordingStage()
    monkeypatch.setattr(up, "load_stage", lambda backend, kind, source: stage)
    monkeypatch.setattr(up, "fetch_model", lambda source, report, cancel: None)
    phases = []
    up.upscale(None, torch.rand(3, 3, 8, 8), None, PROMPTS, "", [("x4", "fake/x4")], zoom=2,
               scheduler="ddim", steps=12, seed=0, micro_batch=1,
               progress=lambda phase, step, total: phases.append((phase, step, total)))
    [x] = stage.decoded
    assert x.shape == (3, 3, 32, 32)
    # what the decoder is given is zoom-consistent: the rendered images, not the blended layers
    assert float((crop_centre(x[:-1], 2) - downsample(x[1:], 2)).abs().max()) < 1e-5
    sr = [(s, t) for p, s, t in phases if p == "super-resolution"]
    assert sr[-1] == (5, 5) and {t for _, t in sr} == {5}  # min(12, the stage's 5) steps


def test_sr_stages_sample_with_the_footprints_times_four_on_a_loop(tiny, cache, monkeypatch):
    """Off-centre footprints on a loop through both IF stages: each stage samples with them in
    its own sample pixels (IF-II: 8 -> 32 px, x4: latents at its 32 px input) and its sampled
    stack is consistent round the cycle there."""
    import core.backends.upscale as up
    from core.zoom.zoom_stack import render_image

    seen, real = [], up.sample_zoom_stack
    monkeypatch.setattr(up, "sample_zoom_stack",
                        lambda *a, **k: seen.append((k, out := real(*a, **k))) and out or out)
    backend = cache.get(tiny["if"], device="cpu")
    fps = [(0, 4), (2, 2), (4, 0)]
    images = render_image(torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0)), 2,
                          fps, loop=True)
    cond = backend.encode_prompts(PROMPTS[:3], "", height=8, width=8)
    out = up.upscale(backend, images, cond, PROMPTS[:3], "", [("if-ii", tiny["if2"]),
                     ("x4", tiny["x4"])], zoom=2, scheduler="ddpm", steps=2, seed=0,
                     footprints=fps, loop=True)
    assert out.shape == (3, 3, 128, 128)
    for kwargs, result in seen:
        assert kwargs["footprints"] == [(0, 16), (8, 8), (16, 0)] and kwargs["loop"] is True
        x = result.images
        for i, (left, top) in enumerate(kwargs["footprints"]):
            finer = downsample(x[(i + 1) % 3], 2)
            assert (x[i][:, top:top + 16, left:left + 16] - finer).abs().max() < 1e-5


class _FakePipe:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def to(self, device):
        self.log.append((self.name, str(device)))
        return self


class _Holder:
    def __init__(self, log, name, device):
        self.pipe, self.device = _FakePipe(log, name), torch.device(device)


def test_offloaded_moves_accelerator_pipelines_to_the_cpu_and_back_even_on_failure():
    from core.backends.loading import offloaded

    log = []
    gpu, cpu = _Holder(log, "stage I", "cuda:0"), _Holder(log, "cpu model", "cpu")
    with offloaded(gpu, cpu, None) as moved:
        assert log == [("stage I", "cpu")] and moved == [gpu]
    assert log[-1] == ("stage I", "cuda:0")
    log.clear()
    with pytest.raises(RuntimeError):
        with offloaded(gpu):
            raise RuntimeError("out of memory in stage II")
    assert log == [("stage I", "cpu"), ("stage I", "cuda:0")]  # back where it was


def test_each_sr_stage_samples_with_stage_one_and_the_other_stages_offloaded(tiny, cache, monkeypatch):
    import contextlib

    import core.backends.upscale as up

    held, real = [], up.sample_zoom_stack
    active = []

    @contextlib.contextmanager
    def recording(*holders):
        active.append(holders)
        yield list(holders)
        active.pop()

    monkeypatch.setattr(up, "offloaded", recording)
    monkeypatch.setattr(up, "sample_zoom_stack",
                        lambda *a, **k: held.append(active[-1]) or real(*a, **k))
    backend = cache.get(tiny["if"], device="cpu")
    cond = backend.encode_prompts(PROMPTS[:2], "", height=8, width=8)
    up.upscale(backend, torch.rand(2, 3, 8, 8), cond, PROMPTS[:2], "",
               [("if-ii", tiny["if2"]), ("x4", tiny["x4"])], zoom=2, scheduler="ddpm", steps=1,
               seed=0)
    stages = backend.__dict__["_stages"]
    assert held[0][0] is backend and stages["if-ii"] not in held[0]
    assert held[1][0] is backend and stages["if-ii"] in held[1] and stages["x4"] not in held[1]


def test_offloaded_puts_a_pipeline_back_as_its_family_places_it():
    from core.backends.loading import offloaded

    log = []

    class FlowLike(_Holder):
        @classmethod
        def place(cls, pipe, device):  # e.g. the flow families: text encoders stay on the CPU
            log.append(("placed", str(device)))

    holder = FlowLike(log, "flux", "cuda:0")
    with offloaded(holder):
        pass
    assert log == [("flux", "cpu"), ("placed", "cuda:0")]


def test_pixel_blending_keeps_what_the_sampler_reads_off_the_denoiser(tiny, cache):
    # reconstruction guidance's autograd and per-micro-batch backward pass survive the wrapper
    backend = cache.get(tiny["sd"], device="cpu")
    cond = backend.encode_prompts(PROMPTS[:2], "", height=32, width=32)
    inner = backend.make_denoiser(cond, 7.5, micro_batch=2, differentiable=True)
    wrapped = backend.pixel_blending(inner, 2, 0.5, 2)
    assert wrapped is not inner
    assert wrapped.differentiable is True and wrapped.levels_per_call == 1
