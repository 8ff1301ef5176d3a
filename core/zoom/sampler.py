"""Multi-scale joint sampling (Alg. 2 of "Generative Powers of Ten"), model-agnostic.

One step, for all N levels at once (Fig. 4):
    x̂_i   = denoiser(z_i, t, i)                      clean-image estimate per level
    x̂     <- photo_guidance(x̂)                       Sec. 4.4, only with a photo
    L_t   = Blending(x̂)                              Alg. 2 line 12
    x_i   = Π_image(L_t; i)                          Alg. 2 line 5
    z_i   <- update(z_i, x_i, Π_noise(E; i))         Alg. 2 lines 3, 6, 7

Alg. 2 writes the loop rotated (update first, starting from L_T = 0); this is the same sequence
of operations without the initial no-op update. The denoiser returns x0 estimates; any
guidance or parameterisation (epsilon, v) is the model backend's business.

Structure (k-diffusion / diffusers style: short functions, one concern each):
    check_inputs          every argument check, one place
    SamplingRun           what stays fixed for one run (denoiser, private scheduler, sizes, RNG)
    estimate              x̂ for some levels: denoiser + checks + photo guidance   (x̂ hook)
                          + known levels: their x̂, and the reconstruction-guidance direction
    consolidate           L = Blending(x̂), x = Π_image(L), known levels imposed   (layer hook)
    MODE_STEPS[mode]      step_joint / step_iterative / step_independent -> (layers, x)
    update_rule(sched)    UPDATE_RULES table by scheduler class -> update_ddpm (DDPM),
                          update_renoise (LCM), update_flow (rectified flow: SD3, FLUX),
                          update_solver (any other scheduler)
    run_steps             the loop: z_in -> mode step -> update rule -> callback
Constraints that act on x̂ or on the layers belong in ``estimate`` / ``consolidate``; ones
that act on z_{t'} go after the update in ``run_steps``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

import torch

from ..errors import InvalidInputError, ModelOutputError, raise_if_cancelled
from .geometry import Footprint, check_footprints, check_size, check_zoom
from .known import (check_known, impose_known, level_residuals, needs_reconstruction,
                    reconstruction_gradient)
from .stack_operators import StackOperators, stack_operators, supported
from .zoom_stack import BLEND_METHODS, blend, render_image, render_noise

#: How known levels steer the unknown ones (docs/sampler.md, "Known levels").
KNOWN_GUIDANCE = ("auto", "reconstruction", "photo")
#: ζ of the reconstruction-guidance step (measured: docs/sampler.md, "Known levels").
KNOWN_STEP = 4.0
#: Per-step blend / Π_image / Π_noise as precomputed sparse operators (``stack_operators``)
#: where the device has sparse products; False: the reference functions (same results to
#: float rounding, a few kernels per level instead of a few per step).
USE_STACK_OPERATORS = True
#: Also ``torch.compile`` the consolidation on CUDA (P10_COMPILE_STACK=1; falls back to eager).
COMPILE_STACK_OPERATORS = os.environ.get("P10_COMPILE_STACK", "") == "1"

class Denoiser(Protocol):
    def __call__(self, z_t: torch.Tensor, t: int, levels: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SampleResult:
    layers: torch.Tensor  # (N, C, H, W) the zoom stack
    images: torch.Tensor  # (N, C, H, W) what each level shows


# ------------------------------------------------------------------------ building blocks
def ddpm_update(z_t: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                alpha_bar_t: torch.Tensor, alpha_bar_prev: torch.Tensor) -> torch.Tensor:
    """DDPM ancestral step (Ho et al. eq. 6-7) from z_t to z_prev with a given clean estimate.

    z_prev = c_x · x0 + c_z · z_t + σ̃ · noise, with β = 1 - ᾱ_t/ᾱ_prev,
    c_x = √ᾱ_prev β / (1-ᾱ_t), c_z = √(1-β) (1-ᾱ_prev) / (1-ᾱ_t), σ̃² = (1-ᾱ_prev) β / (1-ᾱ_t).
    ``noise`` is the zoom-consistent Π_noise(E) in Alg. 2, not the scheduler's own draw.
    """
    beta = 1 - alpha_bar_t / alpha_bar_prev
    c_x = alpha_bar_prev.sqrt() * beta / (1 - alpha_bar_t)
    c_z = (1 - beta).sqrt() * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    var = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta
    return c_x * x0 + c_z * z_t + var.clamp(min=0).sqrt() * noise


def photo_guidance(x0_hat: torch.Tensor, levels: torch.Tensor, photo: torch.Tensor, zoom: int,
                   steps: int = 5, lr: float = 0.1, photo_level: int = 0, footprints=None,
                   loop: bool = False) -> torch.Tensor:
    """Sec. 4.4 eq. (1): Adam steps on x̂ minimising Σ_i ‖D_i(x̂_i) − M_i ⊙ ξ‖².

    Generalised to a photo ξ at level k = ``photo_level`` (``core.known.level_residuals``):
    finer levels match crops of ξ through D^(i−k), coarser ones match D^(k−i)(ξ) on their
    footprint, level k matches ξ (k = 0 is the paper's loss). Compared on the footprint region,
    which is the same as comparing the zero-padded images. Footprints that are not
    pixel-aligned at their depth straddle pixels and are sampled by area, down to one pixel.
    The loss is a sum of
    per-level terms and Adam is elementwise, so optimising a subset of levels gives the same
    result as optimising all of them.
    """
    check_zoom(zoom)
    with torch.enable_grad():
        x = x0_hat.detach().clone().requires_grad_(True)
        def residuals():
            return level_residuals(x, levels, photo, photo_level, zoom, footprints, loop)

        if all(r is None for r in residuals()):
            return x0_hat
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = sum((r**2).sum() for r in residuals() if r is not None)
            loss.backward()
            opt.step()
    return x.detach()


def x0_to_epsilon(z_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor,
                  sigma: torch.Tensor) -> torch.Tensor:
    """ε̂ = (z_t − α_t x̂0) / σ_t: the noise prediction implied by the consolidated x0."""
    return (z_t - alpha * x0) / sigma


# --------------------------------------------------------------------- scheduler adapters
#: Spacing every scheduler the sampler runs gets, whatever the model's config says: the first
#: timestep is T-1 and the last update lands on t = 0 at any step count. SD/SDXL/IF configs
#: say "leading" (+ steps_offset), which at 256 steps starts at t = 766 (ᾱ = 0.05, not ≈ 0):
#: sampling would start from an image that is already a quarter signal, and miss it.
SPACING_OVERRIDES = {"timestep_spacing": "trailing", "steps_offset": 0}


def _private_scheduler(scheduler):
    """A copy of the user's scheduler that takes ε̂, never clips x0 (clipping is pointwise
    and would break zoom consistency; the estimate is already consolidated) and spaces its
    timesteps from T (``SPACING_OVERRIDES``)."""
    wanted = {"prediction_type": "epsilon", "clip_sample": False, "thresholding": False,
              **SPACING_OVERRIDES}
    overrides = {k: v for k, v in wanted.items() if k in scheduler.config}
    return type(scheduler).from_config(scheduler.config, **overrides)


def _vp_coefficients(scheduler, step_index: int, t,
                     acc: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, σ_t) of z_t = α_t x0 + σ_t ε at this step, in the variance-preserving form.

    Sigma-based schedulers (Euler, DPM-Solver) store σ_k = σ_t/α_t; the others index ᾱ by t.
    """
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > step_index:
        s = sigmas[step_index].to(acc)
        alpha = 1 / (1 + s**2).sqrt()
        return alpha, s * alpha
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(acc)
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def _checked(x0: torch.Tensor, like: torch.Tensor, t: int) -> torch.Tensor:
    if not isinstance(x0, torch.Tensor) or x0.shape != like.shape:
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ModelOutputError(
            f"denoiser returned shape {got} for input {tuple(like.shape)} at t={t}")
    if not torch.isfinite(x0).all():
        raise ModelOutputError(
            f"denoiser returned NaN or inf at t={t} (try float32 or a different scheduler)")
    return x0.to(like.dtype)


# ------------------------------------------------------------------------- one run's state
@dataclass
class SamplingRun:
    """Everything fixed for one call of ``sample_zoom_stack`` (what k-diffusion passes as
    arguments to every sampling function), plus the private scheduler it steps."""

    denoiser: Denoiser
    sched: object                 # private, configured copy of the user's scheduler
    num_levels: int
    zoom: int
    shape: tuple[int, int, int]   # (C, H, W)
    generator: torch.Generator | None
    device: torch.device
    dtype: torch.dtype
    acc: torch.dtype              # update coefficients (float64; float32 on MPS)
    mode: str = "joint"
    blending: str = "laplacian"
    shared_noise: bool = True
    photo: torch.Tensor | None = None
    cancel: threading.Event | Callable[[], bool] | None = None
    photo_level: int = 0
    known: dict[int, torch.Tensor] = field(default_factory=dict)  # level -> image it must show
    reconstruct: bool = False     # known levels guide z through the denoiser's gradient
    guidance_dir: torch.Tensor | None = None  # this step's ∇_{z_t}‖r‖²/‖r‖ per level
    footprints: list[Footprint] | None = None  # (left, top) of level i+1 in level i, validated
    loop: bool = False            # a cyclic stack: level 0 is the finer level of level N-1
    ops: StackOperators | None = None  # this configuration's operators (None: reference code)
    impose: Callable[[torch.Tensor], torch.Tensor] | None = None  # known levels, as an operator

    @property
    def coupled(self) -> bool:
        return self.mode != "independent"

    @property
    def levels(self) -> torch.Tensor:
        return torch.arange(self.num_levels, device=self.device)

    def draw_noise(self, consistent: bool) -> torch.Tensor:
        """E ~ N(0, I) per level, rendered with Π_noise when ``consistent`` (Alg. 2 lines 3, 6)."""
        c, h, w = self.shape
        g = self.generator
        e = torch.randn((self.num_levels, c, h, w), generator=g,
                        device=g.device if g is not None else self.device,
                        dtype=self.dtype).to(self.device)
        if not consistent:
            return e
        if self.ops is not None:
            return self.ops.render_noise(e)
        return render_noise(e, self.zoom, self.footprints, self.loop)

    def fresh_noise(self) -> torch.Tensor:
        """The noise of one update: zoom-consistent unless an ablation switched sharing off.
        Every update rule takes its fresh noise from here, never from the scheduler."""
        return self.draw_noise(self.coupled and self.shared_noise)


# ------------------------------------------------- per-step: estimate, consolidate (Fig. 4)
def estimate(run: SamplingRun, z_in: torch.Tensor, t: int, rows: slice) -> torch.Tensor:
    """x̂ for the levels ``rows``: the denoiser's clean estimate, checked, then (Sec. 4.4)
    pulled towards the photo. Hook for constraints on x̂ (they act before blending).

    Known levels: with reconstruction guidance the denoiser runs with autograd and the
    direction ∇_{z_t}‖r‖²/‖r‖ of the known-level loss is kept for ``run_steps`` (it acts on
    z after the update); otherwise the photo loss pulls x̂ towards every known image. Either
    way the known levels' x̂ is replaced by their image."""
    levels = run.levels[rows]
    if run.reconstruct:
        x0 = _estimate_with_gradient(run, z_in, t, rows, levels)
    else:
        x0 = _checked(run.denoiser(z_in[rows], t, levels), z_in[rows], t)
    if run.photo is not None:
        x0 = photo_guidance(x0, levels, run.photo, run.zoom, photo_level=run.photo_level,
                            footprints=run.footprints, loop=run.loop)
    if run.known and not run.reconstruct:
        for k, image in run.known.items():
            x0 = photo_guidance(x0, levels, image, run.zoom, photo_level=k,
                                footprints=run.footprints, loop=run.loop)
    hits = [(r, lv) for r, lv in enumerate(levels.tolist()) if lv in run.known]
    if hits:  # the known levels override x̂ (one indexed write, out of place: autograd-safe)
        rows_known = torch.tensor([r for r, _ in hits], device=x0.device)
        x0 = x0.index_copy(0, rows_known, torch.stack([run.known[lv] for _, lv in hits]).to(x0))
    return x0


def _estimate_with_gradient(run: SamplingRun, z_in: torch.Tensor, t: int, rows: slice,
                            levels: torch.Tensor) -> torch.Tensor:
    """x̂ of ``rows`` through a differentiable denoiser; stores the reconstruction-guidance
    direction of those rows in ``run.guidance_dir`` (DPS, Chung et al. 2023).

    One forward + backward per micro-batch of levels (the denoiser's ``levels_per_call``),
    finest first: each level's loss depends on its own x̂ and (chain terms, detached) the
    finer levels' x̂ of this step, so the gradient is the same, and only one
    micro-batch's activations are kept at a time (the memory fit counts them:
    ``core.models.estimate.RECONSTRUCTION_ROW_FACTOR``)."""
    z_rows = z_in[rows]
    chunk = getattr(run.denoiser, "levels_per_call", None) or len(levels)
    x0_parts, dir_parts = {}, {}
    # finest first: a level's chain term reads the finer levels' x̂ of this step (``stack``)
    stack = torch.zeros_like(z_in) if chunk < len(levels) else None
    for start in reversed(range(0, len(levels), chunk)):
        part = slice(start, start + chunk)
        with torch.enable_grad():
            z_req = z_rows[part].detach().requires_grad_(True)
            x0_g = run.denoiser(z_req, t, levels[part])
            x0_parts[start] = _checked(x0_g.detach(), z_rows[part], t)
            if not x0_g.requires_grad:
                raise InvalidInputError(
                    "known levels coarser than an unknown one need reconstruction guidance "
                    "through the denoiser, but it is not differentiable (build it with "
                    "make_denoiser(..., differentiable=True)) — or pass known_guidance='photo' "
                    "for the weaker photo loss")
            dir_parts[start] = reconstruction_gradient(x0_g, z_req, levels[part], run.known,
                                                       run.zoom, run.footprints, run.loop,
                                                       stack).detach()
        if stack is not None:
            stack[levels[part]] = x0_g.detach().to(stack)
    if run.guidance_dir is None or run.guidance_dir.shape != z_in.shape:
        run.guidance_dir = torch.zeros_like(z_in)
    run.guidance_dir[rows] = torch.cat([dir_parts[k] for k in sorted(dir_parts)]).to(z_in.dtype)
    return torch.cat([x0_parts[k] for k in sorted(x0_parts)])


def consolidate(run: SamplingRun, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers, images): L = Blending(x̂) (Alg. 2 line 12), x_i = Π_image(L; i) (line 5).
    Hook for constraints on the layers (they act before rendering): the known levels override
    the blended stack (the closest consistent images that show them exactly)."""
    if run.ops is not None:
        layers, images = run.ops.consolidate(x0)
    else:
        layers = blend(x0, run.zoom, run.blending, footprints=run.footprints, loop=run.loop)
        images = render_image(layers, run.zoom, run.footprints, run.loop)
    if run.known and run.impose is not None:
        layers = images = run.impose(images)
    elif run.known:
        layers = images = impose_known(images, run.known, run.zoom,
                                       footprints=run.footprints, loop=run.loop)
    return layers, images


# ------------------------------------------------------------------------ one step per mode
# mode_step(run, z_in, t, layers) -> (layers, x): the stack after this step's estimate and the
# image x_i each level's update moves towards.
def step_joint(run: SamplingRun, z_in: torch.Tensor, t: int,
               layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Alg. 2: all N levels in one denoiser batch, blended into one stack, re-rendered."""
    return consolidate(run, estimate(run, z_in, t, slice(None)))


def step_iterative(run: SamplingRun, z_in: torch.Tensor, t: int,
                   layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ablation (Sec. 5.3): one level at a time, finest first so coarser levels render the
    fresh finer layers (L_i ← x̂_i, no blending); each level's step only reads the stack, so
    z is updated in one batch afterwards. On a loop each level renders from the whole cycle."""
    x = torch.empty_like(z_in)
    fps = run.footprints
    for i in range(run.num_levels - 1, -1, -1):
        raise_if_cancelled(run.cancel)
        x0_i = estimate(run, z_in, t, slice(i, i + 1))
        layers = torch.cat([layers[:i], x0_i, layers[i + 1:]])
        if run.loop:
            x[i] = render_image(layers, run.zoom, fps, loop=True)[i]
        else:
            x[i] = render_image(layers[i:], run.zoom, fps[i:] if fps is not None else None)[0]
    if run.known:
        layers = x = impose_known(x, run.known, run.zoom, footprints=fps, loop=run.loop)
    return layers, x


def step_independent(run: SamplingRun, z_in: torch.Tensor, t: int,
                     layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: no coupling, each level is its own sample."""
    x0 = estimate(run, z_in, t, slice(None))
    return x0, x0


MODE_STEPS: dict[str, Callable] = {
    "joint": step_joint, "iterative": step_iterative, "independent": step_independent,
}
MODES = tuple(MODE_STEPS)


# --------------------------------------------------------------------- one rule per update
# update(run, z, z_in, x, step, t) -> z at the next timestep, from z_t (``z`` as the scheduler
# keeps it, ``z_in`` in VP form) and the consolidated clean image ``x``.
def update_ddpm(run: SamplingRun, z: torch.Tensor, z_in: torch.Tensor, x: torch.Tensor,
                step: int, t) -> torch.Tensor:
    """DDPM ancestral step with zoom-consistent noise (Alg. 2 lines 3, 6, 7)."""
    sched, acc = run.sched, run.acc
    noise = run.fresh_noise()
    t_int = _timestep(sched, t)
    prev_t = int(sched.previous_timestep(t_int))
    ab_t = sched.alphas_cumprod[t_int].to(device=run.device, dtype=acc)
    ab_prev = (sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.one).to(
        device=run.device, dtype=acc)
    return ddpm_update(z.to(acc), x.to(acc), noise.to(acc), ab_t, ab_prev).to(run.dtype)


def update_solver(run: SamplingRun, z: torch.Tensor, z_in: torch.Tensor, x: torch.Tensor,
                  step: int, t) -> torch.Tensor:
    """Deterministic schedulers (DDIM, DPM-Solver++, Euler): hand them the ε̂ implied by the
    consolidated x (x0_to_epsilon) and let them take their own step."""
    return run.sched.step(_implied_epsilon(run, z_in, x, step, t), t, z).prev_sample


def _implied_epsilon(run: SamplingRun, z_in: torch.Tensor, x: torch.Tensor, step: int,
                     t) -> torch.Tensor:
    acc = run.acc
    alpha, sigma = _vp_coefficients(run.sched, step, _timestep(run.sched, t), acc)
    eps = x0_to_epsilon(z_in.to(acc), x.to(acc), alpha.to(run.device), sigma.to(run.device))
    return eps.to(run.dtype)


def update_dpmsolver(run: SamplingRun, z: torch.Tensor, z_in: torch.Tensor, x: torch.Tensor,
                     step: int, t) -> torch.Tensor:
    """DPM-Solver(++): the solver step; its SDE variants ("sde-dpmsolver++") get their fresh
    noise as Π_noise (``variance_noise``) instead of drawing their own."""
    if not str(run.sched.config.algorithm_type).startswith("sde"):
        return update_solver(run, z, z_in, x, step, t)
    eps = _implied_epsilon(run, z_in, x, step, t)
    return run.sched.step(eps, t, z, variance_noise=run.fresh_noise()).prev_sample


def update_renoise(run: SamplingRun, z: torch.Tensor, z_in: torch.Tensor, x: torch.Tensor,
                   step: int, t) -> torch.Tensor:
    """Consistency-model / LCM sampling: the consolidated clean image, re-noised to the next
    timestep with zoom-consistent noise, z_{t'} = α_{t'} x + σ_{t'} Π_noise(E). The last step
    returns x itself (no draw). LCM's boundary condition c_skip·z_t is left out: it is below
    1e-5 at every timestep used (t ≥ 19) and would mix the unconsolidated z_t into x."""
    sched = run.sched
    if step + 1 >= len(sched.timesteps):
        return x
    t_next = _timestep(sched, sched.timesteps[step + 1])
    ab = sched.alphas_cumprod[t_next].to(device=run.device, dtype=run.acc)
    noise = run.fresh_noise()
    return (ab.sqrt() * x.to(run.acc) + (1 - ab).sqrt() * noise.to(run.acc)).to(run.dtype)


#: Timesteps of the renoise sampler (``renoise_timesteps``): "grid" = evenly spaced picks of
#: the distillation grid including both ends (8 steps: 999, 859, …, 159, 19); "even" = evenly
#: spaced from T-1, "trailing" (8 steps: 999, 874, …, 124; x̂ returned after the last).
RENOISE_SPACINGS = ("grid", "even")
RENOISE_SPACING = "grid"


# ------------------------------------------------------------ rectified flow (SD3, FLUX)
#: Hidden scheduler-config keys a flow backend sets (diffusers keeps "_" keys through
#: from_config): FLOW_MU, the resolution-dependent shift's μ (FLUX: from image_seq_len);
#: FLOW_SIGMAS = "linear": σ = linspace(1, 1/n, n) before the shift, as FluxPipeline passes
#: them (absent: the scheduler's own spacing, as StableDiffusion3Pipeline uses it).
FLOW_MU, FLOW_SIGMAS = "_flow_mu", "_flow_sigmas"


def flow_update(z_t: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor,
                sigma_next: torch.Tensor) -> torch.Tensor:
    """One step on the rectified-flow path z_σ = (1−σ) x0 + σ ε: z_σ' = (1−σ') x̂ + σ' ε.

    ``noise`` None: deterministic Euler, ε = ε̂ = (z_σ − (1−σ) x̂)/σ, the noise implied by the
    consolidated x̂ (the same as z + (σ'−σ) v̂ with v̂ = ε̂ − x̂, FlowMatchEulerDiscreteScheduler's
    step). Else the stochastic rule: x̂ re-noised to σ' with fresh noise (Alg. 2 line 6: the
    sampler passes Π_noise(E)).
    """
    eps = (z_t - (1 - sigma) * x0) / sigma if noise is None else noise
    return (1 - sigma_next) * x0 + sigma_next * eps


def update_flow(run: SamplingRun, z: torch.Tensor, z_in: torch.Tensor, x: torch.Tensor,
                step: int, t) -> torch.Tensor:
    """Rectified flow (FlowMatchEulerDiscreteScheduler): deterministic Euler through the
    implied ε, or with ``stochastic_sampling`` the re-noise rule whose fresh noise is Π_noise."""
    sched, acc = run.sched, run.acc
    sigma, sigma_next = (sched.sigmas[i].to(device=run.device, dtype=acc) for i in (step, step + 1))
    stochastic = bool(sched.config.get("stochastic_sampling", False))
    if stochastic and float(sigma_next) == 0.0:
        return x  # the last step lands on x̂ itself (no draw)
    noise = run.fresh_noise().to(acc) if stochastic else None
    return flow_update(z.to(acc), x.to(acc), noise, sigma, sigma_next).to(run.dtype)


def _flow_timesteps(sched, num_inference_steps: int, device: torch.device) -> None:
    """The flow family's own timesteps: the scheduler's shift (SD3: 3.0), or its
    resolution-dependent shift with μ from the backend (FLUX: ``use_dynamic_shifting``)."""
    import numpy as np

    cfg, n = sched.config, num_inference_steps
    mu = cfg.get(FLOW_MU)
    if cfg.get("use_dynamic_shifting") and mu is None:
        raise ValueError("this flow scheduler shifts by resolution (use_dynamic_shifting): set "
                         f"its config's {FLOW_MU!r} (μ from the image's token count)")
    sigmas = np.linspace(1.0, 1.0 / n, n) if cfg.get(FLOW_SIGMAS) == "linear" else None
    sched.set_timesteps(n, device=device, sigmas=sigmas, mu=mu)


def is_flow(scheduler) -> bool:
    """True for rectified-flow schedulers (z_σ = (1−σ) x0 + σ ε, t = 1000 σ as a float)."""
    return update_rule(scheduler) is update_flow


def renoise_timesteps(config, num_inference_steps: int, spacing: str | None = None) -> list[int]:
    """Timesteps of the renoise sampler, from T-1 down (``RENOISE_SPACINGS``).

    "grid": up to the model's distillation schedule length (LCM: ``original_inference_steps`` =
    50, timesteps 19, 39, …, 999) evenly spaced picks of that grid including both ends
    (diffusers' own LCM pick stops at t=139 for 8 steps); beyond it, "trailing" spacing.
    "even": "trailing" spacing at every step count. Both give 999, 749, 499, 249 at 4 steps.
    """
    spacing = spacing or RENOISE_SPACING
    if spacing not in RENOISE_SPACINGS:
        raise ValueError(f"renoise spacing must be one of {RENOISE_SPACINGS}, got {spacing!r}")
    n, total = int(num_inference_steps), int(config.num_train_timesteps)
    orig = int(getattr(config, "original_inference_steps", None) or 50)
    if spacing == "grid" and n <= orig:
        k = total // orig
        grid = [(i + 1) * k - 1 for i in range(orig)]
        picks = torch.linspace(orig - 1, 0, n).round().long().tolist() if n > 1 else [orig - 1]
        return [grid[i] for i in picks]
    return [round(total - i * total / n) - 1 for i in range(n)]


def _default_update_rules() -> list[tuple[type, Callable]]:
    from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler,
                           FlowMatchEulerDiscreteScheduler, LCMScheduler)

    return [(DDPMScheduler, update_ddpm), (LCMScheduler, update_renoise),
            (DPMSolverMultistepScheduler, update_dpmsolver),
            (FlowMatchEulerDiscreteScheduler, update_flow)]


#: (scheduler class, update rule), first isinstance match wins; anything else is a solver.
#: Filled on first use (importing diffusers is slow and ``core`` imports lazily).
UPDATE_RULES: list[tuple[type, Callable]] = []


def update_rule(scheduler) -> Callable:
    """The update rule for ``scheduler`` from ``UPDATE_RULES`` (``update_solver`` otherwise)."""
    if not UPDATE_RULES:
        UPDATE_RULES.extend(_default_update_rules())
    for cls, rule in UPDATE_RULES:
        if isinstance(scheduler, cls):
            return rule
    return update_solver


def _set_timesteps(sched, num_inference_steps: int, device: torch.device) -> None:
    if update_rule(sched) is update_renoise:  # the renoise rule never calls sched.step
        ts = renoise_timesteps(sched.config, num_inference_steps)
        sched.timesteps = torch.tensor(ts, dtype=torch.long, device=device)
        sched.num_inference_steps = len(ts)
    elif is_flow(sched):
        _flow_timesteps(sched, num_inference_steps, device)
    else:
        sched.set_timesteps(num_inference_steps, device=device)


def _timestep(sched, t) -> int | float:
    """The model's integer timestep for scheduler timestep ``t``. "leading" spacing with
    steps_offset=1 at as many steps as training steps yields t = T, one past the schedule:
    clamp so the model and ᾱ lookups stay in range. Rectified flow: t = 1000 σ, a float,
    never rounded (the models take it continuous)."""
    if is_flow(sched):
        return float(t)
    return min(int(round(float(t))), int(sched.config.num_train_timesteps) - 1)


# ------------------------------------------------------------------------------ sampler
def check_inputs(scheduler, *, num_levels, zoom, shape, num_inference_steps, mode, blending,
                 photo, photo_level=0, known=None, known_guidance="auto", footprints=None,
                 loop=False) -> int:
    """Validate ``sample_zoom_stack``'s arguments (ValueError naming the first bad one);
    return the zoom factor p."""
    p = check_zoom(zoom)
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be an integer >= 1, got {num_levels!r}")
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) positive integers, got {shape!r}")
    check_size(shape[1], shape[2], p)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
            or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if num_inference_steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be at most the scheduler's "
                         f"{scheduler.config.num_train_timesteps} training steps, "
                         f"got {num_inference_steps}")
    if mode not in MODE_STEPS:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if blending not in BLEND_METHODS:
        raise ValueError(f"blending must be one of {BLEND_METHODS}, got {blending!r}")
    if photo is not None and tuple(photo.shape) != tuple(shape):
        raise ValueError(f"photo must have shape {tuple(shape)}, got {tuple(photo.shape)}")
    if isinstance(photo_level, bool) or not isinstance(photo_level, int) \
            or not -num_levels <= photo_level < num_levels:
        raise InvalidInputError(f"photo level {photo_level!r} is out of range: the stack has "
                                f"levels 0..{num_levels - 1} (-1 = the finest)")
    if known_guidance not in KNOWN_GUIDANCE:
        raise ValueError(f"known_guidance must be one of {KNOWN_GUIDANCE}, got {known_guidance!r}")
    if not isinstance(loop, bool):
        raise ValueError(f"loop must be True or False, got {loop!r}")
    check_footprints(footprints, shape[1], shape[2], p, num_levels, loop)
    if known and mode == "independent":
        raise InvalidInputError("known levels need a coupled mode (joint or iterative): "
                                "independent sampling cannot be consistent with them")
    return p


def run_steps(run: SamplingRun, z: torch.Tensor,
              callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """The sampling loop: per timestep, the mode's step (x̂ → blend → render), then the
    update rule. Returns the last step's layers."""
    sched = run.sched
    mode_step, update = MODE_STEPS[run.mode], update_rule(sched)
    c, h, w = run.shape
    layers = torch.zeros((run.num_levels, c, h, w), device=run.device, dtype=run.dtype)
    total = len(sched.timesteps)
    for step, t in enumerate(sched.timesteps):
        raise_if_cancelled(run.cancel)
        # VP form for the model (identity for DDPM/DDIM); flow models take z_σ as it is
        z_in = z if is_flow(sched) else sched.scale_model_input(z, t)
        layers, x = mode_step(run, z_in, _timestep(sched, t), layers)
        z = update(run, z, z_in, x, step, t)
        if run.reconstruct and step + 1 < total:
            # DPS: z_{t-1} -= ζ ∇_{z_t}‖r‖² / ‖r‖ (ζ = KNOWN_STEP), in the scheduler's own scaling of z
            z = z - KNOWN_STEP * _model_input_scale(sched, step + 1) * run.guidance_dir
        if callback is not None:
            callback(step + 1, total, layers)
    return layers


def sample_zoom_stack(
    denoiser: Denoiser,
    scheduler,
    *,
    num_levels: int,
    zoom: int,
    shape: tuple[int, int, int],
    num_inference_steps: int,
    generator: torch.Generator | None = None,
    mode: str = "joint",
    blending: str = "laplacian",
    shared_noise: bool = True,
    photo: torch.Tensor | None = None,
    photo_level: int = 0,
    known: Mapping[int, torch.Tensor] | None = None,
    known_guidance: str = "auto",
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    consistent_init: bool = True,
    footprints=None,
    loop: bool = False,
) -> SampleResult:
    """Sample a zoom stack of ``num_levels`` levels of ``shape = (C, H, W)``.

    mode: "joint" (Alg. 2), "iterative" (ablation: one step per level in turn, each from the
    stack the previous levels wrote), "independent" (no coupling). ``blending`` and
    ``shared_noise`` switch the other two ablations. ``consistent_init`` draws z_T with
    Π_noise too (see docs/sampler.md for the measurement behind the default).

    ``photo`` (C, H, W): the paper's soft photo guidance (Sec. 4.4) at level ``photo_level``
    (0 = outermost, −1 = finest). ``known``: {level: (C, H, W)} images those levels must show
    exactly; every other level is sampled given them. ``known_guidance``: "reconstruction"
    (gradient of the known-level loss through the denoiser after each update; needs a
    differentiable denoiser), "photo" (the cheaper Adam steps on x̂, enough when no unknown
    level is coarser than a known one) or "auto" (reconstruction only where needed).
    
    ``footprints``: per transition i -> i+1, (left, top) of level i+1's H/p x W/p region in
    level i (sampling pixels, whole; None = centred, bit-identical to the centre-only
    sampler). ``loop``: a cyclic stack, N footprints, the last placing level 0 inside level
    N-1 (Π_image, Π_noise and blending on the cycle; docs/sampler.md, "Loops").
    """
    p = check_inputs(scheduler, num_levels=num_levels, zoom=zoom, shape=shape,
                     num_inference_steps=num_inference_steps, mode=mode, blending=blending,
                     photo=photo, photo_level=photo_level, known=known,
                     known_guidance=known_guidance, footprints=footprints, loop=loop)
    fps = check_footprints(footprints, shape[1], shape[2], p, num_levels, loop)
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    known = {k: v.to(device=device, dtype=dtype)
             for k, v in check_known(known, num_levels, tuple(shape), p, footprints=fps,
                                     loop=loop).items()}
    # Zooming in from known levels, the photo loss on x̂ suffices; an unknown level coarser
    # than a known one needs the gradient through the denoiser (docs/sampler.md).
    reconstruct = bool(known) and (known_guidance == "reconstruction" or (
        known_guidance == "auto" and needs_reconstruction(known, num_levels, loop)))
    sched = _private_scheduler(scheduler)
    _set_timesteps(sched, num_inference_steps, device)
    run = SamplingRun(
        denoiser=denoiser, sched=sched, num_levels=num_levels, zoom=p, shape=tuple(shape),
        generator=generator, device=device, dtype=dtype,
        # the update's coefficients in float64 (ᾱ near 1 loses digits in float32); MPS has none
        acc=torch.float32 if device.type == "mps" else torch.float64,
        mode=mode, blending=blending, shared_noise=shared_noise, photo=photo, cancel=cancel,
        photo_level=photo_level % num_levels, known=known, reconstruct=reconstruct,
        footprints=fps, loop=loop,
    )
    if run.coupled and USE_STACK_OPERATORS and supported(device, dtype, blending):
        run.ops = stack_operators(num_levels, shape[1], shape[2], p, fps, loop, blending,
                                  device, dtype)
        if COMPILE_STACK_OPERATORS and device.type == "cuda":
            run.ops.compile()
        if known:
            run.impose = run.ops.known_imposer(known)
    z = run.draw_noise(run.coupled and consistent_init) * getattr(sched, "init_noise_sigma", 1.0)
    layers = run_steps(run, z, callback)
    images = render_image(layers, p, fps, loop) if run.coupled else layers
    if known:
        images = layers = impose_known(images, known, p, footprints=fps, loop=loop)
    return SampleResult(layers=layers, images=images)


def _model_input_scale(scheduler, step_index: int) -> float:
    """z / scale_model_input(z) at a step: √(1+σ²) for sigma-based schedulers, else 1."""
    if is_flow(scheduler):
        return 1.0
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and len(sigmas) > step_index:
        return float((1 + sigmas[step_index].double() ** 2).sqrt())
    return 1.0
