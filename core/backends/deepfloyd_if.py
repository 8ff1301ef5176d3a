"""DeepFloyd IF: pixel-space stage I (64 x 64, the paper's Imagen base) + stage II 4x upscaler.

Like the paper, the joint zoom sampling runs on the base model only; stage II super-resolves
every level independently, after which generate() re-consolidates the stack in pixel space.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .base import Backend, Conditioning
from .guidance import batch_slices

#: Stage II used when GenerateSettings.upscaler is None.
DEFAULT_UPSCALER = "DeepFloyd/IF-II-L-v1.0"
#: Stage II runs its own DDPM loop; diffusers' IF-II defaults (50 steps, w = 4, noise 250).
UPSCALER_STEPS = 50
UPSCALER_GUIDANCE = 4.0
UPSCALER_NOISE_LEVEL = 250


def level_generator(seed: int, level: int) -> torch.Generator:
    """A CPU generator per (seed, level): same noise whatever the batching or device."""
    return torch.Generator("cpu").manual_seed((int(seed) * 1_000_003 + level + 1) % 2**63)


class DeepFloydIFBackend(Backend):
    family = "if"
    latent = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.upscaler = None  # IFSuperResolutionPipeline, loaded on first use
        self.upscaler_source: str | None = None

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

    # ------------------------------------------------------------------ stage II
    @torch.no_grad()
    def super_resolve(self, images: torch.Tensor, cond: Conditioning, *, steps: int,
                      seed: int = 0, micro_batch: int | None = None,
                      callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Stage II on every level independently: (N, 3, h, w) [0, 1] -> (N, 3, 4h, 4w) [0, 1].

        Levels go through in groups whose UNet batch (2 rows per level) is at most
        ``micro_batch`` (all at once when None), each with the
        level's own prompt embedding; ``callback(done, total)`` counts denoising steps.
        Each level draws its noise from its own generator (seeded from ``seed`` and the level),
        so the result does not depend on the micro-batch size.
        """
        sr = self.upscaler
        n = images.shape[0]
        x = images.to(self.device, self.dtype) * 2 - 1
        # the pipeline runs guidance as a batch of 2 rows per level: keep that <= micro_batch
        chunks = batch_slices(n, max(1, micro_batch // 2) if micro_batch else None)
        total, done = steps * len(chunks), 0
        out = []
        for s in chunks:
            def on_step(i, _t, _lat, _base=done):
                if callback is not None:
                    callback(_base + i + 1, total)

            res = sr(
                image=x[s], prompt_embeds=cond.cond["encoder_hidden_states"][s],
                negative_prompt_embeds=cond.uncond["encoder_hidden_states"].expand(
                    s.stop - s.start, -1, -1),
                num_inference_steps=steps, guidance_scale=UPSCALER_GUIDANCE,
                noise_level=UPSCALER_NOISE_LEVEL, output_type="pt",
                generator=[level_generator(seed, i) for i in range(s.start, s.stop)],
                callback=on_step, clean_caption=False,
            ).images
            out.append(((res.float().cpu() + 1) / 2).clamp(0, 1))
            done += steps
        return torch.cat(out)

    def release(self) -> None:
        self.upscaler = None
        super().release()
