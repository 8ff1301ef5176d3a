"""Edge cases of the footprint geometry that review mutants showed unguarded: ties of the
target grid, vertical-only misalignment, non-square frames in the manifest."""

from pathlib import Path

import pytest

from core.errors import StackFormatError
from core.stack.stack_io import validate_footprints
from core.zoom.geometry import footprints_for_targets, observation_box


def test_a_target_halfway_between_grid_points_goes_towards_the_centre():
    # 64 px, p = 2, grid 8: x = 20/64 wants start 4, halfway between 0 and 8; centred is 16
    assert footprints_for_targets([[20 / 64, 0.5]], 64, 64, 2, grid=8) == [(8, 16)]
    # and mirrored: x = 44/64 wants 28, halfway between 24 and 32 -> 24 (nearer 16)
    assert footprints_for_targets([[44 / 64, 0.5]], 64, 64, 2, grid=8) == [(24, 16)]


def test_a_depth_misaligned_only_vertically_carries_no_observation():
    # level 2 inside level 0 at (0 + 0/2, 0 + 1/2): the top straddles a D_p block
    assert observation_box([(0, 0), (0, 1)], 64, 64, 2, 0, 2) is None
    assert observation_box([(0, 0), (1, 0)], 64, 64, 2, 0, 2) is None
    assert observation_box([(0, 0), (0, 2)], 64, 64, 2, 0, 2) is not None


def test_manifest_footprints_are_checked_against_each_axis_of_a_non_square_frame():
    base = {"num_levels": 2, "width": 128, "height": 64, "zoom": 2}
    validate_footprints({**base, "footprints": [[64, 32]]}, Path("s"))  # the bottom-right corner
    with pytest.raises(StackFormatError, match=r"top 0\.\.32"):
        validate_footprints({**base, "footprints": [[0, 40]]}, Path("s"))
    with pytest.raises(StackFormatError, match=r"left 0\.\.64"):
        validate_footprints({**base, "footprints": [[65, 0]]}, Path("s"))
