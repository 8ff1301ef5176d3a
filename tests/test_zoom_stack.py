"""Properties of the zoom-stack operators: D_p, Π_image, Π_noise, blending."""

import pytest
import torch

from core import blend, render_image, render_noise
from core.zoom.geometry import max_observation_depth
from core.zoom.zoom_stack import (
    crop_centre, downsample, downsample_weights, laplacian_pyramid, noise_gain,
)

CASES = [  # (zoom, N, H, W): square, non-square, deep stacks beyond the image size
    (2, 5, 32, 32), (2, 8, 16, 48), (4, 4, 32, 64), (4, 6, 64, 64), (8, 3, 64, 32),
    (2, 12, 8, 8),
]


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("zoom,n,h,w", CASES)
def test_render_centre_equals_downsampled_next_image_exactly(zoom, n, h, w):
    layers = rand(n, 3, h, w)
    images = render_image(layers, zoom)
    for i in range(n - 1):
        assert torch.equal(crop_centre(images[i], zoom), downsample(images[i + 1], zoom))
    # and at every depth: the centre 1/p^d of image i is D_p^d(image i+d)
    for d in range(2, n):
        if h % zoom**d or w % zoom**d or max_observation_depth(h, w, zoom) < d:
            break
        torch.testing.assert_close(crop_centre(images[0], zoom**d),
                                   downsample(images[d], zoom, times=d), rtol=0, atol=1e-6)


@pytest.mark.parametrize("zoom,n,h,w", [(2, 3, 8, 8), (4, 3, 32, 32), (2, 4, 16, 48), (2, 6, 8, 8)])
def test_every_aligned_observation_reaches_its_layer(zoom, n, h, w):
    # Layer i hears from image i-d for every d up to the deepest pixel-aligned footprint, the
    # deepest included (also when that depth is exactly n-1), and from no deeper image.
    depth = max_observation_depth(h, w, zoom)
    images = render_image(rand(n, 3, h, w, seed=1), zoom)
    base = blend(images, zoom)
    for src in range(n - 1):
        changed = images.clone()
        changed[src] += rand(3, h, w, seed=20 + src)
        moved = (blend(changed, zoom) - base).abs().amax(dim=(1, 2, 3))
        for layer in range(src + 1, n):
            if layer - src <= depth:
                assert moved[layer] > 1e-3, (src, layer, depth)
            else:
                assert moved[layer] == 0, (src, layer, depth)


@pytest.mark.parametrize("zoom,n,h,w", CASES[:3])
def test_render_keeps_each_layer_outside_its_centre(zoom, n, h, w):
    layers = rand(n, 2, h, w)
    images = render_image(layers, zoom)
    assert torch.equal(images[-1], layers[-1])
    outside = torch.ones(h, w, dtype=torch.bool)
    outside[(h - h // zoom) // 2:(h + h // zoom) // 2, (w - w // zoom) // 2:(w + w // zoom) // 2] = False
    assert torch.equal(images[:, :, outside], layers[:, :, outside])
    assert torch.equal(render_image(images, zoom), images)  # rendering is idempotent


def test_render_matches_literal_algorithm_1_for_the_box_filter_case():
    # p = 2: the truncated Gaussian of size 2 is a box, which composes, so Alg. 1 read
    # literally (D_{p^(j-i)} as one p^(j-i)-box on L_j) must agree with finest-first rendering.
    layers = rand(4, 1, 32, 32, dtype=torch.float64)
    images = render_image(layers, 2)
    for i in range(4):
        x = layers[i].clone()
        for j in range(i + 1, 4):
            f = 2 ** (j - i)
            box = layers[j].reshape(1, 32 // f, f, 32 // f, f).mean((2, 4))
            top = (32 - 32 // f) // 2
            x[:, top:top + 32 // f, top:top + 32 // f] = box
        torch.testing.assert_close(images[i], x)


def test_downsample_is_a_normalised_truncated_gaussian():
    for p in (2, 4, 8):
        w = downsample_weights(p, dtype=torch.float64)
        assert w.shape == (p,) and abs(float(w.sum()) - 1) < 1e-12
        assert torch.allclose(w, w.flip(0))
    assert torch.allclose(downsample_weights(2), torch.tensor([0.5, 0.5]))
    assert downsample_weights(4)[0] < downsample_weights(4)[1]  # not a box for p >= 4
    assert downsample(torch.ones(1, 8, 8), 4).allclose(torch.ones(1, 2, 2))


@pytest.mark.parametrize("zoom", [2, 4])
def test_render_noise_is_unit_gaussian_at_every_pixel_of_every_level(zoom):
    draws = 4000
    n, h, w = 4, 16, 16
    samples = torch.stack([render_noise(e, zoom) for e in rand(draws, n, 1, h, w, seed=zoom)])
    mean, std = samples.mean(0), samples.std(0)
    assert mean.abs().max() < 0.08  # 5 standard errors at 4000 draws
    assert (std - 1).abs().max() < 0.06
    # pixels of one level stay uncorrelated (D_p blocks never overlap)
    flat = samples[:, 0, 0].reshape(draws, -1)
    corr = torch.corrcoef(flat.T)
    off_diag = corr - torch.eye(corr.shape[0])
    assert off_diag.abs().max() < 0.1


def test_render_noise_shares_structure_across_levels():
    e = rand(3, 1, 32, 32)
    eps = render_noise(e, 4)
    centre = crop_centre(eps[0], 4)
    finer = downsample(eps[1], 4)
    assert torch.allclose(centre, noise_gain(4) * finer)
    assert torch.corrcoef(torch.stack([centre.flatten(), finer.flatten()]))[0, 1] > 0.999


def test_variance_correction_matches_the_filter_not_the_box_factor():
    # The paper's factor p is exact only for a box; for p=4 our Gaussian needs 1/Σw².
    e = rand(20000, 1, 4, 4, dtype=torch.float64)
    d = downsample(e, 4)
    assert abs(float((noise_gain(4) * d).std()) - 1) < 0.02
    assert abs(float((4 * d).std()) - 1) > 0.1


@pytest.mark.parametrize("zoom,n,h,w", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_consistent_stack_is_a_fixed_point_of_blending(zoom, n, h, w, dtype):
    images = render_image(rand(n, 3, h, w, dtype=dtype), zoom)
    again = render_image(blend(images, zoom), zoom)
    assert again.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(again, images, rtol=0, atol=tol)


def test_misaligned_footprint_does_not_smear_neighbours():
    # 8x8, p=2: layer 3's footprint in image 0 is a 1-pixel centre of an even-sized image,
    # i.e. straddles 4 pixels; image 0 must not influence layer 3 at all.
    assert max_observation_depth(8, 8, 2) == 2
    images = render_image(rand(4, 1, 8, 8), 2)
    changed = images.clone()
    changed[0] += rand(1, 8, 8, seed=5)
    a, b = blend(images, 2), blend(changed, 2)
    assert torch.equal(a[3], b[3])
    assert not torch.equal(a[2], b[2])  # depth 2 is aligned and does contribute


def test_coarse_observation_contributes_only_bands_it_has():
    # Changing the coarse image 0 may change layer 1 only through the bands image 0 has:
    # the change is the expansion of a half-resolution correction, with no finest-band detail.
    images = render_image(rand(3, 1, 32, 32), 2)
    perturbed = images.clone()
    perturbed[0] += rand(1, 32, 32, seed=9)
    change = blend(perturbed, 2)[1:2] - blend(images, 2)[1:2]

    def finest_share(x):
        band = laplacian_pyramid(x, 2, 1)[0]
        return float(band.pow(2).sum() / x.pow(2).sum())

    assert change.abs().max() > 0.05
    white = rand(1, 1, 32, 32, seed=3)
    assert finest_share(change) < 0.2 * finest_share(white)


def test_naive_blending_is_blurrier_and_not_a_fixed_point():
    images = render_image(rand(4, 1, 32, 32), 2)
    naive = render_image(blend(images, 2, method="naive"), 2)
    assert (naive - images).abs().max() > 0.05

    def detail(x):  # energy of the finest Laplacian band of the deepest level
        return float(laplacian_pyramid(x[3:], 2, 1)[0].pow(2).mean())

    assert detail(naive) < 0.9 * detail(images)


@pytest.mark.parametrize("bad", [3, 1, 0, -2, 2.5, 6, True, "2"])
def test_bad_zoom_factor_is_named(bad):
    with pytest.raises(ValueError, match="power of two"):
        render_image(torch.zeros(2, 1, 16, 16), bad)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="width 20 must be a positive multiple of 8"):
        blend(torch.zeros(2, 1, 16, 20), 4)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        render_noise(torch.zeros(1, 16, 16), 2)
    with pytest.raises(ValueError, match="at least one level"):
        render_image(torch.zeros(0, 1, 16, 16), 2)
    with pytest.raises(ValueError, match="blending method"):
        blend(torch.zeros(2, 1, 16, 16), 2, method="average")
