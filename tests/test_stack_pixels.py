"""The stack folder by pixels: save -> load gives the stack back; PNGs consistent to the bit."""

import numpy as np
import pytest
import torch
from PIL import Image

from core.stack.stack_io import ZoomStack, quantise_consistently
from core.zoom.zoom_stack import centre_box, crop_centre, downsample, render_image


def consistent_stack(n: int, h: int, w: int, zoom: int, seed: int = 0) -> np.ndarray:
    """A zoom-consistent float stack (N, H, W, 3) in [0, 1] with distinct content per level,
    pure black and white pixels included (they must survive the trip exactly)."""
    g = torch.Generator().manual_seed(seed)
    layers = torch.rand(n, 3, h, w, generator=g)
    layers[:, :, 0, 0], layers[:, :, 0, 1] = 0.0, 1.0  # corners lie outside every centre
    return render_image(layers, zoom).permute(0, 2, 3, 1).numpy().astype(np.float32)


def png_pixels(folder, manifest) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / name).convert("RGB"))
                     for name in manifest["layers"]])


@pytest.mark.parametrize("zoom,n,h,w", [(2, 4, 16, 24), (4, 3, 32, 32)])
def test_save_load_returns_every_level_by_pixels(tmp_path, zoom, n, h, w):
    layers = consistent_stack(n, h, w, zoom, seed=zoom)
    prompts = [f"p{i}" for i in range(n)]
    out = ZoomStack(layers, {"zoom": zoom, "prompts": prompts}).save(tmp_path / "s")
    loaded = ZoomStack.load(out)
    assert loaded.layers.shape == layers.shape and loaded.layers.dtype == np.float32
    # level by level, in order: 8-bit rounding plus the rounding of the finer level through D_p
    err = np.abs(loaded.layers - layers).reshape(n, -1).max(axis=1)
    assert (err <= 1.5 / 255).all(), err
    # 8-bit values exactly: black stays 0 and white stays 1 (no /256, no offset)
    np.testing.assert_array_equal(loaded.layers * 255, np.rint(loaded.layers * 255))
    assert (loaded.layers[:, 0, 0] == 0).all() and (loaded.layers[:, 0, 1] == 1).all()
    assert loaded.prompts == prompts
    # a stack whose levels are all different is not returned with its levels swapped
    for i in range(n):
        others = [j for j in range(n) if j != i]
        assert min(np.abs(loaded.layers[i] - layers[j]).max() for j in others) > 0.1


@pytest.mark.parametrize("zoom,n,h,w", [(2, 5, 16, 16), (4, 3, 32, 64)])
def test_png_centres_are_rounded_downsampled_next_png_to_the_bit(tmp_path, zoom, n, h, w):
    # floats that are consistent *before* rounding: rounding each level on its own breaks the
    # equality; rounding finest-first (from the rounded finer PNG) keeps it exact
    layers = consistent_stack(n, h, w, zoom, seed=10 + zoom)
    out = ZoomStack(layers, {"zoom": zoom}).save(tmp_path / "s")
    png = png_pixels(out, ZoomStack.load(out).manifest)
    x = torch.from_numpy(png.astype(np.float32) / 255).permute(0, 3, 1, 2)
    for i in range(n - 1):
        expected = np.rint(downsample(x[i + 1], zoom).numpy() * 255).astype(np.uint8)
        centre = crop_centre(torch.from_numpy(png[i]).permute(2, 0, 1), zoom).numpy()
        np.testing.assert_array_equal(centre, expected, err_msg=f"level {i}")
    # the finest PNG is the finest level rounded, and the part outside each centre is the
    # level's own rounded pixels
    np.testing.assert_array_equal(png[-1], np.rint(layers[-1] * 255).astype(np.uint8))
    top, left, ch, cw = centre_box(h, w, zoom)
    outside = np.ones((h, w), bool)
    outside[top:top + ch, left:left + cw] = False
    own = np.rint(layers[:, outside] * 255).astype(np.uint8)
    np.testing.assert_array_equal(png[:, outside], own)


def test_quantising_each_level_on_its_own_would_not_be_consistent():
    # guards the test above: with these floats, independent rounding breaks the bit equality
    layers = consistent_stack(4, 16, 16, 2, seed=12)
    naive = np.rint(layers * 255).astype(np.uint8)
    x = torch.from_numpy(naive.astype(np.float32) / 255).permute(0, 3, 1, 2)
    centre = crop_centre(torch.from_numpy(naive[0]).permute(2, 0, 1), 2).numpy()
    assert not np.array_equal(centre, np.rint(downsample(x[1], 2).numpy() * 255))
    ours = quantise_consistently(layers, 2)
    assert ours.dtype == np.uint8 and not np.array_equal(ours, naive)


def test_save_twice_gives_identical_files(tmp_path):
    # load -> save is a fixed point: the saved PNGs are already consistent 8-bit values
    layers = consistent_stack(3, 16, 16, 2, seed=3)
    first = ZoomStack(layers, {"zoom": 2}).save(tmp_path / "a")
    again = ZoomStack.load(first)
    second = ZoomStack(again.layers, {"zoom": 2}).save(tmp_path / "b")
    m = again.manifest
    np.testing.assert_array_equal(png_pixels(first, m), png_pixels(second, m))
