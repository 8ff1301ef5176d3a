"""Real-size UNet configs (random weights cost exactly what trained ones do) for the benchmarks.

``make_unet(name, device, dtype)`` builds one; ``unet_inputs(name, n, device, dtype)`` gives the
conditioning rows a backend would pass (text states, and SDXL's pooled text + time ids).
"""

from __future__ import annotations

import torch

_SD_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, in_channels=4, out_channels=4,
)
UNETS = {
    "tiny": dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                 block_out_channels=(32, 64), cross_attention_dim=32, attention_head_dim=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")),
    # Stable Diffusion 1.5: 512 px, 64 x 64 latents, CLIP ViT-L (768)
    "sd15": dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, **_SD_BLOCKS),
    # Stable Diffusion 2.1-base: 512 px, OpenCLIP ViT-H (1024), linear projections
    "sd21": dict(sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                 use_linear_projection=True, **_SD_BLOCKS),
    # SDXL base: 1024 px, 128 x 128 latents, two text encoders (2048) + text_time conditioning
    "sdxl": dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 cross_attention_dim=2048, use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816),
}
#: training schedule of the SD family (scaled linear; configs say "leading", the sampler
#: runs "trailing" anyway)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", clip_sample=False, steps_offset=1,
                    set_alpha_to_one=False)
DTYPES = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
          "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def parse_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto" (fp16 on GPUs, fp32 on the CPU), fp16, bf16, fp32 (or the torch names)."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    try:
        return DTYPES[name]
    except KeyError:
        raise SystemExit(f"unknown dtype {name!r}; use auto, fp16, bf16 or fp32") from None


def make_unet(name: str, device, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 2.6B SDXL UNet is slow on the CPU
        unet = UNet2DConditionModel(**UNETS[name])
    return unet.to(dtype).eval()


def latent_size(name: str) -> int:
    return int(UNETS[name]["sample_size"])


def unet_inputs(name: str, n: int, device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Random conditioning rows (stand-ins for the text encoders' output) for ``n`` prompts."""
    cfg = UNETS[name]
    g = torch.Generator().manual_seed(1)
    rows = {"encoder_hidden_states": torch.randn(n, 77, cfg["cross_attention_dim"], generator=g)}
    if cfg.get("addition_embed_type") == "text_time":
        size = 8 * cfg["sample_size"]
        rows["text_embeds"] = torch.randn(n, 1280, generator=g)
        rows["time_ids"] = torch.tensor([[size, size, 0, 0, size, size]] * n, dtype=torch.float32)
    return {k: v.to(device, dtype) for k, v in rows.items()}


def unet_call(unet, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
              text_embeds: torch.Tensor | None = None,
              time_ids: torch.Tensor | None = None) -> torch.Tensor:
    added = None if text_embeds is None else {"text_embeds": text_embeds, "time_ids": time_ids}
    return unet(x, t, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added,
                return_dict=False)[0]
