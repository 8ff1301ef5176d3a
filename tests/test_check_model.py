"""``python -m core check-model MODEL``: runs end to end on the tiny random SD (its numbers mean
nothing there), measures what it says on known inputs, and recommends by its stated rule."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from core.cli import main as cli
from core.cli.check_model import (QUIET_RMS, check_model, commutation, recommend,
                                  render_inconsistency)
from core.zoom.zoom_stack import render_image


def _route(rms: float, seconds: float = 1.0, frac: float = 0.0) -> dict:
    return {"pixel_blend": frac, "seconds": seconds,
            "render_inconsistency": {"rms": rms, "max": 4 * rms}}


def test_end_to_end_on_tiny_sd(capsys, tmp_path):
    from tests.tiny_models import make_tiny_sd

    model = make_tiny_sd(tmp_path / "tiny_sd")
    code = cli.main(["check-model", model, "--levels", "2", "--size", "64", "--steps", "2",
                     "--scheduler", "ddim", "--device", "cpu", "--pixel-blend", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["latent"] and report["family"] == "sd" and report["size"] == 64
    for route, frac in (("latent_blend", 0.0), ("pixel_blend", 1.0)):
        r = report[route]
        assert r["pixel_blend"] == frac
        assert r["render_inconsistency"]["rms"] >= 0 and r["commutation"]["rms"] >= 0
        assert r["render_inconsistency"]["max"] >= r["render_inconsistency"]["rms"]
        assert 0 <= r["commutation"]["relative"] < 100
    assert report["recommendation"].startswith(("latent blending", "--pixel-blend 1"))
    # the pixel route did blend pixels: other latents, other numbers
    assert report["latent_blend"]["commutation"] != report["pixel_blend"]["commutation"]
    # the random VAE does not commute with D_p: something is measured, in 8-bit levels
    assert report["latent_blend"]["commutation"]["rms"] > 0.1
    # the plain report: one line per route and the recommendation
    assert cli.main(["check-model", model, "--levels", "2", "--size", "64", "--steps", "1",
                     "--scheduler", "ddim", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "latent_blend" in text and "pixel_blend" in text and "recommendation:" in text
    # 1 DDIM step at t = 999 never reaches pixel blending's t < 0.2·T: no verdict, said so
    assert "recommendation: no verdict: pixel blending never ran" in text


def test_measures_in_8bit_levels():
    layers = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images = render_image(layers, 2)
    assert render_inconsistency(images, 2) == {"rms": 0.0, "max": 0.0}
    off = images.clone()
    off[0] += 1 / 255  # level 0 one 8-bit level too bright: its centre disagrees by 1
    r = render_inconsistency(off, 2)
    assert abs(r["rms"] - 2 ** -0.5) < 1e-3 and abs(r["max"] - 1.0) < 1e-3  # only pair 0-1 off
    # a decoder that is D_p-equivariant (identity) commutes exactly; a pointwise nonlinear one not
    ident = SimpleNamespace(decode=lambda z: z)
    assert commutation(ident, layers, 2)["rms"] == 0.0
    square = SimpleNamespace(decode=lambda z: z**2)
    c = commutation(square, layers, 2)
    assert c["rms"] > 1 and 0 < c["relative"] < 1


def test_recommendation_rule():
    assert recommend(_route(QUIET_RMS), _route(0.1, frac=0.2)).startswith("latent blending")
    assert recommend(_route(10.0), _route(4.0, 3.0, 0.2)).startswith("--pixel-blend 0.2")
    assert recommend(_route(10.0), _route(6.0, 3.0, 0.2)).startswith("latent blending")


def test_pixel_models_need_no_check_and_bad_input_is_one_line(capsys):
    class Cache:
        def get(self, model, **kw):
            return SimpleNamespace(family="if")

    r = check_model("some/if-model", models=Cache())
    assert not r["latent"] and r["recommendation"].startswith("none needed")
    assert cli.main(["check-model", "x", "--levels", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--levels must be 2 to" in err
    assert cli.main(["check-model", "x", "--pixel-blend", "0"]) == 1
    assert "--pixel-blend" in capsys.readouterr().err
    assert cli.main(["check-model", "no/such-model-here", "--zoom", "3"]) == 1  # before loading
    assert "zoom factor must be a power of two" in capsys.readouterr().err
