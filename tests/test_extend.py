"""Known levels end to end on a tiny random-weight Stable Diffusion: ``python -m core extend``,
``regenerate`` and ``generate --photo --photo-level`` round trips, and bad input (one line,
nothing written, no model loaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.cli import main as cli
from core.backends import loading
from core.extend import level_records
from core.stack.stack_io import ZoomStack
from core.zoom.zoom_stack import crop_centre, downsample

TWO = 2 / 255


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.tiny_models import make_tiny_sd

    return str(make_tiny_sd(tmp_path_factory.mktemp("known_tiny") / "sd"))


@pytest.fixture(scope="module")
def base(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("known_base") / "s3"
    code = cli.main(["generate", "--prompt", "a galaxy", "--prompt", "a star", "--prompt",
                     "a planet", "--model", model, "--size", "64", "--steps", "3",
                     "--device", "cpu", "--seed", "5", "--out", str(out), "--quiet"])
    assert code == 0
    return out


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def inconsistency(layers: np.ndarray, zoom: int = 2) -> float:
    x = torch.from_numpy(layers).permute(0, 3, 1, 2)
    return float((crop_centre(x[:-1], zoom) - downsample(x[1:], zoom)).abs().max())


def test_extend_deeper_and_outward_keep_the_old_levels(capsys, base, tmp_path):
    old = ZoomStack.load(base)
    assert [r["made_by"] for r in old.manifest["levels"]] == ["generate"] * 3
    code, out, err = _run(capsys, "extend", base, "--prompt", "a tree", "--prompt", "a leaf",
                          "--device", "cpu", "--out", tmp_path / "s5", "--quiet")
    assert code == 0, err
    deeper = ZoomStack.load(tmp_path / "s5")
    assert deeper.layers.shape == (5, 64, 64, 3)
    assert np.abs(deeper.layers[:3] - old.layers).max() <= TWO
    assert inconsistency(deeper.layers) <= 1 / 255 + 1e-6  # consistent after 8-bit rounding
    m = deeper.manifest
    assert m["prompts"] == ["a galaxy", "a star", "a planet", "a tree", "a leaf"]
    assert [r["made_by"] for r in m["levels"]] == ["generate"] * 3 + ["extend"] * 2
    assert m["levels"][3]["seed"] == 6 and m["num_levels"] == 5  # default seed: the stack's + 1

    code, out, err = _run(capsys, "extend", base, "--prompt", "the universe", "--outward",
                          "--device", "cpu", "--seed", "11", "--out", tmp_path / "s4", "--quiet")
    assert code == 0, err
    wider = ZoomStack.load(tmp_path / "s4")
    assert wider.layers.shape == (4, 64, 64, 3)
    assert np.abs(wider.layers[1:] - old.layers).max() <= TWO
    assert inconsistency(wider.layers) <= 1 / 255 + 1e-6
    assert wider.manifest["prompts"][0] == "the universe"
    assert wider.manifest["levels"][0] == {"prompt": "the universe", "made_by": "extend",
                                           "seed": 11}


def test_extend_in_windows_matches_depth(capsys, base, tmp_path):
    # 3 new levels in windows of 2 (overlap 1): three windows, each one new level
    code, _, err = _run(capsys, "extend", base, "--prompt", "a", "--prompt", "b", "--prompt",
                        "c", "--overlap", "1", "--window", "2", "--device", "cpu",
                        "--out", tmp_path / "s6", "--quiet")
    assert code == 0, err
    s = ZoomStack.load(tmp_path / "s6")
    assert s.layers.shape[0] == 6
    assert np.abs(s.layers[:3] - ZoomStack.load(base).layers).max() <= TWO
    assert inconsistency(s.layers) <= 1 / 255 + 1e-6
    assert [r["seed"] for r in s.manifest["levels"][3:]] == [6, 7, 8]  # one seed per window


def test_regenerate_changes_only_that_level(capsys, base, tmp_path):
    old = ZoomStack.load(base)
    code, _, err = _run(capsys, "regenerate", base, "--level", "1", "--prompt", "a red star",
                        "--device", "cpu", "--out", tmp_path / "r", "--quiet")
    assert code == 0, err
    new = ZoomStack.load(tmp_path / "r")
    assert np.abs(new.layers[[0, 2]] - old.layers[[0, 2]]).max() <= TWO
    assert np.abs(new.layers[1] - old.layers[1]).max() > 10 / 255
    assert inconsistency(new.layers) <= 1 / 255 + 1e-6
    records = new.manifest["levels"]
    assert records[1]["prompt"] == "a red star" and records[1]["made_by"] == "regenerate"
    assert isinstance(records[1]["seed"], int) and records[1]["seed"] != 5  # a new seed (R5)
    assert records[0]["made_by"] == records[2]["made_by"] == "generate"
    assert new.manifest["prompts"] == ["a galaxy", "a red star", "a planet"]


def test_generate_zooms_out_of_a_photo(capsys, model, tmp_path):
    from PIL import Image

    from core.generate import load_photo

    y, x = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([x * 4, y * 4, 255 - x * 2], -1).astype(np.uint8)).save(
        tmp_path / "photo.png")
    code, _, err = _run(capsys, "generate", "--prompt", "a city", "--prompt", "a street",
                        "--prompt", "a window", "--photo", tmp_path / "photo.png",
                        "--photo-level", "-1", "--model", model, "--size", "64", "--steps", "2",
                        "--device", "cpu", "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    s = ZoomStack.load(tmp_path / "o")
    photo = ((load_photo(str(tmp_path / "photo.png"), 64, 64)[0] + 1) / 2).permute(1, 2, 0).numpy()
    assert np.abs(s.layers[2] - photo).max() <= 1 / 255  # the finest level IS the photo
    assert s.manifest["photo_level"] == 2 and s.manifest["levels"][2]["made_by"] == "photo"
    assert inconsistency(s.layers) <= 1 / 255 + 1e-6


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything tries to load a model."""
    def refuse(*a, **k):
        raise AssertionError("a model was loaded")
    monkeypatch.setattr(loading.ModelCache, "get", refuse)


@pytest.mark.parametrize("argv, message", [
    (["regenerate", "{base}", "--level", "3"], "level 3 is out of range"),
    (["regenerate", "{base}", "--level", "-4"], "out of range"),
    (["regenerate", "{base}", "--level", "0", "--level", "1", "--level", "2"], "every level"),
    (["regenerate", "{base}", "--level", "1", "--prompt", " "], "empty"),
    (["extend", "{base}"], "no prompts"),
    (["extend", "{base}", "--prompt", ""], "empty"),
    (["extend", "{base}", "--prompt", "x", "--zoom", "4"], "zooms by 2, not 4"),
    (["extend", "{base}", "--prompt", "x", "--size", "128"], "width is 64 pixels, not 128"),
    (["extend", "{base}", "--prompt", "x", "--model", "some/other-model"], "made with the model"),
    (["extend", "{base}", "--prompt", "x", "--overlap", "0"], "overlap"),
    (["extend", "{base}", "--prompt", "x", "--overlap", "2", "--window", "2"], "larger than the overlap"),
    (["extend", "{tmp}/nothing", "--prompt", "x"], "not found"),
    (["generate", "--prompt", "a", "--photo-level", "1"], "needs --photo"),
])
def test_bad_input_is_one_line_nothing_written_no_model(capsys, base, tmp_path, no_model, argv,
                                                        message):
    argv = [a.format(base=base, tmp=tmp_path) for a in argv] + ["--out", str(tmp_path / "o")]
    code, out, err = _run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert not (tmp_path / "o").exists() and out == ""


def test_a_hand_edited_stack_is_refused_before_any_model(capsys, base, tmp_path, no_model):
    import shutil

    from PIL import Image

    edited = tmp_path / "edited"
    shutil.copytree(base, edited)
    with Image.open(edited / "layer_01.png") as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited / "layer_01.png")
    for argv, pair in ((["extend", edited, "--prompt", "x", "--overlap", "3"], "0 and 1"),
                       (["regenerate", edited, "--level", "0"], "1 and 2")):
        code, _, err = _run(capsys, *argv, "--out", tmp_path / "o")
        assert code == 1 and f"levels {pair} disagree" in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_old_manifests_get_level_records():
    m = {"prompts": ["a", "b"], "seed": 4}
    assert level_records(m) == [{"prompt": "a", "made_by": "generate", "seed": 4},
                                {"prompt": "b", "made_by": "generate", "seed": 4}]


def test_backend_denoiser_is_differentiable_only_on_request(model):
    cache = loading.ModelCache()
    try:
        backend = cache.get(model, device="cpu")
        cond = backend.encode_prompts(["a cat", "a dog"], "", height=64, width=64)
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
        frozen = backend.make_denoiser(cond, 7.5)
        assert not frozen(z, 500, torch.arange(2)).requires_grad
        live = backend.make_denoiser(cond, 7.5, micro_batch=1, differentiable=True)
        x0 = live(z, 500, torch.arange(2))
        assert x0.requires_grad and live.differentiable and not frozen.differentiable
        (grad,) = torch.autograd.grad(x0[1].sum(), z)
        assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0  # levels stay independent
        torch.testing.assert_close(x0.detach(), frozen(z, 500, torch.arange(2)), atol=1e-4, rtol=0)
    finally:
        cache.release()


# ----------------------------------------------------------------- what the sampler is given
# A recording stand-in for core.generate.generate (extend's ``generate=`` seam): no model, so
# these run in a second. It returns the known levels as given and, for every other level, an
# image no old level shows (a flat colour drawn with the call's seed), so new levels are recognisable.
class RecordingGenerate:
    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, settings, *, progress=None, cancel=None, models=None, known=None):
        known = dict(known or {})
        self.calls.append({"prompts": list(settings.prompts), "seed": settings.seed,
                           "known": {k: np.array(v) for k, v in known.items()},
                           "lora": settings.lora, "model": settings.model})
        n, h, w = len(settings.prompts), settings.height, settings.width
        colour = np.random.default_rng(settings.seed).random(3, dtype=np.float32)
        layers = np.broadcast_to(colour, (n, h, w, 3)).copy()
        for k, image in known.items():
            layers[k] = image
        return ZoomStack(layers, {"prompts": list(settings.prompts), "zoom": settings.zoom})


def consistent_stack(n=3, size=64, seed=0, **manifest) -> ZoomStack:
    from core.zoom.zoom_stack import render_image

    g = torch.Generator().manual_seed(seed)
    images = render_image(torch.rand(n, 3, size, size, generator=g), 2)
    prompts = [f"level {i}" for i in range(n)]
    m = {"prompts": prompts, "zoom": 2, "width": size, "height": size, "num_levels": n,
         "model": "p10/some-model", "seed": 5, "scheduler": "ddim", "steps": 3, "guidance": 7.5,
         "levels": [{"prompt": p, "made_by": "generate", "seed": 5} for p in prompts]}
    m.update(manifest)
    return ZoomStack(images.permute(0, 2, 3, 1).numpy().copy(), m)


def test_outward_extension_gives_the_sampler_old_levels_in_their_new_slots():
    from core.extend import extend

    old = consistent_stack()
    fake = RecordingGenerate()
    new = extend(old, ["the universe"], outward=True, overlap=2, generate=fake, models=object())
    [call] = fake.calls
    assert call["prompts"] == ["the universe", "level 0", "level 1"]
    assert sorted(call["known"]) == [1, 2]  # the new level 0 is sampled, not pinned
    np.testing.assert_array_equal(call["known"][1], old.layers[0])
    np.testing.assert_array_equal(call["known"][2], old.layers[1])
    assert new.layers.shape[0] == 4
    np.testing.assert_array_equal(new.layers[1:], old.layers)
    assert np.abs(new.layers[0] - old.layers[0]).max() > 0.1  # the new level is new
    assert new.manifest["prompts"][0] == "the universe"


def test_each_window_samples_with_its_own_seed_and_prompts():
    from core.extend import extend

    old = consistent_stack()
    fake = RecordingGenerate()
    new = extend(old, ["a", "b", "c"], overlap=1, window=2, generate=fake, models=object())
    assert [c["seed"] for c in fake.calls] == [6, 7, 8]
    assert [c["prompts"] for c in fake.calls] == [["level 2", "a"], ["a", "b"], ["b", "c"]]
    assert [sorted(c["known"]) for c in fake.calls] == [[0], [0], [0]]
    np.testing.assert_array_equal(fake.calls[1]["known"][0], new.layers[3])  # the last new one
    assert [r["seed"] for r in new.manifest["levels"][3:]] == [6, 7, 8]
    assert len({float(new.layers[i].mean()) for i in (3, 4, 5)}) == 3  # three different draws

    fake = RecordingGenerate()
    extend(old, ["x", "y", "z"], outward=True, overlap=1, window=2, generate=fake, models=object())
    assert [c["prompts"] for c in fake.calls] == [["z", "level 0"], ["y", "z"], ["x", "y"]]


def test_extend_checks_the_agreement_of_the_levels_it_keeps_known():
    from core.extend import check_extend

    stack = consistent_stack()
    stack.layers[0, 24:40, 24:40] = 1 - stack.layers[0, 24:40, 24:40]  # a hand-edited centre
    check_extend(stack, ["deeper"], overlap=2)  # levels 1, 2 are kept: they agree
    with pytest.raises(Exception, match="levels 0 and 1 disagree"):
        check_extend(stack, ["wider"], outward=True, overlap=2)
    stack = consistent_stack()
    stack.layers[2, :8] = 1 - stack.layers[2, :8]
    check_extend(stack, ["wider"], outward=True, overlap=2)
    with pytest.raises(Exception, match="levels 1 and 2 disagree"):
        check_extend(stack, ["deeper"], overlap=2)


def test_the_same_model_folder_spelled_another_way_is_the_same_model(tmp_path, monkeypatch):
    from core.extend import check_extend

    folder = tmp_path / "models" / "sd"
    folder.mkdir(parents=True)
    (tmp_path / "link").symlink_to(folder)
    stack = consistent_stack(model=str(folder))
    monkeypatch.chdir(tmp_path)
    for spelling in ("./models/sd", "models/sd/", str(tmp_path / "link"), "models/../models/sd"):
        settings, _, _ = check_extend(stack, ["x"], model=spelling)
    with pytest.raises(Exception, match="made with the model"):
        check_extend(stack, ["x"], model=str(tmp_path))


# --------------------------------------------- issue 26: LoRA, model path, seeds, hand edits
def _cli_with(monkeypatch, fake):
    """The command line's extend/regenerate with the recording generator (no model)."""
    import functools

    from core import extend as ext

    monkeypatch.setattr(cli, "_load_known_levels", lambda: (
        functools.partial(ext.extend, generate=fake, models=object()),
        functools.partial(ext.regenerate, generate=fake, models=object())))


def _save(stack: ZoomStack, folder) -> str:
    stack.save(folder)
    return str(folder)


def test_r1_extend_and_regenerate_keep_the_stacks_lora(capsys, tmp_path, monkeypatch, no_model):
    from core.extend import check_extend, extend, regenerate

    lcm = consistent_stack(lora="latent-consistency/lcm-lora-sdv1-5", scheduler="lcm", steps=8,
                           guidance=1.0)
    fake = RecordingGenerate()
    deeper = extend(lcm, ["x"], generate=fake, models=object())
    again = regenerate(lcm, [1], generate=fake, models=object())
    assert [c["lora"] for c in fake.calls] == ["latent-consistency/lcm-lora-sdv1-5"] * 2
    assert deeper.manifest["lora"] == again.manifest["lora"] == "latent-consistency/lcm-lora-sdv1-5"
    settings, _, _ = check_extend(lcm, ["x"], lora="latent-consistency/lcm-lora-sdv1-5")
    assert settings.lora == "latent-consistency/lcm-lora-sdv1-5"  # the same one: fine
    # another LoRA, or one on a stack made without: refused before any model loads
    folder = _save(lcm, tmp_path / "lcm")
    plain = _save(consistent_stack(), tmp_path / "plain")
    _cli_with(monkeypatch, fake)
    for stack, lora, words in ((folder, "some/other-lora", "made with the LoRA"),
                               (plain, "some/lora", "made without a LoRA")):
        for argv in (["extend", stack, "--prompt", "x"], ["regenerate", stack, "--level", "1"]):
            code, _, err = _run(capsys, *argv, "--lora", lora, "--out", tmp_path / "o")
            lines = err.strip().splitlines()
            assert code == 1 and len(lines) == 1 and words in lines[0], err
    code, _, err = _run(capsys, "extend", folder, "--prompt", "x", "--out", tmp_path / "o",
                        "--quiet")
    assert code == 0, err
    assert fake.calls[-1]["lora"] == "latent-consistency/lcm-lora-sdv1-5"
    assert ZoomStack.load(tmp_path / "o").manifest["lora"] == "latent-consistency/lcm-lora-sdv1-5"


def test_r4_relative_model_path_is_stored_absolute(capsys, model, tmp_path, monkeypatch):
    from pathlib import Path

    from core.extend import check_extend

    monkeypatch.chdir(Path(model).parent)
    code, _, err = _run(capsys, "generate", "--prompt", "a", "--prompt", "b", "--model",
                        Path(model).name, "--size", "64", "--steps", "1", "--device", "cpu",
                        "--out", tmp_path / "s", "--quiet")
    assert code == 0, err
    stack = ZoomStack.load(tmp_path / "s")
    assert stack.manifest["model"] == str(Path(model).resolve())
    monkeypatch.chdir(tmp_path)  # another folder: the stack still names its model
    assert check_extend(stack, ["c"])[0].model == str(Path(model).resolve())
    assert check_extend(stack, ["c"], model=model)[0].model == model


def test_r4_a_model_is_accepted_when_the_stacks_model_path_is_gone(tmp_path, monkeypatch):
    from core.extend import check_extend, extend

    here = tmp_path / "models" / "sd"
    here.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for gone in ("/nowhere/models/sd", "old/sd"):  # an absolute path; a relative one (older stacks)
        stack = consistent_stack(model=gone)
        assert check_extend(stack, ["x"], model=str(here))[0].model == str(here)
        fake = RecordingGenerate()
        new = extend(stack, ["x"], model="models/sd", generate=fake, models=object())
        assert fake.calls[0]["model"] == "models/sd"
        assert new.manifest["model"] == str(here)  # what was used, absolute
    for recorded, given in (("p10/some-model", "other/model"),  # a hub id for a hub id
                            (str(here), str(tmp_path))):       # the stack's model is here
        with pytest.raises(Exception, match="made with the model"):
            check_extend(consistent_stack(model=recorded), ["x"], model=given)


def test_r5_regenerating_twice_gives_a_new_variation(capsys, tmp_path, monkeypatch):
    from core.extend import recorded_seeds, regenerate

    stack = consistent_stack()
    fake = RecordingGenerate()
    first = regenerate(stack, [1], generate=fake, models=object())
    second = regenerate(stack, [1], generate=fake, models=object())  # the same stack again
    third = regenerate(first, [1], generate=fake, models=object())   # the result again
    seeds = [c["seed"] for c in fake.calls]
    assert len(set(seeds)) == 3 and not set(seeds) & {5}
    assert seeds[0] in recorded_seeds(first.manifest)  # the level's seed counts as used
    assert third.manifest["levels"][1]["seed"] == seeds[2] not in recorded_seeds(first.manifest)
    assert np.abs(first.layers[1] - second.layers[1]).max() > 0  # a new image each time
    assert regenerate(stack, [1], seed=9, generate=fake, models=object()) \
        .manifest["levels"][1]["seed"] == 9  # an explicit seed is kept
    folder = _save(stack, tmp_path / "s")
    _cli_with(monkeypatch, fake)
    for out in ("r1", "r2"):
        assert _run(capsys, "regenerate", folder, "--level", "1", "--out", tmp_path / out,
                    "--quiet")[0] == 0
    a, b = (ZoomStack.load(tmp_path / o).manifest["levels"][1]["seed"] for o in ("r1", "r2"))
    assert a != b


def test_r9_hand_edited_manifests_are_honoured_or_one_line(capsys, tmp_path, monkeypatch):
    import json

    from core.extend import extend, regenerate

    folder = tmp_path / "s"
    _save(consistent_stack(), folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["prompts"][1] = "an edited star"        # the levels record still says "level 1"
    del m["levels"][2]["prompt"]              # was KeyError: 'prompt'
    (folder / "manifest.json").write_text(json.dumps(m))
    stack = ZoomStack.load(folder)
    fake = RecordingGenerate()
    deeper = extend(stack, ["x"], generate=fake, models=object())
    assert fake.calls[0]["prompts"] == ["an edited star", "level 2", "x"]
    assert deeper.manifest["prompts"][:3] == ["level 0", "an edited star", "level 2"]
    assert deeper.manifest["levels"][1]["prompt"] == "an edited star"
    regen = regenerate(stack, [0], generate=fake, models=object())
    assert fake.calls[1]["prompts"] == ["level 0", "an edited star", "level 2"]
    assert regen.manifest["prompts"][1] == "an edited star"
    for key, value, words in (("prompts", ["a", 3, "c"], "prompt of level 1 must be text"),
                              ("seed", "5", "seed must be a whole number"),
                              ("levels", [{"prompt": 1}, {}, {}], "prompt of level 0 in 'levels'"),
                              ("sample_width", "64", "sample_width must be a whole number")):
        bad = dict(m, **{key: value})
        (folder / "manifest.json").write_text(json.dumps(bad))
        for argv in (["extend", folder, "--prompt", "x"], ["regenerate", folder, "--level", "0"]):
            code, _, err = _run(capsys, *argv, "--out", tmp_path / "o")
            lines = err.strip().splitlines()
            assert code == 1 and len(lines) == 1 and words in lines[0], err
            assert "Error:" not in lines[0] and not (tmp_path / "o").exists()


def test_r15_extend_prompt_file_settings_are_honoured_or_refused(capsys, tmp_path, monkeypatch):
    import json

    folder = _save(consistent_stack(), tmp_path / "s")
    fake = RecordingGenerate()
    _cli_with(monkeypatch, fake)
    pf = tmp_path / "more.json"
    pf.write_text(json.dumps({"prompts": ["x"], "seed": 40, "steps": 2, "guidance": 3.0}))
    code, _, err = _run(capsys, "extend", folder, "--prompts", pf, "--out", tmp_path / "o", "--quiet")
    assert code == 0, err
    m = ZoomStack.load(tmp_path / "o").manifest
    assert (m["steps"], m["guidance"], m["levels"][3]["seed"]) == (2, 3.0, 40)
    code, _, err = _run(capsys, "extend", folder, "--prompts", pf, "--seed", "41", "--steps", "4",
                        "--out", tmp_path / "o2", "--quiet")
    m = ZoomStack.load(tmp_path / "o2").manifest
    assert code == 0 and (m["steps"], m["levels"][3]["seed"]) == (4, 41)  # options win
    for doc, words in (({"prompts": ["x"], "photo": "p.png"}, "sets photo, which extend cannot use"),
                       ({"prompts": ["x"], "width": 128}, "width is 64 pixels, not 128"),
                       ({"prompts": ["x"], "model": "a/b"}, "made with the model")):
        pf.write_text(json.dumps(doc))
        code, _, err = _run(capsys, "extend", folder, "--prompts", pf, "--out", tmp_path / "o3")
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and words in lines[0], err
