"""Memory/time estimate: checked against measured peaks of the tiny UNets/VAE; micro-batch choice."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from core.models import estimate as est
from core.models.estimate import DeviceInfo
from core.settings import GenerateSettings
from tests.tiny_models import make_tiny_sd, make_tiny_sdxl

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from memtrack import TensorMemory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_estimate")
    return {"sd": make_tiny_sd(root / "sd"), "sdxl": make_tiny_sdxl(root / "sdxl")}


def _unet_peak(pipe, rows: int, size: int) -> int:
    """Measured: UNet weights + inputs + the live-tensor peak of one forward (fp32, CPU)."""
    unet = pipe.unet
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    x = torch.randn(rows, 4, size, size)
    c = torch.randn(rows, 77, unet.config.cross_attention_dim)
    kw = {}
    if unet.config.addition_embed_type == "text_time":
        kw["added_cond_kwargs"] = {"text_embeds": torch.randn(rows, 32), "time_ids": torch.randn(rows, 6)}
    with torch.inference_mode(), TensorMemory() as mem:
        unet(x, torch.full((rows,), 500), encoder_hidden_states=c, **kw)
    return weights + x.nbytes + c.nbytes + mem.peak_bytes


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_unet_and_vae_memory_within_25_percent_of_measured(tiny, family):
    from diffusers import DiffusionPipeline

    folder = tiny[family]
    spec = est.model_spec(folder)
    assert spec.source == folder and spec.family == family
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert spec.unet_params == sum(p.numel() for p in pipe.unet.parameters())
    others = sum(sum(p.numel() for p in m.parameters()) for m in
                 (pipe.text_encoder, getattr(pipe, "text_encoder_2", None), pipe.vae) if m is not None)
    assert spec.other_params == others
    for rows, size in ((2, 8), (8, 16)):
        measured = _unet_peak(pipe, rows, size)
        unet_act, _ = est.activation_bytes(spec, rows, 1, size * 8, size * 8, 4)
        estimate = spec.unet_params * 4 + unet_act
        assert abs(estimate / measured - 1) < 0.25, (rows, size, estimate, measured)
        # activations alone (the part that grows with levels and size), too
        act = measured - spec.unet_params * 4
        assert abs(unet_act / act - 1) < 0.25, (rows, size, unet_act, act)
    for levels, size in ((1, 8), (2, 16)):
        z = torch.randn(levels, 4, size, size)
        with torch.inference_mode(), TensorMemory() as mem:
            pipe.vae.decode(z)
        _, decode = est.activation_bytes(spec, 1, levels, size * 8, size * 8, 4)
        assert abs(decode / mem.peak_bytes - 1) < 0.25, (levels, size, decode, mem.peak_bytes)


def test_reference_specs_match_the_real_configs():
    """The family defaults' K constants reproduce the meta-device trace of the real UNets."""
    sd, sdxl = est.SPECS["sd"], est.SPECS["sdxl"]
    # traced peaks, in elements per UNet row per latent pixel (per image pixel for the VAE)
    assert sd.k_unet() == pytest.approx(8320, rel=0.01)    # SD 1.5 and 2.1: 8320.4
    assert sdxl.k_unet() == pytest.approx(5040, rel=0.01)  # SDXL: 5040.2
    assert sd.k_vae() == pytest.approx(768, rel=0.01)      # SD/SDXL VAE decoder: 768.06


def _settings(**kw):
    return GenerateSettings(prompts=["a galaxy", "a star", "a planet", "a city"], **kw)


def test_largest_micro_batch_fits_and_explicit_value_wins():
    spec = est.SPECS["sd"]
    gpu = lambda free: DeviceInfo("cuda", "NVIDIA GeForce RTX 3070", 8 * 2**30, free)  # noqa: E731
    big = est.estimate(_settings(), info=gpu(40e9), spec=spec)
    assert big.micro_batch is None and big.auto and big.fits and big.rows == 8
    tight = est.estimate(_settings(), info=gpu(4.5e9), spec=spec)
    assert tight.auto and tight.micro_batch is not None and 1 <= tight.micro_batch < 8 and tight.fits
    # the largest that fits: one more row would not
    k = tight.micro_batch
    over = est.peak_bytes(spec, 4, 7.5, k + 1, None, None, 2)[0]
    assert over > 4.5e9 * est.USABLE_FRACTION >= tight.peak_bytes
    explicit = est.estimate(_settings(micro_batch=8), info=gpu(4.0e9), spec=spec)
    assert explicit.micro_batch == 8 and not explicit.auto and explicit.fits is False
    assert any("only 4.0 GB are free" in w for w in explicit.warnings)
    # memory grows with levels, size and micro-batch; guidance 1 halves the rows
    p = lambda **k: est.peak_bytes(spec, **{"levels": 4, "guidance": 7.5, "micro_batch": None,  # noqa: E731
                                           "height": 512, "width": 512, "e": 2, **k})[0]
    assert p(levels=8) > p() > p(micro_batch=2) and p(height=768, width=768) > p()
    assert est.unet_rows(4, 1.0) == 4 and est.unet_rows(4, 7.5) == 8


def test_cpu_time_warns_when_it_takes_hours():
    cpu = DeviceInfo("cpu", "x86", 24e9, 20e9, cores=2)
    slow = est.estimate(GenerateSettings(prompts=["a"] * 8, scheduler="ddpm"), info=cpu,
                        spec=est.SPECS["sd"])  # the paper's sampler, 100 steps
    assert slow.total_seconds > 3600 and any("hours on the CPU" in w for w in slow.warnings)
    # calibration: SD at 512 px, 16 rows, 2 busy cores measured 126-181 s per step
    assert 80 < slow.seconds_per_step < 250
    quick = est.estimate(GenerateSettings(prompts=["a"], steps=2, width=64, height=64), info=cpu,
                         spec=est.SPECS["sd"])
    assert not any("hours" in w for w in quick.warnings)
    gpu = est.estimate(GenerateSettings(prompts=["a"] * 8), spec=est.SPECS["sd"],
                       info=DeviceInfo("cuda", "NVIDIA H100 80GB HBM3", 80e9, 79e9))
    assert gpu.seconds_per_step < slow.seconds_per_step / 100 and not gpu.warnings


def test_dry_run_prints_the_estimate_without_torch_and_writes_nothing(tmp_path):
    code = ("import sys\n"
            "from core.cli.main import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('TORCH', 'torch' in sys.modules, 'diffusers' in sys.modules)\n"
            "sys.exit(rc)")
    out = tmp_path / "never"
    r = subprocess.run([sys.executable, "-c", code, "generate", "--prompts", "galaxy", "--device", "cpu",
                        "--dry-run", "--out", str(out)], cwd=str(ROOT), capture_output=True, text=True,
                       env=dict(os.environ, HF_HOME=str(tmp_path / "hf")), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Memory: about" in r.stdout and "Micro-batch:" in r.stdout and "per step" in r.stdout
    assert "hours on the CPU" in r.stdout  # 16 levels of SD on a CPU
    assert "TORCH False False" in r.stdout and not out.exists()
    assert not (tmp_path / "hf").exists()  # nothing downloaded or cached


def test_generate_picks_the_largest_micro_batch_that_fits(tiny, monkeypatch):
    from core.generate import generate

    folder = tiny["sd"]
    settings = GenerateSettings(prompts=["a cat", "a dog", "a tree"], model=folder, device="cpu",
                                steps=1, width=64, height=64)
    # free memory next to the loaded model: room for micro-batch 2, not 3
    spec = est.model_spec(folder)
    two = est.peak_bytes(spec, 3, 7.5, 2, 64, 64, 4, with_weights=False)[0]
    assert est.peak_bytes(spec, 3, 7.5, 3, 64, 64, 4, with_weights=False)[0] > two
    free = (two + 1) / est.USABLE_FRACTION
    monkeypatch.setattr(est, "device_info", lambda *a, **k: DeviceInfo("cpu", "x", 2 * free, free, 2))
    stack = generate(settings)
    expected = est.largest_micro_batch(spec, 3, 7.5, 64, 64, 4, free * est.USABLE_FRACTION,
                                       with_weights=False)
    assert expected == 2 and stack.manifest["micro_batch"] == 2
    explicit = generate(replace(settings, micro_batch=5))
    assert explicit.manifest["micro_batch"] == 5
    assert abs(explicit.layers - stack.layers).max() < 1e-5  # micro-batching changes nothing


# torch.cuda.max_memory_allocated of a VAE decode (weights + activations) measured on an H200
# with random weights by `benchmarks/estimate_check.py --device cuda` (docs/backends.md).
H200_DECODE = [("sd", 512, 1, 848_960_512), ("sd", 512, 4, 2_357_599_744),
               ("sdxl", 1024, 1, 5_489_942_528), ("sdxl", 1024, 2, 8_963_350_528)]


def test_gpu_decode_estimate_within_25_percent_of_the_h200_measurements():
    for family, px, levels, measured in H200_DECODE:
        spec = est.SPECS[family]
        vae_weights = 83_653_863 * (4 if spec.upcast_vae else 2)
        _, decode = est.activation_bytes(spec, 1, levels, px, px, 2)
        ratio = (vae_weights + decode) / measured
        assert 0.75 <= ratio <= 1.25, (family, levels, ratio)
        # the traced CPU peak alone is what fell short on the GPU
        _, traced = est.activation_bytes(spec, 1, levels, px, px, 2, gpu=False)
        assert traced < decode


def test_micro_batched_decode_counts_levels_not_guided_rows():
    # the VAE decodes one image per level: a micro-batch of 2N UNet rows decodes N levels at once
    spec = est.SPECS["sd"]
    peak = lambda mb: est.peak_bytes(spec, 4, 7.5, mb, 512, 512, 2)  # noqa: E731
    assert peak(8)[3] == peak(None)[3]            # 2N rows per call: the whole stack decodes
    assert peak(4)[3] == peak(None)[3] and peak(2)[3] < peak(4)[3]
    assert peak(8)[2] == peak(None)[2] > peak(4)[2]  # the UNet does see 2N rows
    assert peak(50) == peak(None)  # a micro-batch beyond the rows runs them all at once


def test_reconstruction_guidance_counts_its_kept_activations_in_the_micro_batch_fit():
    spec = est.SPECS["sd"]
    kw = dict(height=512, width=512, e=4, with_weights=False)
    plain = est.peak_bytes(spec, 4, 7.5, None, **kw)
    recon = est.peak_bytes(spec, 4, 7.5, None, reconstruct=True, **kw)
    # every UNet row's activations stay for the backward pass: +1.75 GB per row at SD 1.5 fp32
    assert 1.5e9 < (recon[2] - plain[2]) / 8 < 2.0e9
    budget = 12e9
    fit_plain = est.largest_micro_batch(spec, 4, 7.5, 512, 512, 4, budget, with_weights=False)
    fit_recon = est.largest_micro_batch(spec, 4, 7.5, 512, 512, 4, budget, with_weights=False,
                                        reconstruct=True)
    assert fit_plain is None and fit_recon is not None and 1 <= fit_recon < 8
    assert est.peak_bytes(spec, 4, 7.5, fit_recon, reconstruct=True, **kw)[0] <= budget


def test_generate_fits_the_micro_batch_for_reconstruction_only_when_zooming_out(tiny, monkeypatch):
    import numpy as np

    import core.generate as gen

    asked = []
    monkeypatch.setattr(gen, "fit_micro_batch", lambda *a, **k: asked.append(a[5:] or k) or None)
    settings = GenerateSettings(prompts=["a cat", "a dog", "a tree"], model=tiny["sd"],
                                device="cpu", steps=1, width=64, height=64)
    image = np.full((64, 64, 3), 0.5, np.float32)
    gen.generate(settings, known={-1: image})   # zooming out of the finest level
    gen.generate(settings, known={0: image})    # zooming in: the photo loss suffices
    assert asked == [(True,), (False,)]
