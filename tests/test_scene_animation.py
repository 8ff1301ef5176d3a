"""The exponential zoom curve (p10_blender.animation's pure functions), without Blender."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from core.preview import zoom_levels_for_frames

ROOT = Path(__file__).resolve().parents[1]


def _load_animation():
    # By file: importing the p10_blender package would import bpy and register nothing useful.
    spec = importlib.util.spec_from_file_location(
        "p10_scene_animation", ROOT / "p10_blender" / "animation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


anim = _load_animation()


def test_linear_zoom_hits_every_level_on_its_frame_and_matches_core():
    levels = anim.zoom_levels(5, 8)
    assert len(levels) == 4 * 8 + 1
    assert np.array_equal(levels[::8], np.arange(5.0))
    assert np.allclose(levels, zoom_levels_for_frames(5, 8))
    # exponential: the ortho scale shrinks by the same factor every frame
    scales = anim.ortho_scales(levels, 2, 1.0)
    assert np.allclose(scales[1:] / scales[:-1], 2.0 ** (-1 / 8))
    assert scales[0] == 1.0 and scales[-1] == 2.0 ** -4


def test_holds_and_direction_out():
    levels = anim.zoom_levels(3, 4, hold_start=2, hold_end=3)
    assert len(levels) == 2 + 9 + 3
    assert np.all(levels[:3] == 0) and np.all(levels[-4:] == 2)
    out = anim.zoom_levels(3, 4, hold_start=2, hold_end=3, direction="OUT")
    assert np.array_equal(out, levels[::-1])
    assert np.allclose(anim.zoom_levels(4, 3, direction="OUT"),
                       zoom_levels_for_frames(4, 3, direction="out"))


def test_ease_keeps_duration_and_endpoints_and_is_smooth():
    plain = anim.zoom_levels(4, 10)
    eased = anim.zoom_levels(4, 10, ease_frames=6)
    assert len(eased) == len(plain)
    assert eased[0] == 0 and eased[-1] == 3
    speed = np.diff(eased)
    assert np.all(speed > 0)                      # monotone: never stops or reverses
    assert speed[0] < speed[len(speed) // 2] / 4  # starts slowly
    assert speed[-1] < speed[len(speed) // 2] / 4  # ends slowly
    assert np.max(np.abs(np.diff(speed))) < 0.05   # no jumps in speed
    # constant speed in the middle, faster than the plain zoom to make up for the ramps
    mid = speed[8:22]
    assert np.allclose(mid, mid[0]) and mid[0] > 0.1


def test_level_spans_follow_the_image_that_fills_the_frame():
    levels = anim.zoom_levels(3, 4, hold_end=2)
    assert anim.level_spans(levels, 3) == [(0, 0, 4), (1, 4, 4), (2, 8, 3)]
    out = anim.zoom_levels(3, 2, direction="OUT")
    assert anim.level_spans(out, 3) == [(2, 0, 1), (1, 1, 2), (0, 3, 2)]


@pytest.mark.parametrize("kwargs", [
    dict(num_levels=0, frames_per_level=4), dict(num_levels=3, frames_per_level=0),
    dict(num_levels=3, frames_per_level=4, direction="SIDEWAYS"),
    dict(num_levels=3, frames_per_level=4, hold_start=-1),
])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        anim.zoom_levels(**kwargs)
