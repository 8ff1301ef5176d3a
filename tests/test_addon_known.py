"""Extend Deeper / Wider and Regenerate Level through the add-on in headless Blender (fake
engine: the job plumbing, the rows -> prompts mapping, provenance and cancel; the sampling
itself is covered by tests/test_extend.py and tests/test_known_levels.py)."""

from __future__ import annotations

import textwrap

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
