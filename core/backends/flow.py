"""Rectified-flow transformers (SD3/SD3.5, FLUX.1): what they share.

The path is z_σ = (1−σ) x0 + σ ε with t = 1000 σ (FlowMatchEulerDiscreteScheduler); the
transformer predicts the velocity v = ε − x0, so x̂0 = z_σ − σ v̂ (t a float: never rounded).
The sampler treats them like every other family: the denoiser returns x̂0, the zoom stack is
blended and rendered in the (unpacked) latent grid, and ``update_flow`` steps σ → σ'.

Memory: the transformer and the VAE live on the device; the text encoders (a T5-XXL is 4.7B
parameters) stay on the CPU and visit the device only while the prompts are encoded.
"""

from __future__ import annotations

import contextlib
import numpy as np
import torch

from .base import Conditioning, LatentBackend

#: Pipeline attributes holding text encoders (those a pipeline lacks or has as None are skipped).
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
#: Least-squares latent -> RGB fits for the 16-channel SD3 / FLUX latents (ComfyUI's live
#: previews); the VAE is far too slow for a per-step preview.
_FLOW_RGB = {
    "sd3": ((-0.0645, 0.0177, 0.1052), (0.0028, 0.0312, 0.0650), (0.1848, 0.0762, 0.0360),
            (0.0944, 0.0360, 0.0889), (0.0897, 0.0506, -0.0364), (-0.0020, 0.1203, 0.0284),
            (0.0855, 0.0118, 0.0283), (-0.0539, 0.0658, 0.1047), (-0.0057, 0.0116, 0.0700),
            (-0.0412, 0.0281, -0.0039), (0.1106, 0.1171, 0.1220), (-0.0248, 0.0682, -0.0481),
            (0.0815, 0.0846, 0.1207), (-0.0120, -0.0055, -0.0867), (-0.0749, -0.0634, -0.0456),
            (-0.1418, -0.1457, -0.1259)),
    "flux": ((-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433),
             (-0.0174, 0.0160, 0.0617), (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115),
             (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259), (-0.0245, 0.0250, 0.1180),
             (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
             (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499),
             (-0.1262, -0.0982, -0.0778)),
}
_FLOW_BIAS = {"flux": (-0.0329, -0.0718, -0.0851)}


class FlowBackend(LatentBackend):
    """Shared by SD3 and FLUX: the transformer as the denoising network, v-prediction on the
    rectified-flow path, text encoders off the device between encodings."""

    def __init__(self, pipe, device: torch.device, dtype: torch.dtype, source: str):
        self.pipe, self.device, self.dtype, self.source = pipe, device, dtype, source
        self.unet = pipe.transformer  # the denoising network (the shared code's name for it)
        self.scheduler_config = dict(pipe.scheduler.config)
        self.prediction_type = "flow_velocity"
        self._rgb = _FLOW_RGB.get(self.family, _FLOW_RGB["sd3"])
        self._bias = _FLOW_BIAS.get(self.family, (0.0, 0.0, 0.0))

    @property
    def channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    @property
    def native_size(self) -> int:
        from ..models.families import NATIVE_SIZE

        size = getattr(self.unet.config, "sample_size", None)
        return int(size) * self.scale_factor if size else NATIVE_SIZE[self.family]

    # ------------------------------------------------------------------- placement
    @classmethod
    def place(cls, pipe, device: torch.device) -> None:
        """The transformer and the VAE on ``device``; the text encoders stay on the CPU. On a
        GPU with fp8 (compute capability 8.9+) whose free memory cannot hold the bf16
        transformer next to a working margin, its weights are stored in fp8 and each layer is
        computed in bf16 (diffusers' layerwise casting)."""
        if needs_fp8(pipe.transformer, device):
            pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                      compute_dtype=torch.bfloat16)
        for name in ("transformer", "vae"):
            getattr(pipe, name).to(device)

    @contextlib.contextmanager
    def _encoders_on_device(self):
        """The text encoders on the device while the block runs, back on the CPU afterwards
        (their memory is free for the transformer's activations while sampling)."""
        encoders = [e for e in (getattr(self.pipe, n, None) for n in TEXT_ENCODERS) if e is not None]
        moved = self.device.type != "cpu"
        try:
            if moved:
                for e in encoders:
                    e.to(self.device)
            yield
        finally:
            if moved:
                for e in encoders:
                    e.to("cpu")
                from .loading import free_device_memory

                free_device_memory()

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], negative_prompt: str, *,
                       height: int, width: int) -> Conditioning:
        with self._encoders_on_device():
            cond = self._encode(list(prompts))
            uncond = self._encode([negative_prompt])
        return Conditioning({k: v.to(self.device, self.dtype) for k, v in cond.items()},
                            {k: v.to(self.device, self.dtype) for k, v in uncond.items()})

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------- denoising
    def model_output_to_x0(self, out: torch.Tensor, z_t: torch.Tensor,
                           t: torch.Tensor) -> torch.Tensor:
        """x̂0 = z_σ − σ v̂ with σ = t / 1000 (t continuous; v = ε − x0)."""
        total = float(self.scheduler_config.get("num_train_timesteps", 1000))
        sigma = (t.to(z_t.device, torch.float32) / total).view(-1, 1, 1, 1)
        return z_t - sigma * out

    def preview(self, x: torch.Tensor) -> np.ndarray:
        x = x.detach().float().cpu()
        rgb = torch.einsum("nchw,cr->nhwr", x, torch.tensor(self._rgb)) + torch.tensor(self._bias)
        return ((rgb + 1) / 2).clamp(0, 1).numpy()


#: Free device memory kept for activations and the VAE when deciding on fp8 weights.
FP8_MARGIN_BYTES = 6 * 2**30


def needs_fp8(transformer, device: torch.device) -> bool:
    """fp8 weight storage: a CUDA GPU with fp8 (8.9+) that cannot hold the bf16 weights."""
    if device.type != "cuda" or not hasattr(torch, "float8_e4m3fn"):
        return False
    if torch.cuda.get_device_capability(device) < (8, 9):
        return False
    free, _ = torch.cuda.mem_get_info(device)
    weights = sum(p.numel() for p in transformer.parameters()) * 2  # bf16
    return weights + FP8_MARGIN_BYTES > free
