"""Faults and hostile input (docs/faults.md): each test names the fault it keeps fixed.

Fast: fake generators, 32-64 px stacks, small subprocesses; no model weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.cli import main as cli
from core.errors import (Cancelled, InvalidInputError, OutOfMemoryError, StackFormatError,
                         is_out_of_memory)
from core.stack.stack_io import ZoomStack

from tests.test_cli import _one_line_error as _error_line
from tests.test_cli import _run, _stack

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ out of memory (B6)
@pytest.mark.parametrize("exc", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 8589934592 bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("[enforce fail at ..\\c10\\core\\impl\\alloc_cpu.cpp:72] data. DefaultCPUAllocator: "
                 "not enough memory: you tried to allocate 123 bytes."),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"),
    type("OutOfMemoryError", (RuntimeError,), {})("CUDA error"),
    OutOfMemoryError("out of GPU memory"),
])
def test_out_of_memory_detector_knows_every_allocator(exc):
    assert is_out_of_memory(exc)
    try:
        try:
            raise exc
        except BaseException as inner:
            raise ValueError("wrapped") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)  # found through the cause chain


def test_out_of_memory_outside_the_model_is_one_line(capsys, tmp_path, monkeypatch):
    def alloc_fails(self, folder):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 8589934592 bytes.")
    monkeypatch.setattr(cli, "_load_generate", lambda: FakeGenerate())
    monkeypatch.setattr(ZoomStack, "write_files", alloc_fails)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "error: out of memory" in _error_line(err) and "alloc_cpu" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("memory of a goldfish"),
                                 KeyError("alloc")])
def test_out_of_memory_detector_is_not_fooled(exc):
    assert not is_out_of_memory(exc)


def test_cpu_allocator_failure_becomes_one_line_out_of_memory(monkeypatch):
    import core.generate as gen
    from core.settings import GenerateSettings

    class Cache:
        def get(self, *a, **kw):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 8589934592 bytes.")

        def release(self):
            pass
    with pytest.raises(OutOfMemoryError, match="out of GPU memory while loading model"):
        gen.generate(GenerateSettings(prompts=["a", "b"], width=64, height=64), models=Cache())


# ------------------------------------------------------------------------------ fixtures
class FakeGenerate:
    """Stands in for core.generate.generate; ``during(settings)`` runs mid-generation."""

    def __init__(self, during=None):
        self.during, self.calls = during, []

    def __call__(self, settings, *, progress=None, cancel=None, models=None):
        self.calls.append(settings)
        if self.during is not None:
            self.during(settings)
        return _stack(len(settings.prompts), zoom=settings.zoom)


@pytest.fixture
def fake(monkeypatch):
    f = FakeGenerate()
    monkeypatch.setattr(cli, "_load_generate", lambda: f)
    return f


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _good_stack_with_video(folder: Path) -> bytes:
    from core.stack.preview import write_preview_video

    _stack(3).save(folder)
    write_preview_video(ZoomStack.load(folder), folder / "preview.mp4", frames_per_level=3)
    return (folder / "preview.mp4").read_bytes()


# Runs the command line in a subprocess with a fake generator (no model): argv after "--".
_FAKE_CLI = '''
import os, sys, numpy as np
from core.cli import main as cli
from core.stack.stack_io import ZoomStack
def generate(settings, *, progress=None, cancel=None, models=None):
    if os.environ.get("FAKE_SLOW") and cancel.wait(60):  # a long sampling run
        raise RuntimeError("cancelled by a signal, never reported")
    rng = np.random.default_rng(0)
    n = len(settings.prompts)
    return ZoomStack(rng.random((n, 64, 64, 3), dtype=np.float32), {"prompts": settings.prompts, "zoom": 2})
cli._load_generate = lambda: generate
sys.exit(cli.main(sys.argv[1:]))
'''


def _cli_process(args, *, fsize_limit=None, env=None, **kw):
    import resource

    def limit():
        if fsize_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1",
               **(env or {}))
    return subprocess.Popen([sys.executable, "-c", _FAKE_CLI, *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limit, **kw)


# -------------------------------------------------------------- B1: the video is checked
def test_b1_video_under_file_size_limit_keeps_the_good_video(tmp_path):
    good = _good_stack_with_video(tmp_path / "s")
    proc = _cli_process(["video", tmp_path / "s", "--frames-per-level", "400", "--quiet"],
                        fsize_limit=len(good) + 4096)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "preview.mp4" in _error_line(err) and out == ""
    assert (tmp_path / "s" / "preview.mp4").read_bytes() == good  # the good one survives
    assert not [n for n in _listing(tmp_path / "s") if n.startswith(".")]


def test_b1_generate_video_failure_keeps_the_stack(tmp_path):
    proc = _cli_process(["generate", "--prompt", "a", "--prompt", "b", "--size", "64", "--quiet",
                         "--out", tmp_path / "o", "--video", "--frames-per-level", "400"],
                        fsize_limit=64 * 1024)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    line = _error_line(err)
    assert "video failed" in line and "stack was kept" in line
    assert out.split() == [str(tmp_path / "o")]  # the stack, not the video
    assert ZoomStack.load(tmp_path / "o").layers.shape == (2, 64, 64, 3)
    assert _listing(tmp_path) == ["o", "o/layer_00.png", "o/layer_01.png", "o/manifest.json"]


def test_b1_truncating_writer_is_caught(tmp_path, monkeypatch):
    import imageio_ffmpeg

    from core.errors import WriteError
    from core.stack.preview import write_preview_video

    good = _good_stack_with_video(tmp_path / "s")

    def truncating_writer(path, size, **kw):  # accepts every frame, writes half a file
        while (yield) is not None:
            pass
        Path(path).write_bytes(good[: len(good) // 2])
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", truncating_writer)
    with pytest.raises(WriteError, match="unreadable|incomplete"):
        write_preview_video(tmp_path / "s", tmp_path / "s" / "preview.mp4", frames_per_level=3)
    assert (tmp_path / "s" / "preview.mp4").read_bytes() == good
    assert not [n for n in _listing(tmp_path / "s") if n.startswith(".")]


# ------------------------------------------- B2: never replace what appeared during the run
@pytest.mark.parametrize("what", ["folder with a file", "empty folder", "file"])
def test_b2_output_that_appears_during_the_run_is_left_alone(capsys, tmp_path, monkeypatch, what):
    out = tmp_path / "o"

    def appear(settings):
        if what == "file":
            out.write_text("theirs")
        else:
            out.mkdir()
            if what != "empty folder":
                (out / "theirs.txt").write_text("keep me")
    fake = FakeGenerate(during=appear)
    monkeypatch.setattr(cli, "_load_generate", lambda: fake)
    code, stdout, err = _run(capsys, "generate", "--prompt", "a", "--out", out, "--quiet")
    assert code == 1
    line = _error_line(err)
    assert "appeared during the run" in line and str(tmp_path / "o-2") in line
    assert stdout.split() == [str(tmp_path / "o-2")]
    if what == "file":
        assert out.read_text() == "theirs"
    else:
        assert _listing(out) == ([] if what == "empty folder" else ["theirs.txt"])
    assert ZoomStack.load(tmp_path / "o-2").layers.shape[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "o-2"]


def test_b2_second_run_to_the_same_folder_fails_before_generating(capsys, tmp_path, fake):
    assert _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o", "--quiet")[0] == 0
    code, _, err = _run(capsys, "generate", "--prompt", "b", "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "already exists" in _error_line(err) and len(fake.calls) == 1
    assert ZoomStack.load(tmp_path / "o").prompts == ["level 0"]


# ------------------------------------------------------------ B3: --force is atomic
def test_b3_signal_during_force_replacement_completes_it(capsys, tmp_path, monkeypatch, fake):
    import shutil

    import core.stack.publish

    out = tmp_path / "o"
    _good_stack_with_video(out)
    real_rmtree = shutil.rmtree
    fired = []

    def rmtree_with_signal(path, *a, **kw):  # Ctrl-C and SIGTERM while the old one is deleted
        if ".old-" in str(path) and not fired:
            fired.append(path)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_rmtree(path, *a, **kw)
    monkeypatch.setattr(core.stack.publish.shutil, "rmtree", rmtree_with_signal)
    code, stdout, err = _run(capsys, "generate", "--prompt", "x", "--prompt", "y", "--out", out,
                             "--force", "--quiet")
    assert fired and code == 0, err
    assert ZoomStack.load(out).prompts == ["level 0", "level 1"]  # the new stack, complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # old one gone, nothing hidden


def test_b3_failed_force_replacement_restores_the_old_stack(capsys, tmp_path, monkeypatch, fake):
    import core.stack.publish

    out = tmp_path / "o"
    good = _good_stack_with_video(out)
    before = _listing(out)

    def broken_rename(src, dst):
        raise KeyboardInterrupt  # interrupted between moving the old aside and renaming the new in
    monkeypatch.setattr(core.stack.publish, "rename_noreplace", broken_rename)
    code, _, err = _run(capsys, "generate", "--prompt", "x", "--out", out, "--force", "--quiet")
    assert code == 130 and "nothing was written" in err
    assert _listing(out) == before and (out / "preview.mp4").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]


def test_b3_force_replaces_only_a_stack(capsys, tmp_path, monkeypatch, fake):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "afile").write_text("x")
    _stack(1).save(tmp_path / "here")  # a stack, but the shell is in it
    for target, words in ((tmp_path / "mine", "not a zoom-stack folder"),
                          (tmp_path / "afile", "not a folder"), (".", "current folder")):
        monkeypatch.chdir(tmp_path / "here")
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", target, "--force", "--quiet")
        assert code == 1 and words in _error_line(err)
    assert not fake.calls and (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    assert ZoomStack.load(tmp_path / "here").layers.shape[0] == 1


# ----------------------------------------- B4: the output is checked before generating
def test_b4_unwritable_output_fails_before_generating(capsys, tmp_path, monkeypatch, fake):
    import shutil

    import core.stack.publish

    (tmp_path / "afile").write_text("x")
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "afile" / "o", "--quiet")
    assert code == 1 and "is a file, not a folder" in _error_line(err)

    def read_only(parent, prefix):
        raise PermissionError(13, "Permission denied")
    with monkeypatch.context() as m:
        m.setattr(core.stack.publish, "make_hidden_dir", read_only)
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "ro" / "o", "--quiet")
    assert code == 1 and "cannot write to the folder" in _error_line(err)

    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--size", "64", "--out", tmp_path / "o",
                            "--quiet")
    assert code == 1 and "not enough free disk space" in _error_line(err)
    assert not fake.calls and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_b4_missing_parents_are_created_and_removed_again_on_cancel(capsys, tmp_path, monkeypatch):
    def cancelled(settings, **kw):
        assert (tmp_path / "a" / "b").is_dir()  # made before the model loads
        raise Cancelled("generation cancelled")
    monkeypatch.setattr(cli, "_load_generate", lambda: cancelled)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "a" / "b" / "o", "--quiet")
    assert code == 130 and list(tmp_path.iterdir()) == []


# ------------------------------------------------------ B5 / B11: 16-bit greyscale images
def _grey16(path: Path, size: int = 32) -> float:
    from PIL import Image

    ramp = np.linspace(0, 65535 * 0.9, size * size).reshape(size, size).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    return float(ramp.mean() / 65535)


def test_b5_16_bit_greyscale_photo_keeps_its_brightness(tmp_path):
    from core.generate import load_photo

    mean = _grey16(tmp_path / "photo.png")
    photo = load_photo(str(tmp_path / "photo.png"), 32, 32)  # (1, 3, H, W) in [-1, 1]
    assert photo.shape == (1, 3, 32, 32)
    assert abs(float(photo.mean()) - (2 * mean - 1)) < 0.02  # was 0.997 (clipped to white)


def test_b11_16_bit_greyscale_layer_loads_right(tmp_path):
    _stack(2).save(tmp_path / "s")
    mean = _grey16(tmp_path / "s" / "layer_01.png")
    layers = ZoomStack.load(tmp_path / "s").layers
    assert abs(float(layers[1].mean()) - mean) < 1e-3  # was 1.000
    assert np.allclose(layers[1][..., 0], layers[1][..., 2])


# ------------------------------------------------------------ B6 / B9: settings, early
@pytest.mark.parametrize("extra, words", [
    (["--size", "100000"], "too large for this model"),
    (["--width", "4096", "--height", "512"], "at most 2048 pixels"),
    (["--seed", str(2**70)], "seed must be a whole number from 0"),
    (["--seed", "-1"], "seed must be"),
    (["--guidance", "inf"], "guidance must be a number"),
    (["--guidance", "nan"], "guidance must be a number"),
    (["--guidance", "1e9"], "guidance must be a number"),
    (["--steps", "100000"], "steps must be a whole number from 1 to 1000"),
    (["--steps", "0"], "steps must be"),
    (["--video", "--fps", "inf"], "frames per second"),
    (["--video", "--fps", "0"], "frames per second"),
    (["--video", "--video-size", "100000"], "video size"),
    (["--video", "--frames-per-level", "100000000"], "frames per level"),
    (["--micro-batch", "0"], "micro-batch"),
])
def test_b6_b9_bad_settings_fail_before_any_model_loads(capsys, tmp_path, fake, extra, words):
    code, out, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", *extra,
                          "--out", tmp_path / "o", "--quiet")
    assert code == 1 and words in _error_line(err), err
    assert not fake.calls and list(tmp_path.iterdir()) == []


def test_b6_stack_beyond_available_memory_fails_early(capsys, tmp_path, monkeypatch, fake):
    import core.settings

    monkeypatch.setattr(core.settings, "available_memory", lambda: 2**30)
    code, _, err = _run(capsys, "generate", *["--prompt", "a"] * 40, "--size", "1024",
                        "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "GiB available" in _error_line(err) and not fake.calls


@pytest.mark.parametrize("doc, words", [
    ({"scheduler": ["ddim"]}, "scheduler must be text"),
    ({"device": 3}, "device must be text"),
    ({"steps": 2.5}, "steps must be"),
    ({"seed": "7"}, "seed must be"),
    ({"guidance": "high"}, "guidance must be"),
    ({"family": ["sd"]}, "family must be text"),
    ({"width": 64.5, "height": 64}, "multiple of"),
])
def test_b9_b10_wrong_types_in_a_prompt_file_are_one_line(capsys, tmp_path, fake, doc, words):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"prompts": ["a", "b"], **doc}), encoding="utf-8")
    code, _, err = _run(capsys, "generate", "--prompts", pf, "--out", tmp_path / "o", "--quiet")
    assert code == 1 and words in _error_line(err), err
    assert not fake.calls


def test_b9_steps_beyond_the_models_schedule(monkeypatch):
    import core.generate as gen
    from core.settings import GenerateSettings

    class Backend:
        family, device, scale_factor, native_size = "sd", __import__("torch").device("cpu"), 8, 64
        scheduler_config = {"num_train_timesteps": 50, "prediction_type": "epsilon"}

        def sampling_config(self, height, width):  # core.backends.base.Backend's hook
            return dict(self.scheduler_config)

    class Cache:
        def get(self, *a, **kw):
            return Backend()

        def release(self):
            pass
    with pytest.raises(InvalidInputError, match="exceed this model's 50-step schedule"):
        gen.generate(GenerateSettings(prompts=["a"], steps=60, width=64, height=64,
                                      scheduler="ddim"), models=Cache())


# ------------------------------------------------------------------------- B10: types
def test_b10_json_numbers_are_whole_numbers_everywhere(capsys, tmp_path, fake):
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"prompts": ["a", "b"], "zoom": 2.0, "width": 64.0, "height": 64.0,
                              "steps": 12.0, "seed": 3.0}), encoding="utf-8")
    code, _, err = _run(capsys, "generate", "--prompts", pf, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    (s,) = fake.calls
    for name, value in (("zoom", 2), ("width", 64), ("height", 64), ("steps", 12), ("seed", 3)):
        assert getattr(s, name) == value and type(getattr(s, name)) is int, name


@pytest.mark.parametrize("key, value, words", [
    ("width", "32", "width must be a whole number of pixels"),
    ("height", 32.0, "height must be a whole number of pixels"),
    ("num_levels", True, "num_levels must be a positive integer"),
    ("format_version", "1", "format_version must be a whole number"),   # B8
    ("format_version", None, "format_version must be a whole number"),  # B8
    ("levels", [{"prompt": "level 0", "made_by": "generate", "seed": 0}],
     "'levels' must list 2 records"),
    ("prompts", ["level 0", 7], "the prompt of level 1 must be text, got 7"),          # R9
    ("seed", "abc", "seed must be a whole number, got 'abc'"),                         # R9
    ("levels", [{"seed": 1.5}, {}], "the seed of level 0 in 'levels' must be a whole"),  # R9
    ("model", ["sd"], "model must be text"),                                          # R9
])
def test_b8_b10_malformed_manifest_values_are_stack_format_errors(tmp_path, key, value, words):
    from core.stack.stack_io import read_manifest

    _stack(2).save(tmp_path / "s")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m[key] = value
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    for load in (read_manifest, ZoomStack.load):
        with pytest.raises(StackFormatError, match=words):
            load(tmp_path / "s")


def test_b8_cli_video_of_a_bad_manifest_is_one_line(capsys, tmp_path):
    _stack(2).save(tmp_path / "s")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**m, "format_version": None}))
    code, _, err = _run(capsys, "video", tmp_path / "s", "--quiet")
    assert code == 1 and "format_version" in _error_line(err) and "TypeError" not in err


# ----------------------------------------------------------------- B7: SIGTERM cleans up
def _wait_for(pattern: str, folder: Path, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{pattern} never appeared"
        time.sleep(0.02)


def test_b7_sigterm_while_generating_leaves_nothing(tmp_path):
    proc = _cli_process(["generate", "--prompt", "a", "--size", "64", "--quiet",
                         "--out", tmp_path / "new" / "o"], env={"FAKE_SLOW": "1"})
    _wait_for("new/.o.*", tmp_path, proc)  # the staging folder exists before the model loads
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip() == "terminated; nothing was written" and out == ""
    assert list(tmp_path.iterdir()) == []  # the parent folder it made is gone too


def test_b7_sigterm_while_generate_writes_the_video_leaves_nothing(tmp_path):
    proc = _cli_process(["generate", "--prompt", "a", "--prompt", "b", "--size", "64", "--quiet",
                         "--out", tmp_path / "o", "--video", "--frames-per-level", "5000"])
    _wait_for(".o.*/.preview.*.mp4", tmp_path, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated; nothing was written" in err and "Traceback" not in err and out == ""
    assert list(tmp_path.iterdir()) == []


def test_b7_signal_while_ffmpeg_starts_waits_for_the_cleanup(tmp_path, monkeypatch):
    """A SIGTERM that lands while FFmpeg starts (inside Popen, in a loaded machine's long
    window) is held until the temporary file and the writer can both be cleaned up: FFmpeg
    is stopped and waited for before the file is removed, so it cannot recreate it."""
    import imageio_ffmpeg

    from core.stack.preview import write_preview_video
    from core.signals import Terminated, sigterm_raises

    real, started = imageio_ffmpeg.write_frames, []

    class Starting:  # the real writer; SIGTERM arrives just as FFmpeg is up
        def __init__(self, *a, **k):
            self.gen = real(*a, **k)
            started.append(self.gen)

        def send(self, value):
            out = self.gen.send(value)
            if value is None:
                signal.raise_signal(signal.SIGTERM)
            return out

        def close(self):
            self.gen.close()

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", Starting)
    stack = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    with pytest.raises(Terminated), sigterm_raises():
        write_preview_video(stack, tmp_path / "v.mp4", frames_per_level=4, zoom=2)
    assert started and started[0].gi_frame is None  # FFmpeg was stopped and waited for
    time.sleep(0.5)  # an orphaned FFmpeg would have recreated its file by now
    assert list(tmp_path.iterdir()) == []


def test_b7_sigterm_on_video_keeps_the_old_video(tmp_path):
    good = _good_stack_with_video(tmp_path / "s")
    proc = _cli_process(["video", tmp_path / "s", "--frames-per-level", "5000", "--quiet"])
    _wait_for(".preview.*.mp4", tmp_path / "s", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert (tmp_path / "s" / "preview.mp4").read_bytes() == good
    assert not [n for n in _listing(tmp_path / "s") if n.startswith(".")]


# ------------------------------------------------------------------------ B13: umask
@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_b13_outputs_honour_the_umask(capsys, tmp_path, fake, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--out",
                            tmp_path / "new" / "o", "--video", "--frames-per-level", "2", "--quiet")
        _stack(2).save(tmp_path / "api")
    finally:
        os.umask(old)
    assert code == 0, err
    for folder in (tmp_path / "new", tmp_path / "new" / "o", tmp_path / "api"):
        assert folder.stat().st_mode & 0o777 == dir_mode, folder
    for f in ("preview.mp4", "manifest.json", "layer_00.png"):
        assert (tmp_path / "new" / "o" / f).stat().st_mode & 0o777 == file_mode, f


def test_b13_prompt_files_honour_the_umask(tmp_path):
    from core.prompts import write_prompt_file

    old = os.umask(0o022)
    try:
        write_prompt_file(tmp_path / "p.json", ["a", "b"])
    finally:
        os.umask(old)
    assert (tmp_path / "p.json").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------- B14: corrupt checkpoints
@pytest.mark.parametrize("damage", ["truncated", "zeroed", "garbage"])
def test_b14_corrupt_bin_checkpoint_is_reported_as_corrupt(tmp_path, damage):
    import torch

    from core.backends.loading import load_backend
    from core.errors import ModelNotFoundError

    path = tmp_path / "model.bin"
    torch.save({"model.diffusion_model.x": torch.zeros(1000)}, path)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "zeroed":
        data[200:600] = bytes(400)
    else:
        data = bytearray(os.urandom(5000))
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="cannot be read \\(corrupt or truncated\\?\\)") as exc:
        load_backend(str(path), device="cpu")
    assert not isinstance(exc.value, ModelNotFoundError) and "configuration" not in str(exc.value)
    assert "\n" not in str(exc.value)


# ------------------------------------------------ issue 26: --force, hand edits, settings
def _real_stack(folder: Path, n: int = 2) -> None:
    _stack(n).save(folder)


def test_r2_force_replaces_only_a_real_stack_and_only_its_own_files(capsys, tmp_path, monkeypatch,
                                                                    fake):
    monkeypatch.chdir(tmp_path)
    fake_stack = tmp_path / "w"  # mkdir w; echo '{}' > w/manifest.json; echo x > w/thesis.docx
    fake_stack.mkdir()
    (fake_stack / "manifest.json").write_text("{}")
    (fake_stack / "thesis.docx").write_text("years of work")
    other = tmp_path / "other"  # another tool's manifest, nothing else
    other.mkdir()
    (other / "manifest.json").write_text('{"format": "some-other-tool", "layers": []}')
    mixed = tmp_path / "mixed"  # a real stack the user put a file and a folder into
    _real_stack(mixed)
    (mixed / "notes.txt").write_text("mine")
    (mixed / "renders").mkdir()
    for target, words in ((fake_stack, "not a zoom-stack folder"),
                          (other, "not a zoom-stack folder"),
                          (mixed, "holds files that are not part of its zoom stack (notes.txt, "
                                  "renders)")):
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", target, "--force",
                            "--quiet")
        assert code == 1 and words in _error_line(err), err
    assert (fake_stack / "thesis.docx").read_text() == "years of work"
    assert (mixed / "notes.txt").read_text() == "mine" and (mixed / "renders").is_dir()
    assert (other / "manifest.json").is_file()
    assert not fake.calls
    own = tmp_path / "own"  # manifest, layers, preview video: replaced
    _real_stack(own, 3)
    (own / "preview.mp4").write_bytes(b"old video")
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", own, "--force", "--quiet")
    assert code == 0, err
    assert ZoomStack.load(own).layers.shape[0] == 1 and not (own / "preview.mp4").exists()


def test_r2_force_refuses_a_stack_that_holds_the_current_folder(capsys, tmp_path, monkeypatch, fake):
    from core.stack.publish import check_target

    _real_stack(tmp_path / "s")
    (tmp_path / "s" / "deep" / "er").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "s" / "deep" / "er")
    for target in (tmp_path / "s", tmp_path / "s" / "deep"):
        with pytest.raises(InvalidInputError, match="is the current folder \\(or holds it\\)"):
            check_target(target, True)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "s", "--force")
    assert code == 1 and "holds it" in _error_line(err) and not fake.calls
    assert (tmp_path / "s" / "deep" / "er").is_dir()


def test_r2_force_never_replaces_a_folder_that_became_foreign_during_the_run(capsys, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "o"
    _real_stack(out)

    def swap(settings):  # the user replaces the old stack by their own folder meanwhile
        import shutil
        shutil.rmtree(out)
        out.mkdir()
        (out / "theirs.txt").write_text("keep me")
    monkeypatch.setattr(cli, "_load_generate", lambda: FakeGenerate(during=swap))
    code, stdout, err = _run(capsys, "generate", "--prompt", "a", "--out", out, "--force", "--quiet")
    assert code == 1 and "appeared during the run" in _error_line(err)
    assert (out / "theirs.txt").read_text() == "keep me"
    assert stdout.split() == [str(tmp_path / "o-2")]


def test_r15_upscaler_alone_pixel_blend_for_if_are_honoured_or_refused(capsys, tmp_path, fake):
    from core.settings import GenerateSettings

    s = GenerateSettings(["a"], upscaler="stabilityai/stable-diffusion-x4-upscaler").validate()
    assert s.upscale == 4  # --upscaler alone: its x4 stage runs (was silently ignored)
    assert GenerateSettings(["a"], upscaler="none").validate().upscale is None
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--upscaler", "a/b,c/d", "--out",
                        tmp_path / "o", "--quiet")
    assert code == 1 and "upscale 16 is offered for DeepFloyd IF only" in _error_line(err)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--model",
                        "DeepFloyd/IF-I-XL-v1.0", "--pixel-blend", "0.3", "--out", tmp_path / "o",
                        "--quiet")
    assert code == 1 and "pixel blend applies to latent models" in _error_line(err)
    assert not fake.calls and not (tmp_path / "o").exists()
# ============================================================ issue 26, part B (R3 ... R14: docs/faults.md)
from tests.test_models import REPO, hub, online, tiny_repo  # noqa: E402,F401 - the local hub fixtures

UNET = "unet/diffusion_pytorch_model.safetensors"


def _flip(path: Path, n: int = 4096) -> None:
    """Flip ``n`` bytes in the middle of ``path`` in place (a damaged disk, a bad copy)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(n)
        f.seek(-len(data), os.SEEK_CUR)
        f.write(bytes(b ^ 0xFF for b in data))


# ------------------------------------------------- R3: corrupt downloads are found
def test_r3_corrupt_download_is_found_and_downloading_again_repairs_it(capsys, online, hub):
    from core.models import cache as models
    from core.models import downloads

    snap = Path(downloads.download(REPO))
    good = hub.repos[REPO].files[UNET].read_bytes()
    _flip(snap / UNET)  # 4 KB flipped in the UNet weights, size unchanged
    code, out, err = _run(capsys, "models", "list")
    assert code == 0 and "corrupt / incomplete: download again" in out and UNET in out
    [entry] = models.list_models()
    assert not entry.complete and entry.corrupt == [UNET]
    assert models.cached_snapshot(REPO) is None  # generate downloads again instead of loading it
    n = len(hub.responses)
    code, out, err = _run(capsys, "models", "download", REPO, "--quiet")
    assert code == 0, err
    assert [f for f, _, _ in hub.responses[n:]] == [UNET]  # only the damaged file crossed again
    assert (snap / UNET).read_bytes() == good
    assert "complete" in _run(capsys, "models", "list")[1] and models.cached_snapshot(REPO) == str(snap)


def test_r3_a_transfer_that_fails_its_checksum_is_not_kept(online, hub):
    from core.errors import ModelNotFoundError
    from core.models import cache as models
    from core.models import downloads

    hub.tamper = {UNET}  # same size, same ETag, wrong bytes
    with pytest.raises(ModelNotFoundError, match="came out corrupt .*download again"):
        downloads.download(REPO)
    assert models.cached_snapshot(REPO) is None
    assert not list(online.rglob("*.safetensors*")) or all(
        p.read_bytes() != b"" for p in online.rglob("*.safetensors"))  # no damaged blob kept
    storage = online / f"models--{REPO.replace('/', '--')}"
    blob = storage / "blobs" / hub.repos[REPO].etags[UNET]
    assert not blob.exists() and not list(storage.glob("blobs/*.p10part"))
    hub.tamper = set()
    downloads.download(REPO)
    assert models.list_models()[0].complete


# ------------------------------------------ R6: cancelling a download is quick
def test_r6_cancel_is_quick_keeps_the_bytes_and_progress_moves_within_a_chunk(online, hub, monkeypatch):
    import threading

    from huggingface_hub import constants

    from core.models import downloads

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 10 * 1024 * 1024)  # production's
    size = hub.repos[REPO].files[UNET].stat().st_size
    hub.chunk, hub.delay = 2048, 0.01  # ~200 KB/s
    cancel, reports, asked = threading.Event(), [], []

    def progress(done, total, speed):
        reports.append(done)
        if hub.bytes_served(UNET) > size // 3 and not cancel.is_set():
            asked.append(time.monotonic())
            cancel.set()
    with pytest.raises(Cancelled):
        downloads.download(REPO, progress=progress, cancel=cancel)
    assert time.monotonic() - asked[0] < 0.5  # was: the rest of a 10 MB chunk
    storage = online / f"models--{REPO.replace('/', '--')}"
    [part] = storage.glob("blobs/*.p10part")
    kept = part.stat().st_size
    assert kept >= size // 3 - 2 * hub.chunk  # what arrived is kept (was: 0 bytes)
    assert part.read_bytes() == hub.repos[REPO].files[UNET].read_bytes()[:kept]
    unet_start = max(r for r in reports if r <= reports[-1] - kept) if reports else 0
    assert len({r for r in reports if unet_start < r}) >= 3  # progress moved inside the chunk

    # a stalled connection: no bytes arrive, cancel still returns at once
    hub.chunk, hub.delay = 1024, 30.0
    cancel = threading.Event()

    def cancel_when_stalled():
        deadline = time.monotonic() + 20
        while hub.bytes_served(UNET) <= kept and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        asked.append(time.monotonic())
        cancel.set()
    threading.Thread(target=cancel_when_stalled, daemon=True).start()
    with pytest.raises(Cancelled):
        downloads.download(REPO, cancel=cancel)
    assert time.monotonic() - asked[-1] < 0.5
    assert part.stat().st_size == kept + 1024  # the piece that came is kept too


# ------------------------------------------------ R10: models remove, read-only cache
def test_r10_remove_in_an_unwritable_cache_is_one_line_and_removes_nothing(capsys, online, monkeypatch):
    from core.models import downloads

    snap = Path(downloads.download(REPO))
    before = _listing(online)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(str(online))
                        else real_access(p, mode, **kw))  # the tests run as root: no real read-only
    code, out, err = _run(capsys, "models", "remove", REPO, "--yes")
    assert code == 1 and "is not writable" in _error_line(err) and "Traceback" not in err
    assert _listing(online) == before and (snap / UNET).is_file()


# ----------------------------------------------- R13: a captive portal's web page
def test_r13_captive_portal_page_is_named(capsys, online, hub):
    hub.portal = True
    code, out, err = _run(capsys, "models", "download", REPO, "--quiet")
    line = _error_line(err)
    assert code == 1 and "answered with a web page" in line and "Expecting value" not in line
    assert not list(online.glob("models--*")) if online.exists() else True


# ------------------------------------------- R11: SIGHUP (the terminal was closed)
def test_r11_sighup_while_generating_leaves_nothing(tmp_path):
    proc = _cli_process(["generate", "--prompt", "a", "--size", "64", "--quiet",
                         "--out", tmp_path / "new" / "deeper" / "o"], env={"FAKE_SLOW": "1"})
    _wait_for("new/deeper/.o.*", tmp_path, proc)  # staging folder and its parents exist
    time.sleep(0.3)
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 129, err  # 128 + SIGHUP, like a shell reports it
    assert err.strip() == "terminated; nothing was written" and out == ""
    assert list(tmp_path.iterdir()) == []  # no .o.XXXX, no parents it made


# --------------------------------------- R14: a console that cannot print the path
def test_r14_non_ascii_output_on_an_ascii_console_is_still_a_success(tmp_path):
    out_dir = tmp_path / "zoom-stäck-日本"
    proc = _cli_process(["generate", "--prompt", "a", "--size", "64", "--quiet", "--out", out_dir],
                        env={"PYTHONIOENCODING": "ascii"})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # was 1: UnicodeEncodeError after publishing
    assert (out_dir / "manifest.json").is_file() and err == ""
    assert out.strip() == str(out_dir).encode("ascii", "backslashreplace").decode("ascii")


# ------------------------------------------------------------ R7: the estimate
def _dry_run(capsys, *extra):
    return _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--prompt", "c",
                "--prompt", "d", "--dry-run", *extra)


def test_r7_estimate_counts_upscaling_and_pixel_blending(capsys):
    from core.models import estimate as est
    from core.settings import GenerateSettings

    h200 = est.DeviceInfo("cuda", "NVIDIA H200", 143e9, 140e9)
    base = est.estimate(GenerateSettings(prompts=["a"] * 4), info=h200, spec=est.SPECS["sd"])
    up = est.estimate(GenerateSettings(prompts=["a"] * 4, upscale=4), info=h200, spec=est.SPECS["sd"])
    blend = est.estimate(GenerateSettings(prompts=["a"] * 4, pixel_blend=0.5), info=h200,
                         spec=est.SPECS["sd"])
    assert up.peak_bytes > base.peak_bytes + 2e9  # the x4 upscaler's weights and tiles
    # H200, 4 levels of 512 -> 2048 px, 20 steps: measured ~35-40 s in the SR stage (docs/backends.md)
    assert 25 < up.upscale_seconds < 55 and up.total_seconds > base.total_seconds + 25
    assert blend.total_seconds > base.total_seconds and blend.peak_bytes == base.peak_bytes
    # a 24 GB card: the SR stage cuts its tiles into micro-batches that fit, as the run does
    small = est.DeviceInfo("cuda", "NVIDIA GeForce RTX 4090", 24e9, 23e9)
    fitted = est.estimate(GenerateSettings(prompts=["a"] * 8, upscale=4), info=small, spec=est.SPECS["sd"])
    assert fitted.upscale_bytes <= 23e9 * est.USABLE_FRACTION
    # the command line shows it
    code, plain, _ = _dry_run(capsys, "--device", "cpu")
    code4, up4, _ = _dry_run(capsys, "--device", "cpu", "--upscale", "4")
    assert code == code4 == 0 and plain != up4 and "Upscale x4" in up4


@pytest.mark.parametrize("extra, words", [
    (["--device", "cuda"], "no CUDA GPU was found"),
    (["--device", "cuda:99"], "'cuda:99'"),
    (["--device", "mps"], "Apple Metal is not available"),
    (["--model", "/nonexistent/model"], "does not exist"),
])
def test_r7_estimate_refuses_a_missing_device_or_model(capsys, tmp_path, extra, words):
    code, out, err = _dry_run(capsys, *extra)
    assert code == 1 and words in _error_line(err) and out == ""


def test_r7_estimate_refuses_a_file_that_is_no_model(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    code, out, err = _dry_run(capsys, "--model", tmp_path / "notes.txt")
    assert code == 1 and "is not a model file" in _error_line(err) and "GB" not in out


# ---------------------------------------------------- R8: checked before the model
def test_r8_bad_photo_and_missing_lora_fail_before_the_model_loads(capsys, tmp_path, fake):
    from PIL import Image

    (tmp_path / "notes.png").write_text("not an image at all")
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # 144 megapixels in a few KB
    assert bomb.stat().st_size < 100_000
    for extra, words in ((["--photo", tmp_path / "notes.png"], "is not an image"),
                         (["--photo", bomb], "12000 x 12000 pixels"),
                         (["--lora", tmp_path / "no-such-lora.safetensors"], "the LoRA")):
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "o", *extra)
        line = _error_line(err)
        assert code == 1 and words in line and "model" not in line.split("LoRA")[0], line
    assert not fake.calls and not (tmp_path / "o").exists()


def test_r8_extend_mismatches_and_seed_overflow_fail_before_the_model(capsys, tmp_path, monkeypatch):
    from core.settings import MAX_SEED

    calls = []
    monkeypatch.setattr(cli, "_load_known_levels", lambda: (calls.append, calls.append))
    stack = _stack(3, size=64)
    stack.manifest.update(model="stabilityai/stable-diffusion-2-1-base", seed=0)
    stack.save(tmp_path / "s")
    code, _, err = _run(capsys, "extend", tmp_path / "s", "--prompt", "x", "--upscale", "4",
                        "--out", tmp_path / "o")
    assert code == 1 and "upscale" in _error_line(err) and "64x64" in _error_line(err)
    # 5 new levels in windows of 2 new ones: 3 windows take seeds S, S+1, S+2
    code, _, err = _run(capsys, "extend", tmp_path / "s", *sum([["--prompt", "x"]] * 5, []),
                        "--seed", MAX_SEED - 1, "--out", tmp_path / "o")
    assert code == 1 and "too large for 3 windows" in _error_line(err)
    assert not calls and not (tmp_path / "o").exists()


# ---------------------------------------------- R12: the H.264 frame-size limit
def test_r12_video_beyond_the_h264_frame_limit_is_refused(capsys, tmp_path, fake):
    from core.stack.preview import video_size

    with pytest.raises(InvalidInputError, match="H.264"):
        video_size(64, 64, 8192)  # 512 x 512 macroblocks: beyond level 6.2's 139264
    assert video_size(64, 128, 8192) == (4096, 8192)  # 8192x4096 is within the limit
    _stack(2, size=64).save(tmp_path / "s")
    code, _, err = _run(capsys, "video", tmp_path / "s", "--video-size", "8192", "--quiet")
    line = _error_line(err)
    assert code == 1 and "H.264" in line and "at most 5968 pixels" in line
    assert not (tmp_path / "s" / "preview.mp4").exists()
    # generate --video: refused before generating, not after
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--size", "64", "--video",
                        "--video-size", "8192", "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "H.264" in _error_line(err) and not fake.calls


# --------------------------------------------- R13: messages that point the right way
def test_r13_messages_name_the_real_problem(capsys, tmp_path, monkeypatch, fake):
    import shutil

    _stack(2).save(tmp_path / "s")
    real_read = Path.read_text

    def unreadable(self, *a, **kw):
        if self.name == "manifest.json":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *a, **kw)
    with monkeypatch.context() as m:
        m.setattr(Path, "read_text", unreadable)
        code, _, err = _run(capsys, "video", tmp_path / "s", "--quiet")
    assert code == 1 and "cannot read" in _error_line(err) and "permission denied" in _error_line(err)
    assert "JSON" not in err

    (tmp_path / "p.json").write_text(json.dumps({"prompts": ["a", "b"], "photo": str(tmp_path / "x.png"),
                                                 "photo_level": "1"}))
    code, _, err = _run(capsys, "generate", "--prompts", tmp_path / "p.json", "--out", tmp_path / "o")
    assert code == 1 and "photo level must be a whole number" in _error_line(err)

    with monkeypatch.context() as m:
        m.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
        code, _, err = _run(capsys, "generate", "--prompt", "a", "--size", "64", "--out", tmp_path / "o")
    assert code == 1 and "1.0 KB free" in _error_line(err) and "0.0 MB" not in err

    (tmp_path / "link").symlink_to(tmp_path / "s")
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "link", "--force")
    assert code == 1 and "symbolic link" in _error_line(err) and ZoomStack.load(tmp_path / "s")

    code, _, err = _run(capsys, "generate", "--prompt", "a", "--zoom", "3", "--out", tmp_path / "o")
    assert code == 1 and "16" in _error_line(err)
    assert not fake.calls


def test_r13_device_and_unreadable_model_folder_messages(monkeypatch, tmp_path):
    import diffusers

    from core.backends import loading
    from core.errors import ModelNotFoundError

    with pytest.raises(InvalidInputError, match="'cuda:99'"):
        loading.resolve_device("cuda:99")  # no GPU here: was "device 'cuda' was asked for"
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    def no_config(*a, **kw):
        raise OSError("Error no file named config.json found in directory unet.")
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, "from_pretrained", no_config)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not str(p).endswith("unet")
                        and real_access(p, mode, **kw))  # as if chmod 000 (the tests run as root)
    with pytest.raises(ModelNotFoundError, match=r"unet cannot be read \(permission denied\)"):
        loading.load_pipeline(str(folder), "sd", None)


# ------------------------------------------- R11: --force over a read-only stack
def test_r11_force_over_a_read_only_stack_is_refused_before_generating(capsys, tmp_path, monkeypatch, fake):
    _stack(2).save(tmp_path / "s")
    before = _listing(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: str(p) != str(tmp_path / "s")
                        and real_access(p, mode, **kw))  # chmod a-w s (the tests run as root)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--out", tmp_path / "s", "--force", "--quiet")
    assert code == 1 and "read-only" in _error_line(err)
    assert not fake.calls and _listing(tmp_path) == before  # no hidden copy, nothing replaced


def test_r7_estimate_on_a_machine_with_one_gpu(tmp_path):
    smi = tmp_path / "bin" / "nvidia-smi"  # answers like an H200's driver
    smi.parent.mkdir()
    smi.write_text("#!/bin/sh\necho 'NVIDIA H200, 143771, 140000'\n")
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{smi.parent}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1")

    def dry(device):
        return subprocess.run([sys.executable, "-m", "core", "generate", "--prompt", "a", "--dry-run",
                               "--device", device], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
    ok, missing = dry("cuda:0"), dry("cuda:1")
    assert ok.returncode == 0 and "NVIDIA H200 (cuda)" in ok.stdout, ok.stderr
    assert missing.returncode == 1 and "there is no GPU 'cuda:1': 1 found" in missing.stderr
