"""Rectified-flow families (SD3/SD3.5, FLUX.1): the flow update rules on analytic priors, the
scheduler's shift and FLUX's resolution-dependent μ, and tiny random-weight SD3 / FLUX
pipelines through the CLI (generate, extend, regenerate), micro-batching and detection."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch

from core.backends import loading
from core.backends.schedulers import make_scheduler
from core.errors import InvalidInputError
from core.settings import GenerateSettings
from core.stack.stack_io import ZoomStack
from core.zoom.analytic import (FlowMatchingDenoiser, GaussianFieldDenoiser, MixtureDenoiser,
                                inconsistency, make_scenes, nearest_scene_error)
from core.zoom.sampler import FLOW_MU, FLOW_SIGMAS, flow_update, sample_zoom_stack
from tests.test_extend import _run
from tests.test_extend import inconsistency as layer_inconsistency

SD3_SCHED = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHED = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True,
              "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
              "max_image_seq_len": 4096}


class Recording:
    """Wraps a denoiser and keeps every t it is called with."""

    def __init__(self, inner):
        self.inner, self.ts = inner, []

    def __call__(self, z_t, t, levels):
        self.ts.append(t)
        return self.inner(z_t, t, levels)


def _ab():
    return make_scheduler("ddpm", {"num_train_timesteps": 1000}).alphas_cumprod


# ------------------------------------------------------------------------------ the sampler
def test_flow_euler_step_is_the_schedulers_euler_step():
    from diffusers import FlowMatchEulerDiscreteScheduler

    g = torch.Generator().manual_seed(0)
    z, x0 = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    sigma, nxt = sched.sigmas[3], sched.sigmas[4]
    v = (z - x0) / sigma  # the velocity whose x̂0 = z − σ v is x0
    sched.set_begin_index(3)  # step 3 of the schedule
    expected = sched.step(v, sched.timesteps[3], z).prev_sample
    assert torch.allclose(flow_update(z, x0, None, sigma, nxt), expected, atol=1e-5)
    noise = torch.randn(2, 3, 8, 8, generator=g)
    assert torch.allclose(flow_update(z, x0, noise, sigma, nxt), (1 - nxt) * x0 + nxt * noise)


@pytest.mark.parametrize("config, spacing", [(SD3_SCHED, None), (FLUX_SCHED, "linear")])
def test_denoiser_gets_float_timesteps_of_the_shifted_schedule(config, spacing):
    """t = 1000 σ of the pipeline's own schedule, as floats (not rounded): SD3's shift 3 on
    its own spacing, FLUX's μ on linspace(1, 1/n, n)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    mu = 0.9 if spacing else None
    cfg = {**config, **({FLOW_MU: mu, FLOW_SIGMAS: spacing} if spacing else {})}
    rec = Recording(FlowMatchingDenoiser(GaussianFieldDenoiser((3, 8, 8), _ab())))
    sample_zoom_stack(rec, make_scheduler("flow-euler", cfg), num_levels=2, zoom=2,
                      shape=(3, 8, 8), num_inference_steps=6,
                      generator=torch.Generator().manual_seed(0))
    ref = FlowMatchEulerDiscreteScheduler.from_config(config)
    ref.set_timesteps(6, sigmas=np.linspace(1.0, 1 / 6, 6) if spacing else None, mu=mu)
    assert all(isinstance(t, float) for t in rec.ts)
    assert rec.ts == pytest.approx(ref.timesteps.tolist(), abs=1e-3)
    assert any(t != round(t) for t in rec.ts)  # never truncated to integers
    assert rec.ts[0] == pytest.approx(1000.0)


def test_dynamic_shift_without_mu_is_a_clear_error():
    with pytest.raises(ValueError, match="_flow_mu"):
        sample_zoom_stack(lambda z, t, lv: z, make_scheduler("flow-euler", FLUX_SCHED),
                          num_levels=1, zoom=2, shape=(3, 8, 8), num_inference_steps=2)


@pytest.mark.parametrize("name", ["flow-euler", "flow-renoise"])
def test_flow_samplers_find_one_scene_and_stay_consistent(name):
    """Both rules on the analytic mixture at p=2 (success rates at 24 seeds: docs/sampler.md)."""
    shape, levels = (3, 32, 32), 3
    scenes = make_scenes(3, levels, shape, 2, torch.Generator().manual_seed(0), detail=8)
    den = FlowMatchingDenoiser(MixtureDenoiser(scenes, _ab()))
    hits = 0
    for seed in range(3):
        out = sample_zoom_stack(den, make_scheduler(name, SD3_SCHED), num_levels=levels, zoom=2,
                                shape=shape, num_inference_steps=28,
                                generator=torch.Generator().manual_seed(seed))
        assert inconsistency(out.images, 2) < 1e-5
        hits += nearest_scene_error(out.images, scenes)[0] < 0.02
    assert hits >= 2


def test_renoise_keeps_zoom_four_levels_on_one_scene_where_euler_does_not():
    shape, levels, seeds = (3, 64, 64), 3, 6
    scenes = make_scenes(3, levels, shape, 4, torch.Generator().manual_seed(0), detail=8)
    den = FlowMatchingDenoiser(MixtureDenoiser(scenes, _ab()))

    def successes(name):
        return sum(nearest_scene_error(sample_zoom_stack(
            den, make_scheduler(name, SD3_SCHED), num_levels=levels, zoom=4, shape=shape,
            num_inference_steps=28, generator=torch.Generator().manual_seed(s)).images,
            scenes)[0] < 0.02 for s in range(seeds))

    assert successes("flow-renoise") > successes("flow-euler")


def test_flow_renoise_last_step_returns_the_estimate():
    target = torch.full((2, 3, 8, 8), 0.25)
    out = sample_zoom_stack(lambda z, t, lv: target[: len(lv)].clone(),
                            make_scheduler("flow-renoise", SD3_SCHED), num_levels=2, zoom=2,
                            shape=(3, 8, 8), num_inference_steps=4,
                            generator=torch.Generator().manual_seed(1))
    assert torch.allclose(out.images, target)


def test_schedulers_and_families_must_match():
    with pytest.raises(InvalidInputError, match="rectified-flow"):
        make_scheduler("ddpm", SD3_SCHED)
    with pytest.raises(InvalidInputError, match="rectified-flow"):
        make_scheduler("flow-euler", {"num_train_timesteps": 1000, "beta_start": 0.0001})
    with pytest.raises(InvalidInputError, match="flow-euler or flow-renoise"):
        GenerateSettings(prompts=["a"], model="black-forest-labs/FLUX.1-dev",
                         scheduler="ddim").validate()
    with pytest.raises(InvalidInputError, match="only"):
        GenerateSettings(prompts=["a"], scheduler="flow-euler").validate()


def test_auto_settings_of_the_flow_families():
    dev = GenerateSettings(prompts=["a"], model="black-forest-labs/FLUX.1-dev").resolved()
    assert dev["scheduler"] == "flow-renoise" and dev["steps"] == 28 and dev["guidance"] == 3.5
    for fast in ("black-forest-labs/FLUX.1-schnell", "stabilityai/stable-diffusion-3.5-large-turbo"):
        r = GenerateSettings(prompts=["a"], model=fast).resolved()
        assert (r["scheduler"], r["steps"], r["guidance"]) == ("flow-renoise", 4, 0.0), fast
    sd3 = GenerateSettings(prompts=["a"], model="stabilityai/stable-diffusion-3.5-large").resolved()
    assert sd3["guidance"] == 7.0 and sd3["fast_model"] is None


# ------------------------------------------------------------------- tiny SD3 / FLUX pipelines
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import make_tiny_flux, make_tiny_sd3

    root = tmp_path_factory.mktemp("flow_tiny")
    return {"sd3": make_tiny_sd3(root / "sd3"), "flux": make_tiny_flux(root / "flux"),
            "sd3-no-t5": make_tiny_sd3(root / "sd3_no_t5", with_t5=False),
            "schnell": make_tiny_flux(root / "flux-schnell", schnell=True)}


def test_families_are_detected_and_listed(tiny):
    from core.models import cache

    for key, family in (("sd3", "sd3"), ("flux", "flux"), ("sd3-no-t5", "sd3"),
                        ("schnell", "flux")):
        assert loading.detect_family(tiny[key]) == family
        entry = cache.describe_local(tiny[key])
        assert entry.family == family and entry.complete
    assert cache.describe_local(tiny["flux"]).family_name == "FLUX.1"
    with pytest.raises(InvalidInputError, match="FLUX.1 model, not Stable Diffusion 3"):
        loading.detect_family(tiny["flux"], "sd3")


@pytest.mark.parametrize("key", ["sd3", "flux"])
def test_cli_generate_extend_regenerate(capsys, tiny, tmp_path, key):
    base = tmp_path / "base"
    code, _, err = _run(capsys, "generate", "--prompt", "a galaxy", "--prompt", "a star",
                        "--model", tiny[key], "--size", "64", "--steps", "3", "--device", "cpu",
                        "--seed", "5", "--out", base, "--quiet")
    assert code == 0, err
    stack = ZoomStack.load(base)
    assert stack.layers.shape == (2, 64, 64, 3)
    assert stack.manifest["family"] == key and stack.manifest["scheduler"] == "flow-renoise"
    assert layer_inconsistency(stack.layers) <= 1 / 255 + 1e-6  # consistent after decoding

    code, _, err = _run(capsys, "extend", base, "--prompt", "a planet", "--device", "cpu",
                        "--out", tmp_path / "deeper", "--quiet")
    assert code == 0, err
    deeper = ZoomStack.load(tmp_path / "deeper")
    assert deeper.layers.shape == (3, 64, 64, 3)
    assert np.abs(deeper.layers[:2] - stack.layers).max() <= 2 / 255
    assert layer_inconsistency(deeper.layers) <= 1 / 255 + 1e-6

    code, _, err = _run(capsys, "regenerate", base, "--level", "1", "--prompt", "a red star",
                        "--device", "cpu", "--out", tmp_path / "again", "--quiet")
    assert code == 0, err
    again = ZoomStack.load(tmp_path / "again")
    assert np.abs(again.layers[0] - stack.layers[0]).max() <= 2 / 255
    assert again.manifest["levels"][1]["prompt"] == "a red star"
    assert layer_inconsistency(again.layers) <= 1 / 255 + 1e-6


def _sample(backend, levels, micro_batch, guidance):
    from core.backends.schedulers import make_scheduler as mk

    cond = backend.encode_prompts(["a cat", "a dog", "a tree"][:levels], "blurry",
                                  height=64, width=64)
    den = backend.make_denoiser(cond, guidance, micro_batch)
    return sample_zoom_stack(den, mk("flow-renoise", backend.sampling_config(64, 64)),
                             num_levels=levels, zoom=2, shape=(backend.channels, 8, 8),
                             num_inference_steps=3,
                             generator=torch.Generator().manual_seed(2)).images


@pytest.mark.parametrize("key, guidance", [("sd3", 5.0), ("flux", 3.5), ("schnell", 0.0),
                                           ("sd3-no-t5", 5.0)])
def test_micro_batch_gives_the_same_stack(tiny, key, guidance):
    backend = loading.load_backend(tiny[key], device="cpu")
    try:
        whole = _sample(backend, 3, None, guidance)
        assert torch.allclose(_sample(backend, 3, 1, guidance), whole, atol=2e-5)  # float32 kernels
        assert torch.isfinite(whole).all() and whole.abs().max() > 0
    finally:
        backend.release()


@contextmanager
def _transformer_kwargs(model_dir):
    """A loaded backend and the keyword arguments of its transformer's latest call."""
    backend = loading.load_backend(model_dir, device="cpu")
    seen = {}
    handle = backend.unet.register_forward_pre_hook(lambda m, a, kw: seen.update(kw),
                                                    with_kwargs=True)
    try:
        yield backend, seen
    finally:
        handle.remove()
        backend.release()


def test_flux_transformer_sees_packed_tokens_sigma_and_guidance(tiny):
    with _transformer_kwargs(tiny["flux"]) as (backend, seen):
        cond = backend.encode_prompts(["a cat", "a dog"], "", height=64, width=64)
        den = backend.make_denoiser(cond, 3.5)
        z = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
        x0 = den(z, 437.5, torch.arange(2))
        assert x0.shape == z.shape
        assert tuple(seen["hidden_states"].shape) == (2, 16, 64)  # 4 x 4 tokens of 2 x 2 x 16
        assert seen["timestep"].tolist() == pytest.approx([0.4375, 0.4375])
        assert seen["guidance"].tolist() == [3.5, 3.5]
        # x̂0 = z − σ v: the transformer's output, unpacked, gives back z at v = 0
        v = (z - x0) / 0.4375
        packed = type(backend.pipe)._pack_latents(v, 2, 16, 8, 8)
        assert torch.allclose(type(backend.pipe)._unpack_latents(packed, 64, 64, 8), v)


def test_sd3_transformer_sees_each_levels_own_prompt_with_its_pooled_embedding(tiny):
    with _transformer_kwargs(tiny["sd3"]) as (backend, seen):
        cond = backend.encode_prompts(["a cat", "a dog"], "", height=64, width=64)
        backend.make_denoiser(cond, 1.0)(torch.randn(2, 16, 8, 8), 500.0, torch.arange(2))
        pooled = seen["pooled_projections"]
        assert pooled.shape[0] == 2 and pooled.abs().sum(dim=1).min() > 0
        assert not torch.allclose(pooled[0], pooled[1])  # the levels' prompts differ
        assert torch.equal(pooled, cond.cond["pooled_projections"].to(pooled))


def test_flux_mu_is_fluxpipelines():
    from core.backends.flux import flux_mu
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    for tokens in (16, 1024, 4096):
        assert flux_mu(FLUX_SCHED, tokens) == pytest.approx(calculate_shift(tokens))


def test_flux_sampling_config_follows_the_token_count(tiny):
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    backend = loading.load_backend(tiny["flux"], device="cpu")
    try:
        cfg = backend.sampling_config(1024, 512)
        assert cfg[FLOW_MU] == pytest.approx(calculate_shift(64 * 32))
        assert cfg[FLOW_SIGMAS] == "linear"
    finally:
        backend.release()


def test_flow_x0_from_velocity():
    """x̂0 = z_σ − σ v with σ = t / 1000 at a non-integer t."""
    from types import SimpleNamespace

    from core.backends.flow import FlowBackend

    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 16, 4, 4, generator=g)
    sigma = 0.3217
    z = (1 - sigma) * x0 + sigma * eps
    me = SimpleNamespace(scheduler_config={"num_train_timesteps": 1000})
    got = FlowBackend.model_output_to_x0(me, eps - x0, z, torch.full((2,), 1000 * sigma))
    assert torch.allclose(got, x0, atol=1e-5)


def test_estimate_of_the_flow_families():
    from core.models import estimate as est

    h200 = est.DeviceInfo("cuda", "NVIDIA H200", 143 * 2**30, 140 * 2**30)
    dev = est.estimate(GenerateSettings(prompts=["a"] * 4, model="black-forest-labs/FLUX.1-dev"),
                       info=h200)
    assert dev.rows == 4  # embedded guidance: no classifier-free pass
    assert dev.family == "flux" and not dev.fp8 and dev.micro_batch is None
    assert 30e9 < dev.download_bytes < 40e9  # transformer + T5 + CLIP + VAE in bf16
    assert any(line.startswith("Download: about 34 GB") for line in dev.lines())
    sd35 = est.estimate(GenerateSettings(prompts=["a"] * 4,
                                         model="stabilityai/stable-diffusion-3.5-large"), info=h200)
    assert sd35.rows == 8  # classifier-free guidance
    small = est.DeviceInfo("cuda", "NVIDIA GeForce RTX 4090", 24 * 2**30, 23 * 2**30)
    tight = est.estimate(GenerateSettings(prompts=["a"] * 4, model="black-forest-labs/FLUX.1-dev"),
                         info=small)
    assert tight.fp8 and tight.weights_bytes < dev.weights_bytes * 0.6
    old = est.DeviceInfo("cuda", "NVIDIA GeForce RTX 3090", 24 * 2**30, 23 * 2**30)
    assert not est.estimate(GenerateSettings(prompts=["a"] * 4, model="black-forest-labs/FLUX.1-dev"),
                            info=old).fp8  # no fp8 before compute capability 8.9


def test_models_download_says_disk_and_memory_first_and_list_shows_the_family(tiny, tmp_path):
    """``models download`` of a FLUX hub id prints its download size and GPU memory before the
    bytes; ``models list`` then shows the family (a local hub serves the tiny pipeline)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from tests.hub_server import HubServer, hub_env

    repo = "black-forest-labs/FLUX.1-schnell"
    with HubServer({repo: tiny["schnell"]}) as hub:
        env = hub_env(hub.url, tmp_path / "hf")
        run = lambda *a: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "core", "models", *a], env=env, capture_output=True,
            text=True, stdin=subprocess.DEVNULL, timeout=300,
            cwd=str(Path(__file__).resolve().parents[1]))
        r = run("download", repo, "--quiet")
        assert r.returncode == 0, r.stderr
        first = r.stderr.strip().splitlines()[0]
        assert first.startswith(f"{repo}: FLUX.1: 11.9B-parameter transformer; about 34 GB download")
        assert "bf16 weights" in first and "4 steps, no guidance" in first
        [entry] = json.loads(run("list", "--json").stdout)
        assert (entry["name"], entry["family"], entry["complete"]) == (repo, "flux", True)
        assert "flux" in run("list").stdout


def test_spec_of_a_loaded_flow_backend_and_of_its_folder(tiny):
    from core.models import estimate as est

    backend = loading.load_backend(tiny["flux"], device="cpu")
    try:
        spec = est.spec_from_backend(backend)
        assert spec.transformer and spec.family == "flux"
        assert spec.unet_params == sum(p.numel() for p in backend.unet.parameters())
        assert spec.encoder_params > 0 and spec.dit_width == 2 * 16  # 2 layers x 2 heads x 8
        folder = est.model_spec(tiny["flux"])
        assert folder.unet_params == spec.unet_params and folder.dit_width == spec.dit_width
        assert est.largest_micro_batch(spec, 3, 3.5, 64, 64, 4, 1e12, with_weights=False) is None
    finally:
        backend.release()
