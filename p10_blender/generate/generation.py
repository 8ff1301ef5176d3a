"""Generate a zoom stack from the scene settings: settings -> background job -> images.

Main thread: validate, export the photo, start the job, apply progress (preview images),
load the finished stack. Worker thread: ``core.generate.generate`` and ``ZoomStack.save``;
torch is imported there, when the first job starts, never at add-on enable.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import time
from pathlib import Path
from typing import Any

import bpy

from ..setup import compat, dependencies, paths
from . import jobs
from ..properties import prompts_of, settings_dict, settings_scene
from ...core.errors import Cancelled, InvalidInputError, P10Error, is_out_of_memory
from ...core.stack.publish import check_output_location

PREVIEW_PREFIX = "Zoom Preview "  # names an artist sees carry no "P10"
STACK_JOBS = ("generate", "extend", "regenerate")  # jobs that end in a new stack folder
LAYER_PREFIX = "Zoom Layer "

_models: Any = None  # core.backends.ModelCache, created by the first job (worker thread)
_epoch = 0           # bumped on every file load: results of older jobs must not touch the file


def friendly_error(exc: BaseException) -> str:
    """One plain sentence for any exception a job may raise."""
    if isinstance(exc, Cancelled):
        return str(exc) or "Cancelled."
    if isinstance(exc, P10Error):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ModuleNotFoundError):
        return (f"Python package '{exc.name}' is missing: install dependencies in the add-on "
                f"preferences")
    if is_out_of_memory(exc):
        return "Out of memory: lower the image size, use fewer prompts, or switch device"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Generation failed: {text}"


runner = jobs.JobRunner(error_message=friendly_error)


def engine():
    """``(generate, ModelCache)`` of core. Test seam: tests replace it with a fake engine."""
    from ...core.generate import generate
    from ...core.backends import ModelCache
    return generate, ModelCache


# -- settings -------------------------------------------------------------------------------

def build_settings(p10, photo_path: str | None = None):
    """``core.settings.GenerateSettings`` of the scene settings; raises InvalidInputError."""
    texts = prompts_of(p10)
    if not texts:
        raise InvalidInputError("Add at least one prompt (one per zoom level, outermost first)")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInputError(f"Prompt {i + 1} is empty: type a prompt or remove it")
    from ...core.settings import GenerateSettings

    values = settings_dict(p10)
    if photo_path is not None:
        values["photo_level"] = int(p10.photo_level)
    settings = GenerateSettings(prompts=[t.strip() for t in texts], photo=photo_path, **values)
    settings.validate()
    return settings


def new_stack_dir(p10) -> Path:
    """A new folder named after the first prompt (``a-galaxy``, then ``a-galaxy-2`` …): the
    rig scene and its objects take this name, so it stays short and readable."""
    root = paths.output_root(p10)  # beside the .blend or under home, never the extension's
    slug = re.sub(r"[^a-z0-9]+", "-", (prompts_of(p10) or ["stack"])[0].lower()).strip("-")
    slug = slug[:32].rstrip("-") or "stack"
    path = root / slug
    n = 1
    while path.exists():
        n += 1
        path = root / f"{slug}-{n}"
    return path


def export_photo(image, path: Path) -> Path:
    """Write an image datablock as an 8-bit sRGB PNG, top row first (Blender is bottom-up)."""
    import numpy as np
    from PIL import Image as PILImage

    w, h = image.size
    if w == 0 or h == 0:
        raise InvalidInputError(f"Photo '{image.name}' has no pixels (is the file missing?)")
    buf = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(buf)
    rgb = buf.reshape(h, w, image.channels)[::-1, :, :3]
    if image.channels == 1:
        rgb = np.repeat(buf.reshape(h, w, 1)[::-1], 3, axis=2)
    if image.is_float and image.colorspace_settings.name.lower().startswith(("linear", "non-")):
        rgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(np.clip(rgb, 0, None),
                                                                       1 / 2.4) - 0.055)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB").save(path)
    return path


# -- job --------------------------------------------------------------------------------------

def _work(settings, out_dir: Path):
    def work(reporter: jobs.Reporter) -> str:
        global _models
        generate, model_cache = engine()
        if _models is None:
            _models = model_cache()

        def progress(phase: str, step: int, total: int, preview=None) -> None:
            reporter.progress(phase, step, total, preview)

        stack = generate(settings, progress=progress, cancel=reporter.cancel_event,
                         models=_models)
        if reporter.cancelled():
            raise Cancelled("Cancelled.")
        reporter.progress("saving", 0, 1)
        stack.save(out_dir)  # atomic: a temp sibling renamed into place
        return str(out_dir)
    return work


def check_can_start() -> str | None:
    """Why a generation cannot start right now, or None."""
    if runner.busy:
        return f"A job ({runner.current.name}) is already running: wait or cancel it first"
    dep = dependencies.status()
    if not dep.ok:
        return dep.message + " Install them in Edit > Preferences > Add-ons > Powers of Ten Zoom"
    return None


def start(context, sync: bool | None = None) -> jobs.Job:
    """Validate, then start generating. ``sync`` (default: in background mode) runs to the end.

    Raises InvalidInputError (or P10Error) with a one-line message on bad input.
    """
    why = check_can_start()
    if why:
        raise P10Error(why)
    scene = settings_scene(context.scene)  # a rig or video scene generates for its source
    p10 = scene.p10
    out_dir = new_stack_dir(p10)
    check_output_location(out_dir)  # a read-only or blocked folder fails now, not after the run
    photo_path = None
    if p10.use_photo:
        if p10.photo is None:
            raise InvalidInputError("'Start from photo' is on but no photo image is chosen")
        photo_path = str(export_photo(p10.photo, dependencies.user_dir() / "tmp" /
                                      f"photo-{out_dir.name}.png"))
    settings = build_settings(p10, photo_path)
    job = jobs.Job(name="generate", work=_work(settings, out_dir),
                   on_message=_on_message, on_finish=_on_finish)
    job.data.update(epoch=_epoch, scene=scene.name, out_dir=str(out_dir),
                    levels=len(settings.prompts))
    runner.start(job)
    if (sync if sync is not None else bpy.app.background):
        runner.drive(job)
    else:
        jobs.start_polling(runner)
    return job


def _on_message(job: jobs.Job, kind: str, payload) -> None:
    if job.data.get("epoch") != _epoch:
        return
    if kind == "progress":
        preview = payload[3]
        if preview is not None:
            update_previews(preview)
        tag_redraw()


def _on_finish(job: jobs.Job) -> None:
    stale = job.data.get("epoch") != _epoch
    if not stale:
        remove_images(PREVIEW_PREFIX)
    if job.state != jobs.DONE:
        _log(job)
        if not stale:
            tag_redraw()
        return
    if stale:  # the file was replaced; the stack is on disk, complete, for the user to load
        return
    scene = bpy.data.scenes.get(job.data["scene"])
    if scene is None:
        return
    scene.p10.last_stack_dir = job.result
    load_result(scene, job.result, job.data.get("replaces", ""), job.data.get("level_shift", 0))
    tag_redraw()


def load_result(scene, stack_dir: str, replaces: str = "", level_shift: int = 0) -> None:
    """Hand the stack to the scene builder if present, else load the layer images.

    ``replaces``: the stack folder an Extend / Regenerate started from; its rig is updated in
    place (``level_shift``: levels added outside it)."""
    if hasattr(bpy.types, "P10_OT_load_stack"):  # bpy.types, not bpy.ops: ops always "exist"
        with bpy.context.temp_override(scene=scene):
            bpy.ops.p10.load_stack(directory=stack_dir, replaces=replaces,
                                   level_shift=level_shift)
        return
    load_layer_images(stack_dir)


def load_layer_images(stack_dir: str) -> list:
    from ...core.stack.stack_io import read_manifest

    manifest = read_manifest(stack_dir)
    images = []
    for i, name in enumerate(manifest["layers"]):
        img = bpy.data.images.load(str(Path(stack_dir) / name), check_existing=False)
        old = bpy.data.images.get(f"{LAYER_PREFIX}{i:02d}")
        if old is not None and old != img:
            bpy.data.images.remove(old)
        img.name = f"{LAYER_PREFIX}{i:02d}"
        images.append(img)
    return images


# -- previews ---------------------------------------------------------------------------------

def update_previews(preview) -> None:
    """One image datablock per level, from float ``(N, h, w, 3)`` top-row-first pixels."""
    import numpy as np

    arr = np.asarray(preview, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    for i, rgb in enumerate(arr):
        compat.write_rgb_image(f"{PREVIEW_PREFIX}{i:02d}", rgb)


def remove_images(prefix: str) -> None:
    for img in [i for i in bpy.data.images if i.name.startswith(prefix)]:
        bpy.data.images.remove(img)


tag_redraw = compat.tag_redraw


# -- model, file load, logs -------------------------------------------------------------------

def release_model() -> bool:
    """Free the cached model (GPU memory). False if nothing was loaded or a job runs."""
    global _models
    if runner.busy or _models is None:
        return False
    _models.release()
    _models = None
    return True


def on_file_load() -> bool:
    """A file is being loaded: cancel a running job; its results must not touch the new file."""
    global _epoch
    _epoch += 1
    if runner.busy:
        runner.current.data["reloaded"] = True
        runner.cancel()
        return True
    return False


def stop_for_unregister(wait: float = 0.2) -> None:
    """The add-on is being disabled: cancel a running job without blocking Blender, and remove
    its preview images. The worker stops at its next cancel check (one sampling step, which may
    take seconds); it never saves a cancelled stack, and its messages are no longer polled."""
    global _epoch
    _epoch += 1  # nothing of the old job may touch Blender data from now on
    job = runner.current
    if job is not None and job.running:
        job.cancel()
        if job.thread is not None:
            job.thread.join(timeout=wait)
    runner.current = None
    try:
        remove_images(PREVIEW_PREFIX)
    except (AttributeError, ReferenceError, RuntimeError):  # no bpy.data (Blender quitting)
        pass


def _log(job: jobs.Job) -> None:
    if not job.detail:
        return
    try:
        with open(dependencies.log_dir() / "generate.log", "a", encoding="utf-8") as f:
            f.write(f"--- {_dt.datetime.now().isoformat()} {job.state}: {job.error}\n{job.detail}\n")
    except OSError:
        pass


def status_lines(job: jobs.Job | None) -> list[str]:
    """Plain lines describing a job's state for the panel."""
    if job is None:
        return []
    if job.running:
        line = f"{job.phase.capitalize()}: {job.step}/{job.total}" if job.total else \
            f"{job.phase.capitalize()}…"
        if job.phase == "downloading" and job.total:  # bytes, with the speed
            from ...core.models.cache import format_bytes

            line = f"Downloading: {format_bytes(job.step)} / {format_bytes(job.total)}"
            if job.step_started is not None:
                elapsed = time.monotonic() - job.step_started
                done = job.step - job.data.get("step_base", 0)
                if elapsed > 0 and done > 0:
                    line += f" ({format_bytes(done / elapsed)}/s)"
        left = job.seconds_left()
        if left is not None:
            line += f" — about {int(left // 60)}:{int(left % 60):02d} left"
        return [line]
    if job.state == jobs.DONE:
        return [f"Done: {Path(str(job.result)).name}"] if job.name in STACK_JOBS else ["Done."]
    if job.state == jobs.CANCELLED:
        return ["Cancelled (file reloaded)." if job.data.get("reloaded") else "Cancelled."]
    return [job.error or "Failed."]
