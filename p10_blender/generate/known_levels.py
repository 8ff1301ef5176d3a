"""Extend the last stack deeper or wider, or regenerate one of its levels, as a background job.

The same job runner, progress, cancel and scene rebuild as Generate (``generation``): the new
stack goes to a new folder and replaces the scene's zoom only once it is complete, so the
previous stack stays in place while the job runs, and after a cancel or an error.

Which prompt rows are new: the panel's list holds the stack's prompts as one run of rows;
rows after that run are the new deeper levels, rows before it the new wider ones. Regenerate
Level re-samples the level of the active row with that row's (possibly edited) text.
"""

from __future__ import annotations

from pathlib import Path

import bpy

from . import generation, jobs
from ..properties import prompts_of, settings_scene
from ...core.errors import Cancelled, InvalidInputError, P10Error


def stack_rows(rows: list[str], stack_prompts: list[str]) -> int:
    """Index of the first row of the stack's prompts within the prompt list.

    Rows map one to one when the list is exactly as long as the stack (edited texts allowed).
    """
    n = len(stack_prompts)
    texts = [r.strip() for r in rows]
    if len(texts) == n:
        return 0
    wanted = [p.strip() for p in stack_prompts]
    for i in range(len(texts) - n + 1):
        if texts[i:i + n] == wanted:
            return i
    raise InvalidInputError(
        f"The prompt list must hold the stack's {n} prompts in order: add the new levels' rows "
        "after them (deeper) or before them (wider)")


def _last_stack(p10):
    from ...core.stack.stack_io import ZoomStack

    directory = bpy.path.abspath(p10.last_stack_dir).strip() if p10.last_stack_dir else ""
    if not directory:
        raise InvalidInputError("No stack yet: generate one first (Extend and Regenerate work "
                                "on the last stack)")
    return directory, ZoomStack.load(directory)


def _options(p10, stack) -> dict:
    """The panel's sampling settings; model, zoom and size come from the stack."""
    options = {"model": p10.model, "device": p10.device,
               "guidance": None if p10.guidance_auto else float(p10.guidance),
               "scheduler": p10.scheduler, "negative_prompt": p10.negative_prompt,
               "steps": p10.steps or None,
               "micro_batch": int(getattr(p10, "micro_batch", 0) or 0) or None,
               # empty: the stack's LoRA is kept; another one is refused (core.extend)
               "lora": p10.lora.strip() or None}
    from ...core.extend import recorded_seeds

    # the panel's seed if the stack has not used it yet; else extend takes the stack's + 1 and
    # regenerate a new random seed (pressing Regenerate again gives a new variation)
    seed = int(p10.seed) if int(p10.seed) not in recorded_seeds(stack.manifest) else None
    return options, seed


def plan_extend(p10, outward: bool) -> tuple[str, object, list[str], dict]:
    """(stack folder, stack, new prompts, extend keywords) of the panel; InvalidInputError."""
    from ...core.extend import check_extend

    directory, stack = _last_stack(p10)
    rows = prompts_of(p10)
    start = stack_rows(rows, stack.prompts)
    new = rows[:start] if outward else rows[start + len(stack.prompts):]
    if not new:
        where = "before" if outward else "after"
        raise InvalidInputError(f"Add prompt rows {where} the stack's {len(stack.prompts)} "
                                f"prompts: one per new level")
    options, seed = _options(p10, stack)
    kw = dict(outward=outward, overlap=int(p10.extend_overlap), window=int(p10.extend_window),
              seed=seed, **options)
    check_extend(stack, new, **kw)
    return directory, stack, [t.strip() for t in new], kw


def plan_regenerate(p10) -> tuple[str, object, int, str, dict]:
    """(stack folder, stack, level, prompt, keywords) for the active prompt row."""
    from ...core.extend import check_regenerate

    directory, stack = _last_stack(p10)
    rows = prompts_of(p10)
    start = stack_rows(rows, stack.prompts)
    level = p10.prompt_index - start
    if not 0 <= level < len(stack.prompts):
        raise InvalidInputError("The active prompt row is not one of the stack's levels: select "
                                "the row of the level to regenerate")
    prompt = rows[p10.prompt_index]
    options, seed = _options(p10, stack)
    check_regenerate(stack, [level], [prompt], seed=seed, **options)
    return directory, stack, level, prompt.strip(), dict(seed=seed, **options)


def _work(call, out_dir: Path):
    def work(reporter: jobs.Reporter) -> str:
        generate, model_cache = generation.engine()
        if generation._models is None:
            generation._models = model_cache()

        def progress(phase: str, step: int, total: int, preview=None) -> None:
            reporter.progress(phase, step, total, preview)

        stack = call(generate=generate, models=generation._models, progress=progress,
                     cancel=reporter.cancel_event)
        if reporter.cancelled():
            raise Cancelled("Cancelled.")
        reporter.progress("saving", 0, 1)
        stack.save(out_dir)  # a new folder: the previous stack stays until this one is complete
        return str(out_dir)
    return work


def _start(context, name: str, call, levels: int, sync: bool | None, replaces: str = "",
           level_shift: int = 0) -> jobs.Job:
    scene = settings_scene(context.scene)  # a rig or video scene works for its source
    out_dir = generation.new_stack_dir(scene.p10)
    generation.check_output_location(out_dir)  # a read-only folder fails now, not after the run
    job = jobs.Job(name=name, work=_work(call, out_dir), on_message=generation._on_message,
                   on_finish=generation._on_finish)
    job.data.update(epoch=generation._epoch, scene=scene.name, out_dir=str(out_dir), levels=levels,
                    replaces=replaces, level_shift=level_shift)  # the rig updates in place
    generation.runner.start(job)
    if sync if sync is not None else bpy.app.background:
        generation.runner.drive(job)
    else:
        jobs.start_polling(generation.runner)
    return job


def start_extend(context, outward: bool = False, sync: bool | None = None) -> jobs.Job:
    """Extend the last stack with the prompt rows after (or, ``outward``, before) its own."""
    why = generation.check_can_start()
    if why:
        raise P10Error(why)
    directory, stack, new, kw = plan_extend(settings_scene(context.scene).p10, outward)
    from ...core.extend import extend

    def call(**run):
        return extend(stack, new, **kw, **run)
    return _start(context, "extend", call, min(kw["window"], len(stack.prompts) + len(new)), sync,
                  directory, len(new) if outward else 0)


def start_regenerate(context, sync: bool | None = None) -> jobs.Job:
    """Re-sample the level of the active prompt row, every other level known."""
    why = generation.check_can_start()
    if why:
        raise P10Error(why)
    directory, stack, level, prompt, kw = plan_regenerate(settings_scene(context.scene).p10)
    from ...core.extend import regenerate

    def call(**run):
        return regenerate(stack, [level], [prompt], **kw, **run)
    return _start(context, "regenerate", call, len(stack.prompts), sync, directory)
