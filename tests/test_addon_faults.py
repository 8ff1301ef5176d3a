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


RENDER_FAILS = '''
import shutil
from pathlib import Path
vr = addon().p10_blender.video.video_render
assert bpy.ops.p10.load_stack(directory={stack!r}) == {{"FINISHED"}}
anim = bpy.context.scene.p10.animation
anim.frames_per_level, anim.hold_start, anim.hold_end, anim.ease_frames, anim.samples = 1, 0, 0, 0, 1
real_usage = shutil.disk_usage

def full_disk_encoder(scene):  # FFmpeg got a few bytes out, then the disk filled up
    Path(bpy.path.abspath(scene.render.frame_path(frame=1))).write_bytes(b"\\0" * 1000)
    raise RuntimeError("Error: Could not initialize streams, probably unsupported codec combination")
vr._render_animation = full_disk_encoder
shutil.disk_usage = lambda p: real_usage(p)._replace(free=4096)
try:
    result = bpy.ops.p10.render_video(filepath={out!r})
except RuntimeError as exc:  # background mode: an ERROR report raises
    result = ["CANCELLED"]
emit(result=sorted(result), message=vr.progress.message, left=sorted(p.name for p in Path({out!r}).parent.iterdir()))
'''


def test_r11_failed_render_zoom_video_leaves_nothing_and_names_the_full_disk(ur, tmp_path):
    from core.stack.stack_io import ZoomStack
    import numpy as np

    stack = tmp_path / "stack"
    ZoomStack(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32),
              {"zoom": 2, "prompts": ["a", "b"]}).save(stack)
    videos = tmp_path / "videos"
    videos.mkdir()
    out = run_blender(RENDER_FAILS.format(stack=str(stack), out=str(videos / "zoom.mp4")), ur)
    assert out["result"] == ["CANCELLED"]
    assert "disk is full" in out["message"] and "codec" not in out["message"]
    assert out["left"] == []  # no .zoom.part.mp4, no frames folder
