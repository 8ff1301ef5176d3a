"""Known levels: levels of a zoom stack whose image is given (a photo, the levels of a stack
being extended, every level but the one being regenerated).

Pure functions over batched tensors, used by the sampler (docs/sampler.md, "Known levels"):

* ``check_known`` — validate and normalise ``{level: image}``; two known images must agree
  (centre of the coarser = D_p^d of the finer), else a one-line InvalidInputError.
* ``level_residuals`` — the paper's photo loss (Sec. 4.4 eq. 1) generalised to an image ξ at
  level k: a finer level i > k must show crop(ξ, p^(i−k)) through D^(i−k), a coarser level
  i < k must show D^(k−i)(ξ) on its centre crop, level k must show ξ.
* ``chain_residuals`` — an unknown level coarser than a known one against the next finer
  level's consolidated estimate (the reconstruction guidance's chain terms;
  ``guidance_loss`` = the photo-loss terms + these).
* ``impose_known`` — the consistent images closest to the given ones that show every known
  image exactly (the override of x̂ and of the blended stack).
* ``make_consistent`` — make separately encoded known images agree exactly (fine to coarse).

Every function takes the stack's footprints (None = centred) and ``loop``. Footprints that are
not pixel-aligned at their depth (``observation_box``; centred: deeper than
``max_observation_depth``) carry no exact constraint (check, make_consistent, impose_known;
as in the blending), but the guidance loss samples them by area down to one pixel
(``level_residuals``).
"""

from __future__ import annotations

from typing import Mapping

import torch

from ..errors import InvalidInputError
from .footprint_area import footprint_rect, guidance_depth, sample_area
from .geometry import Footprint, check_footprints, check_zoom, observation_box
from .zoom_stack import downsample, downsample_weights, render_image

#: Largest max-abs disagreement tolerated between two known images (sampler units).
AGREEMENT_TOLERANCE = 0.02


def check_known(known: Mapping[int, torch.Tensor] | None, num_levels: int,
                shape: tuple[int, int, int], zoom: int,
                tolerance: float = AGREEMENT_TOLERANCE, footprints=None,
                loop: bool = False) -> dict[int, torch.Tensor]:
    """``{level: (C, H, W)}`` with levels in [0, N) (negative levels count from the finest).

    Agreement is checked where the finer known level's region in the coarser one is
    pixel-aligned (``observation_box``), coarser = lower index (also on a loop: round the
    cycle the last known level's region of the first is its miniature, which
    ``impose_known`` renders).

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
    fps = check_footprints(footprints, shape[1], shape[2], p, num_levels, loop)
    levels = sorted(out)
    for a, k1 in enumerate(levels):
        for k2 in levels[a + 1:]:
            d = k2 - k1
            box = observation_box(fps, shape[1], shape[2], p, k1, d, loop)
            if box is None:
                continue
            diff = float((_crop(out[k1].double(), box)
                          - downsample(out[k2].double(), p, times=d)).abs().max())
            if diff > tolerance:
                raise InvalidInputError(
                    f"the known images of levels {k1} and {k2} disagree: the footprint of "
                    f"level {k2} in level {k1} differs from level {k2} zoomed out by up to {diff:.3g} "
                    f"(tolerance {tolerance:g})")
    return dict(sorted(out.items()))


def make_consistent(known: Mapping[int, torch.Tensor], zoom: int, footprints=None,
                    loop: bool = False) -> dict[int, torch.Tensor]:
    """Replace each known image's footprint of the next finer known image by D_p^d of it,
    finest first (footprints of the stack's N levels; None = centred: then any N).

    Known images encoded one by one (a VAE is not zoom-equivariant) disagree slightly; this
    makes them agree exactly while keeping every finest-known pixel and every pixel outside the
    finer footprints.
    """
    p = check_zoom(zoom)
    out = {k: v.clone() for k, v in known.items()}
    levels = sorted(out)
    if not levels:
        return out
    _, h, w = out[levels[0]].shape
    fps = _footprints_for(footprints, h, w, p, levels[-1] + 1, loop)
    for k, finer in zip(reversed(levels[:-1]), reversed(levels[1:])):
        box = observation_box(fps, h, w, p, k, finer - k, loop)
        if box is None:
            continue
        top, left, ch, cw = box
        out[k][:, top:top + ch, left:left + cw] = downsample(out[finer], p, times=finer - k)
    return out


def _footprints_for(footprints, height: int, width: int, p: int, min_levels: int,
                    loop: bool) -> list[Footprint]:
    """Footprints as given (validated for their own count), or centred for ``min_levels``."""
    if footprints is None:
        return check_footprints(None, height, width, p, max(min_levels, 1), False)
    n = len(footprints) if loop else len(footprints) + 1
    return check_footprints(footprints, height, width, p, n, loop)


def _crop(x: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    top, left, h, w = box
    return x[..., top:top + h, left:left + w]


def level_residuals(x: torch.Tensor, levels: torch.Tensor, image: torch.Tensor, at: int,
                    zoom: int, footprints=None, loop: bool = False) -> list[torch.Tensor | None]:
    """Per row of ``x (B, C, H, W)`` (showing ``levels``), the residual against ``image`` at
    level ``at`` — the generalised photo loss's terms — or None where the footprint is smaller
    than one pixel (``guidance_depth``).

    Where the footprint is a whole-pixel box it is cropped; deeper it straddles pixels and is
    sampled by area (``footprint_area``): at 64 px and p = 4 that 1-pixel view is the only
    direct evidence the outermost level has of a known level 3 below it.

    ``footprints``: the stack's (N - 1, or N on a loop; None = centred). On a loop a level is
    both finer and coarser than ``at`` round the cycle: the relation of least depth counts.
    """
    p = check_zoom(zoom)
    height, width = image.shape[-2:]
    deepest = guidance_depth(height, width, p)
    lvs = [int(lv) for lv in levels.tolist()]
    fps = _footprints_for(footprints, height, width, p, max(lvs + [at]) + 1, loop)
    image = image.to(x)
    out: list[torch.Tensor | None] = []
    for row, lv in enumerate(lvs):  # each depth needs its own number of reductions
        if lv == at:
            out.append(x[row] - image)
            continue
        if loop:
            n = len(fps)
            relations = sorted([(lv - at) % n, -((at - lv) % n)], key=abs)
        else:
            relations = [lv - at]
        out.append(None)
        for d in relations:
            if d > 0 and (box := observation_box(fps, height, width, p, at, d, loop)):
                # finer: D^d of this level = its footprint region in the known image
                out[-1] = downsample(x[row], p, times=d) - _crop(image, box)
                break
            if d < 0 and (box := observation_box(fps, height, width, p, lv, -d, loop)):
                # coarser: the known level's region in this level = D^-d of the known image
                out[-1] = _crop(x[row], box) - downsample(image, p, times=-d)
                break
            if 0 < abs(d) <= deepest:  # not whole pixels: sampled by area, down to one pixel
                if d > 0:
                    out[-1] = downsample(x[row], p, times=d) - _area(image, p, d, fps, at)
                else:
                    out[-1] = _area(x[row], p, -d, fps, lv) - downsample(image, p, times=-d)
                break
    return out


def _area(x: torch.Tensor, p: int, depth: int, footprints, level: int) -> torch.Tensor:
    """What ``x`` (level ``level``) shows of the level ``depth`` below it, at that level's
    D_p^depth resolution, where the region straddles pixels: an area-weighted sample."""
    rect = footprint_rect(x.shape[-2], x.shape[-1], p, depth, footprints, level)
    return sample_area(x, rect, (x.shape[-2] // p**depth, x.shape[-1] // p**depth))


def known_loss(x: torch.Tensor, levels: torch.Tensor, known: Mapping[int, torch.Tensor],
               zoom: int, footprints=None, loop: bool = False) -> torch.Tensor:
    """Σ over known images of the generalised photo loss, per row: ``(B,)`` squared norms."""
    total = x.new_zeros(x.shape[0])
    for at, image in known.items():
        terms = level_residuals(x, levels, image, at, zoom, footprints, loop)
        total = total + torch.stack([(r**2).sum() if r is not None else x.new_zeros(())
                                     for r in terms])
    return total


def chain_residuals(x: torch.Tensor, levels: torch.Tensor, known: Mapping[int, torch.Tensor],
                    zoom: int, footprints=None, loop: bool = False,
                    stack: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Per row of ``x (B, C, H, W)`` (showing ``levels``), the residual of an unknown level
    coarser than a known one against the next finer level's current consolidated estimate:
    crop(x_i, footprint of i+1) − D_p(x̃_{i+1}), x̃ = Π_image of this step's x̂ with the known
    images in place (detached: each centre shows the finer levels and the known images).

    The known-level terms (``level_residuals``) see a known level only directly; a coarse level
    far above it then sees it through a footprint of a few pixels (64 px, p = 4, 3 levels down:
    one straddling pixel) and commits to its scene before that weak evidence counts. The
    intermediate levels have by then committed to the known level's scene through their
    aligned footprints; this term hands that on one level at a time, through the whole
    aligned footprint of the next level (docs/sampler.md, "Known levels").

    ``stack`` (N, C, H, W): this step's x̂ of every level finer than the batch (micro-batches
    run finest first; x̃_{i+1} reads levels i+1.. only); None: ``x`` is the whole stack. None
    per row: known rows, rows with no known level finer than them, rows whose next level is
    known (the known-level term covers it), and on a loop (where x̃ reads every level round
    the cycle) any batch that is not the whole stack.
    """
    lvs = [int(lv) for lv in levels.tolist()]
    if stack is None:
        if lvs != list(range(x.shape[0])):
            return [None] * len(lvs)
        stack = x.detach()
    elif loop:
        return [None] * len(lvs)
    else:
        stack = stack.detach().clone().to(x)
        stack[lvs] = x.detach()
    n = stack.shape[0]
    if not known or max(known) >= n:
        return [None] * len(lvs)
    p = check_zoom(zoom)
    height, width = x.shape[-2:]
    fps = check_footprints(footprints, height, width, p, n, loop)
    shown = stack.clone()
    for k, image in known.items():
        shown[k] = image.to(shown)
    target = render_image(shown, p, fps, loop)
    deepest = max(known)
    out: list[torch.Tensor | None] = []
    for row, lv in enumerate(lvs):
        finer = (lv + 1) % n if loop else lv + 1
        if lv in known or finer in known or (not loop and (lv >= deepest or finer >= n)):
            out.append(None)
            continue
        box = observation_box(fps, height, width, p, lv, 1, loop)  # depth 1: always whole pixels
        out.append(_crop(x[row], box) - downsample(target[finer], p))
    return out


def guidance_loss(x: torch.Tensor, levels: torch.Tensor, known: Mapping[int, torch.Tensor],
                  zoom: int, footprints=None, loop: bool = False,
                  stack: torch.Tensor | None = None) -> torch.Tensor:
    """The reconstruction guidance's loss per row, ``(B,)``: the known-level terms
    (``known_loss``) plus the chain terms (``chain_residuals``)."""
    chain = chain_residuals(x, levels, known, zoom, footprints, loop, stack)
    return known_loss(x, levels, known, zoom, footprints, loop) + torch.stack(
        [(r**2).sum() if r is not None else x.new_zeros(()) for r in chain])


def reconstruction_gradient(x0_hat: torch.Tensor, z_in: torch.Tensor, levels: torch.Tensor,
                            known: Mapping[int, torch.Tensor], zoom: int, footprints=None,
                            loop: bool = False, stack: torch.Tensor | None = None) -> torch.Tensor:
    """DPS-style step direction ∇_{z_t} ‖r_i‖² / ‖r_i‖ per level (Chung et al. 2023), r_i the
    known-level and chain residuals of level i (``guidance_loss``).

    ``x0_hat`` must have been computed from ``z_in`` (requires_grad) with autograd on: the
    gradient runs back through the denoiser. The denoiser treats levels independently (and
    the chain terms' targets are detached), so the gradient of the summed loss w.r.t. row i is
    that of level i's own loss; each row is then normalised by its own residual norm. Rows
    without a constraint get zero. ``stack``: see ``chain_residuals`` (micro-batches).
    """
    loss = guidance_loss(x0_hat, levels, known, zoom, footprints, loop, stack)
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


def _paste(x: torch.Tensor, finer: torch.Tensor, footprint: Footprint) -> torch.Tensor:
    left, top = footprint
    out = x.clone()
    out[..., top:top + finer.shape[-2], left:left + finer.shape[-1]] = finer
    return out


def _correct(x: torch.Tensor, target: torch.Tensor, p: int,
             bounds: tuple[float, float] | None) -> torch.Tensor:
    """x corrected so that D_p(x) = target exactly (block-constant, or bounded)."""
    if bounds is not None:
        return _bounded_correction(x, target, p, *bounds)
    return x + _block_upsample(target - downsample(x, p), p)


def impose_known(images: torch.Tensor, known: Mapping[int, torch.Tensor], zoom: int,
                 iterations: int = 2,
                 bounds: tuple[float, float] | None = None, footprints=None,
                 loop: bool = False) -> torch.Tensor:
    """Zoom-consistent images ``(N, C, H, W)`` that show every known image exactly.

    Known levels are set; every other level is corrected as little as the constraints allow:
    fine to coarse its footprint becomes D_p of the next finer level (Π_image), coarse to fine
    it gets the block-constant correction that makes D_p of it equal the coarser level's
    footprint. One pass is exact for a single known level, a contiguous run of them, or one
    unknown level between two known ones (regenerate); other gaps converge over
    ``iterations`` passes. ``bounds`` (pixels: (0, 1)): keep every corrected pixel in range,
    still exactly (clamping afterwards would undo the agreement with the known levels).

    ``loop``: coarse-to-fine corrections round the cycle from each known level, then Π_image
    on the cycle (exactly consistent). A known level then shows its image exactly except
    where the cycle brings it back: its own miniature, the H/p^N region of itself N levels
    down (or, with several known levels, the next known level's region round the cycle).
    """
    if not known:
        return images
    p = check_zoom(zoom)
    n, _, height, width = images.shape
    fps = check_footprints(footprints, height, width, p, n, loop)
    rows = [images[i] for i in range(n)]
    for k, image in known.items():
        rows[k] = image.to(images)
    if loop:
        start = min(known)
        for _ in range(iterations):
            for j in range(start + 1, start + n):  # coarse -> fine round the cycle
                i = j % n
                if i not in known:
                    prev = (j - 1) % n
                    rows[i] = _correct(rows[i], _crop(rows[prev], _box(fps[prev], p, rows[i])),
                                       p, bounds)
        return render_image(torch.stack(rows), p, fps, loop=True)
    lo = min(known)
    for _ in range(iterations):
        for j in range(n - 2, -1, -1):      # fine -> coarse: the footprint shows the finer level
            if j not in known:
                rows[j] = _paste(rows[j], downsample(rows[j + 1], p), fps[j])
        for j in range(lo + 1, n):          # coarse -> fine: D_p(level) = the coarser footprint
            if j not in known:
                rows[j] = _correct(rows[j], _crop(rows[j - 1], _box(fps[j - 1], p, rows[j])),
                                   p, bounds)
    return torch.stack(rows)


def _box(footprint: Footprint, p: int, like: torch.Tensor) -> tuple[int, int, int, int]:
    left, top = footprint
    return top, left, like.shape[-2] // p, like.shape[-1] // p


def needs_reconstruction(known_levels, num_levels: int, loop: bool = False) -> bool:
    """True when some unknown level is coarser than a known one (zooming out of it): the photo
    loss on x̂ then fails (docs/sampler.md) and the gradient through the denoiser is needed.
    On a loop every level is coarser than the next one round the cycle: any unknown level."""
    levels = {k % num_levels for k in known_levels}
    if loop:
        return bool(levels) and len(levels) < num_levels
    return bool(levels) and any(i not in levels for i in range(max(levels)))


__all__ = [
    "AGREEMENT_TOLERANCE", "chain_residuals", "check_known", "guidance_loss", "impose_known",
    "known_loss", "level_residuals", "make_consistent", "needs_reconstruction",
    "reconstruction_gradient",
]
