"""What every model family provides to generate(): prompts -> conditioning -> denoiser -> pixels."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .guidance import Rows, batch_slices, guided_prediction


#: family name -> Backend class; each family module registers its class when imported
#: (``core.backends.loading`` imports it by the name in ``core.models.families.FAMILY_MODULES``).
FAMILY_BACKENDS: dict[str, type["Backend"]] = {}


def register_family(cls: type["Backend"]) -> type["Backend"]:
    """Class decorator of a family's backend: ``FAMILY_BACKENDS[cls.family] = cls``."""
    FAMILY_BACKENDS[cls.family] = cls
    return cls


class Conditioning:
    """Text conditioning: ``cond`` one row per level, ``uncond`` one row (the negative prompt)."""

    def __init__(self, cond: Rows, uncond: Rows):
        self.cond, self.uncond = cond, uncond


class Backend:
    """A loaded diffusers pipeline wrapped for the zoom sampler.

    Subclasses set ``family`` and ``latent`` and implement ``encode_prompts`` and ``_unet``.
    """

    family = ""
    latent = True

    def __init__(self, pipe, device: torch.device, dtype: torch.dtype, source: str):
        self.pipe, self.device, self.dtype, self.source = pipe, device, dtype, source
        self.unet = pipe.unet
        cfg = dict(pipe.scheduler.config)
        self.scheduler_config = cfg
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        from diffusers import DDPMScheduler

        # ᾱ_t of the training schedule: converts the model's output to x̂0 at any timestep
        train = DDPMScheduler.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
        self.alphas_cumprod = train.alphas_cumprod.to(torch.float32)

    # ------------------------------------------------------------------- geometry
    @property
    def scale_factor(self) -> int:
        """Pixels per sample pixel (the VAE factor for latent models, 1 for pixel models)."""
        return 1

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def native_size(self) -> int:
        """Native sample size in pixels (square)."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.scale_factor

    # ------------------------------------------------------------------- conditioning
    def encode_prompts(self, prompts: list[str], negative_prompt: str, *,
                       height: int, width: int) -> Conditioning:
        raise NotImplementedError

    def _unet(self, x: torch.Tensor, t: torch.Tensor, **rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------- denoising
    def model_output_to_x0(self, out: torch.Tensor, z_t: torch.Tensor,
                           t: torch.Tensor) -> torch.Tensor:
        """x̂0 from ε (x̂ = (z - σ ε)/α, the paper's Sec. 3), v or x0 predictions, in float32."""
        idx = t.to(z_t.device).round().long().clamp(0, len(self.alphas_cumprod) - 1)
        a = self.alphas_cumprod.to(z_t.device)[idx].view(-1, 1, 1, 1)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        if self.prediction_type == "epsilon":
            return (z_t - sigma * out) / alpha.clamp(min=1e-4)
        if self.prediction_type == "v_prediction":
            return alpha * z_t - sigma * out
        if self.prediction_type == "sample":
            return out
        raise ValueError(f"unsupported prediction type {self.prediction_type!r}")

    def postprocess_x0(self, x0: torch.Tensor) -> torch.Tensor:
        return x0

    def _model_input(self, z_t: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """The UNet input for rows of ``levels`` (super-resolution stages append their image)."""
        return z_t

    @property
    def guidance_embedded(self) -> bool:
        """LCM-distilled UNets take the guidance scale as an input (w-embedding), not CFG."""
        return bool(getattr(self.unet.config, "time_cond_proj_dim", None))

    def embedded_guidance(self, guidance: float) -> Rows | None:
        """Rows (one per model call, batch first) carrying the guidance scale into a single
        conditional pass, or None for classifier-free guidance. LCM-distilled UNets: the
        w-embedding (``timestep_cond``); FLUX overrides it (its guidance embedding)."""
        if not self.guidance_embedded:
            return None
        return {"timestep_cond": guidance_embedding(
            guidance, self.unet.config.time_cond_proj_dim).to(self.device, self.dtype)}

    def make_denoiser(self, cond: Conditioning, guidance: float,
                      micro_batch: int | None = None, differentiable: bool = False) -> Callable:
        """denoiser(z_t, t, levels) -> x̂0 for core.zoom.sampler (docs/architecture.md).

        ``differentiable``: keep autograd on, so that x̂0 can be differentiated w.r.t. z_t
        (reconstruction guidance for known levels: one backward pass per step, and the
        activations of every call are kept until then — see docs/sampler.md for the cost).
        """
        embedded = self.embedded_guidance(guidance)
        # diffusers' convention: <= 1 (Turbo's 0) means no CFG; embedded guidance: one pass
        use_cfg = guidance > 1.0 and embedded is None
        grad_mode = torch.enable_grad if differentiable else torch.no_grad

        @grad_mode()
        def denoiser(z_t: torch.Tensor, t, levels: torch.Tensor) -> torch.Tensor:
            b = z_t.shape[0]
            t_b = torch.as_tensor(t, device=self.device)
            t_b = t_b.expand(b) if t_b.dim() == 0 else t_b
            idx = torch.as_tensor(levels, device=self.device).long()
            rows = {k: v[idx] for k, v in cond.cond.items()}
            for k, v in (embedded or {}).items():
                rows[k] = v.expand(b, *v.shape[1:])
            out = guided_prediction(
                self._unet, self._model_input(z_t.to(self.device, self.dtype), idx), t_b, rows,
                cond.uncond if use_cfg else None, guidance, micro_batch,
            )
            out = out[:, : z_t.shape[1]].float()  # learned-variance models: first C = ε
            x0 = self.model_output_to_x0(out, z_t.to(self.device, torch.float32), t_b)
            return self.postprocess_x0(x0).to(z_t.dtype)

        denoiser.differentiable = differentiable
        # levels per UNet call: reconstruction guidance runs its backward pass per micro-batch
        denoiser.levels_per_call = None if micro_batch is None else \
            max(1, micro_batch // (2 if use_cfg else 1))
        return denoiser

    def sampling_config(self, height: int, width: int) -> dict:
        """The scheduler config for sampling ``height`` x ``width`` pixels (FLUX adds its
        resolution-dependent shift)."""
        return dict(self.scheduler_config)

    # ------------------------------------------------------------------- placement
    @classmethod
    def place(cls, pipe, device: torch.device) -> None:
        """Move a freshly loaded pipeline to ``device`` (everything; flow families keep their
        text encoders off the GPU between encodings)."""
        pipe.to(device)

    # ------------------------------------------------------------------- pixels
    def encode_photo(self, image: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        """(1, 3, H, W) in [-1, 1] -> the sample space (C, h, w) the sampler's x0 lives in."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        """Samples (N, C, h, w) -> images (N, 3, H, W) float32 in [0, 1] on the CPU."""
        raise NotImplementedError

    def pixel_blending(self, denoiser: Callable, zoom: int, fraction: float,
                       micro_batch: int | None = None, footprints=None,
                       loop: bool = False) -> Callable:
        """Pixel models already blend pixels: nothing to add (see LatentBackend)."""
        return denoiser

    def preview(self, x: torch.Tensor) -> np.ndarray:
        """Cheap (N, h, w, 3) float32 [0, 1] preview of samples (no VAE)."""
        raise NotImplementedError

    # ------------------------------------------------------------------- super-resolution
    #: the ×4 stages this family offers, in order (kinds of super_resolution.STAGES)
    upscale_stages: tuple[str, ...] = ("x4",)
    #: upscale factor when the settings leave it open (1: the sampled size)
    default_upscale = 1

    def release(self) -> None:
        for stage in getattr(self, "_stages", {}).values():
            stage.release()
        self._stages = {}
        self.pipe = self.unet = None


def guidance_embedding(w: float, dim: int) -> torch.Tensor:
    """(1, dim) sinusoidal embedding of w - 1, as LatentConsistencyModelPipeline computes it
    (VDM appendix; the LCM UNet's timestep_cond)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32)
                      * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    arg = (float(w) - 1) * 1000.0 * freqs
    emb = torch.cat([torch.sin(arg), torch.cos(arg)])
    return torch.nn.functional.pad(emb, (0, dim % 2))[None]


# SD 1.x/2.x latents -> approximate RGB (a least-squares fit popularised by ComfyUI/A1111
# live previews); the VAE is far too slow for a per-step preview.
_SD_RGB = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350),
           (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177))
_SDXL_RGB = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068),
             (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188))
_SDXL_BIAS = (0.1084, -0.0175, -0.0011)


class LatentBackend(Backend):
    """Shared VAE handling of Stable Diffusion and SDXL."""

    _rgb, _bias = _SD_RGB, (0.0, 0.0, 0.0)

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def _vae(self):
        vae = self.pipe.vae
        # SDXL's VAE overflows in fp16 (config.force_upcast): decode it in fp32
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae.to(torch.float32)
        return vae

    @torch.no_grad()
    def encode(self, images: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        """Images (N, 3, H, W) in [-1, 1] -> latents (N, C, h, w) float32 on the device: the
        latent mean (deterministic: the images are data, not samples), scaled."""
        vae = self._vae()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        x = images.to(self.device, vae.dtype)
        lat = torch.cat([vae.encode(x[s]).latent_dist.mean.float()
                         for s in batch_slices(x.shape[0], micro_batch)])
        return (lat - shift) * vae.config.scaling_factor

    def encode_photo(self, image: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        return self.encode(image, micro_batch)[0]

    def pixel_blending(self, denoiser: Callable, zoom: int, fraction: float,
                       micro_batch: int | None = None, footprints=None,
                       loop: bool = False) -> Callable:
        """``denoiser`` whose x̂0 is blended in pixel space for t < fraction · T:
        x̂0 <- Enc(Π_image(Blending(Dec(x̂0)))).

        Latent blending (the sampler's) assumes Dec(D_p z) ≈ D_p(Dec z): that the VAE commutes
        with the zoom stack's downsampling, which no VAE does exactly (benchmarks/latent_blend.py
        measures the gap). This option makes the late, detail-forming steps consistent where it
        matters — in the pixels — at the cost of N decodes and encodes per step. The sampler
        still blends the re-encoded latents afterwards (nearly a fixed point).
        ``footprints`` (in the decoded pixels; None = centred) and ``loop``: the stack's geometry.
        """
        if not fraction:
            return denoiser
        from ..zoom.zoom_stack import blend, render_image

        t_max = float(fraction) * self.scheduler_config.get("num_train_timesteps", 1000)

        def blended(z_t: torch.Tensor, t, levels: torch.Tensor) -> torch.Tensor:
            x0 = denoiser(z_t, t, levels)
            whole_stack = torch.equal(levels.cpu(), torch.arange(len(levels)))
            if float(t) >= t_max or len(levels) < 2 or not whole_stack:
                return x0  # early steps, or one level at a time (the iterative ablation)
            pixels = render_image(blend(self.decode(x0, micro_batch), zoom, footprints=footprints,
                                        loop=loop).clamp(0, 1), zoom, footprints, loop)
            return self.encode(pixels * 2 - 1, micro_batch).to(x0)

        # what the sampler reads off the denoiser (autograd, levels per micro-batch) carries over
        for name in ("differentiable", "levels_per_call"):
            if hasattr(denoiser, name):
                setattr(blended, name, getattr(denoiser, name))
        return blended

    @torch.no_grad()
    def decode(self, x: torch.Tensor, micro_batch: int | None = None) -> torch.Tensor:
        vae = self._vae()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = x.to(self.device, torch.float32) / vae.config.scaling_factor + shift
        out = [vae.decode(z[s].to(vae.dtype)).sample.float().cpu()
               for s in batch_slices(z.shape[0], micro_batch)]
        return ((torch.cat(out) + 1) / 2).clamp(0, 1)

    def preview(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().float().cpu()
        if x.shape[1] == 4:
            m = torch.tensor(self._rgb)
            rgb = torch.einsum("nchw,cr->nhwr", x, m) + torch.tensor(self._bias)
            return ((rgb + 1) / 2).clamp(0, 1).numpy()
        return ((x[:, :3].permute(0, 2, 3, 1) + 1) / 2).clamp(0, 1).numpy()

