"""Few-step models: detection of LCM / LCM-LoRA / Turbo, their defaults, LoRA loading offline."""

from pathlib import Path

import numpy as np
import pytest
import torch

import core.generate as gen_mod
from core.backends.loading import ModelCache
from core.cli.main import build_parser, settings_from_args
from core.errors import ModelNotFoundError
from core.models.fast_models import PROFILES, detect_fast_model
from core.generate import generate
from core.settings import DEFAULT_SCHEDULER, SCHEDULER_CHOICES, SCHEDULERS, GenerateSettings
from tests.tiny_models import make_tiny_sd

PROMPTS = ["a forest", "a tree"]


def test_detection_from_names_and_scheduler_class():
    assert detect_fast_model("stabilityai/sd-turbo") is PROFILES["turbo"]
    assert detect_fast_model("stabilityai/sdxl-turbo") is PROFILES["turbo"]
    assert detect_fast_model("/models/SD-Turbo/") is PROFILES["turbo"]
    assert detect_fast_model("SimianLuo/LCM_Dreamshaper_v7") is PROFILES["lcm"]
    assert detect_fast_model("runwayml/stable-diffusion-v1-5",
                             lora="latent-consistency/lcm-lora-sdv1-5") is PROFILES["lcm"]
    assert detect_fast_model("some/model", scheduler_class="LCMScheduler") is PROFILES["lcm"]
    assert detect_fast_model("stabilityai/stable-diffusion-2-1-base") is None
    assert detect_fast_model("some/model", lora="/loras/watercolor.safetensors") is None
    assert detect_fast_model("some/model", lora="/home/lcmuser/loras/water.safetensors") is None
    assert detect_fast_model("some/model", lora="/loras/lcm-lora-sdxl/pytorch_lora_weights"
                                                 ".safetensors") is PROFILES["lcm"]


def test_resolved_defaults_and_explicit_settings_win():
    plain = GenerateSettings(prompts=PROMPTS, model="stabilityai/stable-diffusion-2-1-base")
    assert plain.scheduler == "auto" and plain.guidance is None
    r = plain.resolved("sd")
    assert r["scheduler"] == DEFAULT_SCHEDULER["sd"] and r["steps"] == SCHEDULERS[r["scheduler"]]
    assert r["guidance"] == 7.5 and r["fast_model"] is None
    lcm = GenerateSettings(prompts=PROMPTS, model="runwayml/stable-diffusion-v1-5",
                           lora="latent-consistency/lcm-lora-sdv1-5").resolved("sd")
    assert (lcm["scheduler"], lcm["steps"], lcm["guidance"]) == ("lcm", 8, 1.0)
    turbo = GenerateSettings(prompts=PROMPTS, model="stabilityai/sdxl-turbo").resolved("sdxl")
    assert (turbo["scheduler"], turbo["steps"], turbo["guidance"]) == ("lcm", 4, 1.0)
    assert turbo["scheduler_config"] == {"original_inference_steps": 4}
    explicit = GenerateSettings(prompts=PROMPTS, model="stabilityai/sdxl-turbo", steps=2,
                                guidance=0.0).resolved("sdxl")
    assert (explicit["scheduler"], explicit["steps"], explicit["guidance"]) == ("lcm", 2, 0.0)
    other = GenerateSettings(prompts=PROMPTS, model="stabilityai/sd-turbo",
                             scheduler="ddpm").resolved("sd")
    assert (other["scheduler"], other["steps"], other["guidance"]) == ("ddpm", SCHEDULERS["ddpm"], 1.0)
    assert "lcm" in SCHEDULER_CHOICES and "auto" in SCHEDULER_CHOICES


def test_cli_lora_and_lcm_scheduler(tmp_path):
    args = build_parser().parse_args(["generate", "--prompt", "a", "--prompt", "b", "--out",
                                      str(tmp_path / "o"), "--scheduler", "lcm", "--lora",
                                      "latent-consistency/lcm-lora-sdv1-5"])
    s = settings_from_args(args)
    assert s.scheduler == "lcm" and s.lora == "latent-consistency/lcm-lora-sdv1-5"


# ------------------------------------------------------------------ tiny models, offline
def save_tiny_lora(model_dir: str, out_dir: Path) -> Path:
    """A random LoRA on the tiny UNet's attention, made with peft, saved the pipeline's way."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = StableDiffusionPipeline.from_pretrained(model_dir)
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # peft starts B at 0 (a no-op LoRA): make it do something
        for name, param in pipe.unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(str(out_dir), unet_lora_layers=layers,
                                              safe_serialization=True)
    return out_dir / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast_models")
    sd = make_tiny_sd(root / "sd")
    lora_file = save_tiny_lora(sd, root / "tiny-lcm-lora")
    turbo = make_tiny_sd(root / "tiny-sd-turbo")
    return {"sd": sd, "lora_dir": str(root / "tiny-lcm-lora"), "lora_file": str(lora_file),
            "turbo": turbo}


def spy_scheduler(monkeypatch):
    seen = {}
    real = gen_mod.sample_zoom_stack

    def spy(denoiser, scheduler, **k):
        seen["scheduler"], seen["steps"] = scheduler, k["num_inference_steps"]
        return real(denoiser, scheduler, **k)

    monkeypatch.setattr(gen_mod, "sample_zoom_stack", spy)
    return seen


def test_lcm_lora_from_folder_and_file_offline(tiny, monkeypatch):
    from diffusers import LCMScheduler

    seen = spy_scheduler(monkeypatch)
    cache = ModelCache()
    try:
        base = generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"], scheduler="lcm",
                                         guidance=1.0), models=cache)
        with_dir = generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"],
                                             lora=tiny["lora_dir"]), models=cache)
        assert isinstance(seen["scheduler"], LCMScheduler) and seen["steps"] == 8
        m = with_dir.manifest
        assert (m["scheduler"], m["steps"], m["guidance"], m["lora"], m["fast_model"]) == (
            "lcm", 8, 1.0, tiny["lora_dir"], "lcm")
        assert np.abs(with_dir.layers - base.layers).max() > 1e-3  # the LoRA changed the model
        with_file = generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"],
                                              lora=tiny["lora_file"]), models=cache)
        np.testing.assert_allclose(with_file.layers, with_dir.layers, atol=1e-5)
        with pytest.raises(ModelNotFoundError, match="LoRA"):
            generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"],
                                      lora="nobody/no-such-lora"), models=cache)
    finally:
        cache.release()


def test_turbo_model_runs_the_renoise_sampler_on_its_grid(tiny, monkeypatch):
    seen = spy_scheduler(monkeypatch)
    stack = generate(GenerateSettings(prompts=PROMPTS, model=tiny["turbo"]))
    m = stack.manifest
    assert (m["scheduler"], m["steps"], m["guidance"], m["fast_model"]) == ("lcm", 4, 1.0, "turbo")
    assert seen["scheduler"].config.original_inference_steps == 4
    plain = generate(GenerateSettings(prompts=PROMPTS, model=tiny["sd"], steps=2))
    assert plain.manifest["scheduler"] == DEFAULT_SCHEDULER["sd"]
    assert plain.manifest["guidance"] == 7.5 and "fast_model" not in plain.manifest


def test_lcm_distilled_checkpoint_embeds_guidance_without_cfg(tmp_path, monkeypatch):
    from tests.tiny_models import make_tiny_lcm

    model = make_tiny_lcm(tmp_path / "tiny-distilled")  # no "lcm" in the name: the config tells
    seen = spy_scheduler(monkeypatch)
    cache = ModelCache()
    try:
        stack = generate(GenerateSettings(prompts=PROMPTS, model=model, steps=2), models=cache)
        m = stack.manifest
        assert (m["scheduler"], m["steps"], m["guidance"], m["fast_model"]) == ("lcm", 2, 8.0, "lcm")
        backend = cache.get(model)
        calls = []
        real = backend.unet.forward

        def spy(x, t, **kw):
            calls.append((x.shape[0], kw.get("timestep_cond")))
            return real(x, t, **kw)

        monkeypatch.setattr(backend.unet, "forward", spy)
        cond = backend.encode_prompts(PROMPTS, "", height=64, width=64)
        z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        a = backend.make_denoiser(cond, 8.0)(z, 500, torch.arange(2))
        b = backend.make_denoiser(cond, 2.0)(z, 500, torch.arange(2))
        assert [n for n, _ in calls] == [2, 2]  # one conditional pass: no CFG doubling
        assert calls[0][1].shape == (2, 16) and not torch.allclose(a, b)
    finally:
        cache.release()
