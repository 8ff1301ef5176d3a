"""Stable Diffusion 1.x / 2.x: CLIP text encoder, latent UNet (ε or v prediction), VAE."""

from __future__ import annotations

import torch

from .base import Conditioning, LatentBackend, register_family


@register_family
class StableDiffusionBackend(LatentBackend):
    family = "sd"
    latent = True

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompt: str, *,
                       height: int, width: int) -> Conditioning:
        # The pipeline's own encoder (clip skip, textual inversion, LoRA scale all apply);
        # the negative prompt is encoded once and broadcast to every level.
        cond, _ = self.pipe.encode_prompt(list(prompts), self.device, 1, False)
        uncond, _ = self.pipe.encode_prompt([negative_prompt], self.device, 1, False)
        return Conditioning({"encoder_hidden_states": cond.to(self.dtype)},
                            {"encoder_hidden_states": uncond.to(self.dtype)})

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
              timestep_cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states,
                         timestep_cond=timestep_cond, return_dict=False)[0]
