"""Deep observations: a level's view of a finer level whose footprint is not pixel-aligned.

Level i+d covers a region of level i's frame (its footprint at depth d). While that region is
made of whole pixels (``max_observation_depth``) it is a crop; deeper, it straddles pixels —
at 64 px and p = 4 the footprint of level 3 in level 0 is the 1-pixel square centred on the
corner of the four centre pixels. Blending rightly ignores such views (they would smear the
neighbours in), but a guidance loss still needs them: they are the only direct evidence a
coarse level gets of a known fine one. Here they are sampled by area: each output pixel is the
area-weighted mean of the input pixels under its box (for a 1-pixel box, bilinear interpolation
at its centre).

* ``footprint_rect`` — geometry: where level i+d lies in level i's pixels (floats). Centred
  footprints today; off-centre ones plug in through ``footprints``.
* ``sample_area`` — the area-weighted resampling of a rectangle onto a grid, batched.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .geometry import check_zoom, pyramid_depth


def footprint_rect(height: int, width: int, zoom: int, depth: int,
                   footprints: Sequence[Sequence[float]] | None = None,
                   level: int = 0) -> tuple[float, float, float, float]:
    """(top, left, h, w) in level ``level``'s pixels of the region that level ``level + depth``
    shows: h = H/p^d, w = W/p^d.

    ``footprints``: (left, top) per transition j -> j+1 in level j's pixels (None: centred,
    (W - W/p)/2, (H - H/p)/2). Composed, the offset is Σ_j offset_{level+j} / p^j.
    """
    p = check_zoom(zoom)
    top = left = 0.0
    for j in range(depth):
        if footprints is None:
            fl, ft = (width - width / p) / 2, (height - height / p) / 2
        else:
            fl, ft = footprints[(level + j) % len(footprints)]  # a loop wraps round
        left += fl / p**j
        top += ft / p**j
    return top, left, height / p**depth, width / p**depth


def guidance_depth(height: int, width: int, zoom: int) -> int:
    """Deepest d whose footprint H/p^d x W/p^d still is a grid of whole output pixels (down to
    one pixel): D_p^d of the finer level is defined there."""
    return pyramid_depth(height, width, zoom)


def _area_weights(n_in: int, start: float, size: float, n_out: int,
                  like: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in): A[i, r] = overlap of output box i, [start + i·s, start + (i+1)·s) with
    s = size / n_out, and input pixel [r, r+1), divided by s (rows sum to 1 inside the image)."""
    s = size / n_out
    lo = start + torch.arange(n_out, dtype=torch.float64) * s
    r = torch.arange(n_in, dtype=torch.float64)
    overlap = (torch.minimum(lo[:, None] + s, r[None] + 1)
               - torch.maximum(lo[:, None], r[None])).clamp(min=0)
    return (overlap / s).to(device=like.device, dtype=like.dtype)


def sample_area(x: torch.Tensor, rect: tuple[float, float, float, float],
                out_size: tuple[int, int]) -> torch.Tensor:
    """Area-weighted resampling of the region ``rect = (top, left, h, w)`` (pixels, floats) of
    ``x (..., H, W)`` onto ``out_size = (oh, ow)``: ``(..., oh, ow)``. A pixel-aligned rect with
    oh = h, ow = w gives the crop exactly. Differentiable (a separable linear map)."""
    top, left, h, w = rect
    ay = _area_weights(x.shape[-2], top, h, out_size[0], x)
    ax = _area_weights(x.shape[-1], left, w, out_size[1], x)
    return torch.einsum("ir,...rc,jc->...ij", ay, x, ax)


__all__ = ["footprint_rect", "guidance_depth", "sample_area"]
