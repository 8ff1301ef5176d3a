"""Fractional-zoom frames (core.stack.preview) and the MP4 preview writer."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import Cancelled, InvalidInputError
from core.stack.preview import _resample, render_zoom_frame, write_preview_video, zoom_levels_for_frames

P, N, H, W = 2, 4, 32, 48


def _box_mean_sin(k: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact mean of sin(2 pi k x) over [a, b]."""
    return (np.cos(2 * np.pi * k * a) - np.cos(2 * np.pi * k * b)) / (2 * np.pi * k * (b - a))


def _box_mean_cos(k: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (np.sin(2 * np.pi * k * b) - np.sin(2 * np.pi * k * a)) / (2 * np.pi * k * (b - a))


def _scene(level: float, h: int = H, w: int = W, zoom: int = P, levels: int = N) -> np.ndarray:
    """Exact pixel-area averages of a multi-scale analytic scene viewed at zoom ``level``.

    The scene has one sinusoid per level of the stack, each at 1/4 of that level's pixel Nyquist
    frequency, so every level shows detail the coarser ones cannot: a consistent, ideal stack.
    """
    half = float(zoom) ** -level
    edges_x = (2 * np.arange(w + 1) / w - 1) * half
    edges_y = (2 * np.arange(h + 1) / h - 1) * half
    ax, bx, ay, by = edges_x[:-1], edges_x[1:], edges_y[:-1], edges_y[1:]
    img = np.full((h, w, 3), 0.5)
    for j in range(levels):
        k = W / 32 * float(zoom) ** j  # cycles per world unit; image j has W/2 * p^j px per unit
        col = np.array([0.2, -0.15, 0.1]) * 0.6**j * (1 if j % 2 else -1)
        img += col * (_box_mean_sin(k, ay, by)[:, None, None] * _box_mean_cos(k, ax, bx)[None, :, None])
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return np.stack([_scene(i) for i in range(N)])


def test_integer_levels_are_exact(stack):
    rng = np.random.default_rng(0)
    noisy = rng.random((3, H, W, 3), dtype=np.float32)
    for imgs in (stack, noisy):
        for i in range(len(imgs)):
            assert np.array_equal(render_zoom_frame(imgs, P, i), imgs[i])
            assert np.array_equal(render_zoom_frame(imgs, P, i, (H, W)), imgs[i])
    # uint8 input is read as value / 255
    u8 = (noisy * 255).round().astype(np.uint8)
    assert np.array_equal(render_zoom_frame(u8, 4, 1), u8[1].astype(np.float32) / np.float32(255))


def test_minified_integer_level_is_box_average():
    rng = np.random.default_rng(1)
    imgs = rng.random((2, H, W, 3), dtype=np.float32)
    got = render_zoom_frame(imgs, P, 1, (H // 2, W // 2))
    want = imgs[1].reshape(H // 2, 2, W // 2, 2, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_pixel_centre_geometry_on_a_ramp():
    # Image 0 holds its own pixel-centre x coordinate / W; image 1 is the consistent centre crop.
    # The documented mapping says output pixel c at level l shows x0 = W/2 + (c + .5 - w/2) p^-l.
    x = (np.arange(W) + 0.5) / W
    img0 = np.broadcast_to(x[None, :, None], (H, W, 3))
    x1 = 0.5 + (x - 0.5) / P
    img1 = np.broadcast_to(x1[None, :, None], (H, W, 3))
    imgs = np.stack([img0, img1]).astype(np.float32)
    for level in (0.25, 0.5, 0.8):
        frame = render_zoom_frame(imgs, P, level)
        c = np.arange(W)
        want = (W / 2 + (c + 0.5 - W / 2) * P ** -level) / W
        # Image 1's footprint in output columns; the pixels its edge cuts are anti-aliased mixes.
        lo, hi = W / 2 - W / 2 * P ** (level - 1), W / 2 + W / 2 * P ** (level - 1)
        outside, inside = (c + 1 <= lo) | (c >= hi), (c >= lo) & (c + 1 <= hi)
        # Outside, image 0 magnified bilinearly: linear interpolation reproduces a ramp exactly.
        np.testing.assert_allclose(frame[H // 2, outside, 0], want[outside], atol=2e-6)
        # Inside, image 1 box-filtered: exact up to the staircase error, far below the half-pixel
        # (0.5 / (W P)) a geometry slip would cost.
        np.testing.assert_allclose(frame[H // 2, inside, 0], want[inside], atol=0.1 / (W * P))
        np.testing.assert_allclose(frame[H // 2, ~inside & ~outside, 0], want[~inside & ~outside],
                                   atol=1 / W)
        assert inside.sum() > W / 2 and outside.sum() >= 4


def test_finer_level_is_pasted_inside_its_footprint():
    imgs = np.zeros((2, H, W, 3), np.float32)
    imgs[0] = np.random.default_rng(2).random((H, W, 3))
    imgs[1] = [0.2, 0.4, 0.6]
    frame = render_zoom_frame(imgs, P, 0.5)
    # Image 1 covers |c' - W/2| <= W / 2 / sqrt(2) of the view: fully covered pixels are exact.
    half_w, half_h = W / 2 / np.sqrt(2), H / 2 / np.sqrt(2)
    c0, c1 = int(np.ceil(W / 2 - half_w)), int(np.floor(W / 2 + half_w))
    r0, r1 = int(np.ceil(H / 2 - half_h)), int(np.floor(H / 2 + half_h))
    np.testing.assert_allclose(frame[r0:r1, c0:c1], np.broadcast_to([0.2, 0.4, 0.6], (r1 - r0, c1 - c0, 3)),
                               atol=1e-6)
    assert not np.allclose(frame[0], [0.2, 0.4, 0.6])  # outside: image 0


@pytest.mark.parametrize("level", [0.3, 0.5, 1.25, 1.9, 2.5, 2.99])
def test_between_levels_matches_ground_truth(stack, level):
    frame = render_zoom_frame(stack, P, level)
    truth = _scene(level)
    err = np.abs(frame - truth)
    # Outside the finer level's footprint only the coarser image exists, magnified: a little blur.
    assert err.mean() < 0.02, err.mean()
    # Centre: the downscaled crop of image floor(level) + 1, close to the truth.
    h2, w2 = H // 4, W // 4
    assert err[H // 2 - h2:H // 2 + h2, W // 2 - w2:W // 2 + w2].mean() < 0.01
    # The pasted finer level matters: the coarse image alone, magnified, is clearly worse.
    base = int(level)
    z = float(P) ** (base - level)
    coarse_only = _resample(stack[base], H, W, z, z, slice(0, H), slice(0, W))
    assert np.abs(coarse_only - truth).mean() > 1.25 * err.mean()


def test_smaller_output_matches_ground_truth(stack):
    for level in (0.0, 1.0, 1.6, 3.0):
        frame = render_zoom_frame(stack, P, level, (H // 2, W // 2))
        assert frame.shape == (H // 2, W // 2, 3)
        assert np.abs(frame - _scene(level, H // 2, W // 2)).mean() < 0.02


def test_zoom_is_continuous(stack):
    levels = np.linspace(0, N - 1, 61)
    frames = [render_zoom_frame(stack, P, lv) for lv in levels]
    steps = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert max(steps) < 3 * np.median(steps)  # no pops when a level switches
    for i in range(1, N):  # approaching a level from below converges to that image
        assert np.abs(render_zoom_frame(stack, P, i - 1e-4) - stack[i]).max() < 0.01


def test_bad_inputs_are_one_line_errors(stack):
    for args, msg in [((stack, 3, 0), "power of two"), ((stack, P, 3.5), "outside"),
                      ((stack, P, -0.5), "outside"), ((stack[0], P, 0), "shape"),
                      ((stack, P, 0, (0, 5)), "positive"), ((stack, P, "x"), "number")]:
        with pytest.raises(InvalidInputError, match=msg) as e:
            render_zoom_frame(*args)
        assert "\n" not in str(e.value)


def test_exponential_schedule():
    lv = zoom_levels_for_frames(4, 5)
    assert len(lv) == 16 and lv[0] == 0 and lv[-1] == 3
    np.testing.assert_allclose(np.diff(lv), 0.2)  # scale p^-l changes by a constant factor
    out = zoom_levels_for_frames(4, 5, "out", hold=2)
    assert len(out) == 20 and list(out[:3]) == [3, 3, 3] and list(out[-3:]) == [0, 0, 0]
    np.testing.assert_allclose(out[2:-2], lv[::-1])
    assert list(zoom_levels_for_frames(1, 24)) == [0.0]
    for bad in [dict(num_levels=0, frames_per_level=2), dict(num_levels=2, frames_per_level=0),
                dict(num_levels=2, frames_per_level=2, direction="up")]:
        with pytest.raises(InvalidInputError):
            zoom_levels_for_frames(**bad)


def test_mp4_frames_and_size(tmp_path):
    import imageio.v3 as iio

    # One flat colour per level: every frame is then easy to predict through the lossy codec.
    colours = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9], [0.9, 0.9, 0.2]], np.float32)
    stack = np.broadcast_to(colours[:, None, None, :], (N, H, W, 3)).copy()
    seen = []
    path = write_preview_video(stack, tmp_path / "z.mp4", frames_per_level=4, fps=12, zoom=P,
                               progress=lambda n, t: seen.append((n, t)))
    video = iio.imread(path) / 255.0
    assert video.shape == (4 * (N - 1) + 1, H, W, 3)
    assert seen[-1] == (13, 13) and len(seen) == 13
    for level in range(N):  # integer levels show the level's image
        assert np.abs(video[4 * level] - colours[level]).mean() < 0.02
    mid = video[2]  # level 0.5: image 1 in the centre, image 0 around it
    assert np.abs(mid[H // 2, W // 2] - colours[1]).max() < 0.05
    assert np.abs(mid[1, 1] - colours[0]).max() < 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["z.mp4"]  # no temp file left

    small = write_preview_video(stack, tmp_path / "s.mp4", frames_per_level=1, size=24, zoom=P,
                                direction="out", hold=1)
    v = iio.imread(small) / 255.0
    assert v.shape == (N + 2, 16, 24, 3)
    assert np.abs(v[0] - colours[-1]).mean() < 0.02 and np.abs(v[-1] - colours[0]).mean() < 0.02


def test_mp4_cancel_leaves_nothing(stack, tmp_path):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        write_preview_video(stack, tmp_path / "z.mp4", frames_per_level=4, zoom=P, cancel=cancel)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidInputError, match=r"\.mp4"):
        write_preview_video(stack, tmp_path / "z.avi", zoom=P)
    with pytest.raises(InvalidInputError, match="zoom factor"):
        write_preview_video(stack, tmp_path / "z.mp4")


def test_preview_and_cli_import_without_torch():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, core.stack.preview, core.cli.main, core.prompts; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
