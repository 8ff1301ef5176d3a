"""GenerateSettings: validation messages, (de)serialisation, torch-free import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInputError
from core.settings import DEFAULT_MODEL, DEFAULT_SCHEDULER, SCHEDULERS, GenerateSettings, family_hint, size_multiple

ROOT = Path(__file__).resolve().parents[1]


def ok(**kw):
    base = dict(prompts=["a forest", "a tree"], model="some/model")
    return GenerateSettings(**{**base, **kw})


def test_defaults_validate():
    s = GenerateSettings(prompts=["a", "b"])
    assert s.validate() is s
    assert s.model == DEFAULT_MODEL and s.zoom == 2 and s.scheduler == "auto"
    assert s.resolved_steps() == SCHEDULERS[DEFAULT_SCHEDULER["sd"]]
    assert ok(scheduler="ddpm").resolved_steps() == SCHEDULERS["ddpm"]
    assert ok(steps=7).resolved_steps() == 7


@pytest.mark.parametrize("kw, words", [
    (dict(prompts=[]), "no prompts"),
    (dict(prompts=["a", "  "]), "zoom level 2"),
    (dict(prompts=["", "b"]), "zoom level 1"),
    (dict(prompts="a forest"), "list"),
    (dict(zoom=3), "power of two"),
    (dict(zoom=1), "power of two"),
    (dict(zoom=True), "power of two"),
    (dict(scheduler="plms"), "ddpm, ddim, dpmsolver++, euler"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(width=500), "multiple of 32"),
    (dict(height=64, zoom=8), "multiple of 128"),
    (dict(guidance=-1), "guidance"),
    (dict(seed=-3), "seed"),
    (dict(micro_batch=0), "micro-batch"),
    (dict(device="tpu"), "device"),
    (dict(photo="/no/such/photo.png"), "photo"),
    (dict(family="kandinsky"), "family"),
])
def test_invalid_settings_one_line(kw, words):
    with pytest.raises(InvalidInputError) as exc:
        ok(**kw).validate()
    msg = str(exc.value)
    assert words in msg and "\n" not in msg


def test_size_multiple_depends_on_family(tmp_path):
    assert size_multiple("sd", 2) == 32 and size_multiple("if", 2) == 4
    ok(model="DeepFloyd/IF-I-XL-v1.0", width=16, height=16).validate()  # pixel model: 2p
    with pytest.raises(InvalidInputError):
        ok(width=16, height=16).validate()  # latent model: 8 * 2p
    # a local folder's model_index.json decides the family
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "IFPipeline"}))
    assert family_hint(str(tmp_path)) == "if"
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(InvalidInputError, match="KandinskyPipeline"):
        family_hint(str(tmp_path))
    assert family_hint("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"
    assert family_hint("stabilityai/stable-diffusion-2-1-base") == "sd"


def test_photo_must_exist(tmp_path):
    from PIL import Image

    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(photo)
    ok(photo=str(photo)).validate()
    photo.write_bytes(b"not an image")  # checked before any model loads (docs/faults.md R8)
    with pytest.raises(InvalidInputError, match="not an image"):
        ok(photo=str(photo)).validate()


def test_dict_round_trip_keeps_unknown_keys():
    s = ok(zoom=4, steps=3, negative_prompt="blurry", micro_batch=2, seed=5)
    d = s.to_dict()
    json.dumps(d)  # JSON-ready
    d["future_key"] = 1
    back = GenerateSettings.from_dict(d)
    assert back.to_dict() == d
    assert back.zoom == 4 and back.micro_batch == 2 and back.extra == {"future_key": 1}
    # a manifest records photo as a bool: not a path
    m = GenerateSettings.from_dict({"prompts": ["a"], "photo": True, "num_levels": 1})
    assert m.photo is None and m.validate()
    with pytest.raises(InvalidInputError):
        GenerateSettings.from_dict({"zoom": 2})
    with pytest.raises(InvalidInputError):
        GenerateSettings.from_dict({"prompts": "a"})


def test_settings_import_is_torch_free():
    code = ("import sys; import core.settings, core.errors; "
            "bad = [m for m in ('torch', 'diffusers', 'numpy', 'PIL') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
