"""Off-centre footprints and loops in the stack folder (manifest "footprints" / "loop") and in
GenerateSettings (``targets``, ``loop``): round trips, bit-exact 8-bit consistency at offsets and
around a cycle, old stacks unchanged, one-line errors with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import InvalidInputError, StackFormatError
from core.settings import GenerateSettings
from core.stack.stack_io import ZoomStack, quantise_consistently, read_manifest
from core.zoom.geometry import footprints_for_targets
from core.zoom.zoom_stack import downsample

H, W, P = 16, 24, 2


def _cyclic(fps, n, loop, seed=0) -> np.ndarray:
    """Float layers consistent at ``fps`` (around the cycle with ``loop``)."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.random((n, H, W, 3), dtype=np.float32)).permute(0, 3, 1, 2)
    for _ in range(30 if loop else 1):
        for i in range(n - 1 if loop else n - 2, -1, -1):
            left, top = fps[i]
            x[i, :, top:top + H // P, left:left + W // P] = downsample(x[(i + 1) % n], P)
    return x.permute(0, 2, 3, 1).numpy()


def _pngs(folder, manifest) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(folder / name)) for name in manifest["layers"]])


def _exact_at(png: np.ndarray, fps, loop: bool) -> bool:
    """Every footprint of the 8-bit files is round(255 · D_p(next PNG / 255)), to the bit."""
    n = len(png)
    for i in range(n if loop else n - 1):
        left, top = fps[i]
        finer = torch.from_numpy(png[(i + 1) % n].astype(np.float32) / 255).permute(2, 0, 1)
        want = np.rint(downsample(finer, P).permute(1, 2, 0).numpy() * 255)
        if not np.array_equal(png[i, top:top + H // P, left:left + W // P], want):
            return False
    return True


@pytest.mark.parametrize("fps, loop", [([(0, 8), (12, 0)], False),
                                       ([(0, 8), (12, 0), (5, 3)], True)])
def test_footprints_round_trip_and_files_are_exact_at_offsets(tmp_path, fps, loop):
    layers = _cyclic(fps, 3, loop)
    manifest = {"zoom": P, "footprints": [list(f) for f in fps], **({"loop": True} if loop else {})}
    folder = ZoomStack(layers, manifest).save(tmp_path / "s")
    back = ZoomStack.load(folder)
    assert back.footprints == fps and back.loop is loop
    assert json.loads((folder / "manifest.json").read_text())["footprints"] == [list(f) for f in fps]
    png = _pngs(folder, back.manifest)
    assert _exact_at(png, fps, loop)
    assert np.abs(png / 255 - layers).max() <= 1 / 255 + 1e-6  # within a level of rounding
    # and the centred quantisation would not be exact here
    assert not _exact_at(quantise_consistently(layers, P), fps, loop)


def test_old_stacks_load_centred_and_unchanged(tmp_path):
    layers = _cyclic([(6, 4), (6, 4)], 3, False)
    folder = ZoomStack(layers, {"zoom": P}).save(tmp_path / "old")
    m = json.loads((folder / "manifest.json").read_text())
    assert "footprints" not in m and "loop" not in m  # centred stacks are written as before
    old = ZoomStack.load(folder)
    assert old.footprints == [(6, 4), (6, 4)] and old.loop is False
    assert np.array_equal(quantise_consistently(layers, P),
                          quantise_consistently(layers, P, [(6, 4), (6, 4)]))


@pytest.mark.parametrize("change, message", [
    ({"footprints": [[0, 0]]}, "must list 2 [left, top] entries"),
    ({"footprints": [[0, 0], [0, 0], [0, 0]]}, "must list 2"),
    ({"footprints": [[0, 0], [13, 0]]}, "footprints[1] (level 2 inside level 1) = [13, 0] puts"),
    ({"footprints": [[0, -1], [0, 0]]}, "footprints[0]"),
    ({"footprints": [[0, 0], [1.5, 0]]}, "footprints[1] (level 2 inside level 1) must be [left, top] in whole"),
    ({"footprints": [[0, 0], [True, 0]]}, "footprints[1]"),
    ({"footprints": [[0, 0], "0,0"]}, "footprints[1]"),
    ({"footprints": "centre"}, "must list 2"),
    ({"loop": "yes"}, "'loop' must be true or false"),
    ({"loop": True, "footprints": [[0, 0], [0, 0]]}, "must list 3 [left, top] entries"),
])
def test_bad_footprints_are_one_line_errors_and_nothing_is_written(tmp_path, change, message):
    layers = _cyclic([(6, 4), (6, 4)], 3, False)
    good = ZoomStack(layers, {"zoom": P}).save(tmp_path / "good")
    m = json.loads((good / "manifest.json").read_text())
    m.update(change)
    (good / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StackFormatError) as err:
        read_manifest(good)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(StackFormatError, match="footprints|loop"):
        ZoomStack(layers, {"zoom": P, **change}).save(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]


def test_a_one_level_loop_is_refused(tmp_path):
    with pytest.raises(StackFormatError, match="loop needs at least 2 levels"):
        ZoomStack(np.zeros((1, H, W, 3), np.float32), {"zoom": P, "loop": True}).save(tmp_path / "x")


# ---------------------------------------------------------------------------- settings
def _settings(**kw) -> GenerateSettings:
    return GenerateSettings(prompts=["a", "b", "c"], width=64, height=64, **kw)


def test_targets_and_loop_settings():
    s = _settings(targets=[0.25, 0.75]).validate()  # a bare pair: every transition
    assert s.transition_targets() == [(0.25, 0.75)] * 2
    s = _settings(targets=[[0.1, 0.2], [0.3, 0.4]]).validate()
    assert s.transition_targets() == [(0.1, 0.2), (0.3, 0.4)]
    s = _settings(targets=[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], loop=True).validate()
    assert s.num_transitions == 3 and s.transition_targets()[2] == (0.5, 0.6)
    assert _settings().validate().transition_targets() is None
    back = GenerateSettings.from_dict(s.to_dict())
    assert back.targets == s.targets and back.loop is True


@pytest.mark.parametrize("kw, message", [
    ({"targets": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]}, "3 targets given for 2 transition"),
    ({"targets": [[0.1, 0.2]] * 2, "loop": True}, "2 targets given for 3 transition"),
    ({"targets": [[0.1, 1.2], [0.3, 0.4]]}, "target 1 must be [x, y]"),
    ({"targets": [[0.1, 0.2], [0.3]]}, "target 2 must be [x, y]"),
    ({"targets": [[0.1, 0.2], ["0.3", 0.4]]}, "target 2"),
    ({"targets": [[0.1, float("nan")], [0.3, 0.4]]}, "target 1"),
    ({"targets": "centre"}, "targets must be a list"),
    ({"targets": []}, "targets must be a list"),
    ({"loop": "yes"}, "loop must be true or false"),
])
def test_bad_targets_are_one_line_errors(kw, message):
    with pytest.raises(InvalidInputError) as err:
        _settings(**kw).validate()
    assert message in str(err.value)


def test_a_single_level_cannot_loop():
    with pytest.raises(InvalidInputError, match="at least 2 levels"):
        GenerateSettings(prompts=["a"], width=64, height=64, loop=True).validate()


def test_targets_land_on_the_nearest_footprint_inside_the_frame():
    # 8 x 8 grid, p = 2: 4 x 4 footprints, left/top 0..4
    assert footprints_for_targets([(0.5, 0.5)], 8, 8, 2) == [(2, 2)]
    assert footprints_for_targets([(0.0, 1.0)], 8, 8, 2) == [(0, 4)]   # clamped into the frame
    assert footprints_for_targets([(0.75, 0.3)], 8, 8, 2) == [(4, 0)]  # centre 6 -> 4; 2.4 -> 0
    assert footprints_for_targets([(0.55, 0.45)], 8, 8, 2) == [(2, 2)]  # centre 4.4 -> 2 (nearest)
