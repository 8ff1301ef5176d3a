"""Analytic test models: multi-scale scenes and their exact posterior-mean denoiser.

A "scene" is a consistent zoom stack; the prior at level i is the uniform mixture over the
K scenes' renders at that level. For z_t = α_t x0 + σ_t ε the posterior mean is exact:
    E[x0 | z_t] = Σ_k softmax_k(−‖z_t − α_t X_k‖² / 2σ_t²) X_k.
Used by the tests and the ablation benchmark: the right answer (one scene at every level)
is known, so consistency and sharpness can be measured as numbers.
"""

from __future__ import annotations

import torch

from .zoom_stack import render_image, upsample


def make_scenes(num_scenes: int, num_levels: int, shape: tuple[int, int, int], zoom: int,
                generator: torch.Generator | None = None, detail: int = 4) -> torch.Tensor:
    """Renders of ``num_scenes`` random zoom stacks: ``(K, N, C, H, W)`` in [-1, 1].

    Each layer is smooth random structure (a (H/detail x W/detail) grid upsampled), so every
    level has content of its own at every scale.
    """
    c, h, w = shape
    coarse = torch.rand((num_scenes * num_levels, c, h // detail, w // detail),
                        generator=generator) * 2 - 1
    layers = upsample(coarse, (h, w)).reshape(num_scenes, num_levels, c, h, w)
    return torch.stack([render_image(stack, zoom) for stack in layers])


class MixtureDenoiser:
    """Exact E[x0 | z_t] per level under a uniform prior over the scenes' renders."""

    def __init__(self, renders: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.renders = renders  # (K, N, C, H, W)
        self.alphas_cumprod = alphas_cumprod.double()

    def __call__(self, z_t: torch.Tensor, t: int, levels: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[t]
        x = self.renders[:, levels].double()                          # (K, B, C, H, W)
        d2 = ((z_t.double()[None] - ab.sqrt() * x) ** 2).flatten(2).sum(-1)  # (K, B)
        weights = torch.softmax(-d2 / (2 * (1 - ab)), dim=0)
        return torch.einsum("kb,kbchw->bchw", weights, x).to(z_t.dtype)


def nearest_scene_error(images: torch.Tensor, renders: torch.Tensor) -> tuple[float, int]:
    """RMSE of ``images (N, C, H, W)`` to the closest single scene, and that scene's index."""
    rmse = ((renders - images[None]) ** 2).flatten(1).mean(-1).sqrt()
    k = int(rmse.argmin())
    return float(rmse[k]), k


def per_level_scene(images: torch.Tensor, renders: torch.Tensor) -> list[int]:
    """Index of the nearest scene at each level separately."""
    rmse = ((renders - images[None]) ** 2).flatten(2).mean(-1)  # (K, N)
    return rmse.argmin(0).tolist()
