"""``python -m core``: parsing, prompt files, exit codes, cancel, all-or-nothing output."""

from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.cli import main as cli
from core.errors import Cancelled, ModelNotFoundError
from core.stack.stack_io import ZoomStack

ROOT = Path(__file__).resolve().parents[1]


def _stack(n: int = 3, size: int = 32, zoom: int = 2) -> ZoomStack:
    rng = np.random.default_rng(0)
    return ZoomStack(rng.random((n, size, size, 3), dtype=np.float32),
                     {"prompts": [f"level {i}" for i in range(n)], "zoom": zoom})


class FakeGenerate:
    """Stands in for core.generate.generate: records the settings, reports progress."""

    def __init__(self, result=None, error=None):
        self.result, self.error, self.calls = result, error, []

    def __call__(self, settings, *, progress=None, cancel=None, models=None):
        self.calls.append(settings)
        for step in range(3):
            progress("sampling", step + 1, 3, None)
        if self.error is not None:
            raise self.error
        return self.result if self.result is not None else _stack(len(settings.prompts), zoom=settings.zoom)


@pytest.fixture
def fake(monkeypatch):
    f = FakeGenerate()
    monkeypatch.setattr(cli, "_load_generate", lambda: f)
    return f


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


# ------------------------------------------------------------------------------ user errors
@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "a", "--steps", "x", "--out", "o"], "invalid int value: 'x'"),
    (["generate", "--out", "o"], "no prompts"),
    (["generate", "--prompt", "  ", "--out", "o"], "prompt of zoom level 1 is empty"),
    (["generate", "--prompt", "a", "--prompt", "", "--out", "o"], "zoom level 2 is empty"),
    (["generate", "--prompt", "a"], "--out"),
    (["generate", "--prompt", "a", "--zoom", "3", "--out", "o"], "power of two"),
    (["generate", "--prompt", "a", "--size", "100", "--out", "o"], "multiple of 32"),
    (["generate", "--prompt", "a", "--size", "64", "--width", "64", "--out", "o"], "--size or --width"),
    (["generate", "--prompt", "a", "--prompts", "x.txt", "--out", "o"], "not both"),
    (["generate", "--prompts", "missing.txt", "--out", "o"], "does not exist"),
    (["generate", "--prompt", "a", "--scheduler", "nope", "--out", "o"], "unknown scheduler"),
    (["generate", "--prompt", "a", "--out", "o", "--video", "--frames-per-level", "0"], "frames per level"),
    (["video", "no_such_stack"], "no_such_stack"),
    (["frobnicate"], "invalid choice"),
    ([], "choose a command"),
])
def test_user_errors_exit_1_with_one_line(capsys, tmp_path, monkeypatch, fake, argv, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, *argv)
    assert code == 1
    assert message in _one_line_error(err)
    assert not fake.calls and not (tmp_path / "o").exists()


def test_generate_errors_are_one_line(capsys, tmp_path, monkeypatch):
    for error in (ModelNotFoundError("model 'x' is not in the cache"), RuntimeError("boom\nsecond line")):
        monkeypatch.setattr(cli, "_load_generate", lambda: FakeGenerate(error=error))
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o", "--quiet")
        assert code == 1
        line = _one_line_error(err)
        assert str(error).split("\n")[0] in line
        assert not (tmp_path / "o").exists() and _siblings(tmp_path / "o") == []
    assert "--debug" in line  # unexpected errors say how to see the traceback
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["generate", "--prompt", "a", "--out", str(tmp_path / "o"), "--debug"])


def test_module_entry_point_parse_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "core", "generate", "--prompt", "", "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: "), r.stderr
    r = subprocess.run([sys.executable, "-m", "core", "examples"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "galaxy" in r.stdout and "p=2  16 levels" in r.stdout


# --------------------------------------------------------------------------------- settings
def test_prompt_file_settings_and_cli_overrides(capsys, tmp_path, fake):
    pf = tmp_path / "p.json"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")  # validated before the model loads
    pf.write_text(json.dumps({"name": "x", "prompts": ["outer", "inner"], "zoom": 4, "steps": 12, "seed": 5,
                              "guidance": 3.0, "photo": "photo.png", "bogus": 1}), encoding="utf-8")
    code, out, err = _run(capsys, "generate", "--prompts", pf, "--seed", "9", "--size", "64",
                          "--negative-prompt", "blurry", "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    (s,) = fake.calls
    assert s.prompts == ["outer", "inner"] and s.zoom == 4 and s.steps == 12 and s.guidance == 3.0
    assert s.seed == 9 and s.width == s.height == 64 and s.negative_prompt == "blurry"
    assert Path(s.photo) == (tmp_path / "photo.png").resolve()  # relative to the prompt file
    assert "warning: ignoring unknown setting(s) bogus" in err


def test_text_prompts_and_examples(capsys, tmp_path, fake):
    (tmp_path / "p.txt").write_text("# comment\nouter\n\ninner\n", encoding="utf-8")
    assert _run(capsys, "generate", "--prompts", tmp_path / "p.txt", "--zoom", "8", "--out", tmp_path / "a",
                "--quiet")[0] == 0
    assert fake.calls[-1].prompts == ["outer", "inner"] and fake.calls[-1].zoom == 8
    assert _run(capsys, "generate", "--prompts", "galaxy", "--out", tmp_path / "b", "--quiet")[0] == 0
    assert len(fake.calls[-1].prompts) == 16 and fake.calls[-1].zoom == 2
    assert _run(capsys, "generate", "--prompts", "Hand", "--zoom", "2", "--out", tmp_path / "c", "--quiet")[0] == 0
    assert len(fake.calls[-1].prompts) == 8 and fake.calls[-1].zoom == 2  # the option wins
    assert _run(capsys, "generate", "--prompt", "x", "--prompt", "y", "--out", tmp_path / "d", "--quiet")[0] == 0
    assert fake.calls[-1].prompts == ["x", "y"]


# ----------------------------------------------------------------------------------- output
def test_generate_writes_stack_and_video(capsys, tmp_path, fake):
    import imageio.v3 as iio

    out_dir = tmp_path / "runs" / "galaxy"  # parent folders are created
    code, out, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--prompt", "c",
                          "--out", out_dir, "--video", "--frames-per-level", "2", "--fps", "8")
    assert code == 0, err
    assert out.split() == [str(out_dir), str(out_dir / "preview.mp4")]
    loaded = ZoomStack.load(out_dir)
    assert loaded.layers.shape == (3, 32, 32, 3) and loaded.prompts == ["level 0", "level 1", "level 2"]
    # by pixels: what generate returned, in order, 8-bit rounded (the centres, where the fake's
    # random levels disagree, are replaced by the finer PNG's downsampled pixels)
    made = _stack(3).layers
    outside = np.ones((32, 32), bool)
    outside[8:24, 8:24] = False
    assert np.abs(loaded.layers[-1] - made[-1]).max() <= 0.5 / 255 + 1e-6
    assert np.abs(loaded.layers[:, outside] - made[:, outside]).max() <= 0.5 / 255 + 1e-6
    assert iio.imread(out_dir / "preview.mp4").shape == (5, 32, 32, 3)
    assert _siblings(out_dir) == ["galaxy"]  # no staging folder left behind

    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", out_dir, "--quiet")
    assert code == 1 and "already exists" in _one_line_error(err) and len(fake.calls) == 1
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", out_dir, "--quiet", "--force")
    assert code == 0, err
    assert ZoomStack.load(out_dir).layers.shape[0] == 1 and not (out_dir / "preview.mp4").exists()
    assert _siblings(out_dir) == ["galaxy"]


def test_video_command(capsys, tmp_path):
    import imageio.v3 as iio

    _stack(4).save(tmp_path / "s")
    code, out, err = _run(capsys, "video", tmp_path / "s", "--frames-per-level", "3", "--quiet")
    assert code == 0, err
    assert out.strip() == str(tmp_path / "s" / "preview.mp4")
    assert iio.imread(out.strip()).shape == (10, 32, 32, 3)
    code, out, err = _run(capsys, "video", tmp_path / "s", "--out", tmp_path / "z.mp4", "--frames-per-level", "1",
                          "--video-size", "16", "--direction", "out", "--quiet")
    assert code == 0, err
    assert iio.imread(tmp_path / "z.mp4").shape == (4, 16, 16, 3)
    code, _, err = _run(capsys, "video", tmp_path / "s", "--out", tmp_path / "z.gif")
    assert code == 1 and ".mp4" in _one_line_error(err)


# ----------------------------------------------------------------------------------- cancel
def _interrupt_when(event: threading.Event, times: int = 1) -> threading.Thread:
    def fire():
        if event.wait(20):
            for _ in range(times):
                _thread.interrupt_main()  # what Ctrl-C does to the main thread
                threading.Event().wait(0.3)
    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


def test_ctrl_c_cancels_generation_and_writes_nothing(capsys, tmp_path, monkeypatch):
    started, seen_cancel = threading.Event(), []

    def generate(settings, *, progress=None, cancel=None, models=None):
        started.set()
        if cancel.wait(20):  # the real generator checks once per denoising step
            seen_cancel.append(True)
            raise Cancelled("generation cancelled")
        return _stack()

    monkeypatch.setattr(cli, "_load_generate", lambda: generate)
    t = _interrupt_when(started)
    code, out, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o", "--video")
    t.join()
    assert code == 130 and seen_cancel == [True]
    assert "cancelled" in err and "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []


def test_second_ctrl_c_quits_at_once(capsys, tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def stubborn(settings, *, progress=None, cancel=None, models=None):
        started.set()
        release.wait(20)  # ignores cancel
        return _stack()

    monkeypatch.setattr(cli, "_load_generate", lambda: stubborn)
    t = _interrupt_when(started, times=2)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o")
    release.set()
    t.join()
    assert code == 130 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["save", "video"])
def test_ctrl_c_while_writing_leaves_nothing(capsys, tmp_path, monkeypatch, fake, where):
    import core.stack.preview

    if where == "save":
        real_write = ZoomStack.write_files

        def write_files(self, folder):
            real_write(self, folder)
            raise KeyboardInterrupt  # after the files exist in the hidden staging folder
        monkeypatch.setattr(ZoomStack, "write_files", write_files)
    else:
        real_write = core.stack.preview.write_preview_video

        def write(*a, progress=None, **kw):
            def boom(n, total):
                if n == 2:
                    raise KeyboardInterrupt
            return real_write(*a, progress=boom, **kw)
        monkeypatch.setattr(core.stack.preview, "write_preview_video", write)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--out", tmp_path / "o",
                        "--video", "--quiet")
    assert code == 130 and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ end to end
def test_end_to_end_on_tiny_sd(capsys, tmp_path):
    from tests.tiny_models import make_tiny_sd  # a tiny random-weight pipeline

    model = make_tiny_sd(tmp_path / "tiny_sd")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"prompts": ["a red galaxy", "a blue star"], "zoom": 2, "steps": 2,
                                   "scheduler": "ddim"}), encoding="utf-8")
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "generate", "--prompts", prompts, "--model", model, "--size", "64",
                          "--device", "cpu", "--seed", "3", "--out", out_dir, "--video",
                          "--frames-per-level", "2")
    assert code == 0, err
    stack = ZoomStack.load(out_dir)
    assert stack.layers.shape == (2, 64, 64, 3)
    m = stack.manifest
    assert m["prompts"] == ["a red galaxy", "a blue star"] and m["zoom"] == 2 and m["seed"] == 3
    assert m["steps"] == 2
    assert (out_dir / "preview.mp4").is_file()
    assert sorted(os.listdir(tmp_path)) == ["out", "p.json", "tiny_sd"]


def test_sigint_on_a_real_run_exits_130_and_writes_nothing(tmp_path):
    import signal
    import time

    from tests.tiny_models import make_tiny_sd

    model = make_tiny_sd(tmp_path / "tiny_sd")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "generate", "--prompt", "a", "--prompt", "b", "--model", model,
         "--size", "64", "--steps", "500", "--device", "cpu", "--out", str(tmp_path / "out")],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    seen = b""
    deadline = time.monotonic() + 120
    while b"sampling" not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += os.read(proc.stderr.fileno(), 4096)
    assert b"sampling" in seen, seen.decode(errors="replace")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    err = (seen + err).decode(errors="replace")
    assert proc.returncode == 130, err
    assert "cancelled; nothing was written" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["tiny_sd"]
