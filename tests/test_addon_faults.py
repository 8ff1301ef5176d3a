"""Faults in the add-on (docs/faults.md), in a real headless Blender with the fake engine."""

from __future__ import annotations

import json
import textwrap

import pytest

from blender_harness import FAKE_SCENE, install_extension, run_blender

SETUP = FAKE_SCENE


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_faults"))


def script(out, body: str) -> str:
    return f"OUT = {str(out)!r}\n" + SETUP + textwrap.dedent(body)


def test_b12_disabling_the_addon_mid_job_is_quick_and_leaves_nothing(ur, tmp_path):
    out = run_blender(script(tmp_path / "stacks", '''
        FAKE["steps"], FAKE["delay"] = 6, 2.0   # a slow sampling step, like a real model's
        job = _gen.start(bpy.context, sync=False)
        t0 = time.monotonic()
        while not previews() and time.monotonic() - t0 < 30:
            _gen.runner.poll()
            time.sleep(0.05)
        before = previews()
        t = time.monotonic()
        disable_addon()
        took = time.monotonic() - t
        after = previews()
        job.thread.join(30)
        emit(before=before, after=after, took=took, alive=job.thread.is_alive(), listing=listing(),
             enabled=ADDON in bpy.context.preferences.addons.keys())
    '''), ur)
    assert out["before"] == ["Zoom Preview 00", "Zoom Preview 01", "Zoom Preview 02"]
    assert out["took"] < 1.0, out["took"]  # was ~ the rest of the sampling step (seconds)
    assert out["after"] == [] and not out["enabled"]
    assert not out["alive"] and out["listing"] == []  # the cancelled job saved nothing


def test_b4_b6_addon_output_and_memory_faults_are_one_line(ur, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = run_blender(script(tmp_path / "afile" / "stacks", '''
        res = {"blocked": run_op()}
        p10.output_dir = OUT.rsplit("/afile", 1)[0] + "/ok"
        FAKE["fail"] = RuntimeError("[enforce fail at alloc_cpu.cpp:127] data. DefaultCPUAllocator: "
                                    "can't allocate memory: you tried to allocate 8589934592 bytes.")
        res["cpu_oom"] = run_op()
        emit(res=res, calls=FAKE["calls"])
    '''), ur)
    r, err = out["res"]["blocked"]
    assert r is None and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    r, err = out["res"]["cpu_oom"]
    assert r is None and "Out of memory: lower the image size" in err and "alloc_cpu" not in err
    assert out["calls"] == 1  # the blocked folder failed before the engine ran
    assert not (tmp_path / "ok").exists() or not any((tmp_path / "ok").iterdir())


def test_b8_addon_loads_a_bad_manifest_with_one_line(ur, tmp_path):
    import numpy as np

    from core.stack.stack_io import ZoomStack

    ZoomStack(np.full((2, 32, 32, 3), 0.5, np.float32), {"prompts": ["a", "b"], "zoom": 2}).save(tmp_path / "s")
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    (tmp_path / "s" / "manifest.json").write_text(json.dumps({**m, "format_version": "1"}))
    out = run_blender(script(tmp_path / "stacks", f'''
        emit(r=run_op("load_stack", directory={str(tmp_path / "s")!r}))
    '''), ur)
    r, err = out["r"]
    assert r is None and "format_version" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
