"""SDXL: two CLIP text encoders, UNet with micro-conditioning (add_text_embeds, add_time_ids)."""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from .base import _SDXL_BIAS, _SDXL_RGB, Conditioning, LatentBackend, register_family


@register_family
class SDXLBackend(LatentBackend):
    family = "sdxl"
    latent = True
    _rgb, _bias = _SDXL_RGB, _SDXL_BIAS

    def _time_ids(self, height: int, width: int, n: int) -> torch.Tensor:
        """add_time_ids = (original size, crop top-left, target size): an uncropped H x W image."""
        ids = [height, width, 0, 0, height, width]
        cfg = self.unet.config
        proj = self.pipe.text_encoder_2.config.projection_dim if self.pipe.text_encoder_2 else 0
        expected = cfg.projection_class_embeddings_input_dim
        if expected is not None and cfg.addition_time_embed_dim * len(ids) + proj != expected:
            raise InvalidInputError(
                "this SDXL model expects other micro-conditioning (a refiner?); use an SDXL base model"
            )
        return torch.tensor([ids] * n, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompt: str, *,
                       height: int, width: int) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        if not negative_prompt and self.pipe.config.get("force_zeros_for_empty_prompt", False):
            # what StableDiffusionXLPipeline does: an empty negative prompt is all zeros
            neg, neg_pooled = torch.zeros_like(embeds[:1]), torch.zeros_like(pooled[:1])
        else:
            neg, _, neg_pooled, _ = self.pipe.encode_prompt(
                prompt=[negative_prompt], device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=False,
            )
        n = len(prompts)
        return Conditioning(
            {"encoder_hidden_states": embeds.to(self.dtype), "text_embeds": pooled.to(self.dtype),
             "time_ids": self._time_ids(height, width, n)},
            {"encoder_hidden_states": neg.to(self.dtype), "text_embeds": neg_pooled.to(self.dtype),
             "time_ids": self._time_ids(height, width, 1)},
        )

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
              text_embeds: torch.Tensor, time_ids: torch.Tensor,
              timestep_cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(
            x, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
            added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
            return_dict=False,
        )[0]
