"""Generate through the add-on in headless Blender: fake engine for the job plumbing and bad
input, the tiny random-weight Stable Diffusion for the real thing."""

from __future__ import annotations

import textwrap

import pytest

from blender_harness import FAKE_SCENE, install_extension, run_blender

SETUP = FAKE_SCENE


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_gen"))


def script(tmp_path, body: str) -> str:
    return f"OUT = {str(tmp_path / 'stacks')!r}\n" + SETUP + textwrap.dedent(body)


def test_generate_sync_writes_stack_and_loads_it(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        r, err = run_op()
        d = p10.last_stack_dir
        manifest = json.load(open(os.path.join(d, "manifest.json")))
        emit(r=r, err=err, stacks=stacks(), d=d, manifest=manifest,
             previews=[i.name for i in bpy.data.images if i.name.startswith("Zoom Preview")],
             images=sorted(i.name for i in bpy.data.images), calls=FAKE["calls"],
             state=_gen.runner.current.state)
    '''), ur)
    assert out["err"] is None and out["r"] == ["FINISHED"] and out["state"] == "DONE"
    assert len(out["stacks"]) == 1 and out["calls"] == 1
    assert out["manifest"]["prompts"] == ["a galaxy", "a star", "a planet"]
    assert out["manifest"]["num_levels"] == 3
    assert out["previews"] == []  # transient previews are gone once the result is loaded
    stack_name = out["d"].rstrip("/").rsplit("/", 1)[-1]
    assert len([n for n in out["images"] if stack_name in n or n.startswith("Zoom Layer")]) == 3


def test_bad_input_gives_one_line_and_no_stack(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        res = {}
        p10.prompts[1].text = "   "
        res["blank"] = run_op()
        p10.prompts.clear()
        res["empty"] = run_op()
        p10.prompts.add().text = "ok"
        p10.use_photo = True
        res["nophoto"] = run_op()
        p10.use_photo = False
        p10.width = 70  # not a multiple of 2·zoom·8
        res["size"] = run_op()
        emit(res=res, stacks=stacks(), calls=FAKE["calls"])
    '''), ur)
    for key, (r, err) in out["res"].items():
        assert r is None and err, key
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "empty" in out["res"]["blank"][1].lower()
    assert "prompt" in out["res"]["empty"][1].lower()
    assert "photo" in out["res"]["nophoto"][1].lower()
    assert out["stacks"] == [] and out["calls"] == 0


def test_cancel_mid_run_and_generate_while_running(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        FAKE["steps"], FAKE["delay"] = 50, 0.05
        job = _gen.start(bpy.context, sync=False)
        while job.step < 2:
            _gen.runner.poll()
        second = run_op()
        cancel = run_op("cancel")
        _gen.runner.drive(job, timeout=30)
        emit(second=second, cancel=cancel, state=job.state, error=job.error, step=job.step,
             stacks=stacks(), previews=[i.name for i in bpy.data.images
                                         if i.name.startswith("Zoom Preview")],
             last=p10.last_stack_dir)
    '''), ur)
    assert out["second"][0] is None and "already running" in out["second"][1]
    assert out["cancel"][0] == ["FINISHED"]
    assert out["state"] == "CANCELLED" and out["step"] < 50
    assert out["stacks"] == [] and out["previews"] == [] and out["last"] == ""


def test_engine_error_is_reported_plainly(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        FAKE["fail"] = RuntimeError("CUDA error: out of memory\\nmore lines")
        r, err = run_op()
        emit(r=r, err=err, stacks=stacks(), state=_gen.runner.current.state)
    '''), ur)
    assert out["r"] is None and out["state"] == "FAILED"
    assert "Out of memory" in out["err"] and "Traceback" not in out["err"]
    assert out["stacks"] == []


def test_file_reload_mid_run_cancels_cleanly(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        FAKE["steps"], FAKE["delay"] = 50, 0.05
        job = _gen.start(bpy.context, sync=False)
        while job.step < 2:
            _gen.runner.poll()
        bpy.ops.wm.read_homefile(use_empty=True)
        _gen.runner.drive(job, timeout=30)
        emit(state=job.state, lines=_gen.status_lines(job), stacks=stacks(),
             has_p10=hasattr(bpy.context.scene, "p10"), busy=_gen.runner.busy,
             last=bpy.context.scene.p10.last_stack_dir)
    '''), ur)
    assert out["state"] == "CANCELLED" and not out["busy"]
    assert "reloaded" in out["lines"][0]
    assert out["stacks"] == [] and out["last"] == ""


def test_photo_is_exported_top_row_first_and_fallback_loader(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        import numpy as np
        img = bpy.data.images.new("photo", 64, 64)
        px = np.zeros((64, 64, 4), np.float32); px[..., 3] = 1
        px[:32, :, 0] = 1.0  # Blender rows are bottom-up: the BOTTOM half is red
        img.pixels.foreach_set(px.ravel())
        p10.use_photo, p10.photo = True, img
        r, err = run_op()
        loaded = [i.name for i in _gen.load_layer_images(p10.last_stack_dir)]
        emit(r=r, err=err, photo=FAKE["photo"], loaded=loaded)
    '''), ur)
    from PIL import Image
    import numpy as np

    assert out["r"] == ["FINISHED"], out["err"]
    png = np.asarray(Image.open(out["photo"]).convert("RGB"))
    assert png.shape == (64, 64, 3)
    assert png[-1, 0, 0] == 255 and png[0, 0, 0] == 0  # red at the bottom of the PNG too
    assert out["loaded"] == ["Zoom Layer 00", "Zoom Layer 01", "Zoom Layer 02"]


def test_release_model(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        first = run_op("release_model")
        run_op()
        second = run_op("release_model")
        emit(first=first, second=second, released=FAKE["released"], models=_gen._models)
    '''), ur)
    assert out["first"][0] == ["FINISHED"] and out["second"][0] == ["FINISHED"]
    assert out["released"] == 1 and out["models"] is None


def test_generate_with_tiny_model(ur, tmp_path):
    from tiny_models import make_tiny_sd

    model = make_tiny_sd(tmp_path / "tiny_sd")
    out = run_blender(f'''
        import json, os
        p10 = bpy.context.scene.p10
        p10.model = {str(model)!r}
        p10.output_dir = {str(tmp_path / "stacks")!r}
        p10.width = p10.height = 64
        p10.steps = 2
        p10.scheduler = "ddim"
        p10.device = "cpu"
        for t in ("a galaxy", "a star"):
            p10.prompts.add().text = t
        r = bpy.ops.p10.generate()
        d = p10.last_stack_dir
        coll = [c for c in bpy.data.collections if c.name.startswith("P10 Zoom")]
        emit(r=sorted(r), d=d, manifest=json.load(open(os.path.join(d, "manifest.json"))),
             images=sorted(i.name for i in bpy.data.images),
             planes=[o.type for o in coll[0].all_objects] if coll else [],
             camera=bpy.context.scene.camera.data.type if bpy.context.scene.camera else None)
    ''', ur, timeout=600)
    assert out["r"] == ["FINISHED"]
    assert out["manifest"]["num_levels"] == 2 and out["manifest"]["prompts"] == ["a galaxy",
                                                                                  "a star"]
    assert (tmp_path / "stacks").exists() and len(list((tmp_path / "stacks").iterdir())) == 1
    # completion builds the zoom scene (p10.load_stack): one plane per level, ortho camera
    stack_name = out["d"].rstrip("/").rsplit("/", 1)[-1]
    assert len([n for n in out["images"] if stack_name in n]) == 2
    assert out["planes"].count("MESH") == 2 and out["camera"] == "ORTHO"
    assert not [n for n in out["images"] if n.startswith("Zoom Preview")]
