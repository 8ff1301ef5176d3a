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
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from .errors import ModelOutputError, raise_if_cancelled
from .geometry import check_size, check_zoom, max_observation_depth
from .zoom_stack import BLEND_METHODS, blend, crop_centre, downsample, render_image, render_noise

MODES = ("joint", "iterative", "independent")


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
                   steps: int = 5, lr: float = 0.1) -> torch.Tensor:
    """Sec. 4.4 eq. (1): Adam steps on x̂ minimising Σ_i ‖D_i(x̂_i) − M_i ⊙ ξ‖².

    Compared on the centre crop of ξ, which is the same as comparing the zero-padded images.
    Levels deeper than ``max_observation_depth`` see less than an aligned pixel of the photo
    and are left alone. The loss is a sum of per-level terms and Adam is elementwise, so
    optimising a subset of levels gives the same result as optimising all of them.
    """
    p = check_zoom(zoom)
    depth = max_observation_depth(photo.shape[-2], photo.shape[-1], p)
    rows = [(row, int(lv)) for row, lv in enumerate(levels.tolist()) if lv <= depth]
    if not rows:
        return x0_hat
    photo = photo.to(x0_hat)
    with torch.enable_grad():
        x = x0_hat.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            # per level: each needs a different number of D_p reductions (sizes differ)
            loss = sum(((downsample(x[row], p, times=lv) - crop_centre(photo, p**lv)) ** 2).sum()
                       for row, lv in rows)
            loss.backward()
            opt.step()
    return x.detach()


def x0_to_epsilon(z_t: torch.Tensor, x0: torch.Tensor, alpha: torch.Tensor,
                  sigma: torch.Tensor) -> torch.Tensor:
    """ε̂ = (z_t − α_t x̂0) / σ_t: the noise prediction implied by the consolidated x0."""
    return (z_t - alpha * x0) / sigma


# --------------------------------------------------------------------- scheduler adapters
def _private_scheduler(scheduler):
    """A copy of the user's scheduler that takes ε̂ and never clips x0 (clipping is pointwise
    and would break zoom consistency; the estimate is already consolidated)."""
    wanted = {"prediction_type": "epsilon", "clip_sample": False, "thresholding": False}
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


# ------------------------------------------------------------------------------ sampler
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
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    consistent_init: bool = True,
) -> SampleResult:
    """Sample a zoom stack of ``num_levels`` levels of ``shape = (C, H, W)``.

    mode: "joint" (Alg. 2), "iterative" (ablation: one step per level in turn, each from the
    stack the previous levels wrote), "independent" (no coupling). ``blending`` and
    ``shared_noise`` switch the other two ablations. ``consistent_init`` draws z_T with
    Π_noise too (see docs/sampler.md for the measurement behind the default).
    """
    p = check_zoom(zoom)
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 1:
        raise ValueError(f"num_levels must be an integer >= 1, got {num_levels!r}")
    if len(shape) != 3 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W) positive integers, got {shape!r}")
    c, h, w = shape
    check_size(h, w, p)
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
            or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
    if num_inference_steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"num_inference_steps must be at most the scheduler's "
                         f"{scheduler.config.num_train_timesteps} training steps, "
                         f"got {num_inference_steps}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if blending not in BLEND_METHODS:
        raise ValueError(f"blending must be one of {BLEND_METHODS}, got {blending!r}")
    if photo is not None and tuple(photo.shape) != tuple(shape):
        raise ValueError(f"photo must have shape {tuple(shape)}, got {tuple(photo.shape)}")

    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    n = num_levels
    coupled = mode != "independent"
    levels = torch.arange(n, device=device)
    sched = _private_scheduler(scheduler)
    sched.set_timesteps(num_inference_steps, device=device)
    is_ddpm = type(sched).__name__ == "DDPMScheduler"
    last_train_t = int(sched.config.num_train_timesteps) - 1
    # the update's coefficients in float64 (ᾱ near 1 loses digits in float32); MPS has no float64
    acc = torch.float32 if device.type == "mps" else torch.float64

    def draw_noise(consistent: bool) -> torch.Tensor:
        e = torch.randn((n, c, h, w), generator=generator,
                        device=generator.device if generator is not None else device,
                        dtype=dtype).to(device)
        return render_noise(e, p) if consistent else e

    z = draw_noise(coupled and consistent_init) * sched.init_noise_sigma
    layers = torch.zeros((n, c, h, w), device=device, dtype=dtype)
    total = len(sched.timesteps)
    for step, t in enumerate(sched.timesteps):
        raise_if_cancelled(cancel)
        # "leading" spacing with steps_offset=1 at as many steps as training steps yields
        # t = T, one past the schedule: clamp so the model and ᾱ lookups stay in range
        t_int = min(int(round(float(t))), last_train_t)
        z_in = sched.scale_model_input(z, t)  # VP form for the model (identity for DDPM/DDIM)

        if mode == "iterative":
            # One level at a time, finest first so coarser levels render the fresh finer
            # layers; each level's step only reads the stack, so z is updated in one batch.
            x = torch.empty_like(z)
            for i in range(n - 1, -1, -1):
                raise_if_cancelled(cancel)
                x0_i = _checked(denoiser(z_in[i:i + 1], t_int, levels[i:i + 1]), z_in[i:i + 1], t_int)
                if photo is not None:
                    x0_i = photo_guidance(x0_i, levels[i:i + 1], photo, p)
                layers = torch.cat([layers[:i], x0_i, layers[i + 1:]])
                x[i] = render_image(layers[i:], p)[0]
        else:
            x0 = _checked(denoiser(z_in, t_int, levels), z_in, t_int)
            if photo is not None:
                x0 = photo_guidance(x0, levels, photo, p)
            if coupled:
                layers = blend(x0, p, blending)       # Alg. 2 line 12
                x = render_image(layers, p)           # Alg. 2 line 5
            else:
                layers = x = x0

        if is_ddpm:
            noise = draw_noise(coupled and shared_noise)  # Alg. 2 lines 3, 6
            prev_t = int(sched.previous_timestep(t_int))
            ab_t = sched.alphas_cumprod[t_int].to(device=device, dtype=acc)
            ab_prev = (sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.one).to(
                device=device, dtype=acc)
            z = ddpm_update(z.to(acc), x.to(acc), noise.to(acc), ab_t, ab_prev).to(dtype)
        else:
            # Deterministic schedulers: hand them ε̂ implied by the consolidated x (x0_to_epsilon)
            alpha, sigma = _vp_coefficients(sched, step, t_int, acc)
            eps = x0_to_epsilon(z_in.to(acc), x.to(acc), alpha.to(device), sigma.to(device))
            z = sched.step(eps.to(dtype), t, z).prev_sample
        if callback is not None:
            callback(step + 1, total, layers)

    images = render_image(layers, p) if coupled else layers
    return SampleResult(layers=layers, images=images)
