"""FLUX.1 [dev] / [schnell]: CLIP (pooled) + T5, a transformer on packed 2 x 2 latent patches.

The sampler's state is the unpacked 16-channel latent grid (N, 16, h, w): blending, rendering
and Π_noise act there, where the zoom geometry is; the latents are packed into (N, h·w/4, 64)
tokens only around each transformer call (``FluxPipeline._pack_latents``), so packing never
meets the zoom stack. The transformer takes t = σ (FluxPipeline's timestep / 1000).

Guidance: [dev] embeds the guidance scale (one conditional pass, no negative prompt; FluxPipeline
default 3.5); [schnell] has no guidance input and takes 4 steps. Neither uses classifier-free
guidance, so the negative prompt is not used. The timestep shift depends on the resolution
(``use_dynamic_shifting``): μ from the image's token count, as FluxPipeline computes it.
"""

from __future__ import annotations

from typing import Any

import torch

from ..zoom.sampler import FLOW_MU, FLOW_SIGMAS
from .base import register_family
from .flow import FlowBackend
from .guidance import Rows


def flux_mu(config: dict[str, Any], image_seq_len: int) -> float:
    """μ of the resolution-dependent shift: linear in the token count between
    (base_image_seq_len, base_shift) and (max_image_seq_len, max_shift) (FluxPipeline)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (top - base) / (max_len - base_len)
    return image_seq_len * slope + base - slope * base_len


@register_family
class FluxBackend(FlowBackend):
    family = "flux"
    latent = True

    @property
    def max_sequence_length(self) -> int:
        """T5 tokens per prompt: 512 for [dev], 256 for [schnell] (its recommended maximum)."""
        return 512 if self.unet.config.guidance_embeds else 256

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length)
        return {"encoder_hidden_states": embeds, "pooled_projections": pooled}

    def embedded_guidance(self, guidance: float) -> Rows:
        """[dev]: the guidance scale as the transformer's guidance input; [schnell]: none.
        Either way one conditional pass (no classifier-free guidance)."""
        if not self.unet.config.guidance_embeds:
            return {}
        return {"guidance": torch.full((1,), float(guidance), device=self.device)}

    def sampling_config(self, height: int, width: int) -> dict[str, Any]:
        """FluxPipeline's σ spacing (linspace(1, 1/n, n)) and μ for this size's token count."""
        f = self.scale_factor
        tokens = (height // f // 2) * (width // f // 2)
        return {**self.scheduler_config, FLOW_SIGMAS: "linear",
                FLOW_MU: flux_mu(self.scheduler_config, tokens)}

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
              pooled_projections: torch.Tensor, guidance: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        pipe = type(self.pipe)
        packed = pipe._pack_latents(x, b, c, h, w)
        img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
        txt_ids = torch.zeros(encoder_hidden_states.shape[1], 3, device=x.device, dtype=x.dtype)
        total = float(self.scheduler_config.get("num_train_timesteps", 1000))
        out = self.unet(hidden_states=packed, timestep=t.to(x.dtype) / total, guidance=guidance,
                        pooled_projections=pooled_projections,
                        encoder_hidden_states=encoder_hidden_states, txt_ids=txt_ids,
                        img_ids=img_ids, return_dict=False)[0]
        return pipe._unpack_latents(out, h * self.scale_factor, w * self.scale_factor,
                                    self.scale_factor)
