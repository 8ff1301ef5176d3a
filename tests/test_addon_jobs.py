"""The job runner and the dependency helpers, without Blender (they import bpy lazily)."""

from __future__ import annotations

import importlib
import sys
import threading
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# The modules are imported as part of a stand-in extension package (its p10_blender/__init__
# imports bpy and is skipped), so their relative imports of core resolve as inside Blender.
PKG = "p10_test_ext"


def _package(name: str, path: Path) -> None:
    if name not in sys.modules:
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod


_package(PKG, ROOT)
_package(f"{PKG}.p10_blender", ROOT / "p10_blender")
for _sub in ("generate", "setup"):
    _package(f"{PKG}.p10_blender.{_sub}", ROOT / "p10_blender" / _sub)


def _load(name: str):
    return importlib.import_module(f"{PKG}.p10_blender.{name}")


jobs = _load("generate.jobs")
dependencies = _load("setup.dependencies")
Cancelled = importlib.import_module(f"{PKG}.core.errors").Cancelled


def make_job(work, **kw):
    seen = []
    job = jobs.Job(name="t", work=work, on_message=lambda j, k, p: seen.append((k, p)), **kw)
    return job, seen


def test_done_job_delivers_progress_then_result_and_stops_polling():
    def work(rep):
        for i in range(3):
            rep.progress("sampling", i + 1, 3, None)
        rep.post("log", "hello")
        return 42
    runner = jobs.JobRunner()
    job, seen = make_job(work)
    runner.start(job)
    job.thread.join()
    assert runner.poll() is None  # job ended: the timer unregisters itself
    assert job.state == jobs.DONE and job.result == 42
    assert (job.step, job.total, job.phase) == (3, 3, "sampling")
    assert ("log", "hello") in seen
    assert [k for k, _ in seen].count("progress") == 1  # previews coalesced to the newest


def test_poll_returns_interval_while_running():
    gate = threading.Event()
    runner = jobs.JobRunner()
    job, _ = make_job(lambda rep: gate.wait(5))
    runner.start(job)
    assert runner.poll() == jobs.POLL_INTERVAL and runner.busy
    with pytest.raises(RuntimeError, match="still running"):
        runner.start(make_job(lambda rep: None)[0])
    gate.set()
    runner.drive(job)
    assert not runner.busy and runner.poll() is None


def test_cancel_stops_within_a_step_and_failure_message_is_one_line():
    def work(rep):
        for i in range(1000):
            if rep.cancelled():
                raise Cancelled("Cancelled.")
            time.sleep(0.01)
            rep.progress("sampling", i + 1, 1000)
    runner = jobs.JobRunner()
    job, _ = make_job(work)
    runner.start(job)
    while job.step < 2:
        runner.poll()
    runner.cancel()
    runner.drive(job, timeout=10)
    assert job.state == jobs.CANCELLED and job.step < 1000 and job.error == "Cancelled."

    runner = jobs.JobRunner(error_message=lambda e: f"Nope: {e}")
    job, _ = make_job(lambda rep: 1 / 0)
    runner.start(job)
    runner.drive(job)
    assert job.state == jobs.FAILED and job.error == "Nope: division by zero"
    assert "ZeroDivisionError" in job.detail  # traceback kept for the log, not the UI


def test_cancel_is_recognised_by_type_not_by_name():
    class Stopped(Cancelled):  # any subclass of core.errors.Cancelled, whatever its name
        pass

    class Cancelled_(Exception):
        pass
    Cancelled_.__name__ = "Cancelled"  # a look-alike name alone is a failure, not a cancel

    states = {}
    for key, exc in (("subclass", Stopped("stop")), ("install", dependencies.InstallCancelled("x")),
                     ("lookalike", Cancelled_("boom"))):
        def work(rep, exc=exc):
            raise exc
        runner = jobs.JobRunner()
        job, _ = make_job(work)
        runner.start(job)
        runner.drive(job, timeout=10)
        states[key] = job.state
    assert states == {"subclass": jobs.CANCELLED, "install": jobs.CANCELLED, "lookalike": jobs.FAILED}
    assert issubclass(dependencies.InstallCancelled, Cancelled)


def test_finish_handler_error_fails_the_job():
    runner = jobs.JobRunner()
    job, _ = make_job(lambda rep: 1, on_finish=lambda j: 1 / 0)
    runner.start(job)
    runner.drive(job)
    assert job.state == jobs.FAILED and "Could not load the result" in job.error


def test_seconds_left_estimate():
    job = jobs.Job(name="t", work=None)
    assert job.seconds_left() is None
    runner = jobs.JobRunner()
    runner._apply_progress(job, ("sampling", 0, 10, None), False)
    job.step_started -= 2.0  # pretend two seconds passed for 2 steps
    runner._apply_progress(job, ("sampling", 2, 10, None), False)
    assert job.seconds_left() == pytest.approx(8.0, rel=0.2)


def test_seconds_left_of_a_phase_that_resumes_or_restarts():
    runner = jobs.JobRunner()
    job = jobs.Job(name="t", work=None)
    runner._apply_progress(job, ("downloading", 60, 100, None), False)  # resumed at 60 %
    job.step_started -= 10.0  # 10 s for the next 10 steps: 30 steps left take 30 s
    runner._apply_progress(job, ("downloading", 70, 100, None), False)
    assert job.seconds_left() == pytest.approx(30.0, rel=0.2)
    runner._apply_progress(job, ("sampling", 0, 10, None), False)
    runner._apply_progress(job, ("sampling", 8, 10, None), False)
    runner._apply_progress(job, ("sampling", 1, 10, None), False)  # the same phase starts again
    job.step_started -= 1.0  # 1 s since it restarted, no step done yet in this run
    assert job.seconds_left() is None
    runner._apply_progress(job, ("sampling", 2, 10, None), False)
    assert job.seconds_left() == pytest.approx(8.0, rel=0.2)


def test_a_cancelled_job_whose_work_then_fails_is_cancelled():
    # e.g. cancel during a download: the half-read stream raises a network error afterwards
    def work(rep):
        while not rep.cancelled():
            time.sleep(0.01)
        raise OSError("connection reset by peer")
    runner = jobs.JobRunner()
    job, _ = make_job(work)
    runner.start(job)
    runner.cancel()
    runner.drive(job, timeout=10)
    assert job.state == jobs.CANCELLED


def test_detect_torch_build():
    none = lambda name: None  # noqa: E731
    assert dependencies.detect_torch_build("Darwin", none) == "DEFAULT"
    assert dependencies.detect_torch_build("Windows", none) == "CPU"
    true = "/bin/true"
    assert dependencies.detect_torch_build(
        "Linux", lambda n: true if n == "nvidia-smi" else None) == "CUDA"
    assert dependencies.detect_torch_build(
        "Linux", lambda n: "/x/rocminfo" if n == "rocminfo" else None) == "ROCM"


def test_pip_command(tmp_path):
    cmd = dependencies.pip_command(tmp_path, "CPU", python="py", constraints=tmp_path / "c.txt")
    assert cmd[:4] == ["py", "-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path)
    assert cmd[cmd.index("--extra-index-url") + 1].endswith("/cpu")
    assert {"torch", "diffusers==0.42.1", "transformers==5.24.0", "pillow"} <= set(cmd)
    assert "--extra-index-url" not in dependencies.pip_command(tmp_path, "DEFAULT")
    with pytest.raises(ValueError):
        dependencies.pip_command(tmp_path, "TPU")


def test_pip_pins_match_requirements_txt():
    root = Path(__file__).resolve().parents[1]
    pinned = dict(line.split("#")[0].strip().split("==") for line in
                  (root / "requirements.txt").read_text().splitlines() if "==" in line)
    for name, version in dependencies.TESTED_VERSIONS.items():
        assert pinned[name] == version, name


def test_env_site_packages(tmp_path):
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    good = tmp_path / "venv" / "lib" / ver / "site-packages"
    good.mkdir(parents=True)
    assert dependencies.env_site_packages(tmp_path / "venv") == good.resolve()
    assert dependencies.env_site_packages(good) == good.resolve()
    (tmp_path / "old" / "lib" / "python3.8" / "site-packages").mkdir(parents=True)
    with pytest.raises(ValueError, match="python3.8 environment"):
        dependencies.env_site_packages(tmp_path / "old")
    with pytest.raises(ValueError, match="not found"):
        dependencies.env_site_packages(tmp_path / "nowhere")


def test_run_logged_streams_lines_and_logs(tmp_path):
    lines = []
    log = tmp_path / "pip.log"
    code = dependencies.run_logged([sys.executable, "-c", "print('Collecting a'); print('b')"],
                                   log, lines.append, lambda: False)
    assert code == 0 and lines == ["Collecting a", "b"]
    assert "Collecting a" in log.read_text()
    assert dependencies.pip_phase("Collecting torch") == "resolving"

