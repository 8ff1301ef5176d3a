"""The filters every zoom-stack operation shares: D_p's taps, the noise gain that keeps Π_noise at
unit variance, and how deep rendering on a loop composites (``cycle_depth``)."""

from __future__ import annotations

import math

import torch

from .geometry import check_zoom


def downsample_weights(zoom: int, device=None, dtype=None) -> torch.Tensor:
    """1-D taps of D_p: a Gaussian (sigma = p/4) sampled at the p pixel centres of a block."""
    p = check_zoom(zoom)
    u = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
    w = torch.exp(-0.5 * (u / (p / 4)) ** 2)
    return (w / w.sum()).to(device=device, dtype=dtype or torch.float32)


def noise_gain(zoom: int) -> float:
    """Scale restoring unit variance after D_p of i.i.d. unit noise: 1 / ||w ⊗ w||_2 = 1 / Σ w².

    For a box filter this is p, the paper's factor p_j/p_i per level; for the Gaussian it is
    smaller because the taps are unequal.
    """
    w = downsample_weights(zoom, dtype=torch.float64)
    return float(1.0 / (w**2).sum())


#: Mantissa bits per dtype: how many halvings a contribution needs to vanish in rounding.
_MANTISSA_BITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}


def cycle_depth(height: int, width: int, zoom: int, dtype: torch.dtype = torch.float32) -> int:
    """Levels beyond one turn that rendering on a loop composites (``_render``).

    Level i+k's footprint in level i is H/p^k px: below a pixel after ceil(log_p max(H, W))
    levels. From there each further level passes on at most 1/p of the rendered noise's
    standard deviation (1/p² of an image's weight): a D_p block that spans the footprint
    keeps 1/p² of its area in it. After mantissa-bits / log2(p) more levels the deepest
    level no longer changes a pixel in the dtype (measured: the wrap link's residual is at
    float precision, tests/test_targets_loops.py).
    """
    p = check_zoom(zoom)
    below_pixel = math.ceil(math.log(max(height, width), p)) + 1
    return below_pixel + math.ceil(_MANTISSA_BITS.get(dtype, 53) / math.log2(p))
