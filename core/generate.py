"""generate(): settings -> zoom stack. Loads the model, samples jointly, decodes, consolidates.

Phases reported to ``progress(phase, step, total, preview)``: "downloading" (bytes done /
total, only when a hub model is not cached yet), "loading model", "encoding prompts",
"sampling", "decoding", "super-resolution" (with an upscale factor > 1), "consolidating".
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from . import __version__
from .backends.loading import ModelCache, free_device_memory
from .backends.schedulers import make_scheduler
from .backends.upscale import upscale, upscale_plan
from .models.cache import model_reference
from .models.downloads import fetch_model
from .models.estimate import fit_micro_batch
from .errors import (InvalidInputError, OutOfMemoryError, P10Error, is_out_of_memory,
                     raise_if_cancelled)
from .zoom.known import impose_known, make_consistent, needs_reconstruction
from .models.fast_models import LCM_EMBEDDED_GUIDANCE
from .zoom.geometry import (centred_footprint, check_footprints, footprints_for_targets,
                            scale_footprints)
from .zoom.sampler import sample_zoom_stack
from .settings import DEFAULT_SCHEDULER, FLOW_SCHEDULERS, SCHEDULERS, GenerateSettings
from .stack.stack_io import ZoomStack, centred_footprints
from .zoom.zoom_stack import SR_BLEND, blend_coarse, render_image, sr_blend_method

Progress = Callable[[str, int, int, "np.ndarray | None"], None]


def consolidate_pixels(images: torch.Tensor, zoom: int, detail_bands: int = 0,
                       **footprints) -> torch.Tensor:
    """Π_image(Blending(images)) in pixel space, kept in [0, 1]: exactly zoom-consistent.

    Latent blending makes the *latents* consistent, but the VAE decodes each level on its own,
    so the decoded pixels disagree slightly; one more blend + render in pixel space makes the
    exported textures agree exactly. The clamp sits between blend and render: D_p is a convex
    filter, so the rendered images stay in [0, 1] and consistent (clamping after rendering
    would break the equality).

    ``detail_bands = k``: the finest k Laplacian bands are not averaged — every layer keeps its
    own — and only the coarser bands are blended. After a joint super-resolution stage the
    top bands were sampled consistently already; averaging them would only lose energy where
    a decoder disagrees (rounding-level), while Π_image still makes the result exact.
    ``footprints``: ``footprints=`` / ``loop=`` of the stack's geometry (``Footprints.kw``).
    """
    blended = blend_coarse(images.float(), zoom, detail_bands, **footprints).clamp(0, 1)
    return render_image(blended, zoom, **footprints)


class Footprints:
    """The stack's level-to-level geometry on the sampler's grid, scaled to any other grid.

    ``grid``: ``(left, top)`` of level i+1 inside level i in the sampler's pixels (latent
    pixels for latent models), None when centred; ``loop``: the stack is a cycle. ``kw(scale)``
    gives the ``footprints=`` / ``loop=`` arguments of the zoom-stack operators on a grid
    ``scale`` times finer, and nothing for a centred, open stack (today's calls, bit-identical).
    """

    def __init__(self, grid: list[tuple[int, int]] | None, loop: bool):
        self.grid, self.loop = grid, loop

    @classmethod
    def from_settings(cls, s: GenerateSettings, grid_h: int, grid_w: int, scale: int,
                      explicit=None) -> "Footprints":
        """From ``explicit`` footprints in pixels ``scale`` times the grid (they must fall on
        it), else from ``s.targets``; centred ones give None."""
        if explicit is not None:
            grid = check_footprints(scale_footprints(list(explicit), 1, scale), grid_h, grid_w,
                                    s.zoom, len(s.prompts), s.loop)
        else:
            targets = s.transition_targets()
            # a grid of p sampling pixels keeps the depth-2 observations of the blend
            # (targets at any pixel lose them: docs/sampler.md "Targets")
            grid = None if targets is None else footprints_for_targets(
                targets, grid_h, grid_w, s.zoom, grid=s.zoom)
        centred = [centred_footprint(grid_h, grid_w, s.zoom)] * s.num_transitions
        return cls(None if grid is None or grid == centred else grid, bool(s.loop))

    def scaled(self, scale: int) -> list[tuple[int, int]] | None:
        if self.grid is None:
            return None
        return [(left * scale, top * scale) for left, top in self.grid]

    def kw(self, scale: int = 1) -> dict:
        if self.grid is None and not self.loop:
            return {}
        return {"footprints": self.scaled(scale), "loop": self.loop}

    def manifest(self, height: int, width: int, zoom: int, scale: int, count: int) -> dict:
        """The manifest keys in the PNGs' pixels (``scale`` x the grid): none for a centred,
        open stack; else "footprints" (``count`` of them), and "loop": true for a cycle."""
        if self.grid is None and not self.loop:
            return {}
        footprints = self.scaled(scale) or centred_footprints(height, width, zoom, count)
        return {"footprints": [list(fp) for fp in footprints], **({"loop": True} if self.loop else {})}


def load_photo(path: str, width: int, height: int) -> torch.Tensor:
    """The photo as (1, 3, H, W) in [-1, 1]: centre-cropped to the aspect, then resized."""
    from PIL import Image, UnidentifiedImageError

    from .stack.images import to_rgb8

    try:
        with Image.open(path) as im:
            im = to_rgb8(im)  # 16-bit greyscale scaled to 8 bits, not clipped to white
            w, h = im.size
            scale = min(w / width, h / height)  # the largest centre crop with the target aspect
            cw, ch = round(width * scale), round(height * scale)
            left, top = (w - cw) // 2, (h - ch) // 2
            im = im.resize((width, height), Image.LANCZOS, box=(left, top, left + cw, top + ch))
            arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"cannot read the photo {path!r}: {type(exc).__name__}") from None
    return torch.from_numpy(arr).permute(2, 0, 1)[None].contiguous()


def generate(settings: GenerateSettings, *, progress: Progress | None = None,
             cancel: "threading.Event | Callable[[], bool] | None" = None,
             models: ModelCache | None = None, consolidate: bool = True,
             known: "Mapping[int, np.ndarray] | None" = None,
             footprints: "Sequence[Sequence[int]] | None" = None) -> ZoomStack:
    """Generate the zoom stack ``settings`` describe; return it unsaved (``.save(dir)``).

    ``footprints``: ``(left, top)`` of level i+1 inside level i in the stack's (output) pixels,
    one per transition (``core.extend`` passes a stack's own); None: from ``settings.targets``,
    placed on the sampler's grid (latent pixels for latent models) and recorded in the manifest.

    ``known``: {level: float32 (H, W, 3) image in [0, 1] at the stack's pixel size} that those
    levels must show (``core.extend`` uses it); the photo of ``settings.photo`` is one more,
    at ``settings.photo_level``. Known levels come back exactly (before 8-bit rounding).

    ``models``: a ModelCache to reuse a loaded model across calls (without one the model is
    loaded here and released before returning). ``consolidate=False`` skips the final
    pixel-space consolidation (ablation only: the textures are then not zoom-consistent).
    Errors are P10Error subclasses with one-line messages: InvalidInputError,
    ModelNotFoundError, OutOfMemoryError, Cancelled, ModelOutputError.
    """
    if not isinstance(settings, GenerateSettings):
        raise InvalidInputError("generate() needs a GenerateSettings")
    settings.validate()
    cache = models if models is not None else ModelCache()
    state = {"phase": "loading model", "device": "GPU"}
    try:
        return _generate(settings, progress, cancel, cache, consolidate, state, known or {},
                         footprints)
    except P10Error:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_device_memory()
        raise OutOfMemoryError(
            f"out of {state['device']} memory while {state['phase']}: set a micro-batch size "
            f"(e.g. {max(1, len(settings.prompts) // 2)}) or a smaller width/height"
        ) from None
    finally:
        if models is None:
            cache.release()


def _generate(s: GenerateSettings, progress: Progress | None, cancel, cache: ModelCache,
              consolidate: bool, state: dict, known: Mapping[int, np.ndarray],
              footprints=None) -> ZoomStack:
    def report(phase: str, step: int, total: int, preview=None) -> None:
        state["phase"] = phase
        if progress is not None:
            progress(phase, step, total, preview)

    raise_if_cancelled(cancel)
    fetch_model(s.model, report, cancel)  # a hub model not cached yet: "downloading" first
    report("loading model", 0, 1)
    raise_if_cancelled(cancel)
    backend = cache.get(s.model, family=s.family, device=s.device, lora=s.lora)
    state["device"] = "GPU" if backend.device.type != "cpu" else "CPU"
    s.validate(family=backend.family)
    report("loading model", 1, 1)

    # Sizes: pixels the model samples; the sampler works on pixels / VAE factor.
    f, p = backend.scale_factor, s.zoom
    height, width = s.height or backend.native_size, s.width or backend.native_size
    for name, n in (("height", height), ("width", width)):
        if n % (2 * p * f):
            raise InvalidInputError(
                f"{name} {n} must be a multiple of {2 * p * f} pixels for zoom {p} with this model"
            )
    # scheduler/steps/guidance: explicit settings, else the few-step model's, else the family's
    choice = s.resolved(backend.family, backend.scheduler_config.get("_class_name", ""))
    steps = choice["steps"]
    scheduler = make_scheduler(choice["scheduler"], {**backend.sampling_config(height, width),
                                                     **choice["scheduler_config"]})
    train_steps = int(scheduler.config.get("num_train_timesteps", steps))
    if steps > train_steps:  # settings allow MAX_STEPS; this model's schedule may be shorter
        raise InvalidInputError(f"steps {steps} exceed this model's {train_steps}-step schedule")
    guidance = choice["guidance"]
    if s.guidance is None and getattr(backend, "guidance_embedded", False):
        guidance = LCM_EMBEDDED_GUIDANCE
    plan = upscale_plan(backend, s.upscale, s.upscaler)  # models checked before sampling
    n_levels = len(s.prompts)
    # known levels coarser than an unknown one: reconstruction guidance (a backward pass per step)
    pinned = {k % n_levels for k in known} | ({s.photo_level % n_levels} if s.photo is not None else set())
    reconstruct = needs_reconstruction(pinned, n_levels, loop=s.loop)
    micro_batch = s.micro_batch  # an explicit value wins; else the largest that fits
    if micro_batch is None:
        micro_batch = fit_micro_batch(backend, n_levels, guidance, height, width, reconstruct)
    out_scale = f * 4 ** len(plan)  # output pixels per sampler pixel
    geo = Footprints.from_settings(s, height // f, width // f, out_scale, footprints)

    raise_if_cancelled(cancel)
    report("encoding prompts", 0, 1)
    cond = backend.encode_prompts(list(s.prompts), s.negative_prompt, height=height, width=width)
    photo = None
    photo_level = s.photo_level % n_levels
    known = {k % n_levels: v for k, v in known.items()}
    for k, v in known.items():  # before minutes of sampling: the stack's size, a multiple of ours
        kh, kw = np.shape(v)[:2]
        if np.ndim(v) != 3 or kh % height or kw % width or kh // height != kw // width:
            raise InvalidInputError(f"the known image of level {k} is {kw}x{kh} pixels; this "
                                    f"model samples {width}x{height}")
    known_x = {k: encode_known(backend, v, width, height, micro_batch) for k, v in known.items()}
    if s.photo is not None:
        photo = backend.encode_photo(load_photo(s.photo, width, height), micro_batch)
        known_x[photo_level] = photo  # the photo's level shows the photo exactly
    # encoded one by one, known images disagree slightly (the VAE is not zoom-equivariant)
    known_x = make_consistent(known_x, p, **geo.kw())
    report("encoding prompts", 1, 1)

    generator = torch.Generator("cpu").manual_seed(int(s.seed))  # same noise on any device

    def on_step(step: int, total: int, layers: torch.Tensor) -> None:
        preview = backend.preview(render_image(layers, p, **geo.kw())) if progress is not None else None
        report("sampling", step, total, preview)

    report("sampling", 0, steps)
    denoiser = backend.make_denoiser(cond, guidance, micro_batch, differentiable=reconstruct)
    denoiser = backend.pixel_blending(denoiser, p, s.pixel_blend, micro_batch, **geo.kw(f))
    result = sample_zoom_stack(
        denoiser, scheduler,
        num_levels=n_levels, zoom=p, shape=(backend.channels, height // f, width // f),
        num_inference_steps=steps, generator=generator, photo=photo, photo_level=photo_level,
        known=known_x or None, callback=on_step, cancel=cancel, device=backend.device,
        dtype=torch.float32, **geo.kw(),
    )

    raise_if_cancelled(cancel)
    report("decoding", 0, 1)
    pixels = backend.decode(result.images, micro_batch)  # (N, 3, H, W) in [0, 1], CPU
    report("decoding", 1, 1)

    if plan:  # ×4 stages, each sampled jointly across the levels (Backend.upscale)
        # the SR models are not few-step models: the renoise sampler is for distilled ones
        sr_scheduler, sr_steps = choice["scheduler"], steps
        if sr_scheduler == "lcm" or sr_scheduler in FLOW_SCHEDULERS:
            # the ×4 stages are DDPM-trained UNets: the diffusion families' default sampler
            sr_scheduler = DEFAULT_SCHEDULER.get(backend.family, "ddpm")
            sr_scheduler = DEFAULT_SCHEDULER["sd"] if sr_scheduler in FLOW_SCHEDULERS else sr_scheduler
            sr_steps = SCHEDULERS[sr_scheduler]
        pixels = upscale(backend, pixels, cond, list(s.prompts), s.negative_prompt, plan, zoom=p,
                                 scheduler=sr_scheduler, steps=sr_steps, seed=s.seed,
                                 micro_batch=micro_batch, cancel=cancel,
                                 progress=lambda phase, i, n: report(phase, i, n),
                                 **geo.kw(f))

    raise_if_cancelled(cancel)
    known_px = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)).permute(2, 0, 1)
                for k, v in known.items()}
    if s.photo is not None:
        h_out, w_out = pixels.shape[-2:]
        known_px[photo_level] = (load_photo(s.photo, w_out, h_out)[0] + 1) / 2
    for k, v in known_px.items():
        if tuple(v.shape) != tuple(pixels.shape[1:]):
            raise InvalidInputError(f"the known image of level {k} is {v.shape[2]}x{v.shape[1]} "
                                    f"pixels; this model makes {pixels.shape[3]}x{pixels.shape[2]}")
        pixels[k] = v
    if consolidate:
        report("consolidating", 0, 1)
        # after joint SR only rounding-level disagreement is left: keep each level's SR bands
        kept = SR_BLEND[sr_blend_method(p)] if plan else 0
        pixels = consolidate_pixels(pixels, p, detail_bands=kept, **geo.kw(out_scale))
        report("consolidating", 1, 1)
    if known_px:  # the known pixels, not their VAE round trip; the rest agrees with them
        pixels = impose_known(pixels, make_consistent(known_px, p, **geo.kw(out_scale)), p,
                              bounds=(0.0, 1.0), **geo.kw(out_scale))
    layers = pixels.clamp(0, 1).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)

    manifest = {
        "p10_version": __version__,
        "prompts": list(s.prompts),
        "negative_prompt": s.negative_prompt,
        "zoom": p,
        "width": int(layers.shape[2]),
        "height": int(layers.shape[1]),
        "num_levels": n_levels,
        "model": model_reference(s.model),  # a local path absolute: extendable from anywhere
        "family": backend.family,
        "scheduler": choice["scheduler"],
        "steps": steps,
        "guidance": guidance,
        "seed": int(s.seed),
        "photo": s.photo is not None,
        "levels": [{"prompt": prompt, "made_by": "generate", "seed": int(s.seed)}
                   for prompt in s.prompts],
        "sample_width": width,
        "sample_height": height,
        "micro_batch": micro_batch,
    }
    if plan:
        manifest["upscale"] = 4 ** len(plan)
        manifest["upscaler"] = ",".join(source for _, source in plan)
    if s.photo is not None:
        manifest["photo_level"] = photo_level
        manifest["levels"][photo_level]["made_by"] = "photo"
    manifest.update(geo.manifest(int(layers.shape[1]), int(layers.shape[2]), p, out_scale,
                                 s.num_transitions))
    if s.lora:
        manifest["lora"] = model_reference(s.lora)
    if choice["fast_model"]:
        manifest["fast_model"] = choice["fast_model"]
    return ZoomStack(layers, manifest)


def encode_known(backend, image: np.ndarray, width: int, height: int,
                 micro_batch: int | None = None) -> torch.Tensor:
    """A known level's pixels (H, W, 3) in [0, 1] -> the sampler's space (C, h, w).

    Resized (area average) to the sampled size first when the stack is larger (IF stage II).
    """
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != (height, width):
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="area")
    return backend.encode_photo(x * 2 - 1, micro_batch)


__all__ = ["consolidate_pixels", "encode_known", "generate", "load_photo"]
