"""Zoom-stack math of "Generative Powers of Ten" (Sec. 4.1-4.2): D_p, Π_image, Π_noise, blending.

A zoom stack is a tensor of layers ``(N, C, H, W)``; layer i covers the centre 1/p^i of
layer 0's extent. Everything here is a pure function over batched tensors, on the input's
device and dtype, and differentiable (the photo loss backpropagates through ``downsample``).

Design choices (see docs/zoom_stack.md):
* D_p is a separable truncated Gaussian of size p x p applied with stride p (the paper's
  prefilter). Kernel size == stride, so blocks never overlap: D_p of i.i.d. noise is again
  i.i.d., which makes the Π_noise variance correction exact.
* Π_image renders finest-first (image i = layer i with its centre replaced by D_p(image i+1)),
  so the centre of image i equals D_p(image i+1) exactly at every depth, whatever the filter.
* Blending uses Laplacian pyramids built from the same D_p, so a consistent stack is a fixed
  point: every observation of a layer carries exactly that layer's bands.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cycle_noise import correct_cycle_noise
from .filters import cycle_depth, downsample_weights, noise_gain
from .geometry import (Footprint, centre_box, check_footprints, check_size, check_zoom,
                       max_observation_depth, observation_box, pyramid_depth)

#: Laplacian blending of a ×4 super-resolution stage whose k finest bands each level's
#: upscaler invented ("laplacian-srk": blend(..., invented_bands=k, feather=SR_FEATHER,
#: rim_weight=SR_RIM_WEIGHT)).
SR_BLEND = {f"laplacian-sr{k}": k for k in (1, 2)}
#: Rim (band pixels) along a layer's border where the next coarser level's invented band still
#: counts, and its weight there against the layer's own (1): at its border the layer has no
#: context beyond it, the coarser level has (sweeps in docs/backends.md; seam at p = 2 / 4,
#: default synthetic model: weight 2 -> 1.196 / 1.193, 3 -> 1.159 / 1.144).
SR_FEATHER = 1
SR_RIM_WEIGHT = 3.0
BLEND_METHODS = ("laplacian", "naive", *SR_BLEND)


def _check_stack(x: torch.Tensor, zoom: int, what: str) -> int:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a tensor of shape (N, C, H, W), got {shape}")
    if x.shape[0] < 1:
        raise ValueError(f"{what} must hold at least one level, got N={x.shape[0]}")
    p = check_zoom(zoom)
    check_size(x.shape[-2], x.shape[-1], p)
    return p


# ------------------------------------------------------------------------------- D_p, crops
def downsample(x: torch.Tensor, zoom: int, times: int = 1) -> torch.Tensor:
    """D_p applied ``times`` times to ``(..., H, W)``: prefilter with a p x p kernel, stride p."""
    p = check_zoom(zoom)
    w = downsample_weights(p, x.device, x.dtype)
    for _ in range(times):  # each application shrinks the image; sizes differ, no batching
        *lead, h, wd = x.shape
        blocks = x.reshape(*lead, h // p, p, wd // p, p)
        x = torch.einsum("...ipjq,p,q->...ij", blocks, w, w)
    return x


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` to ``size`` (the pyramid's expand operator)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def crop_centre(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The centre ``H/factor x W/factor`` crop of ``(..., H, W)``."""
    top, left, h, w = centre_box(x.shape[-2], x.shape[-1], factor)
    return x[..., top : top + h, left : left + w]


# ------------------------------------------------------------------ Π_image and Π_noise
def _render(layers: torch.Tensor, p: int, gain: float, footprints: list[Footprint],
            loop: bool = False) -> torch.Tensor:
    """Finest-first compositing shared by Π_image (gain 1) and Π_noise (gain = noise_gain).

    ``footprints[i]`` = (left, top) of level i+1 in level i. On a loop the chain starts
    ``cycle_depth`` levels beyond one turn of the cycle (that level as it is) and runs round
    the cycle down to level 0, so that the wrap link (level 0 inside level N-1) is exact to
    the dtype's precision and every other link exactly (docs/sampler.md, "Loops").
    """
    n, _, height, width = layers.shape
    start = cycle_depth(height, width, p, layers.dtype) + n if loop else n - 1
    images = [None] * n
    x = images[start % n] = layers[start % n]
    # Sequential by nature: image i needs image i+1 complete (one small downsample a level).
    for d in range(start - 1, -1, -1):
        i = d % n
        left, top = footprints[i]
        finer = downsample(x, p)
        if gain != 1.0:
            finer = finer * gain
        h, w = finer.shape[-2:]
        # Alg. 1 line 3: x <- M ⊙ D(x_finer) + (1 - M) ⊙ x   (out of place: autograd-safe)
        x = (F.pad(finer, (left, width - left - w, top, height - top - h))
             + _outside_mask(height, width, p, layers, left, top) * layers[i])
        if d < n:
            images[i] = x
    return torch.stack(images)


def _outside_mask(height: int, width: int, p: int, like: torch.Tensor, left: int,
                  top: int) -> torch.Tensor:
    """1 - M: ones outside the H/p x W/p footprint at (left, top)."""
    h, w = height // p, width // p
    mask = torch.ones(height, width, device=like.device, dtype=like.dtype)
    mask[top : top + h, left : left + w] = 0
    return mask


def render_image(layers: torch.Tensor, zoom: int, footprints=None,
                 loop: bool = False) -> torch.Tensor:
    """Π_image (Alg. 1) for every level: layers ``(N, C, H, W)`` -> images ``(N, C, H, W)``.

    image_{N-1} = L_{N-1};  image_i = M_i ⊙ D_p(image_{i+1}) + (1 - M_i) ⊙ L_i, where M_i
    is level i+1's footprint in level i (``footprints[i]`` = (left, top), None = centred).
    Equivalent to Alg. 1's loop over j > i with D_{p^(j-i)} = D_p composed (j - i) times.
    ``loop``: a cyclic stack (N footprints, the last places level 0 inside level N-1):
    image_{N-1} = M ⊙ D_p(image_0) + ..., composited round the cycle (``cycle_depth``).
    """
    p = _check_stack(layers, zoom, "layers")
    fps = check_footprints(footprints, layers.shape[-2], layers.shape[-1], p, layers.shape[0], loop)
    return _render(layers, p, 1.0, fps, loop)


def render_noise(noise: torch.Tensor, zoom: int, footprints=None,
                 loop: bool = False) -> torch.Tensor:
    """Π_noise (Alg. 1 line 4): zoom-consistent noise from i.i.d. noise layers ``(N, C, H, W)``.

    ε_i = M_i ⊙ g·D_p(ε_{i+1}) + (1 - M_i) ⊙ E_i with g = 1/Σw². D_p's blocks do not overlap
    and every footprint starts on a whole pixel, so if ε_{i+1} is i.i.d. N(0, 1) then so is
    g·D_p(ε_{i+1}), and by induction every pixel of every level is N(0, 1) and independent
    of the others at that level, wherever the footprints are. On a loop no noise can be both
    i.i.d. and consistent round the cycle: the inputs are corrected first (``cycle_noise``) so
    that every pixel, the loop's vanishing point included, stays N(0, 1).
    """
    p = _check_stack(noise, zoom, "noise")
    fps = check_footprints(footprints, noise.shape[-2], noise.shape[-1], p, noise.shape[0], loop)
    if loop:
        noise = correct_cycle_noise(noise, p, fps)
    return _render(noise, p, noise_gain(p), fps, loop)


# ------------------------------------------------------------------------------ blending
def laplacian_pyramid(x: torch.Tensor, zoom: int, levels: int) -> list[torch.Tensor]:
    """Bands [x - U(D x), D x - U(D² x), ..., D^levels x] of ``(B, C, H, W)``.

    The Gaussian levels use D_p itself, so band k of a crop equal to D_p^d(x) is band d+k of x.
    """
    gauss = [x]
    for _ in range(levels):
        gauss.append(downsample(gauss[-1], zoom))
    bands = [g - upsample(g_next, g.shape[-2:]) for g, g_next in zip(gauss, gauss[1:])]
    return bands + [gauss[-1]]


def collapse_pyramid(bands: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of ``laplacian_pyramid``: G_k = band_k + U(G_{k+1})."""
    image = bands[-1]
    for band in reversed(bands[:-1]):
        image = band + upsample(image, band.shape[-2:])
    return image


def blend(images: torch.Tensor, zoom: int, method: str = "laplacian",
          invented_bands: int = 0, feather: int = 0, rim_weight: float = 1.0,
          footprints=None, loop: bool = False) -> torch.Tensor:
    """Fuse N per-level observations ``(N, C, H, W)`` into one zoom stack (Sec. 4.2).

    Layer i fuses image i with its region (its footprint composed over d transitions) in every
    coarser image i-d (d >= 1) where that region is pixel-aligned (``observation_box``;
    centred: up to ``max_observation_depth``). On a loop every level has coarser levels round
    the cycle (d up to the pyramid's depth, beyond N a level observes itself). "laplacian": band k of the fused layer averages band k of every
    observation that has it (a crop from depth d has bands d..K only: it lacks the finer
    detail). "naive": plain average of the observations upsampled to H x W (MultiDiffusion).

    ``invented_bands = s`` (super-resolution stages): each image's s finest bands were invented
    by an upscaler that saw only that level's low-resolution conditioning, while its coarser
    bands come from the consistent stage-I stack. A coarser level's invented band (observation
    band k - d < s) then does not count in a finer layer: where the layer knows that band from
    stage I (k >= s) the coarser upscaler guessed content the layer has, and where the layer
    invented it too (k < s) the layer's own upscaler saw the footprint at p^d times the
    resolution, so its guess is the better-informed one. Averaging the two independent guesses
    (Alg. 2 as written) halves their variance: measured in docs/backends.md, excluding the
    coarser guess raises band 3's kept energy from 0.95 to 1.00 and lowers the seams from 1.22
    to 1.20. The finer guess reaches the coarser images through Π_image, so consistency is
    untouched.
    ``feather`` > 0 lets the next coarser level's excluded observation (d = 1) still count in
    a rim of that many band pixels along the layer's border, with ``rim_weight`` (the layer's
    own weighs 1) at the border pixel fading to 0 inwards, so that the layer's content does not
    start at a hard edge (no rim: seams 1.75). Guesses from further up (d >= 2) stay out of the
    rim too: around the layer, image i-1 shows level i-1's content, which left them out itself,
    so they would pull the layer's border away from what surrounds it (measured in
    docs/backends.md, with weight 3: at p = 4 band 3 0.93-0.94 -> 0.97-0.98 and the seam
    1.15-1.26 -> 1.06-1.14). The methods in ``SR_BLEND`` set all three. A consistent stack
    stays a fixed point either way.
    """
    p = _check_stack(images, zoom, "images")
    if method not in BLEND_METHODS:
        raise ValueError(f"blending method must be one of {BLEND_METHODS}, got {method!r}")
    if method in SR_BLEND:
        invented_bands, feather, rim_weight = SR_BLEND[method], SR_FEATHER, SR_RIM_WEIGHT
    n, _, height, width = images.shape
    fps = check_footprints(footprints, height, width, p, n, loop)
    top = pyramid_depth(height, width, p)
    depth = top if loop else min(n - 1, top)
    ones = torch.ones(n, 1, 1, 1, dtype=images.dtype, device=images.device)

    def add(total: torch.Tensor, d: int, term: torch.Tensor) -> torch.Tensor:
        # rows d.. receive from image i-d; on a loop every row does (from (i-d) mod N)
        if loop:
            return total + term
        tail = total[d:] + term
        return torch.cat([total[:d].expand(d, *tail.shape[1:]), tail])

    if method == "naive":
        total, count = images.clone(), ones
        for d in range(1, depth + 1):  # one batched op per scale separation d
            seen = observe(images, p, d, fps, loop)
            if seen is not None:
                observed, aligned = seen
                total = add(total, d, aligned * upsample(observed, (height, width)))
                count = add(count, d, aligned)
        return total / count

    sums = laplacian_pyramid(images, p, top)  # observation d = 0: each layer's own image
    counts = [ones for _ in sums]
    for d in range(1, depth + 1):  # one batched op per scale separation d (sizes differ)
        seen = observe(images, p, d, fps, loop)  # image i-d's view of layer i
        if seen is None:
            continue
        observed, aligned = seen
        for k, band in enumerate(laplacian_pyramid(observed, p, top - d), start=d):
            weight = aligned
            if k - d < invented_bands:
                # a guess of the coarser upscaler, where the layer knows (stage I) or guesses
                # from more pixels: it counts only in a rim of ``feather`` px along the
                # layer's border, fading inwards, and only the next coarser level's (d = 1:
                # what surrounds the layer in image i-1; a guess from further up is not there)
                if not feather or d > 1:
                    continue
                weight = aligned * (rim_weight * _rim(band.shape[-2], band.shape[-1], feather, band))
            sums[k] = add(sums[k], d, weight * band)
            counts[k] = add(counts[k], d, weight)
    averaged = [s / c for s, c in zip(sums, counts)]
    return collapse_pyramid(averaged)


def observe(images: torch.Tensor, zoom: int, depth: int, footprints: list[Footprint],
            loop: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Every level's region in the image ``depth`` levels coarser, in one batch.

    Rows: levels depth..N-1 (on a loop all N, from image (i - depth) mod N). Returns
    (crops (R, C, H/p^d, W/p^d), aligned (R, 1, 1, 1): 1 where the region is pixel-aligned,
    i.e. equals D_p^d of the level for a consistent stack, 0 where it is not and must not
    count), or None when no row is aligned.
    """
    n, _, height, width = images.shape
    rows = range(n) if loop else range(depth, n)
    boxes = [observation_box(footprints, height, width, zoom, i - depth, depth, loop)
             for i in rows]
    if not any(boxes):
        return None
    h, w = height // zoom**depth, width // zoom**depth
    src = torch.tensor([(i - depth) % n for i in rows], device=images.device)
    tops = torch.tensor([b[0] if b else 0 for b in boxes], device=images.device)
    lefts = torch.tensor([b[1] if b else 0 for b in boxes], device=images.device)
    ys = (tops[:, None] + torch.arange(h, device=images.device))[:, :, None]  # (R, h, 1)
    xs = (lefts[:, None] + torch.arange(w, device=images.device))[:, None, :]  # (R, 1, w)
    crops = images[src[:, None, None], :, ys, xs].permute(0, 3, 1, 2)  # (R, h, w, C) -> NCHW
    aligned = torch.tensor([1.0 if b else 0.0 for b in boxes], dtype=images.dtype,
                           device=images.device).view(-1, 1, 1, 1)
    return crops, aligned


def _rim(height: int, width: int, feather: int, like: torch.Tensor) -> torch.Tensor:
    """1 on the border pixels, falling linearly to 0 ``feather`` px inside: (H, W)."""
    y = torch.arange(height, device=like.device, dtype=like.dtype)
    x = torch.arange(width, device=like.device, dtype=like.dtype)
    dy = torch.minimum(y, height - 1 - y)[:, None]
    dx = torch.minimum(x, width - 1 - x)[None, :]
    return (1 - torch.minimum(dy, dx) / feather).clamp(min=0)


def sr_blend_method(zoom: int, factor: int = 4) -> str:
    """The blending of a ×``factor`` SR stage at zoom p: its invented octaves in p-bands."""
    p = check_zoom(zoom)
    bands = max(1, min(max(SR_BLEND.values()), -(-(factor.bit_length() - 1) // (p.bit_length() - 1))))
    return f"laplacian-sr{bands}"


def blend_coarse(images: torch.Tensor, zoom: int, detail_bands: int, footprints=None,
                 loop: bool = False) -> torch.Tensor:
    """``blend`` for all but the finest ``detail_bands`` Laplacian bands: those each layer keeps
    from its own image (they are not averaged with the coarser levels' crops).

    For stacks whose fine bands were sampled jointly already (a joint super-resolution stage),
    where only rounding-level disagreement is left: nothing of that detail is averaged away,
    and Π_image afterwards still makes the rendered images exactly consistent.
    """
    layers = blend(images, zoom, footprints=footprints, loop=loop)
    if detail_bands <= 0:
        return layers
    return layers - _detail(layers, zoom, detail_bands) + _detail(images, zoom, detail_bands)


def _detail(x: torch.Tensor, zoom: int, bands: int) -> torch.Tensor:
    """The finest ``bands`` Laplacian bands of x, collapsed: x minus its EXPANDed remainder."""
    coarse = laplacian_pyramid(x, zoom, bands)[-1]
    for _ in range(bands):
        coarse = upsample(coarse, (coarse.shape[-2] * zoom, coarse.shape[-1] * zoom))
    return x - coarse


def consolidate(images: torch.Tensor, zoom: int, method: str = "laplacian", footprints=None,
                loop: bool = False) -> torch.Tensor:
    """Π_image(Blending(images)): the zoom-consistent images closest to the observations."""
    return render_image(blend(images, zoom, method, footprints=footprints, loop=loop), zoom,
                        footprints, loop)


__all__ = [
    "BLEND_METHODS", "SR_BLEND", "SR_FEATHER", "SR_RIM_WEIGHT", "blend", "blend_coarse", "sr_blend_method", "centre_box", "check_size", "check_zoom", "collapse_pyramid",
    "consolidate", "crop_centre", "cycle_depth", "observe", "downsample", "downsample_weights", "laplacian_pyramid",
    "max_observation_depth", "noise_gain", "pyramid_depth", "render_image", "render_noise",
    "upsample",
]
