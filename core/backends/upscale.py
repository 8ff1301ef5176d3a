"""The ×4 stages of ``Backend.upscale``: which models (the plan), and running them jointly.

Each stage samples all N levels at once through ``core.sampler.sample_zoom_stack`` — the same
Alg. 2 as stage I (blend + Π_image + Π_noise every step) — with the SR model's denoiser
conditioned per level on the previous stage's zoom-consistent image. Its detail is therefore
sampled consistently, and nothing has to be averaged afterwards (docs/backends.md measures
why averaging independently upscaled levels is not good enough). The blending is the SR
variant ``laplacian-sr*`` (core.zoom_stack.blend): a coarser level's upscaler invents the
octaves above its own input, which in a finer level's footprint that level knows from its
input or invents from more pixels, so there those guesses are not averaged in. Memory: the
stage fits its own tile micro-batch (``fit_tile_micro_batch``) unless the user set one.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..models.downloads import fetch_model
from ..errors import InvalidInputError, raise_if_cancelled
from ..models.estimate import USABLE_FRACTION, free_bytes_now, spec_from_backend, unet_rows
from ..zoom.geometry import scale_footprints
from ..zoom.sampler import sample_zoom_stack
from ..settings import UPSCALE_FACTORS, upscaler_models
from ..zoom.zoom_stack import sr_blend_method
from .base import Backend, Conditioning
from .loading import check_upscaler, load_stage, offloaded
from .schedulers import make_scheduler
from .super_resolution import DEFAULT_MODELS, STAGES, tile_starts

_FAMILY_NAMES = {"sd": "Stable Diffusion", "sdxl": "SDXL", "if": "DeepFloyd IF"}


def stage_count(factor: int) -> int:
    """Number of ×4 stages for an upscale factor (1 -> 0, 4 -> 1, 16 -> 2)."""
    if factor not in UPSCALE_FACTORS:
        raise InvalidInputError(f"upscale must be one of {', '.join(map(str, UPSCALE_FACTORS))}, got {factor!r}")
    return UPSCALE_FACTORS.index(factor)


def upscale_plan(backend: Backend, factor: int | None, models: str | None) -> list[tuple[str, str]]:
    """[(stage kind, model)] for ×``factor`` on ``backend``'s family; each model is checked
    now (missing or of the wrong kind -> one-line error before minutes of sampling).

    ``models``: "none" (no upscaling), or comma-separated models for the stages in order
    (missing ones: the stage's default model). ``factor`` None: the family's default.
    """
    names = upscaler_models(models)
    if names == ["none"]:
        if factor not in (None, 1):
            raise InvalidInputError(f"upscaler 'none' contradicts upscale {factor}; give one of them")
        return []
    n = stage_count(backend.default_upscale if factor is None else factor)
    offered = backend.upscale_stages
    if n > len(offered):
        allowed = ", ".join(str(f) for f in UPSCALE_FACTORS[: len(offered) + 1])
        raise InvalidInputError(
            f"upscale {factor} is not offered for {_FAMILY_NAMES.get(backend.family, backend.family)} "
            f"models; choose {allowed}")
    if n and len(names) > n:
        raise InvalidInputError(f"{len(names)} upscaler models given for {n} ×4 stage(s)")
    plan = [(kind, names[i] if i < len(names) else DEFAULT_MODELS[kind])
            for i, kind in enumerate(offered[:n])]
    for kind, source in plan:
        check_upscaler(source, STAGES[kind].pipeline_class)
    return plan


def stage_seed(seed: int, stage: int) -> int:
    """The generator seed of ×4 stage ``stage`` (0-based): distinct from stage I's."""
    return (int(seed) * 1_000_003 + 7919 * (stage + 1)) % 2**63


#: Activations of an SR stage beyond its tile rows (latent and pixel stacks, workspaces): the
#: intercept of peak memory against tile rows, 0.39 GiB on an H200 (x4 upscaler, 4 levels of
#: 2048 px, fp16, at 16 and 64 rows per call; docs/backends.md), rounded up.
TILE_FIXED_BYTES = 512 * 2**20


def fit_tile_micro_batch(stage: Backend, levels: int, sample_hw: tuple[int, int],
                         free_bytes: int | None = None) -> int | None:
    """UNet rows (tiles) per call of an SR stage that fit the free device memory; None = all.

    A stage's UNet sees every level's tiles times two (guidance): 4 levels of 2048 px through
    the x4 upscaler are 200 rows of 128 x 128 latents, 27 GB at once (measured on an H200,
    docs/backends.md), which stage I's micro-batch, fitted to 64 x 64 latents, knows nothing
    of. One row costs the estimate's UNet activations (``ModelSpec.k_unet`` per sample pixel
    and byte: 0.123 GiB for a 128 x 128 fp16 x4 tile, 0.125 GiB measured), on top of
    ``TILE_FIXED_BYTES``. ``free_bytes`` defaults to the device's free memory now (the stage
    is loaded).
    """
    try:
        if free_bytes is None:
            free_bytes = free_bytes_now(stage.device)
        spec = spec_from_backend(stage)
    except Exception:  # noqa: BLE001 - an unusual pipeline or device: all rows, as before
        return None
    if not free_bytes:
        return None
    h, w = sample_hw
    tile, overlap = stage.tile_size, stage.tile_overlap
    tiles = len(tile_starts(h, tile, overlap)) * len(tile_starts(w, tile, overlap))
    row = spec.k_unet() * min(h, tile) * min(w, tile) * (4 if stage.dtype.itemsize >= 4 else 2)
    budget = free_bytes * USABLE_FRACTION - TILE_FIXED_BYTES
    if unet_rows(levels, stage.guidance) * tiles * row <= budget:
        return None
    return max(1, int(budget // row))


@torch.no_grad()
def upscale(backend: Backend, images: torch.Tensor, cond: Conditioning, prompts: list[str],
            negative_prompt: str, plan: list[tuple[str, str]], *, zoom: int, scheduler: str,
            steps: int, seed: int, micro_batch: int | None = None,
            progress: Callable[[str, int, int], None] | None = None,
            cancel=None, footprints=None, loop: bool = False) -> torch.Tensor:
    """Run the ×4 stages of ``plan`` jointly on consistent images (N, 3, h, w) in [0, 1].

    Each stage: load (cached on the backend) -> its own conditioning -> per-level low-res
    conditioning with zoom-consistent noise augmentation -> ``sample_zoom_stack`` with
    ``scheduler`` (a name) for min(steps, stage default) steps -> decode to [0, 1] pixels.
    ``progress(phase, step, total)``: "downloading" (a hub model not cached yet), "loading
    model", then "super-resolution" per step.
    ``cancel`` raises ``Cancelled`` within one SR step. ``micro_batch`` None: the stage fits
    its own (``fit_tile_micro_batch``).
    ``footprints``: the stack's footprints in the pixels of ``images`` (None = centred), with
    ``loop`` for a cyclic stack: each stage samples with them scaled to its sample pixels
    (×4 for IF stage II, ×1 for the x4 upscaler's latents) and hands the next stage them ×4.
    """
    def report(phase: str, step: int, total: int) -> None:
        if progress is not None:
            progress(phase, step, total)

    for i, (kind, source) in enumerate(plan):
        raise_if_cancelled(cancel)
        fetch_model(source, report, cancel)  # a hub model not cached yet: "downloading" first
        report("loading model", 0, 1)
        stage = load_stage(backend, kind, source)
        report("loading model", 1, 1)
        stage_cond = stage.conditioning(list(prompts), negative_prompt, cond)
        generator = torch.Generator("cpu").manual_seed(stage_seed(seed, i))
        shape = stage.sample_shape(images.shape[-2], images.shape[-1])
        in_sample = scale_footprints(footprints, shape[-1] // images.shape[-1]) \
            if footprints is not None else None
        stage.prepare(images, zoom, generator, footprints=footprints_up(footprints, stage.factor),
                      loop=loop)
        n_steps = min(int(steps), stage.default_steps)
        report("super-resolution", 0, n_steps)
        # stage I and the other stages stay off the accelerator while this stage samples
        others = [h for h in backend.__dict__.get("_stages", {}).values() if h is not stage]
        with offloaded(backend, *others):
            micro = micro_batch if micro_batch is not None else fit_tile_micro_batch(
                stage, images.shape[0], shape[1:])  # measured with stage I off the device
            result = sample_zoom_stack(
                stage.make_denoiser(stage_cond, stage.guidance, micro),
                make_scheduler(scheduler, stage.scheduler_config),
                num_levels=images.shape[0], zoom=zoom, shape=shape,
                num_inference_steps=n_steps, generator=generator, blending=sr_blend_method(zoom),
                callback=lambda step, total, _layers: report("super-resolution", step, total),
                cancel=cancel, device=stage.device, dtype=torch.float32,
                footprints=in_sample, loop=loop,
            )
            raise_if_cancelled(cancel)
            images = stage.decode(result.images, micro)
        footprints = footprints_up(footprints, stage.factor)
    return images


def footprints_up(footprints, factor: int):
    """Footprints in the pixels of a ×``factor`` stage's output (None stays None: centred)."""
    return scale_footprints(footprints, factor) if footprints is not None else None


__all__ = ["TILE_FIXED_BYTES", "fit_tile_micro_batch", "footprints_up", "stage_count", "stage_seed", "upscale",
           "upscale_plan"]
