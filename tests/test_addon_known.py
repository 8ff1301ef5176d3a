"""Extend Deeper / Wider and Regenerate Level through the add-on in headless Blender (fake
engine: the job plumbing, the rows -> prompts mapping, provenance and cancel; the sampling
itself is covered by tests/test_extend.py and tests/test_known_levels.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from blender_harness import FAKE_SCENE, install_extension, run_blender

SETUP = FAKE_SCENE


@pytest.fixture(scope="module")
def ur(tmp_path_factory):
    return install_extension(tmp_path_factory.mktemp("ur_known"))


def script(tmp_path, body: str) -> str:
    return f"OUT = {str(tmp_path / 'stacks')!r}\n" + SETUP + textwrap.dedent(body)


def test_extend_deeper_wider_and_regenerate(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        res = {}
        res["gen"] = run_op("generate")
        first = p10.last_stack_dir
        for t in ("a tree", "a leaf"):
            p10.prompts.add().text = t                     # rows after the stack's: deeper
        res["deeper"] = run_op("extend_stack", direction="DEEPER")
        deeper = manifest()
        known_deeper = FAKE["known"]
        p10.prompts.add().text = "the universe"
        p10.prompts.move(len(p10.prompts) - 1, 0)          # a row before them: wider
        res["wider"] = run_op("extend_stack", direction="WIDER")
        wider = manifest()
        p10.prompt_index = 2
        p10.prompts[2].text = "a red star"
        res["regen"] = run_op("regenerate_level")
        regen = manifest()
        emit(res=res, deeper=deeper, wider=wider, regen=regen, known_deeper=known_deeper,
             known_regen=FAKE["known"], stacks=stacks(), first_exists=os.path.isdir(first),
             calls=FAKE["calls"], state=_gen.runner.current.state,
             lines=_gen.status_lines(_gen.runner.current))
    '''), ur)
    for key, (r, err) in out["res"].items():
        assert r == ["FINISHED"], (key, err)
    assert out["deeper"]["prompts"] == ["a galaxy", "a star", "a planet", "a tree", "a leaf"]
    assert [r["made_by"] for r in out["deeper"]["levels"]] == ["generate"] * 3 + ["extend"] * 2
    assert out["known_deeper"] == [0, 1]  # window of 4: the two finest old levels known
    assert out["wider"]["prompts"][0] == "the universe" and out["wider"]["num_levels"] == 6
    assert out["wider"]["levels"][0]["made_by"] == "extend"
    assert out["regen"]["prompts"][2] == "a red star"
    assert out["regen"]["levels"][2]["made_by"] == "regenerate"
    assert out["known_regen"] == [0, 1, 3, 4, 5]
    assert len(out["stacks"]) == 4 and out["first_exists"] and out["calls"] == 4
    assert out["state"] == "DONE" and out["lines"][0].startswith("Done: ")


def test_bad_input_one_line_and_cancel_keeps_the_previous_stack(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        res = {}
        res["no_stack"] = run_op("extend_stack")
        run_op("generate")
        first, n_stacks = p10.last_stack_dir, len(stacks())
        res["no_rows"] = run_op("extend_stack", direction="DEEPER")
        res["no_rows_wider"] = run_op("extend_stack", direction="WIDER")
        p10.prompts.add().text = "a tree"
        p10.prompt_index = 3
        res["row_outside"] = run_op("regenerate_level")
        p10.model = "some/other-model"
        res["model"] = run_op("extend_stack")
        p10.model = "stabilityai/stable-diffusion-2-1-base"
        p10.prompts[0].text = "edited but list longer"
        res["lost"] = run_op("extend_stack")
        p10.prompts[0].text = "a galaxy"
        calls = FAKE["calls"]
        FAKE["steps"], FAKE["delay"] = 50, 0.05
        job = addon().p10_blender.generate.known_levels.start_extend(bpy.context, sync=False)
        while job.step < 2:
            _gen.runner.poll()
        run_op("cancel")
        _gen.runner.drive(job, timeout=30)
        emit(res=res, calls=calls, state=job.state, stacks=len(stacks()), n_stacks=n_stacks,
             kept=p10.last_stack_dir == first)
    '''), ur)
    for key, (r, err) in out["res"].items():
        assert r is None and err, key
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "generate one first" in out["res"]["no_stack"][1]
    assert "after" in out["res"]["no_rows"][1] and "before" in out["res"]["no_rows_wider"][1]
    assert "not one of the stack's levels" in out["res"]["row_outside"][1]
    assert "made with the model" in out["res"]["model"][1]
    assert "must hold the stack's 3 prompts" in out["res"]["lost"][1]
    assert out["calls"] == 1  # nothing ran for bad input
    assert out["state"] == "CANCELLED" and out["stacks"] == out["n_stacks"] == 1 and out["kept"]


def test_r1_r5_r15_lora_kept_new_seed_each_regenerate_unsaved_output_and_bad_guidance(ur, tmp_path):
    out = run_blender(script(tmp_path, '''
        seen = []
        def recording(settings, **kw):
            seen.append({"lora": settings.lora, "seed": settings.seed})
            stack = _fake_generate(settings, **kw)
            if settings.lora:
                stack.manifest["lora"] = settings.lora
            return stack
        _gen.engine = lambda: (recording, _FakeCache)
        res = {}
        p10.lora = "latent-consistency/lcm-lora-sdv1-5"
        res["gen"] = run_op("generate")
        p10.lora = ""                                   # cleared: the stack's LoRA is kept
        p10.prompts.add().text = "a tree"
        res["deeper"] = run_op("extend_stack", direction="DEEPER")
        lora_kept = manifest().get("lora")
        p10.lora = "some/other-lora"
        p10.prompts.add().text = "a leaf"
        res["other"] = run_op("extend_stack", direction="DEEPER")
        p10.lora = ""
        p10.prompt_index = 1
        seeds = []
        for _ in range(2):                              # pressing Regenerate twice
            res[f"regen{len(seeds)}"] = run_op("regenerate_level")
            seeds.append(manifest()["levels"][1]["seed"])
        p10.seed = 77                                   # a seed typed in the panel: used once
        for _ in range(2):
            res[f"regen{len(seeds)}"] = run_op("regenerate_level")
            seeds.append(manifest()["levels"][1]["seed"])
        paths = addon().p10_blender.setup.paths
        p10.output_dir = "//stacks"                     # an unsaved file: not the working folder
        unsaved_root = str(paths.output_root(p10))
        props = addon().p10_blender.properties
        g = p10.guidance
        ignored = [props.apply_settings(p10, {"guidance": v}) for v in ("nan", "inf", 1e9, "high")]
        emit(res=res, seen=seen, lora_kept=lora_kept, seeds=seeds, unsaved_root=unsaved_root,
             user_dir=str(paths.default_root()), guidance=[g, p10.guidance], ignored=ignored,
             cwd=os.getcwd())
    '''), ur)
    other = out["res"].pop("other")
    assert other[0] is None and "made with the LoRA" in other[1]
    assert len(other[1].strip().splitlines()) == 1
    for key, (r, err) in out["res"].items():
        assert r == ["FINISHED"], (key, err)
    assert [s["lora"] for s in out["seen"]] == ["latent-consistency/lcm-lora-sdv1-5"] * 6
    assert out["lora_kept"] == "latent-consistency/lcm-lora-sdv1-5"
    seeds = out["seeds"]
    assert len(set(seeds)) == 4 and seeds[2] == 77 and 0 not in seeds  # a new variation each time
    assert out["unsaved_root"] == str(Path(out["user_dir"]) / "stacks")  # ~/zoom_stacks/stacks
    assert not out["unsaved_root"].startswith(out["cwd"] + "/stacks")
    assert out["ignored"] == [["guidance"]] * 4 and out["guidance"][0] == out["guidance"][1]
