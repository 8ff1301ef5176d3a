"""Models in Blender: preferences list, download job (bytes, cancel), remove, local models,
hub token, panel picker and estimate; Generate's download phase. Real local hub over HTTP."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from blender_harness import install_extension, run_blender
from test_addon_ui import RECORDER, labels, ops
from tests.hub_server import TOKEN, HubServer
from tests.tiny_models import make_tiny_sd

REPO = "p10/tiny-sd"


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_models"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("addon_models")
    notmodel = root / "notmodel"
    notmodel.mkdir()
    (notmodel / "readme.txt").write_text("no model here")
    return {"sd": make_tiny_sd(root / "sd"), "notmodel": str(notmodel)}


def _env(hub, home: Path) -> dict:
    return {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(home),
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def test_preferences_download_pick_remove_local_and_token(ur, tiny, tmp_path):
    with HubServer({REPO: tiny["sd"]}) as hub:
        out = run_blender(RECORDER + textwrap.dedent(f'''
            import os
            mod = addon().p10_blender
            prefs = mod.interface.preferences.get_prefs()
            ui = mod.models_ui
            def prefs_log():
                log = []
                ui.draw_models(Recorder(log), prefs)
                return log
            res = {{"empty": prefs_log()}}
            prefs.download_id = {REPO!r}
            bpy.ops.p10.model_download()
            job = mod.generate.generation.runner.current
            res["job"] = [job.name, job.state, job.phase, job.total, job.step]
            res["lines"] = mod.generate.generation.status_lines(job)
            res["listed"] = prefs_log()
            ui.refresh(prefs)
            names = ui.pick_names()
            bpy.ops.p10.model_pick(choice=str(names.index({REPO!r})))
            res["picked"] = bpy.context.scene.p10.model
            # a non-model folder: one line, nothing added
            try:
                bpy.ops.p10.model_add_local(directory={tiny["notmodel"]!r})
            except RuntimeError as e:
                res["notmodel"] = str(e)
            bpy.ops.p10.model_add_local(directory={tiny["sd"]!r})
            res["locals"] = [m.path for m in prefs.local_models]
            res["with_local"] = [(e.name, e.source, e.complete) for e in ui.entries()]
            bpy.ops.p10.model_use(name={tiny["sd"]!r})
            res["used"] = bpy.context.scene.p10.model
            bpy.ops.p10.model_forget_local(path={tiny["sd"]!r})
            res["forgot"] = [m.path for m in prefs.local_models]
            # the token goes where huggingface_hub keeps it, never into prefs or the .blend
            bpy.ops.p10.hf_token_set(token={TOKEN!r})
            tok_file = os.path.join(os.environ["HF_HOME"], "token")
            res["token_file"] = open(tok_file).read()
            res["token_log"] = prefs_log()
            blend = os.path.join(os.environ["HF_HOME"], "..", "scene.blend")
            bpy.ops.wm.save_as_mainfile(filepath=blend)
            try:
                bpy.ops.wm.save_userpref()
            except RuntimeError:
                pass
            hay = open(blend, "rb").read()
            for root, _, files in os.walk(os.environ["BLENDER_USER_RESOURCES"]):
                for f in files:
                    if f.endswith(".blend"):
                        hay += open(os.path.join(root, f), "rb").read()
            res["token_leaked"] = {TOKEN!r}.encode() in hay
            bpy.ops.p10.hf_token_clear()
            res["token_after"] = os.path.exists(tok_file)
            bpy.ops.p10.model_remove(repo_id={REPO!r})
            res["removed"] = [e.name for e in ui.refresh(prefs)]
            try:
                bpy.ops.p10.model_download(repo_id="p10/no-such-model")
            except RuntimeError as e:
                res["unknown"] = str(e)
            emit(**res)
        '''), ur, env=_env(hub, tmp_path / "hf"))
    assert "No models yet" in labels(out["empty"]) and "p10.model_download" in ops(out["empty"])
    assert "p10.hf_token_set" in ops(out["empty"]) and "Hub token: not set" in labels(out["empty"])
    name, state, phase, total, step = out["job"]
    assert (name, state, phase) == ("download", "DONE", "downloading") and step == total > 3_000_000
    listed = labels(out["listed"])
    assert REPO in listed and "Stable Diffusion" in listed and "3.6 MB" in listed and "Complete" in listed
    assert "p10.model_remove" in ops(out["listed"]) and "p10.model_use" in ops(out["listed"])
    assert out["picked"] == REPO
    assert "not a diffusers model folder" in out["notmodel"] and "\n" not in out["notmodel"].strip()
    assert out["locals"] == [tiny["sd"]]
    assert (tiny["sd"], "folder", True) in [tuple(x) for x in out["with_local"]]
    assert out["used"] == tiny["sd"] and out["forgot"] == []
    assert out["token_file"] == TOKEN and not out["token_leaked"]
    assert "Hub token: hf_" in labels(out["token_log"]) and not out["token_after"]
    assert out["removed"] == []
    assert "does not exist on the Hugging Face hub" in out["unknown"]


def test_panel_model_area_and_generate_download_phase_with_cancel(ur, tiny, tmp_path):
    with HubServer({REPO: tiny["sd"]}, delay=0.01) as hub:
        out = run_blender(RECORDER + textwrap.dedent(f'''
            import time
            mod = addon().p10_blender
            p10 = bpy.context.scene.p10
            for t in ("a galaxy", "a star", "a planet"):
                p10.prompts.add().text = t
            p10.model = {REPO!r}
            p10.width = p10.height = 64
            p10.device = "cpu"
            log = []
            mod.interface.panel.draw_model(Recorder(log), bpy.context)
            p10.micro_batch = 2
            log2 = []
            mod.interface.panel.draw_model(Recorder(log2), bpy.context)
            job = mod.generate.generation.start(bpy.context, sync=False)
            seen = []
            t0 = time.time()
            while job.running and time.time() - t0 < 60:
                mod.generate.generation.runner.poll()
                if job.phase == "downloading" and job.step > 50000:
                    seen.append(mod.generate.generation.status_lines(job)[0])
                    draw = []
                    mod.interface.panel.draw_main(Recorder(draw), bpy.context)
                    job.cancel()
                    break
                time.sleep(0.02)
            mod.generate.generation.runner.drive(job, timeout=60)
            emit(log=log, log2=log2, seen=seen, state=job.state, total=job.total, draw=draw)
        '''), ur, env=_env(hub, tmp_path / "hf"))
    panel = labels(out["log"])
    assert ["prop", "model"] in out["log"] and ["prop", "micro_batch"] in out["log"]
    assert "p10.model_pick" in ops(out["log"])
    assert "Memory: about" in panel and "chosen to fit" in panel and "per step" in panel
    assert "2 rows per call (as set)" in labels(out["log2"])
    assert out["seen"] and out["seen"][0].startswith("Downloading: ") and " MB" in out["seen"][0]
    assert "/s)" in out["seen"][0] and out["total"] > 3_000_000  # bytes, with the speed
    assert "p10.cancel" in ops(out["draw"]) and any(k == "progress" for k, _ in out["draw"])
    assert out["state"] == "CANCELLED"


def test_picker_offers_sd3_and_flux_with_their_facts(ur, tmp_path):
    """The model picker lists SD3.5 and FLUX.1 before they are downloaded; the tooltip gives
    size, download, memory, steps and guidance; picking one sets the model; a tiny local FLUX
    folder shows its family in the list."""
    from tests.tiny_models import make_tiny_flux

    flux = make_tiny_flux(tmp_path / "flux")
    out = run_blender(textwrap.dedent(f'''
        mod = addon().p10_blender
        ui = mod.models_ui
        prefs = mod.interface.preferences.get_prefs()
        bpy.ops.p10.model_add_local(directory={flux!r})
        names = ui.pick_names()
        items = ui._pick_enum(None, bpy.context)
        tips = {{name: tip for _, name, tip in items}}
        bpy.ops.p10.model_pick(choice=str(names.index("black-forest-labs/FLUX.1-dev")))
        emit(names=names, tips=tips, picked=bpy.context.scene.p10.model,
             families={{e.name: e.family_name for e in ui.entries()}})
    '''), ur, env={"HF_HOME": str(tmp_path / "hf")})
    names, tips = out["names"], out["tips"]
    for hub_id in ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell",
                   "stabilityai/stable-diffusion-3.5-large"):
        assert hub_id in names
    dev = tips["black-forest-labs/FLUX.1-dev"]
    assert "11.9B-parameter transformer" in dev and "34 GB download" in dev
    assert "bf16" in dev and "fp8" in dev and "guidance 3.5 (embedded)" in dev and "gated" in dev
    assert "4 steps, no guidance" in tips["black-forest-labs/FLUX.1-schnell"]
    assert out["picked"] == "black-forest-labs/FLUX.1-dev"
    assert out["families"][flux] == "FLUX.1"
