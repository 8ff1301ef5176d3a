"""Grow or repair a saved zoom stack with known levels: ``extend`` and ``regenerate``.

Both sample with ``generate(..., known=...)``: the levels kept from the stack are known
(shown exactly, docs/sampler.md "Known levels"), the others are sampled given them.

* ``extend``: new levels beyond the finest (or, ``outward``, beyond the outermost), sampled in
  windows of ``window`` levels whose first (last) ``overlap`` levels are known. The peak memory
  is that of a ``window``-level generate whatever the total depth.
* ``regenerate``: re-sample some levels with every other level known.

Old levels come back unchanged (the same pixels before 8-bit rounding; ≤ 1/255 after it,
through the finest-first quantisation of ``ZoomStack.save``). The manifest's ``levels`` list
records per level its prompt, how it was made (generate / photo / extend / regenerate) and the
seed. ``check_extend`` / ``check_regenerate`` validate everything that can be checked before a
model loads (the CLI and the add-on call them first).
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Any, Callable, Sequence

import numpy as np

from .errors import InvalidInputError, raise_if_cancelled
from .settings import (LATENT_FAMILIES, MAX_SEED, VAE_SCALE, GenerateSettings, check_targets,
                       family_hint, output_size)
from .stack.stack_io import ZoomStack, centred_footprints
from .zoom.geometry import footprints_for_targets, scale_footprints

Progress = Callable[[str, int, int, "np.ndarray | None"], None]

#: Settings a stack's manifest carries over to extend/regenerate (options may override the
#: sampling ones; model, LoRA, zoom and size must match).
_FROM_MANIFEST = ("model", "zoom", "scheduler", "steps", "guidance", "negative_prompt",
                  "family", "upscaler", "upscale", "lora")
SAMPLING_OPTIONS = ("model", "steps", "guidance", "scheduler", "negative_prompt", "device",
                    "micro_batch", "family", "upscaler", "upscale", "pixel_blend", "zoom",
                    "width", "height", "lora")


# ------------------------------------------------------------------------- provenance
def level_records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's per-level records; stacks written before they existed get synthesised
    ones (every level made by ``generate`` with the stack's seed)."""
    prompts = list(manifest.get("prompts", []))
    records = manifest.get("levels")
    if not (isinstance(records, list) and len(records) == len(prompts)):
        records = [{}] * len(prompts)
    out = []
    for prompt, record in zip(prompts, records):
        rec = {"prompt": prompt, "made_by": "generate", "seed": manifest.get("seed")}
        # the prompt comes from ``prompts``: a hand edit there is honoured, not reverted
        rec.update({k: v for k, v in (record if isinstance(record, dict) else {}).items()
                    if k != "prompt"})
        out.append(rec)
    return out


def recorded_seeds(manifest: dict[str, Any]) -> set[int]:
    """Every seed the stack records (its own and each level's)."""
    seeds = [manifest.get("seed")] + [r.get("seed") for r in level_records(manifest)]
    return {s for s in seeds if isinstance(s, int) and not isinstance(s, bool)}


def new_seed(manifest: dict[str, Any]) -> int:
    """A random seed the stack has not used: regenerating again gives a new variation."""
    used = recorded_seeds(manifest)
    while True:
        seed = secrets.randbelow(2**31)
        if seed not in used:
            return seed


# ------------------------------------------------------------------------- settings
def _same_model(a: str, b: str) -> bool:
    def norm(m: str) -> str:
        m = os.path.expanduser(str(m)).rstrip("/\\")
        return os.path.realpath(m) if os.path.exists(m) else m
    return norm(a) == norm(b)


def _gone(recorded: str, given: str) -> bool:
    """The stack's model (or LoRA) is not on this machine and ``given`` may stand in for it:
    the file or folder it recorded is gone, or (a stack of an older version, which recorded a
    relative path) it is no cached hub model either and ``given`` is a local file or folder."""
    from .models.cache import looks_like_path, model_is_here

    if model_is_here(recorded):
        return False
    return looks_like_path(recorded) or os.path.exists(os.path.expanduser(str(given)))


def _check_same_model(m: dict[str, Any], options: dict[str, Any]) -> None:
    """New levels come from the stack's model and LoRA: a different ``model`` / ``lora`` is
    refused unless the stack's is gone from this machine (then the one given is used)."""
    model, given = m.get("model"), options.get("model")
    if given is not None and model and not _same_model(given, model) and not _gone(model, given):
        raise InvalidInputError(f"this stack was made with the model {model!r}, not {given!r}: "
                                "new levels must come from the same model")
    if not model and not given:
        raise InvalidInputError("the stack does not record its model: give the model")
    lora, given = m.get("lora"), options.get("lora")
    if given is not None and not lora:
        raise InvalidInputError(f"this stack was made without a LoRA, not with {given!r}: new "
                                "levels must come from the same model (omit --lora)")
    if given is not None and not _same_model(given, lora) and not _gone(lora, given):
        raise InvalidInputError(f"this stack was made with the LoRA {lora!r}, not {given!r}: new "
                                "levels must come from the same model (omit --lora to keep it)")


def stack_settings(stack: ZoomStack, prompts: Sequence[str], seed: int | None,
                   options: dict[str, Any]) -> GenerateSettings:
    """GenerateSettings for sampling more levels of ``stack``: its model, zoom, size and
    sampling settings, with ``options`` on top. Raises InvalidInputError (one line) when the
    model, zoom or size given differs from the stack's."""
    m = stack.manifest
    unknown = set(options) - set(SAMPLING_OPTIONS)
    if unknown:
        raise InvalidInputError(f"unknown option(s) {', '.join(sorted(unknown))}")
    options = {k: v for k, v in options.items() if v is not None}
    _check_same_model(m, options)
    if "zoom" in options and int(options["zoom"]) != int(m["zoom"]):
        raise InvalidInputError(f"this stack zooms by {m['zoom']}, not {options['zoom']}: "
                                "the zoom factor must match")
    sample_w = int(m.get("sample_width") or m["width"])
    sample_h = int(m.get("sample_height") or m["height"])
    for name, have, stack_px in (("width", sample_w, m["width"]), ("height", sample_h, m["height"])):
        if name in options and int(options[name]) not in (have, int(stack_px)):
            raise InvalidInputError(f"this stack's {name} is {stack_px} pixels, not "
                                    f"{options[name]}: the size must match")
    data = {k: m[k] for k in _FROM_MANIFEST if m.get(k) is not None}
    data.update({k: v for k, v in options.items() if k not in ("width", "height")})
    data.update(prompts=list(prompts), width=sample_w, height=sample_h, loop=stack.loop,
                seed=seed if seed is not None else (m.get("seed") or 0) + 1)
    settings = GenerateSettings.from_dict(data).validate()
    # --upscale / --upscaler must give the stack's own layer size (else the old and new levels
    # would not fit together: found here, not after the model loaded and sampled)
    family = settings.family or family_hint(settings.model)
    out_h, out_w = output_size(family, sample_w, sample_h, settings.upscaler, settings.upscale)
    if (out_h, out_w) != (int(m["height"]), int(m["width"])):
        have = int(m["width"]) // sample_w if sample_w else 1
        raise InvalidInputError(
            f"this stack's levels are {m['width']}x{m['height']} pixels (sampled at "
            f"{sample_w}x{sample_h}, upscaled x{have}); these settings would make "
            f"{out_w}x{out_h}: leave --upscale / --upscaler out, or give upscale {have}")
    return settings


def _check_prompts(prompts: Sequence[str], what: str) -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise InvalidInputError(f"{what} must be a list of prompts, one per level")
    if not prompts:
        raise InvalidInputError(f"no prompts: give one {what} per new level, outermost first")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise InvalidInputError(f"the prompt of new level {i + 1} is empty")
    return [p.strip() for p in prompts]


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{name} must be a whole number >= {low}, got {value!r}")
    return value


def _check_known_levels(stack: ZoomStack, levels: Sequence[int]) -> None:
    """The stack's levels that will be known must agree with each other (a hand-edited layer
    would not): InvalidInputError naming both levels otherwise."""
    import torch

    from .zoom.known import check_known

    layers = np.asarray(stack.layers, dtype=np.float32)
    known = {i: torch.from_numpy(layers[i]).permute(2, 0, 1) for i in levels}
    check_known(known, len(layers), tuple(known[levels[0]].shape), stack.zoom,
                **_geometry_kw(stack, stack.footprints))


def _is_centred(stack: ZoomStack, footprints: Sequence[Sequence[int]]) -> bool:
    _, h, w, _ = stack.layers.shape
    return [tuple(fp) for fp in footprints] == centred_footprints(h, w, stack.zoom, len(footprints))


def _geometry_kw(stack: ZoomStack, footprints: Sequence[Sequence[int]]) -> dict:
    """``footprints=`` / ``loop=`` for the zoom-stack operators and ``generate``; nothing for a
    centred, open stack (the calls of stacks without footprints stay as they were)."""
    if not stack.loop and _is_centred(stack, footprints):
        return {}
    return {"footprints": [tuple(fp) for fp in footprints], "loop": stack.loop}


def grid_scale(stack: ZoomStack, family: str | None = None) -> int:
    """The stack's pixels per sampler pixel: the VAE factor of latent models times the upscale."""
    m = stack.manifest
    w = int(stack.layers.shape[2])
    vae = VAE_SCALE if (family or m.get("family") or family_hint(str(m.get("model") or ""))) \
        in LATENT_FAMILIES else 1
    return vae * w // int(m.get("sample_width") or w)


def _check_on_grid(stack: ZoomStack, settings: GenerateSettings) -> None:
    """The stack's own footprints must fall on the sampler's grid (a stack made with targets
    does; a hand-edited manifest may not): one line before any model loads."""
    if _geometry_kw(stack, stack.footprints):
        scale_footprints(stack.footprints, 1, grid_scale(stack, settings.family))


def new_footprints(stack: ZoomStack, targets, count: int, family: str | None) -> list[tuple[int, int]]:
    """The footprints of ``count`` new transitions from ``targets`` (None: centred) in the
    stack's pixels, on the sampler's grid (latent pixels times the VAE and upscale factors)."""
    _, h, w, _ = stack.layers.shape
    targets = check_targets(targets, count)
    if targets is None:
        return centred_footprints(h, w, stack.zoom, count)
    scale = grid_scale(stack, family)
    pairs = [tuple(t) for t in targets] * (count if len(targets) == 1 else 1)
    return footprints_for_targets(pairs, h, w, stack.zoom, grid=scale * stack.zoom)  # as generate


def check_extend(stack: ZoomStack, prompts: Sequence[str], *, outward: bool = False, overlap: int = 2,
                 window: int | None = None, seed: int | None = None, targets=None,
                 **options) -> tuple[GenerateSettings, int, int]:
    """Validate an extension before any model loads: (settings, overlap, window).

    ``targets``: ``[x, y]`` per new transition (one for all, or None: centred), see
    ``GenerateSettings.targets``. A looping stack is refused (its levels form a cycle: there is
    no finest or outermost level to grow from)."""
    if stack.loop:
        raise InvalidInputError("this stack is a loop (level 0 follows its finest level): "
                                "extend cannot add levels to a cycle; regenerate its levels or "
                                "generate a longer loop")
    prompts = _check_prompts(prompts, "prompt")
    check_targets(targets, len(prompts))
    n = int(stack.layers.shape[0])
    overlap = min(_check_int(overlap, "overlap", 1), n)
    window = max(overlap + 1, 4) if window is None else _check_int(window, "window", 2)
    if window <= overlap:
        raise InvalidInputError(f"the window ({window} levels) must be larger than the overlap "
                                f"({overlap} levels)")
    settings = stack_settings(stack, prompts, seed, options)
    _check_on_grid(stack, settings)
    windows = -(-len(prompts) // (window - overlap))
    if settings.seed + windows - 1 > MAX_SEED:  # window w samples with seed + w
        raise InvalidInputError(
            f"seed {settings.seed} is too large for {windows} windows (each takes the next seed): "
            f"at most {MAX_SEED - windows + 1}")
    _check_known_levels(stack, list(range(overlap)) if outward else list(range(n - overlap, n)))
    return settings, overlap, window


def check_regenerate(stack: ZoomStack, levels: Sequence[int], prompts: Sequence[str] | None = None,
                     *, seed: int | None = None, **options) -> tuple[GenerateSettings, list[int]]:
    """Validate a regeneration before any model loads: (settings, sorted levels)."""
    n = int(stack.layers.shape[0])
    if isinstance(levels, int):
        levels = [levels]
    if not levels:
        raise InvalidInputError("no level to regenerate: give at least one level")
    chosen = []
    for lv in levels:
        if isinstance(lv, bool) or not isinstance(lv, int) or not -n <= lv < n:
            raise InvalidInputError(f"level {lv!r} is out of range: the stack has levels "
                                    f"0..{n - 1}")
        chosen.append(lv % n)
    if len(set(chosen)) != len(chosen):
        raise InvalidInputError("a level is given twice")
    if len(set(chosen)) == n:
        raise InvalidInputError("every level would be regenerated: nothing is left known; "
                                "generate a new stack instead")
    all_prompts = list(stack.prompts)
    if prompts is not None:
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = _check_prompts(prompts, "prompt")
        if len(prompts) != len(chosen):
            raise InvalidInputError(f"give one prompt per regenerated level ({len(chosen)}), "
                                    f"got {len(prompts)}")
        for lv, text in zip(chosen, prompts):
            all_prompts[lv] = text
    for i, text in enumerate(all_prompts):
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(f"the stack's prompt of level {i} is empty: give one")
    if seed is None:  # a new variation every time (the stack's + 1 would repeat the last one)
        seed = new_seed(stack.manifest)
    settings = stack_settings(stack, all_prompts, seed, options)
    _check_on_grid(stack, settings)
    _check_known_levels(stack, [i for i in range(n) if i not in chosen])
    return settings, sorted(chosen)


# ------------------------------------------------------------------------- running
def _runner(progress: Progress | None, windows: int, models, cancel, generate=None):
    """generate() per window with one shared model cache and window-tagged progress."""
    if generate is None:
        from .generate import generate
    if models is None:
        from .backends.loading import ModelCache
    cache = models if models is not None else ModelCache()

    def run(settings: GenerateSettings, known: dict, index: int, **placed) -> ZoomStack:
        def report(phase, step, total, preview=None):
            if progress is not None:
                tag = f" (window {index + 1}/{windows})" if windows > 1 else ""
                progress(f"{phase}{tag}", step, total, preview)
        raise_if_cancelled(cancel)
        return generate(settings, progress=report, cancel=cancel, models=cache, known=known,
                        **placed)
    return run, cache


def _result(stack: ZoomStack, layers: np.ndarray, records: list[dict], settings,
            footprints: Sequence[Sequence[int]] | None = None) -> ZoomStack:
    """The new stack: ``stack``'s manifest with the new levels (and ``footprints``: all of the
    new stack's, written only when one is off-centre)."""
    from .models.cache import model_reference

    manifest = {k: v for k, v in stack.manifest.items()
                if k not in ("layers", "num_levels", "created")}
    manifest.update(prompts=[r["prompt"] for r in records], levels=records,
                    num_levels=len(records), model=model_reference(settings.model))
    manifest.pop("lora", None)
    if settings.lora:  # the stack's LoRA, kept (or the one standing in for it when it was gone)
        manifest["lora"] = model_reference(settings.lora)
    if footprints is not None:
        manifest.pop("footprints", None)
        if not _is_centred(stack, footprints):
            manifest["footprints"] = [list(fp) for fp in footprints]
    choice = settings.resolved(stack.manifest.get("family"))  # "auto" recorded as what ran
    manifest.update(scheduler=choice["scheduler"], steps=choice["steps"],
                    guidance=choice["guidance"])
    return ZoomStack(np.ascontiguousarray(layers, dtype=np.float32), manifest)


def extend(stack: ZoomStack, prompts: Sequence[str], outward: bool = False, overlap: int = 2,
           *, window: int | None = None, seed: int | None = None,
           progress: Progress | None = None,
           cancel: "threading.Event | Callable[[], bool] | None" = None,
           models=None, generate: Callable | None = None, targets=None, **options) -> ZoomStack:
    """A new ZoomStack: ``stack`` with one new level per prompt (outermost first) beyond its
    finest level, or with ``outward`` in front of its outermost level.

    The stack's footprints are kept; ``targets`` place the new transitions (one ``[x, y]`` per
    new level, or one for all; None: centred): inward, new level 0 inside the old finest one;
    outward, the old level 0 inside the last new one. A loop is refused (``check_extend``).

    Sampled in windows of ``window`` levels (default 4) whose ``overlap`` levels next to the old
    ones are known; each window's seed is ``seed + index`` (default: the stack's seed + 1).
    ``options``: model, steps, guidance, scheduler, negative_prompt, device, micro_batch, …
    (the stack's by default; model, zoom and size must match it). ``models``: a ModelCache to
    reuse; ``generate``: the generator to call (default ``core.generate.generate``; a seam).
    """
    settings, overlap, window = check_extend(stack, prompts, outward=outward, overlap=overlap,
                                             window=window, seed=seed, targets=targets, **options)
    new_prompts = list(settings.prompts)
    fresh_fps = new_footprints(stack, targets, len(new_prompts), settings.family)
    all_fps = fresh_fps + stack.footprints if outward else stack.footprints + fresh_fps
    placed = _geometry_kw(stack, all_fps)  # {} for a centred stack extended centred
    per_window = window - overlap
    windows = -(-len(new_prompts) // per_window)
    run, cache = _runner(progress, windows, models, cancel, generate)
    layers = np.asarray(stack.layers, dtype=np.float32)
    records = level_records(stack.manifest)
    try:
        remaining = list(new_prompts)
        for w in range(windows):
            ov = min(overlap, len(layers))
            take = min(per_window, len(remaining))
            win_seed = settings.seed + w
            if not outward:
                fresh, remaining = remaining[:take], remaining[take:]
                kept = list(range(len(layers) - ov, len(layers)))
                prompts_w = [records[i]["prompt"] for i in kept] + fresh
                known = {j: layers[i] for j, i in enumerate(kept)}
                first = len(layers) - ov  # the window's first level in the final stack
            else:
                fresh, remaining = remaining[-take:], remaining[:-take]
                prompts_w = fresh + [records[i]["prompt"] for i in range(ov)]
                known = {take + i: layers[i] for i in range(ov)}
                first = len(remaining)
            s = GenerateSettings.from_dict({**settings.to_dict(), "prompts": prompts_w,
                                            "seed": win_seed})
            fps_w = {"footprints": all_fps[first:first + len(prompts_w) - 1]} if placed else {}
            out = run(s, known, w, **fps_w).layers
            new_records = [{"prompt": p, "made_by": "extend", "seed": win_seed} for p in fresh]
            if not outward:
                layers = np.concatenate([layers, out[ov:]])
                records = records + new_records
            else:
                layers = np.concatenate([out[:take], layers])
                records = new_records + records
    finally:
        if models is None:
            cache.release()
    return _result(stack, layers, records, settings, all_fps)


def regenerate(stack: ZoomStack, levels: Sequence[int], prompts: Sequence[str] | None = None,
               *, seed: int | None = None, progress: Progress | None = None,
               cancel: "threading.Event | Callable[[], bool] | None" = None,
               models=None, generate: Callable | None = None, **options) -> ZoomStack:
    """A new ZoomStack: ``levels`` re-sampled (with new ``prompts``, one per level, if given)
    with every other level of ``stack`` known. Default seed: a random one the stack has not
    used (recorded in the manifest's ``levels``), so regenerating again gives a new variation."""
    settings, chosen = check_regenerate(stack, levels, prompts, seed=seed, **options)
    run, cache = _runner(progress, 1, models, cancel, generate)
    layers = np.asarray(stack.layers, dtype=np.float32)
    try:
        known = {i: layers[i] for i in range(len(layers)) if i not in chosen}
        placed = _geometry_kw(stack, stack.footprints)
        out = run(settings, known, 0, **({"footprints": placed["footprints"]} if placed else {})).layers
    finally:
        if models is None:
            cache.release()
    records = level_records(stack.manifest)
    for lv in chosen:
        records[lv] = {"prompt": settings.prompts[lv], "made_by": "regenerate",
                       "seed": int(settings.seed)}
    return _result(stack, out, records, settings)  # known levels come back exactly


__all__ = ["check_extend", "check_regenerate", "extend", "grid_scale", "level_records",
           "new_footprints", "new_seed", "recorded_seeds", "regenerate", "stack_settings"]
