"""Stable Diffusion 3 / 3.5: two CLIP encoders + T5 (optional), MMDiT transformer, 16-channel VAE.

The transformer takes t = 1000 σ and predicts v = ε − x0 (``FlowBackend``); classifier-free
guidance as for SD/SDXL (the negative prompt's row). A pipeline saved or loaded without its
T5 encoder (``text_encoder_3=None``: 9.5 GB less) gets zeros in place of T5's tokens, as
StableDiffusion3Pipeline does. The VAE's scaling_factor and shift_factor apply
(``LatentBackend.encode``/``decode``).
"""

from __future__ import annotations

import torch

from .base import register_family
from .flow import FlowBackend


@register_family
class SD3Backend(FlowBackend):
    family = "sd3"
    latent = True
    #: T5 tokens per prompt (StableDiffusion3Pipeline's default)
    max_sequence_length = 256

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device,
            num_images_per_prompt=1, do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
              pooled_projections: torch.Tensor) -> torch.Tensor:
        return self.unet(hidden_states=x, timestep=t, encoder_hidden_states=encoder_hidden_states,
                         pooled_projections=pooled_projections, return_dict=False)[0]
