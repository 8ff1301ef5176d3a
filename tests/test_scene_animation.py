"""The zoom's keys and caption spans (p10_blender.rig.animation's pure functions), without Blender."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from core.stack.preview import zoom_levels_for_frames

ROOT = Path(__file__).resolve().parents[1]


def _load_animation():
    # By file: importing the p10_blender package would import bpy and register nothing useful.
    spec = importlib.util.spec_from_file_location(
        "p10_scene_animation", ROOT / "p10_blender" / "rig" / "animation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


anim = _load_animation()


def linear_levels(keys) -> np.ndarray:
    """zoom_level per frame of LINEAR keys (what Blender evaluates), holds included."""
    frames = np.arange(keys.length, dtype=np.float64)
    return np.interp(frames, keys.frames, keys.values)


def test_two_keys_span_the_levels_and_linear_keys_match_core():
    keys = anim.zoom_keys(5, 8)
    assert keys.frames == (0, 32) and keys.values == (0.0, 4.0) and keys.length == 33
    assert keys.ease == 0.0
    levels = linear_levels(keys)
    assert np.array_equal(levels[::8], np.arange(5.0))
    assert np.allclose(levels, zoom_levels_for_frames(5, 8))


def test_holds_direction_and_ease():
    keys = anim.zoom_keys(3, 4, hold_start=2, hold_end=3, ease_frames=2)
    assert keys.frames == (2, 10) and keys.length == 2 + 8 + 3 + 1 and keys.ease == 2.0
    out = anim.zoom_keys(3, 4, hold_start=2, hold_end=3, direction="OUT")
    assert out.values == (2.0, 0.0) and out.frames == keys.frames
    assert np.allclose(linear_levels(anim.zoom_keys(4, 3, direction="OUT")),
                       zoom_levels_for_frames(4, 3, direction="out"))
    # the ease (handle length) is capped at a third of the zoom: a smooth cubic
    assert anim.zoom_keys(3, 6, ease_frames=100).ease == 4.0


def test_level_spans_follow_the_image_that_fills_the_frame():
    levels = linear_levels(anim.zoom_keys(3, 4, hold_end=2))
    assert anim.level_spans(levels, 3) == [(0, 0, 4), (1, 4, 4), (2, 8, 3)]
    out = linear_levels(anim.zoom_keys(3, 2, direction="OUT"))
    assert anim.level_spans(out, 3) == [(2, 0, 1), (1, 1, 2), (0, 3, 2)]
    # float32 F-curve values a hair below an integer still count as that level
    assert anim.level_spans(np.array([0.0, 0.99999994, 2.0]), 3) == [(0, 0, 1), (1, 1, 1),
                                                                      (2, 2, 1)]


@pytest.mark.parametrize("kwargs", [
    dict(num_levels=0, frames_per_level=4), dict(num_levels=3, frames_per_level=0),
    dict(num_levels=3, frames_per_level=4, direction="SIDEWAYS"),
    dict(num_levels=3, frames_per_level=4, hold_start=-1),
])
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        anim.zoom_keys(**kwargs)
