"""DeepFloyd IF: pixel-space stage I (64 x 64, the paper's Imagen base).

Its ×4 stages (``upscale_stages``): IF stage II (64 -> 256, the paper's route) and then the
Stable Diffusion x4 upscaler (256 -> 1024), both sampled jointly across the zoom levels
(core/backends/super_resolution.py).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Backend, Conditioning, register_family


@register_family
class DeepFloydIFBackend(Backend):
    family = "if"
    latent = False

    upscale_stages = ("if-ii", "x4")
    default_upscale = 4  # stage II, as the paper (GenerateSettings.upscale / upscaler="none")

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompt: str, *,
                       height: int, width: int) -> Conditioning:
        # clean_caption needs bs4 + ftfy; IF's own lower-casing/stripping still applies
        cond, _ = self.pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False,
                                          device=self.device, clean_caption=False)
        uncond, _ = self.pipe.encode_prompt([negative_prompt], do_classifier_free_guidance=False,
                                            device=self.device, clean_caption=False)
        return Conditioning({"encoder_hidden_states": cond.to(self.dtype)},
                            {"encoder_hidden_states": uncond.to(self.dtype)})

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *,
              encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        # out_channels = 2C (ε, learned variance); make_denoiser keeps the first C as ε
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]

    def postprocess_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding (IF's scheduler config), else static clipping."""
        cfg = self.scheduler_config
        if cfg.get("thresholding"):
            ratio, s_max = cfg.get("dynamic_thresholding_ratio", 0.995), cfg.get("sample_max_value", 1.0)
            s = torch.quantile(x0.abs().flatten(1), ratio, dim=1).clamp(1.0, s_max).view(-1, 1, 1, 1)
            return x0.clamp(-s, s) / s
        if cfg.get("clip_sample", True):
            r = cfg.get("clip_sample_range", 1.0)
            return x0.clamp(-r, r)
        return x0

    def encode_photo(self, image: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        return image[0].to(torch.float32)  # pixel space: the photo is x0 itself, in [-1, 1]

    def decode(self, x: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        return ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)

    def preview(self, x: torch.Tensor) -> np.ndarray:
        return self.decode(x).permute(0, 2, 3, 1).numpy()
