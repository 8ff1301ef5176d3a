"""Operators: thin wrappers that call plain functions and report in plain words."""

from __future__ import annotations

import random

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import dependencies, generation, jobs
from .properties import apply_settings, prompts_of, set_prompts, settings_dict
from ..core import prompts as core_prompts
from ..core.errors import P10Error

last_error: str | None = None  # shown in the panel: errors that never became a job


def _fail(op, message: str) -> set:
    global last_error
    last_error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


class P10_OT_generate(bpy.types.Operator):
    """Generate the zoom stack from the prompts (runs in the background)"""

    bl_idname = "p10.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    def execute(self, context):
        global last_error
        try:
            job = generation.start(context)
        except P10Error as exc:
            return _fail(self, str(exc))
        except Exception as exc:  # never a traceback in the UI
            return _fail(self, generation.friendly_error(exc))
        last_error = None
        if job.running:
            self.report({"INFO"}, "Generating… (see the Zoom panel)")
            return {"FINISHED"}
        return report_job_end(self, job)


def report_job_end(op, job: jobs.Job) -> set:
    """Report a finished synchronous job (background mode)."""
    if job.state == jobs.DONE:
        op.report({"INFO"}, f"Saved: {job.result}")
        return {"FINISHED"}
    if job.state == jobs.CANCELLED:
        op.report({"WARNING"}, job.error or "Cancelled.")
        return {"CANCELLED"}
    return _fail(op, job.error or "Failed.")


class P10_OT_cancel(bpy.types.Operator):
    """Stop the running job (within one sampling step); nothing is written"""

    bl_idname = "p10.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        if not generation.runner.cancel():
            self.report({"INFO"}, "Nothing is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Cancelling…")
        return {"FINISHED"}


class P10_OT_release_model(bpy.types.Operator):
    """Unload the model and free its (GPU) memory"""

    bl_idname = "p10.release_model"
    bl_label = "Release Model"

    def execute(self, context):
        if generation.runner.busy:
            return _fail(self, "A job is running: cancel it before releasing the model")
        if generation.release_model():
            self.report({"INFO"}, "Model released")
        else:
            self.report({"INFO"}, "No model is loaded")
        return {"FINISHED"}


# -- prompt list ----------------------------------------------------------------------------

class P10_OT_prompt_add(bpy.types.Operator):
    """Add a zoom level after the active one"""

    bl_idname = "p10.prompt_add"
    bl_label = "Add Prompt"
    bl_options = {"REGISTER", "UNDO"}

    text: StringProperty(name="Text", default="")

    def execute(self, context):
        p10 = context.scene.p10
        p10.prompts.add().text = self.text
        new = len(p10.prompts) - 1
        at = min(p10.prompt_index + 1, new) if new else 0
        p10.prompts.move(new, at)
        p10.prompt_index = at
        return {"FINISHED"}


class P10_OT_prompt_remove(bpy.types.Operator):
    """Remove the active zoom level"""

    bl_idname = "p10.prompt_remove"
    bl_label = "Remove Prompt"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        p10 = context.scene.p10
        if not p10.prompts:
            self.report({"WARNING"}, "The prompt list is empty")
            return {"CANCELLED"}
        i = min(p10.prompt_index, len(p10.prompts) - 1)
        p10.prompts.remove(i)
        p10.prompt_index = max(0, min(i, len(p10.prompts) - 1))
        return {"FINISHED"}


class P10_OT_prompt_move(bpy.types.Operator):
    """Move the active zoom level up (outwards) or down (inwards)"""

    bl_idname = "p10.prompt_move"
    bl_label = "Move Prompt"
    bl_options = {"REGISTER", "UNDO"}

    direction: EnumProperty(items=[("UP", "Up", ""), ("DOWN", "Down", "")])

    def execute(self, context):
        p10 = context.scene.p10
        i = p10.prompt_index
        j = i - 1 if self.direction == "UP" else i + 1
        if not (0 <= i < len(p10.prompts) and 0 <= j < len(p10.prompts)):
            return {"CANCELLED"}
        p10.prompts.move(i, j)
        p10.prompt_index = j
        return {"FINISHED"}


class P10_OT_prompt_duplicate(bpy.types.Operator):
    """Duplicate the active zoom level"""

    bl_idname = "p10.prompt_duplicate"
    bl_label = "Duplicate Prompt"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        p10 = context.scene.p10
        if not p10.prompts:
            return {"CANCELLED"}
        i = min(p10.prompt_index, len(p10.prompts) - 1)
        return bpy.ops.p10.prompt_add(text=p10.prompts[i].text)


class P10_OT_prompts_import(bpy.types.Operator, ImportHelper):
    """Replace the prompts (and settings) with a prompt file (.txt or .json)"""

    bl_idname = "p10.prompts_import"
    bl_label = "Import Prompts"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.txt;*.json", options={"HIDDEN"})

    def execute(self, context):
        try:
            texts, values = core_prompts.read_prompt_file(self.filepath)
        except P10Error as exc:
            return _fail(self, str(exc))
        p10 = context.scene.p10
        set_prompts(p10, texts)
        ignored = apply_settings(p10, values)
        msg = f"Imported {len(texts)} prompts"
        if ignored:
            msg += f" (ignored: {', '.join(sorted(ignored))})"
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class P10_OT_prompts_export(bpy.types.Operator, ExportHelper):
    """Save the prompts and settings to a prompt file (.json keeps the settings)"""

    bl_idname = "p10.prompts_export"
    bl_label = "Export Prompts"

    filename_ext = ".json"
    check_extension = False  # .txt is fine too
    filter_glob: StringProperty(default="*.txt;*.json", options={"HIDDEN"})

    def execute(self, context):
        p10 = context.scene.p10
        try:
            core_prompts.write_prompt_file(self.filepath, prompts_of(p10), settings_dict(p10))
        except P10Error as exc:
            return _fail(self, str(exc))
        except OSError as exc:
            return _fail(self, f"Cannot write {self.filepath}: {exc.strerror or exc}")
        self.report({"INFO"}, f"Saved {self.filepath}")
        return {"FINISHED"}


class P10_OT_preset_load(bpy.types.Operator):
    """Load one of the paper's prompt sequences (replaces the prompt list)"""

    bl_idname = "p10.preset_load"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Preset", default="")

    def execute(self, context):
        p10 = context.scene.p10
        name = self.name or p10.preset
        try:
            texts, values = core_prompts.load_example(name)
        except P10Error as exc:
            return _fail(self, str(exc))
        set_prompts(p10, texts)
        apply_settings(p10, values)
        self.report({"INFO"}, f"Loaded preset '{name}' ({len(texts)} levels)")
        return {"FINISHED"}


class P10_OT_seed_randomise(bpy.types.Operator):
    """Pick a new random seed"""

    bl_idname = "p10.seed_randomise"
    bl_label = "Randomise Seed"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        context.scene.p10.seed = random.randrange(0, 2**31 - 1)
        return {"FINISHED"}


# -- dependencies ---------------------------------------------------------------------------

class P10_OT_install_dependencies(bpy.types.Operator):
    """Download and install torch, diffusers and friends for Blender's Python (large download)"""

    bl_idname = "p10.install_dependencies"
    bl_label = "Install Dependencies"

    def execute(self, context):
        if not dependencies.online_access():
            return _fail(self, "Online access is off: enable it in Preferences > System > "
                               "Network, or point the add-on at an existing Python environment")
        if generation.runner.busy:
            return _fail(self, "A job is running: wait or cancel it first")
        from .preferences import get_prefs

        prefs = get_prefs(context)
        build = prefs.torch_build if prefs is not None else "AUTO"
        if build == "AUTO":
            build = dependencies.detect_torch_build()
        target = dependencies.site_dir()
        log_path = dependencies.log_dir() / "install.log"
        job = jobs.Job(name="install", work=dependencies.install_work(target, build, log_path),
                       on_message=_install_message, on_finish=_install_finished)
        job.data.update(log=[f"Installing PyTorch ({build}) and diffusers into {target}"],
                        log_path=str(log_path))
        generation.runner.start(job)
        if bpy.app.background:
            generation.runner.drive(job)
            return report_job_end(self, job)
        jobs.start_polling(generation.runner)
        self.report({"INFO"}, "Installing dependencies… (progress in the add-on preferences)")
        return {"FINISHED"}


def _install_message(job: jobs.Job, kind: str, payload) -> None:
    if kind == "log":
        log = job.data.setdefault("log", [])
        log.append(str(payload))
        del log[:-200]
    generation.tag_redraw()
    for window in bpy.context.window_manager.windows if bpy.context.window_manager else ():
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def _install_finished(job: jobs.Job) -> None:
    from .preferences import get_prefs

    dependencies.refresh(get_prefs())
    generation.tag_redraw()
    if job.state == jobs.DONE and not dependencies.status().ok:
        job.state = jobs.FAILED
        job.error = ("pip finished but packages are still missing: "
                     + dependencies.status().message)


CLASSES = [
    P10_OT_generate, P10_OT_cancel, P10_OT_release_model,
    P10_OT_prompt_add, P10_OT_prompt_remove, P10_OT_prompt_move, P10_OT_prompt_duplicate,
    P10_OT_prompts_import, P10_OT_prompts_export, P10_OT_preset_load, P10_OT_seed_randomise,
    P10_OT_install_dependencies,
]
