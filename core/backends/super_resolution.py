"""×4 super-resolution stages run *jointly* through the zoom sampler (docs/backends.md).

A stage is a Backend whose UNet also sees a low-resolution image: for every level i the
stage-I image i (already zoom-consistent), upscaled or not, noise-augmented, concatenated to
z_t on the channel axis — exactly what the diffusers pipelines do. Because the conditioning is
picked per row by level index, ``make_denoiser`` gives a ``denoiser(z_t, t, levels)`` for
``core.sampler.sample_zoom_stack``, which blends the N estimates and draws Π_noise at every
SR step: the invented detail is sampled zoom-consistently instead of being averaged afterwards.

* ``IFStageII``: DeepFloyd IF stage II, pixel space, 64 -> 256 (noise level 250, guidance 4).
* ``X4Upscaler``: ``stabilityai/stable-diffusion-x4-upscaler`` (latent, VAE factor 4, v-pred.,
  noise level 20, guidance 9): SD/SDXL 512 -> 2048, and IF's third stage 256 -> 1024.

Large samples go through the UNet in overlapping tiles (``tiled_unet``) whose outputs are
blended with raised-cosine ramps, so no tile edge is visible and memory stays that of one tile.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..zoom.zoom_stack import render_noise
from .base import Conditioning
from .deepfloyd_if import DeepFloydIFBackend
from .guidance import batch_slices
from .stable_diffusion import StableDiffusionBackend

#: Default model of each stage kind.
IF_STAGE_II = "DeepFloyd/IF-II-L-v1.0"
X4_UPSCALER = "stabilityai/stable-diffusion-x4-upscaler"


# ------------------------------------------------------------------------------- tiling
def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` px covering ``size`` px with at least ``overlap``."""
    if size <= tile:
        return [0]
    n = -(-(size - overlap) // (tile - overlap))  # ceil
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def _ramp(length: int, start: int, size: int, overlap: int, device, dtype) -> torch.Tensor:
    """1-D tile weight: a raised-cosine ramp over ``overlap`` px from each tile edge that is
    not an image edge (near 0 at the edge, where a UNet's output is least reliable, never 0
    so every pixel has weight), 1 inside."""
    d = torch.arange(length, device=device, dtype=torch.float64)
    w = torch.ones(length, device=device, dtype=torch.float64)

    def ramp(r: torch.Tensor) -> torch.Tensor:
        return torch.sin(0.5 * torch.pi * (r + 1).clamp(max=overlap + 1) / (overlap + 1)) ** 2

    if start > 0:
        w = torch.minimum(w, ramp(d))
    if start + length < size:
        w = torch.minimum(w, ramp(length - 1 - d))
    return w.to(dtype)


def tiled_unet(model: Callable[..., torch.Tensor], tile: int | None, overlap: int,
               micro_batch: int | None = None) -> Callable[..., torch.Tensor]:
    """``model(x, t, **rows)`` evaluated on overlapping ``tile`` x ``tile`` crops of x.

    Outputs are averaged with weights that ramp (raised cosine) over the overlap
    (MultiDiffusion-style, per pixel: Σ_k w_k out_k / Σ_k w_k), so tile edges leave no seam;
    tiles go through ``model`` ``micro_batch`` rows at a time. Samples no larger than ``tile`` take one call, untouched.
    """
    if not tile:
        return model

    def run(x: torch.Tensor, t: torch.Tensor, **rows: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        if h <= tile and w <= tile:
            return model(x, t, **rows)
        boxes = [(y, xx, min(tile, h), min(tile, w))
                 for y in tile_starts(h, tile, overlap) for xx in tile_starts(w, tile, overlap)]
        out = weight = None
        # every row's tiles in one batch, cut into micro-batches
        crops = torch.cat([x[:, :, y:y + th, xx:xx + tw] for y, xx, th, tw in boxes])
        reps = len(boxes)
        t_rep = t.repeat(reps)
        rows_rep = {k: v.repeat(reps, *([1] * (v.dim() - 1))) for k, v in rows.items()}
        preds = [model(crops[s], t_rep[s], **{k: v[s] for k, v in rows_rep.items()})
                 for s in batch_slices(crops.shape[0], micro_batch)]
        preds = torch.cat(preds).float()
        for k, (y, xx, th, tw) in enumerate(boxes):
            wy = _ramp(th, y, h, overlap, x.device, torch.float32)
            wx = _ramp(tw, xx, w, overlap, x.device, torch.float32)
            wk = (wy[:, None] * wx[None, :]).expand(b, 1, th, tw)
            pk = preds[k * b:(k + 1) * b]
            if out is None:
                out = torch.zeros(b, pk.shape[1], h, w, device=x.device)
                weight = torch.zeros(b, 1, h, w, device=x.device)
            out[:, :, y:y + th, xx:xx + tw] += wk * pk
            weight[:, :, y:y + th, xx:xx + tw] += wk
        return (out / weight).to(preds.dtype)

    return run


# ------------------------------------------------------------------------------- stages
class SuperResolutionStage:
    """Mixin: per-level low-res conditioning, noise augmentation, tiling, joint sampling."""

    #: diffusers pipeline class of the stage's model folder, and its from_pretrained extras
    pipeline_class = ""
    load_kwargs = {"safety_checker": None, "feature_extractor": None, "watermarker": None}
    #: output pixels per input pixel
    factor = 4
    noise_level = 0
    guidance = 1.0
    #: the stage's own default step count (capped by the user's)
    default_steps = 50
    #: tile size in sample pixels (the model's training size) and the overlap between tiles
    tile_size = 256
    tile_overlap = 32

    _low_res: torch.Tensor | None = None  # (N, 3, ...) per-level conditioning image
    _micro_batch: int | None = None

    @property
    def channels(self) -> int:
        """Channels of the sample (the UNet input also holds the conditioning image)."""
        return self.sample_channels

    def sample_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, H, W) the stage samples for a (height, width) px input."""
        f = self.factor // self.scale_factor
        return self.sample_channels, height * f, width * f

    def conditioning(self, prompts: list[str], negative_prompt: str,
                     stage_one: Conditioning) -> Conditioning:
        raise NotImplementedError

    def _noise_augment(self, x: torch.Tensor, scheduler, zoom: int,
                       generator: torch.Generator, footprints=None,
                       loop: bool = False) -> torch.Tensor:
        """add_noise(x, Π_noise(E), noise_level): the augmentation noise is zoom-consistent too,
        so overlapping regions of the levels see the same conditioning. ``footprints``: in the
        pixels of x."""
        e = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        noise = render_noise(e, zoom, footprints, loop).to(x.device, x.dtype)
        level = torch.full((x.shape[0],), self.noise_level, dtype=torch.long, device=x.device)
        return scheduler.add_noise(x, noise, level)

    def prepare(self, images: torch.Tensor, zoom: int, generator: torch.Generator,
                footprints=None, loop: bool = False) -> None:
        """Set the low-res conditioning from consistent stage-I images (N, 3, h, w) in [0, 1].
        ``footprints``: the stack's, in the pixels of the stage's output (×``factor``)."""
        raise NotImplementedError

    def _model_input(self, z_t: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        # the per-level conditioning image, concatenated on the channel axis
        return torch.cat([z_t, self._low_res[levels].to(z_t.dtype)], dim=1)

    def _unet(self, x: torch.Tensor, t: torch.Tensor, *,
              encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        def call(x, t, encoder_hidden_states):
            labels = torch.full((x.shape[0],), self.noise_level, dtype=torch.long, device=x.device)
            return self.unet(x, t, encoder_hidden_states=encoder_hidden_states,
                             class_labels=labels, return_dict=False)[0]

        return tiled_unet(call, self.tile_size, self.tile_overlap, self._micro_batch)(
            x, t, encoder_hidden_states=encoder_hidden_states)

    def make_denoiser(self, cond: Conditioning, guidance: float,
                      micro_batch: int | None = None) -> Callable:
        self._micro_batch = micro_batch
        return super().make_denoiser(cond, guidance, micro_batch)


class IFStageII(SuperResolutionStage, DeepFloydIFBackend):
    """DeepFloyd IF stage II (``IFSuperResolutionPipeline``): 64 px -> 256 px in pixel space.

    Loaded without its own T5: the stage-I prompt embeddings are reused.
    """

    family = "if"
    pipeline_class = "IFSuperResolutionPipeline"
    # stage II reuses stage I's T5 embeddings: no second T5-XXL
    load_kwargs = {**SuperResolutionStage.load_kwargs, "text_encoder": None, "tokenizer": None,
                   "requires_safety_checker": False}
    noise_level = 250
    guidance = 4.0
    tile_size = 256
    sample_channels = 3

    def conditioning(self, prompts, negative_prompt, stage_one):
        return stage_one  # T5 embeddings of stage I

    def prepare(self, images, zoom, generator, footprints=None, loop=False):
        x = images.to(self.device, torch.float32) * 2 - 1
        h, w = x.shape[-2:]
        # diffusers' IF-II: bilinear (align_corners=True) to the output size, then noised
        up = F.interpolate(x, (h * self.factor, w * self.factor), mode="bilinear",
                           align_corners=True)
        self._low_res = self._noise_augment(up, self.pipe.image_noising_scheduler, zoom,
                                            generator, footprints, loop).to(self.dtype)


class X4Upscaler(SuperResolutionStage, StableDiffusionBackend):
    """``StableDiffusionUpscalePipeline``: latents at the input size, VAE factor 4 -> 4x pixels.

    Encodes the prompts with its own text encoder (its OpenCLIP embeddings differ from SD 1.x's
    and SDXL's).
    """

    family = "sd"
    pipeline_class = "StableDiffusionUpscalePipeline"
    noise_level = 20
    guidance = 9.0
    tile_size = 128  # latents (= input px): the model's 128 -> 512 px training size
    tile_overlap = 32

    @property
    def sample_channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    def conditioning(self, prompts, negative_prompt, stage_one):
        return self.encode_prompts(prompts, negative_prompt, height=0, width=0)

    def prepare(self, images, zoom, generator, footprints=None, loop=False):
        x = images.to(self.device, torch.float32) * 2 - 1  # the latents have the input's size
        if footprints is not None:  # given in output pixels: the latents have the input's
            footprints = [(left // self.factor, top // self.factor) for left, top in footprints]
        self._low_res = self._noise_augment(x, self.pipe.low_res_scheduler, zoom,
                                            generator, footprints, loop).to(self.dtype)

    def decode(self, x: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        vae = self._vae()
        if x.shape[-1] * self.scale_factor > 1024 and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()  # 2048 px decodes in overlapping tiles (diffusers blends them)
        return super().decode(x, micro_batch)


#: stage kind -> class (the families list the kinds they offer in Backend.upscale_stages)
STAGES = {"if-ii": IFStageII, "x4": X4Upscaler}
DEFAULT_MODELS = {"if-ii": IF_STAGE_II, "x4": X4_UPSCALER}

__all__ = ["DEFAULT_MODELS", "IFStageII", "STAGES", "SuperResolutionStage", "X4Upscaler",
           "tile_starts", "tiled_unet"]
