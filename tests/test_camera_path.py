"""The camera path (core.zoom.camera_path) and the preview frames that follow it: level k's
frame exactly at zoom level k, the view inside the coarser frame in between, no kink at level
boundaries, loops that wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import InvalidInputError
from core.stack.preview import render_zoom_frame, zoom_levels_for_frames
from core.zoom.camera_path import level_origin, level_view, view_rect
from core.zoom.zoom_stack import downsample

P, H, W = 2, 32, 48
FPS = [(0, 16), (24, 0), (8, 4)]          # corners and an interior point (W/p = 24, H/p = 16)
LOOP_FPS = FPS + [(20, 10)]               # the wrap: level 0 inside level 3


def _in_level(view, k_from: int, k_to: int, fps, p=P, width=W, height=H):
    """A view (left, top, size) in level k_from's frame, expressed in level k_to = k_from - 1's."""
    left, top = fps[k_to]
    x, y, s = view
    return left / width + x / p, top / height + y / p, s / p


@pytest.mark.parametrize("fps, loop, n", [(None, False, 4), (FPS, False, 4), (LOOP_FPS, True, 4)])
def test_integer_levels_are_the_level_frames(fps, loop, n):
    for k in range(n):
        assert level_view(k, fps, P, W, H, n, loop) == (k, 0.0, 0.0, 1.0)
        ox, oy, size = level_origin(k, fps, P, W, H, n, loop)
        assert view_rect(k, fps, P, W, H, n, loop) == (ox, oy, size, size)


def test_centred_path_is_the_plain_zoom():
    for z in np.linspace(0, 3, 31):
        left, top, w, h = view_rect(z, None, P, W, H, 4)
        assert w == h == pytest.approx(P ** -z)
        assert left == pytest.approx((1 - P ** -z) / 2) and top == pytest.approx((1 - P ** -z) / 2)


@pytest.mark.parametrize("p", [2, 4])
def test_view_stays_inside_the_coarser_frame(p):
    rng = np.random.default_rng(0)
    for _ in range(20):  # random footprints, extremes included
        fps = [(int(rng.integers(0, W - W // p + 1)), int(rng.integers(0, H - H // p + 1)))
               for _ in range(4)]
        fps[0] = (0, H - H // p)
        for loop in (False, True):
            use = fps if loop else fps[:3]
            for z in rng.uniform(0, 3, 50):
                k, x, y, s = level_view(z, use, p, W, H, 4, loop)
                assert 0 <= x <= 1 - s + 1e-12 and 0 <= y <= 1 - s + 1e-12
                assert s == pytest.approx(float(p) ** -(z - k))


def test_the_view_ends_on_the_next_level():
    # approaching k+1 from below the view shrinks onto level k+1's footprint
    for k in range(3):
        k0, x, y, s = level_view(k + 1 - 1e-5, FPS, P, W, H, 4)
        assert k0 == k and s == pytest.approx(1 / P, abs=1e-4)
        assert (x, y) == pytest.approx((FPS[k][0] / W, FPS[k][1] / H), abs=1e-4)


@pytest.mark.parametrize("fps, loop", [(FPS, False), (LOOP_FPS, True)])
def test_velocity_is_continuous_across_level_boundaries(fps, loop):
    # one-sided finite differences of the view (in level k-1's frame) agree at z = k
    h = 1e-4
    ends = range(1, 5) if loop else range(1, 3)
    for k in ends:
        below = level_view(k - h, fps, P, W, H, 4, loop)
        at = _in_level((0.0, 0.0, 1.0), k % 4, k - 1, fps)
        above = _in_level(level_view(k + h, fps, P, W, H, 4, loop)[1:], k % 4, k - 1, fps)
        left_v = (np.array(at) - np.array(below[1:])) / h
        right_v = (np.array(above) - np.array(at)) / h
        assert np.abs(left_v - right_v).max() < 1e-2 * np.abs(left_v).max() + 1e-3, (k, left_v, right_v)
        assert np.abs(right_v[:2]).max() > 0  # it does move


def test_loop_wraps_and_open_stacks_refuse_levels_outside():
    for z in (0.3, 1.7, 3.2):
        assert view_rect(z + 4, LOOP_FPS, P, W, H, 4, loop=True) == \
            pytest.approx(view_rect(z, LOOP_FPS, P, W, H, 4, loop=True))
    with pytest.raises(InvalidInputError, match="outside the stack's range"):
        view_rect(3.5, FPS, P, W, H, 4)
    with pytest.raises(InvalidInputError, match="footprints"):
        view_rect(1.5, FPS[:2], P, W, H, 4)


# ------------------------------------------------------------------------------ preview
def _ramp_stack(fps, n=4, p=P):
    """Images whose channels 0/1 hold their pixel centres' level-0 x/y: consistent and linear,
    so any frame must show the level-0 coordinates of its own pixel centres."""
    out = []
    for k in range(n):
        ox, oy, size = level_origin(k, fps, p, W, H, n)
        x = ox + (np.arange(W) + 0.5) / W * size
        y = oy + (np.arange(H) + 0.5) / H * size
        img = np.zeros((H, W, 3), np.float32)
        img[..., 0] = x[None, :]
        img[..., 1] = y[:, None]
        out.append(img)
    return np.stack(out)


@pytest.mark.parametrize("fps", [None, FPS])
def test_frames_show_the_path_at_every_zoom_level(fps):
    imgs = _ramp_stack(fps)
    for k in range(4):
        assert np.array_equal(render_zoom_frame(imgs, P, k, footprints=fps), imgs[k])
    for z in (0.25, 0.5, 0.9, 1.3, 2.6):
        frame = render_zoom_frame(imgs, P, z, footprints=fps)
        left, top, vw, vh = view_rect(z, fps, P, W, H, 4)
        want_x = left + (np.arange(W) + 0.5) / W * vw
        want_y = top + (np.arange(H) + 0.5) / H * vh
        tol_x, tol_y = 0.55 * vw / W, 0.55 * vh / H  # half an output pixel (edge mixes)
        assert np.abs(frame[1:-1, 1:-1, 0] - want_x[None, 1:-1]).max() <= tol_x, z
        assert np.abs(frame[1:-1, 1:-1, 1] - want_y[1:-1, None]).max() <= tol_y, z


def _cyclic_stack(fps, n=3, p=P, seed=0) -> np.ndarray:
    """A zoom-consistent loop: every footprint, the wrap's too, is D_p of the next level."""
    rng = np.random.default_rng(seed)
    imgs = torch.from_numpy(rng.random((n, H, W, 3), dtype=np.float32)).permute(0, 3, 1, 2)
    for _ in range(30):
        for i in range(n - 1, -1, -1):
            left, top = fps[i]
            imgs[i, :, top:top + H // p, left:left + W // p] = downsample(imgs[(i + 1) % n], p)
    return imgs.permute(0, 2, 3, 1).numpy()


def test_loop_frames_wrap_without_a_cut():
    fps = [(0, 16), (24, 0), (20, 10)]
    imgs = _cyclic_stack(fps)
    first = render_zoom_frame(imgs, P, 0, footprints=fps, loop=True)
    assert np.array_equal(first, imgs[0])
    assert np.array_equal(render_zoom_frame(imgs, P, 3, footprints=fps, loop=True), imgs[0])
    # just before level N = level 0: level 2's view with level 0 pasted in its footprint
    almost = render_zoom_frame(imgs, P, 3 - 1e-5, footprints=fps, loop=True)
    assert np.abs(almost - first).max() <= 1 / 255
    # the wrapped path is the open one shifted by N
    for z in (0.4, 2.5):
        assert np.array_equal(render_zoom_frame(imgs, P, z + 3, footprints=fps, loop=True),
                              render_zoom_frame(imgs, P, z, footprints=fps, loop=True))


def test_loop_video_levels_run_n_levels_per_loop():
    for direction in ("in", "out"):
        lv = zoom_levels_for_frames(3, 4, direction, loop=True, loops=2)
        assert len(lv) == 2 * 3 * 4 and lv[0] == 0
        step = 1 / 4 if direction == "in" else -1 / 4
        # the frame after the last is the first again; every step is one frame's worth of zoom
        nxt = np.mod(np.append(lv[1:], np.mod(lv[-1] + step, 3)) - lv - step, 3)
        assert np.allclose(np.minimum(nxt, 3 - nxt), 0)
    with pytest.raises(InvalidInputError, match="needs a looping stack"):
        zoom_levels_for_frames(3, 4, loops=2)
    with pytest.raises(InvalidInputError, match="hold"):
        zoom_levels_for_frames(3, 4, hold=2, loop=True)
