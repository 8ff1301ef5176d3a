"""Backends' denoisers standalone: x0 parameterisations, CFG batching, SDXL and IF conditioning."""

import pytest
import torch

from core.backends.guidance import batch_slices, guided_prediction
from core.backends.loading import load_backend
from tests.tiny_models import make_tiny_if, make_tiny_sd, make_tiny_sdxl


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_denoiser")
    paths = {"sd": make_tiny_sd(root / "sd"), "sd_v": make_tiny_sd(root / "sdv", "v_prediction"),
             "sdxl": make_tiny_sdxl(root / "sdxl"), "if": make_tiny_if(root / "if")[0]}
    return {k: load_backend(v, device="cpu") for k, v in paths.items()}


def spy_unet(monkeypatch, backend):
    calls = []
    real = backend._unet

    def spy(x, t, **rows):
        calls.append({"x": x.clone(), "t": t.clone(), **{k: v.clone() for k, v in rows.items()}})
        return real(x, t, **rows)

    monkeypatch.setattr(backend, "_unet", spy)
    return calls


@pytest.mark.parametrize("key, pred", [("sd", "epsilon"), ("sd_v", "v_prediction")])
def test_x0_from_epsilon_and_v(backends, key, pred):
    b = backends[key]
    assert b.prediction_type == pred
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([10, 500, 990])
    a = b.alphas_cumprod[t].view(-1, 1, 1, 1)
    z = a.sqrt() * x0 + (1 - a).sqrt() * eps
    out = eps if pred == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0  # v = α ε - σ x0
    torch.testing.assert_close(b.model_output_to_x0(out, z, t), x0, atol=2e-4, rtol=1e-4)


def test_cfg_makes_one_unet_call_with_all_2n_rows(backends, monkeypatch):
    b = backends["sd"]
    cond = b.encode_prompts(["a forest", "a tree", "a leaf"], "blurry", height=64, width=64)
    calls = spy_unet(monkeypatch, b)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    x0 = b.make_denoiser(cond, 7.5)(z, 500, torch.arange(3))
    assert x0.shape == z.shape and len(calls) == 1 and calls[0]["x"].shape[0] == 6
    e = calls[0]["encoder_hidden_states"]
    # rows: 3 x negative prompt, then the 3 level prompts in level order
    assert torch.equal(e[0], e[2]) and torch.equal(e[:3], cond.uncond["encoder_hidden_states"].expand(3, -1, -1))
    assert torch.equal(e[3:], cond.cond["encoder_hidden_states"])
    # the iterative ablation asks for single levels: the right prompt is picked
    calls.clear()
    b.make_denoiser(cond, 7.5)(z[2:], 500, torch.tensor([2]))
    assert torch.equal(calls[0]["encoder_hidden_states"][1], cond.cond["encoder_hidden_states"][2])


def test_guidance_one_skips_unconditional(backends, monkeypatch):
    b = backends["sd"]
    cond = b.encode_prompts(["a", "b"], "", height=64, width=64)
    calls = spy_unet(monkeypatch, b)
    b.make_denoiser(cond, 1.0)(torch.randn(2, 4, 8, 8), 300, torch.arange(2))
    assert [c["x"].shape[0] for c in calls] == [2]


def test_micro_batch_splits_calls_and_matches(backends, monkeypatch):
    b = backends["sd"]
    cond = b.encode_prompts(["a forest", "a tree", "a leaf"], "ugly", height=64, width=64)
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    full = b.make_denoiser(cond, 5.0)(z, 700, torch.arange(3))
    calls = spy_unet(monkeypatch, b)
    split = b.make_denoiser(cond, 5.0, micro_batch=4)(z, 700, torch.arange(3))
    assert [c["x"].shape[0] for c in calls] == [4, 2]
    # float32 convolutions of a batch of 6 and of 4 + 2 may pick different kernels (~2e-5)
    torch.testing.assert_close(split, full, atol=1e-4, rtol=1e-4)
    # guidance result = uncond + w (cond - uncond) on the model output
    assert not torch.allclose(full, b.make_denoiser(cond, 1.0)(z, 700, torch.arange(3)))


def test_guided_prediction_formula():
    model = lambda x, t, e: x * e.view(-1, 1)  # noqa: E731
    x = torch.ones(2, 3)
    out = guided_prediction(model, x, torch.zeros(2), {"e": torch.tensor([2.0, 3.0])},
                            {"e": torch.tensor([1.0])}, 4.0, micro_batch=1)
    torch.testing.assert_close(out, torch.tensor([[5.0] * 3, [9.0] * 3]))  # 1 + 4 (c - 1)
    assert batch_slices(5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert batch_slices(5, None) == [slice(0, 5)]


def test_sdxl_micro_conditioning(backends, monkeypatch):
    b = backends["sdxl"]
    cond = b.encode_prompts(["a forest", "a tree"], "", height=64, width=64)
    # empty negative prompt: SDXL's force_zeros_for_empty_prompt
    assert not cond.uncond["encoder_hidden_states"].any() and not cond.uncond["text_embeds"].any()
    assert cond.cond["text_embeds"].shape == (2, 32)
    calls = spy_unet(monkeypatch, b)
    b.make_denoiser(cond, 7.5)(torch.randn(2, 4, 8, 8), 400, torch.arange(2))
    c = calls[0]
    assert c["time_ids"].tolist() == [[64, 64, 0, 0, 64, 64]] * 4
    assert c["text_embeds"].shape == (4, 32) and c["encoder_hidden_states"].shape[-1] == 64
    neg = b.encode_prompts(["a forest"], "blurry", height=64, width=64)
    assert neg.uncond["encoder_hidden_states"].abs().sum() > 0


def test_if_uses_first_c_channels_as_epsilon(backends, monkeypatch):
    b = backends["if"]
    assert b.unet.config.out_channels == 2 * b.channels
    cond = b.encode_prompts(["a forest", "a tree"], "", height=16, width=16)
    real = b._unet
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    ref = b.make_denoiser(cond, 7.5)(z, 600, torch.arange(2))

    def noisy_variance(x, t, **rows):  # garbage in the variance half must not matter
        out = real(x, t, **rows)
        return torch.cat([out[:, :3], out[:, 3:] + 1e3], 1)

    monkeypatch.setattr(b, "_unet", noisy_variance)
    x0 = b.make_denoiser(cond, 7.5)(z, 600, torch.arange(2))
    assert x0.shape == (2, 3, 16, 16)
    torch.testing.assert_close(x0, ref)
    assert x0.abs().max() <= 1.0 + 1e-6  # dynamic thresholding keeps pixels in [-1, 1]


def test_half_precision_weights_keep_float32_state(tmp_path):
    # GPUs run the weights in fp16; bf16 on the CPU exercises the same casts here
    b = load_backend(make_tiny_sd(tmp_path / "sd"), device="cpu", dtype=torch.bfloat16)
    assert b.unet.dtype == torch.bfloat16
    cond = b.encode_prompts(["a forest", "a tree"], "", height=64, width=64)
    assert cond.cond["encoder_hidden_states"].dtype == torch.bfloat16
    z = torch.randn(2, 4, 8, 8)
    x0 = b.make_denoiser(cond, 7.5)(z, 500, torch.arange(2))
    assert x0.dtype == torch.float32 and torch.isfinite(x0).all()
    img = b.decode(x0)
    assert img.dtype == torch.float32 and img.shape == (2, 3, 64, 64)
