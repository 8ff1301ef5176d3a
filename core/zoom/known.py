"""Known levels: levels of a zoom stack whose image is given (a photo, the levels of a stack
being extended, every level but the one being regenerated).

Pure functions over batched tensors, used by the sampler (docs/sampler.md, "Known levels"):

* ``check_known`` — validate and normalise ``{level: image}``; two known images must agree
  (centre of the coarser = D_p^d of the finer), else a one-line InvalidInputError.
* ``level_residuals`` — the paper's photo loss (Sec. 4.4 eq. 1) generalised to an image ξ at
  level k: a finer level i > k must show crop(ξ, p^(i−k)) through D^(i−k), a coarser level
  i < k must show D^(k−i)(ξ) on its centre crop, level k must show ξ.
* ``impose_known`` — the consistent images closest to the given ones that show every known
  image exactly (the override of x̂ and of the blended stack).
* ``make_consistent`` — make separately encoded known images agree exactly (fine to coarse).

Footprints deeper than ``max_observation_depth`` are not pixel-aligned: they carry no exact
constraint (check, make_consistent, impose_known; as in the blending), but the guidance loss
samples them by area down to one pixel (``level_residuals``).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import InvalidInputError
from .footprint_area import footprint_rect, guidance_depth, sample_area
from .geometry import centre_box, check_zoom, max_observation_depth
from .zoom_stack import crop_centre, downsample, downsample_weights

#: Largest max-abs disagreement tolerated between two known images (sampler units).
AGREEMENT_TOLERANCE = 0.02


def check_known(known: Mapping[int, torch.Tensor] | None, num_levels: int,
                shape: tuple[int, int, int], zoom: int,
                tolerance: float = AGREEMENT_TOLERANCE) -> dict[int, torch.Tensor]:
    """``{level: (C, H, W)}`` with levels in [0, N) (negative levels count from the finest).

    Raises InvalidInputError (one line) for a level out of range, a wrong shape, NaN, or two
    known images that disagree by more than ``tolerance`` (max-abs) on their common footprint.
    """
    if not known:
        return {}
    p = check_zoom(zoom)
    out: dict[int, torch.Tensor] = {}
    for level, image in dict(known).items():
        if isinstance(level, bool) or not isinstance(level, int):
            raise InvalidInputError(f"known level {level!r} is not a whole number")
        k = level + num_levels if level < 0 else level
        if not 0 <= k < num_levels:
            raise InvalidInputError(
                f"known level {level} is out of range: the stack has levels 0..{num_levels - 1}")
        if k in out:
            raise InvalidInputError(f"level {k} is given twice among the known levels")
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != tuple(shape):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise InvalidInputError(f"known image of level {k} must have shape {tuple(shape)}, "
                                    f"got {got}")
        if not torch.isfinite(image).all():
            raise InvalidInputError(f"known image of level {k} holds NaN or inf")
        out[k] = image
    depth = max_observation_depth(shape[1], shape[2], p)
    levels = sorted(out)
    for a, k1 in enumerate(levels):
        for k2 in levels[a + 1:]:
            d = k2 - k1
            if d > depth:
                continue
            diff = float((crop_centre(out[k1].double(), p**d)
                          - downsample(out[k2].double(), p, times=d)).abs().max())
            if diff > tolerance:
                raise InvalidInputError(
                    f"the known images of levels {k1} and {k2} disagree: the centre of level "
                    f"{k1} differs from level {k2} zoomed out by up to {diff:.3g} "
                    f"(tolerance {tolerance:g})")
    return dict(sorted(out.items()))


def make_consistent(known: Mapping[int, torch.Tensor], zoom: int) -> dict[int, torch.Tensor]:
    """Replace each known image's centre by D_p^d of the next finer known image, finest first.

    Known images encoded one by one (a VAE is not zoom-equivariant) disagree slightly; this
    makes them agree exactly while keeping every finest-known pixel and every pixel outside the
    finer footprints.
    """
    p = check_zoom(zoom)
    out = {k: v.clone() for k, v in known.items()}
    levels = sorted(out)
    for k, finer in zip(reversed(levels[:-1]), reversed(levels[1:])):
        d = finer - k
        _, h, w = out[k].shape
        if d > max_observation_depth(h, w, p):
            continue
        top, left, ch, cw = centre_box(h, w, p**d)
        out[k][:, top:top + ch, left:left + cw] = downsample(out[finer], p, times=d)
    return out


def level_residuals(x: torch.Tensor, levels: torch.Tensor, image: torch.Tensor, at: int,
                    zoom: int) -> list[torch.Tensor | None]:
    """Per row of ``x (B, C, H, W)`` (showing ``levels``), the residual against ``image`` at
    level ``at`` — the generalised photo loss's terms — or None where the footprint is smaller
    than one pixel (``guidance_depth``).

    Down to ``max_observation_depth`` the footprint is a crop; deeper it straddles pixels and is
    sampled by area (``footprint_area.sample_area``): at 64 px and p = 4 that 1-pixel view is
    the only direct evidence the outermost level has of a known level 3 below it.
    """
    p = check_zoom(zoom)
    height, width = image.shape[-2:]
    aligned = max_observation_depth(height, width, p)
    deepest = guidance_depth(height, width, p)
    image = image.to(x)
    out: list[torch.Tensor | None] = []
    for row, lv in enumerate(levels.tolist()):  # each depth needs its own number of reductions
        d = int(lv) - at
        if abs(d) > deepest:
            out.append(None)
        elif d == 0:
            out.append(x[row] - image)
        elif d > 0:   # finer: D^d of this level = the known image's footprint of depth d
            out.append(downsample(x[row], p, times=d) - _footprint(image, p, d, aligned))
        else:         # coarser: this level's footprint of depth -d = D^-d of the known image
            out.append(_footprint(x[row], p, -d, aligned) - downsample(image, p, times=-d))
    return out


def _footprint(x: torch.Tensor, p: int, depth: int, aligned: int) -> torch.Tensor:
    """What ``x`` shows of the level ``depth`` below it, at that level's D_p^depth resolution:
    a crop while pixel-aligned, else an area-weighted sample of the straddling region."""
    if depth <= aligned:
        return crop_centre(x, p**depth)
    rect = footprint_rect(x.shape[-2], x.shape[-1], p, depth)
    return sample_area(x, rect, (x.shape[-2] // p**depth, x.shape[-1] // p**depth))


def known_loss(x: torch.Tensor, levels: torch.Tensor, known: Mapping[int, torch.Tensor],
               zoom: int) -> torch.Tensor:
    """Σ over known images of the generalised photo loss, per row: ``(B,)`` squared norms."""
    total = x.new_zeros(x.shape[0])
    for at, image in known.items():
        terms = level_residuals(x, levels, image, at, zoom)
        total = total + torch.stack([(r**2).sum() if r is not None else x.new_zeros(())
                                     for r in terms])
    return total


def reconstruction_gradient(x0_hat: torch.Tensor, z_in: torch.Tensor, levels: torch.Tensor,
                            known: Mapping[int, torch.Tensor], zoom: int) -> torch.Tensor:
    """DPS-style step direction ∇_{z_t} ‖r_i‖² / ‖r_i‖ per level (Chung et al. 2023).

    ``x0_hat`` must have been computed from ``z_in`` (requires_grad) with autograd on: the
    gradient runs back through the denoiser. The denoiser treats levels independently, so the
    gradient of the summed loss w.r.t. row i is that of level i's own loss; each row is then
    normalised by its own residual norm. Rows without a constraint get zero.
    """
    loss = known_loss(x0_hat, levels, known, zoom)
    (grad,) = torch.autograd.grad(loss.sum(), z_in)
    norm = loss.detach().clamp(min=0).sqrt()
    scale = torch.where(norm > 0, 1 / norm.clamp(min=1e-12), torch.zeros_like(norm))
    return grad * scale.view(-1, *([1] * (grad.dim() - 1))).to(grad.dtype)


def _block_upsample(r: torch.Tensor, p: int) -> torch.Tensor:
    """U with D_p(U(r)) = r exactly (block-constant; D_p's taps sum to one)."""
    return r.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1)


def _bounded_correction(x: torch.Tensor, target: torch.Tensor, p: int, lo: float,
                        hi: float) -> torch.Tensor:
    """x with D_p(x) = target exactly and every pixel kept in [lo, hi]: each p×p block moves
    towards hi (or lo) by the fraction that shifts its D_p-weighted mean to the target.

    D_p is a convex combination per block, so any target in [lo, hi] is reached this way.
    """
    w = downsample_weights(p, x.device, x.dtype)
    *lead, h, wd = x.shape
    blocks = x.reshape(*lead, h // p, p, wd // p, p)
    r = (target.clamp(lo, hi) - downsample(x, p))[..., :, None, :, None]
    up = torch.einsum("...ipjq,p,q->...ij", hi - blocks, w, w)[..., :, None, :, None]
    down = torch.einsum("...ipjq,p,q->...ij", blocks - lo, w, w)[..., :, None, :, None]
    frac_up = torch.where(up > 0, r / up.clamp(min=1e-12), torch.zeros_like(r)).clamp(0, 1)
    frac_down = torch.where(down > 0, -r / down.clamp(min=1e-12), torch.zeros_like(r)).clamp(0, 1)
    moved = torch.where(r > 0, blocks + frac_up * (hi - blocks), blocks - frac_down * (blocks - lo))
    return moved.reshape(x.shape)


def _paste_centre(x: torch.Tensor, centre: torch.Tensor, p: int) -> torch.Tensor:
    top, left, h, w = centre_box(x.shape[-2], x.shape[-1], p)
    out = x.clone()
    out[..., top:top + h, left:left + w] = centre
    return out


def impose_known(images: torch.Tensor, known: Mapping[int, torch.Tensor], zoom: int,
                 iterations: int = 2,
                 bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Zoom-consistent images ``(N, C, H, W)`` that show every known image exactly.

    Known levels are set; every other level is corrected as little as the constraints allow:
    fine to coarse its centre becomes D_p of the next finer level (Π_image), coarse to fine it
    gets the block-constant correction that makes D_p of it equal the coarser level's centre.
    One pass is exact for a single known level, a contiguous run of them, or one unknown level
    between two known ones (regenerate); other gaps converge over ``iterations`` passes.
    ``bounds`` (pixels: (0, 1)): keep every corrected pixel in range, still exactly (clamping
    afterwards would undo the agreement with the known levels).
    """
    if not known:
        return images
    p = check_zoom(zoom)
    n = images.shape[0]
    rows = [images[i] for i in range(n)]
    for k, image in known.items():
        rows[k] = image.to(images)
    lo = min(known)
    for _ in range(iterations):
        for j in range(n - 2, -1, -1):      # fine -> coarse: the centre comes from the finer level
            if j not in known:
                rows[j] = _paste_centre(rows[j], downsample(rows[j + 1], p), p)
        for j in range(lo + 1, n):          # coarse -> fine: D_p(level) = the coarser centre
            if j not in known:
                target = crop_centre(rows[j - 1], p)
                if bounds is not None:
                    rows[j] = _bounded_correction(rows[j], target, p, *bounds)
                else:
                    rows[j] = rows[j] + _block_upsample(target - downsample(rows[j], p), p)
    return torch.stack(rows)


def needs_reconstruction(known_levels, num_levels: int) -> bool:
    """True when some unknown level is coarser than a known one (zooming out of it): the photo
    loss on x̂ then fails (docs/sampler.md) and the gradient through the denoiser is needed."""
    levels = {k % num_levels for k in known_levels}
    return bool(levels) and any(i not in levels for i in range(max(levels)))


__all__ = [
    "AGREEMENT_TOLERANCE", "check_known", "impose_known", "known_loss", "level_residuals",
    "make_consistent", "needs_reconstruction", "reconstruction_gradient",
]
