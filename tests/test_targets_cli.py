"""``python -m core`` with targets (issue 19) and loops (issue 20): parsing, prompt files,
one-line errors with nothing written, ``video --loops``; end to end on the tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.cli import main as cli
from core.stack.stack_io import ZoomStack
from core.zoom.zoom_stack import downsample
from tests.test_cli import FakeGenerate, _one_line_error, _run


@pytest.fixture
def fake(monkeypatch):
    f = FakeGenerate()
    monkeypatch.setattr(cli, "_load_generate", lambda: f)
    return f


def _loop_stack(tmp_path, n=3, size=32):
    rng = np.random.default_rng(0)
    stack = ZoomStack(rng.random((n, size, size, 3), dtype=np.float32),
                      {"prompts": [f"level {i}" for i in range(n)], "zoom": 2, "loop": True,
                       "model": "m"})
    return stack.save(tmp_path / "loop")


def test_target_options_and_prompt_files_reach_the_settings(capsys, tmp_path, fake):
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--prompt", "c",
                        "--target", "0.3,0.6", "--out", tmp_path / "o1", "--quiet")
    assert code == 0, err
    s = fake.calls[-1]
    assert s.targets == [[0.3, 0.6]] and s.transition_targets() == [(0.3, 0.6)] * 2
    assert s.loop is False
    targets = tmp_path / "t.json"
    targets.write_text(json.dumps([[0.1, 0.2], [0.9, 0.8], [0.5, 0.5]]))
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--prompt", "c",
                        "--targets", targets, "--loop", "--out", tmp_path / "o2", "--quiet")
    assert code == 0, err
    s = fake.calls[-1]
    assert s.loop is True and s.transition_targets() == [(0.1, 0.2), (0.9, 0.8), (0.5, 0.5)]
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": ["a", "b"], "targets": [[0.2, 0.2]], "loop": True}))
    code, _, err = _run(capsys, "generate", "--prompts", prompts, "--out", tmp_path / "o3", "--quiet")
    assert code == 0, err
    assert fake.calls[-1].loop is True and fake.calls[-1].transition_targets() == [(0.2, 0.2)] * 2


@pytest.mark.parametrize("extra, message", [
    (["--target", "0.3"], "--target must be X,Y"),
    (["--target", "a,b"], "--target must be X,Y"),
    (["--target", "1.5,0.5"], "target 1 must be [x, y]"),
    (["--target", "0.5,0.5", "--targets", "t.json"], "--target X,Y or --targets FILE, not both"),
    (["--targets", "missing.json"], "does not exist"),
    (["--targets", "bad.json"], "is not a JSON list"),
    (["--targets", "three.json"], "3 targets given for 1 transition"),
    (["--loop", "--targets", "three.json"], "3 targets given for 2 transition"),
    (["--video", "--loops", "2"], "--loops 2 needs a looping stack"),
    (["--loop", "--video", "--loops", "0"], "loops must be a whole number from 1"),
])
def test_bad_targets_and_loops_are_one_line_errors_nothing_written(capsys, tmp_path, monkeypatch,
                                                                  fake, extra, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text("[[0.5, 0.5]]")
    (tmp_path / "bad.json").write_text("[[0.5, 0.5]")
    (tmp_path / "three.json").write_text("[[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", *extra,
                        "--out", "o", "--quiet")
    assert code == 1 and message in _one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not fake.calls


def test_a_one_level_loop_is_refused(capsys, tmp_path, fake):
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--loop", "--out", tmp_path / "o")
    assert code == 1 and "at least 2 levels" in _one_line_error(err)


def test_video_of_a_loop_plays_n_levels_per_loop(capsys, tmp_path):
    import imageio_ffmpeg

    folder = _loop_stack(tmp_path)
    code, out, err = _run(capsys, "video", folder, "--frames-per-level", "2", "--loops", "2",
                          "--quiet", "--out", tmp_path / "v.mp4")
    assert code == 0, err
    assert imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "v.mp4"))[0] == 2 * 3 * 2
    flat = ZoomStack(ZoomStack.load(folder).layers, {"zoom": 2}).save(tmp_path / "flat")
    code, _, err = _run(capsys, "video", flat, "--loops", "2", "--out", tmp_path / "w.mp4")
    assert code == 1 and "needs a looping stack" in _one_line_error(err)
    assert not (tmp_path / "w.mp4").exists()


def test_extend_refuses_a_loop_and_bad_targets_before_loading(capsys, tmp_path):
    folder = _loop_stack(tmp_path)
    code, _, err = _run(capsys, "extend", folder, "--prompt", "x", "--out", tmp_path / "e")
    assert code == 1 and "extend cannot add levels to a cycle" in _one_line_error(err)
    flat = ZoomStack(ZoomStack.load(folder).layers,
                     {"zoom": 2, "model": "m", "prompts": ["a", "b", "c"]}).save(tmp_path / "flat")
    code, _, err = _run(capsys, "extend", flat, "--prompt", "x", "--targets", tmp_path / "no.json",
                        "--out", tmp_path / "e")
    assert code == 1 and "does not exist" in _one_line_error(err)
    (tmp_path / "two.json").write_text("[[0.1, 0.1], [0.2, 0.2]]")
    code, _, err = _run(capsys, "extend", flat, "--prompt", "x", "--targets", tmp_path / "two.json",
                        "--out", tmp_path / "e")
    assert code == 1 and "2 targets given for 1 transition" in _one_line_error(err)
    assert not (tmp_path / "e").exists()


def test_footprints_off_the_samplers_grid_are_refused_before_loading(capsys, tmp_path):
    # a hand-edited manifest: 3 px is not a whole latent pixel of a Stable Diffusion stack
    rng = np.random.default_rng(1)
    folder = ZoomStack(rng.random((2, 32, 32, 3), dtype=np.float32),
                       {"zoom": 2, "model": "m", "prompts": ["a", "b"],
                        "footprints": [[3, 0]]}).save(tmp_path / "odd")
    for argv in (["extend", folder, "--prompt", "x"], ["regenerate", folder, "--level", "1"]):
        code, _, err = _run(capsys, *argv, "--out", tmp_path / "e")
        assert code == 1 and "not on the sampling grid" in _one_line_error(err)
    assert not (tmp_path / "e").exists()
