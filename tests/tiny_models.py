"""Tiny random-weight diffusers pipelines saved with save_pretrained, for offline CPU tests.

    from tests.tiny_models import make_tiny_sd
    folder = make_tiny_sd(tmp_path / "sd")      # a diffusers folder: GenerateSettings(model=folder)

Every builder is seeded (same weights on every call), writes its own tokenizer files (no hub),
and takes well under 10 s. Sizes: SD/SDXL sample 64 x 64 px (8 x 8 latents, VAE factor 8),
SD3/FLUX 64 x 64 px by default (16-channel 8 x 8 latents; FLUX's native size is 1024: give sizes),
IF stage I 16 x 16 px, IF stage II 64 x 64 px; the x4 upscaler any size (VAE factor 4).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

WORDS = [
    "a", "photo", "of", "the", "cat", "dog", "forest", "tree", "leaf", "insect", "city", "street",
    "house", "window", "galaxy", "star", "planet", "blurry", "ugly", "macro", "view", "aerial",
]
TEXT_DIM = 32


def _clip_tokenizer():
    """A CLIP BPE tokenizer from a vocab.json + merges.txt written here (character level + a few merges)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return _clip_tokenizer_in(Path(tmp))


def _clip_tokenizer_in(folder: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set("".join(WORDS))):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = ["c a", "ca t</w>", "d o", "do g</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # transformers 5: CLIPTokenizer(vocab_file=, merges_file=) ignores both; from_pretrained reads them
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    if tok("a cat").input_ids == tok("a dog").input_ids:
        raise RuntimeError("tiny CLIP tokenizer did not load its vocabulary")
    return tok


def _t5_tokenizer():
    """A word-level T5-style tokenizer (tokenizers library) saved as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    core_tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core_tok.pre_tokenizer = pre_tokenizers.Whitespace()
    core_tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=77,
    )
    if tok("a cat").input_ids == tok("a dog").input_ids:
        raise RuntimeError("tiny T5 tokenizer did not load its vocabulary")
    return tok


def _clip_text(with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=64, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(cfg).eval()


def _vae(blocks: int = 4, **extra):
    from diffusers import AutoencoderKL

    # four blocks -> scale factor 8 like the real VAEs (three: 4, the x4 upscaler's);
    # 8..16 channels keep it fast
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(8, 8, 16, 16)[:blocks],
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1, norm_num_groups=4, sample_size=extra.pop("sample_size", 64), **extra,
    ).eval()


def _vae16(shift_factor: float, scaling_factor: float):
    """The 16-channel VAE of SD3 / FLUX (scale and shift; no quant convs), factor 8."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64, scaling_factor=scaling_factor,
        shift_factor=shift_factor, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(
        vocab_size=32, d_model=TEXT_DIM, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1,
    )).eval()


def make_tiny_sd3(path, with_t5: bool = True) -> str:
    """A tiny StableDiffusion3Pipeline: two CLIP encoders with projection + T5 (or none:
    ``with_t5=False``), an MMDiT (SD3Transformer2DModel, patch 2), the 16-channel VAE with
    SD3's scale and shift, FlowMatchEulerDiscreteScheduler with shift 3.0. 64 px."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)

    path = Path(path)
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
        caption_projection_dim=16, pooled_projection_dim=2 * TEXT_DIM, pos_embed_max_size=32,
    ).eval()
    tok = _clip_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae16(0.0609, 1.5305), text_encoder=_clip_text(True), tokenizer=tok,
        text_encoder_2=_clip_text(True), tokenizer_2=tok,
        text_encoder_3=_t5_encoder() if with_t5 else None,
        tokenizer_3=_t5_tokenizer() if with_t5 else None,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def make_tiny_flux(path, schnell: bool = False) -> str:
    """A tiny FluxPipeline: CLIP (pooled) + T5, FluxTransformer2DModel on packed 2 x 2 patches
    (in_channels 64), the 16-channel VAE with FLUX's scale and shift. [dev]: guidance
    embedding, resolution-dependent shift; ``schnell``: neither (shift 1). 64 px in tests."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    path = Path(path)
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
        guidance_embeds=not schnell, axes_dims_rope=(2, 2, 4),
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0) if schnell else \
        FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
                                        max_shift=1.15, base_image_seq_len=256,
                                        max_image_seq_len=4096)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=_vae16(0.1159, 0.3611),
        text_encoder=_clip_text(), tokenizer=_clip_tokenizer(), text_encoder_2=_t5_encoder(),
        tokenizer_2=_t5_tokenizer(),
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def _sd_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )


def _sd_unet(**extra):
    """The tiny SD UNet (8 x 8 latents); ``extra`` adds config (e.g. time_cond_proj_dim)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TEXT_DIM,
        attention_head_dim=8, norm_num_groups=32, **extra,
    ).eval()


def make_tiny_sd(path, prediction_type: str = "epsilon") -> str:
    """Save a tiny Stable-Diffusion-like pipeline (64 px) to ``path``; return the folder as str."""
    from diffusers import StableDiffusionPipeline

    path = Path(path)
    torch.manual_seed(0)
    unet = _sd_unet()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_clip_text(), tokenizer=_clip_tokenizer(),
        unet=unet, scheduler=_sd_scheduler(prediction_type), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def make_tiny_sdxl(path) -> str:
    """Save a tiny SDXL-like pipeline (two text encoders, text_time conditioning, 64 px)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    path = Path(path)
    torch.manual_seed(0)
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=2 * TEXT_DIM,
        attention_head_dim=(2, 4), use_linear_projection=True, norm_num_groups=32,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_dim + TEXT_DIM,
    ).eval()
    tok = _clip_tokenizer()
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_clip_text(), text_encoder_2=_clip_text(with_projection=True),
        tokenizer=tok, tokenizer_2=tok, unet=unet, scheduler=sched,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


def _if_unet(in_channels: int, sample_size: int, super_resolution: bool):
    from diffusers import UNet2DConditionModel

    extra = dict(
        class_embed_type="timestep", mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu", time_embedding_dim=32,
    ) if super_resolution else {}
    return UNet2DConditionModel(
        sample_size=sample_size, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        in_channels=in_channels, out_channels=6,  # 2C: epsilon + learned variance
        cross_attention_dim=TEXT_DIM, encoder_hid_dim=TEXT_DIM, attention_head_dim=8,
        addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu",
        **extra,
    ).eval()


def _if_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001,
        beta_end=0.02, thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
        prediction_type="epsilon", variance_type="learned_range",
    )


def make_tiny_if(path) -> tuple[str, str]:
    """Save tiny DeepFloyd-IF-like stage I (16 px) and stage II (64 px) pipelines.

    Returns (stage_I_folder, stage_II_folder): ``path/stage1`` and ``path/stage2``.
    """
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline

    path = Path(path)
    torch.manual_seed(0)
    tok = _t5_tokenizer()
    t5 = _t5_encoder()
    stage1 = IFPipeline(
        tokenizer=tok, text_encoder=t5, unet=_if_unet(3, 16, False), scheduler=_if_scheduler(),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False,
    )
    stage1.save_pretrained(str(path / "stage1"), safe_serialization=True)
    stage2 = IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=_if_unet(6, 64, True), scheduler=_if_scheduler(),
        image_noising_scheduler=DDPMScheduler(
            num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001,
            beta_end=0.02,
        ),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False,
    )
    stage2.save_pretrained(str(path / "stage2"), safe_serialization=True)
    return str(path / "stage1"), str(path / "stage2")


def make_tiny_x4_upscaler(path) -> str:
    """Save a tiny ``StableDiffusionUpscalePipeline`` (latents at the input size, VAE factor 4,
    v-prediction, noise-level class embedding) like stabilityai/stable-diffusion-x4-upscaler."""
    from diffusers import (DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline,
                           UNet2DConditionModel)

    path = Path(path)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=7, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_DIM,
        attention_head_dim=8, norm_num_groups=32, num_class_embeds=1000,
    ).eval()
    pipe = StableDiffusionUpscalePipeline(
        vae=_vae(3, sample_size=128, scaling_factor=0.08333), text_encoder=_clip_text(), tokenizer=_clip_tokenizer(), unet=unet,
        low_res_scheduler=DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.0001,
                                        beta_end=0.02),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02,
                                prediction_type="v_prediction", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        max_noise_level=350,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


if __name__ == "__main__":  # quick smoke: python tests/tiny_models.py /tmp/tiny
    import sys
    import time

    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/p10_tiny")
    for name, fn in (("sd", make_tiny_sd), ("sdxl", make_tiny_sdxl), ("if", make_tiny_if),
                     ("x4", make_tiny_x4_upscaler)):
        t0 = time.time()
        print(name, fn(root / name), f"{time.time() - t0:.1f}s")


def make_tiny_lcm(path) -> str:
    """A tiny LCM-distilled-style pipeline (LatentConsistencyModelPipeline, LCMScheduler, a UNet
    with a guidance embedding input: time_cond_proj_dim), 64 px like make_tiny_sd."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    path = Path(path)
    torch.manual_seed(0)
    unet = _sd_unet(time_cond_proj_dim=16)
    scheduler = LCMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                             clip_sample=False, set_alpha_to_one=True, steps_offset=1)
    pipe = LatentConsistencyModelPipeline(
        vae=_vae(), text_encoder=_clip_text(), tokenizer=_clip_tokenizer(), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)
