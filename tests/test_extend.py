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
    assert records[1] == {"prompt": "a red star", "made_by": "regenerate", "seed": 6}
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
