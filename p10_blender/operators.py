"""Operators: thin wrappers that call plain functions and report in plain words."""

from __future__ import annotations

import random

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import compat, dependencies, generation, jobs, video_render
from .properties import apply_settings, p10_of, prompts_of, set_prompts, settings_dict
from ..core import prompts as core_prompts
from ..core.errors import P10Error

last_error: str | None = None  # shown in the panel: errors that never became a job


def _fail(op, message: str) -> set:
    global last_error
    last_error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


class _NeedsPrompts:
    """poll(): greyed out, with the reason, while the prompt list is empty."""

    @classmethod
    def poll(cls, context):
        return bool(p10_of(context).prompts) or compat.poll_message(cls, "The prompt list is empty")


class P10_OT_generate(bpy.types.Operator):
    """Generate the zoom stack from the prompts (runs in the background)"""

    bl_idname = "p10.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        why = generation.check_can_start()
        if why is None and not p10_of(context).prompts:
            why = "Add at least one prompt (one per zoom level, outermost first)"
        return why is None or compat.poll_message(cls, why)

    def execute(self, context):
        return _start_job(self, lambda: generation.start(context), "Generating…")


class _StackJob:
    """Extend / Regenerate: greyed out, saying why, while a job runs or dependencies are missing."""

    @classmethod
    def poll(cls, context):
        why = generation.check_can_start()
        return why is None or compat.poll_message(cls, why)


class P10_OT_extend_stack(_StackJob, bpy.types.Operator):
    """Add levels to the last stack: deeper from the prompt rows after its own, wider from the
    rows before them (runs in the background; the old stack stays until the new one is done)"""

    bl_idname = "p10.extend_stack"
    bl_label = "Extend"
    bl_options = {"REGISTER"}

    direction: EnumProperty(items=[("DEEPER", "Deeper", "New levels beyond the finest one"),
                                   ("WIDER", "Wider", "New levels in front of the outermost one")],
                            name="Direction", default="DEEPER",
                            description="Deeper: levels beyond the finest one, from the rows "
                                        "after the stack's prompts; wider: levels in front of "
                                        "the outermost one, from the rows before them")

    def execute(self, context):
        from . import known_levels

        return _start_job(self, lambda: known_levels.start_extend(
            context, outward=self.direction == "WIDER"), "Extending…")


class P10_OT_regenerate_level(_StackJob, bpy.types.Operator):
    """Re-sample the level of the active prompt row, every other level of the last stack kept"""

    bl_idname = "p10.regenerate_level"
    bl_label = "Regenerate Level"
    bl_options = {"REGISTER"}

    def execute(self, context):
        from . import known_levels

        return _start_job(self, lambda: known_levels.start_regenerate(context), "Regenerating…")


def _start_job(op, start, message: str) -> set:
    """Start a background job with ``start()``; one-line report of bad input or the end."""
    global last_error
    try:
        job = start()
    except P10Error as exc:
        return _fail(op, str(exc))
    except Exception as exc:  # never a traceback in the UI
        return _fail(op, generation.friendly_error(exc))
    last_error = None
    if job.running:
        op.report({"INFO"}, f"{message} (see the Zoom panel)")
        return {"FINISHED"}
    return report_job_end(op, job)


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
    """Stop the running job (within one sampling step) or video render; nothing is written"""

    bl_idname = "p10.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return generation.runner.busy or video_render.progress.running or \
            compat.poll_message(cls, "Nothing is running")

    def execute(self, context):
        if video_render.progress.running:
            video_render.progress.cancel_requested = True
            self.report({"INFO"}, "Cancelling the video…")
            return {"FINISHED"}
        if not generation.runner.cancel():
            self.report({"INFO"}, "Nothing is running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Cancelling…")
        return {"FINISHED"}


class P10_OT_release_model(bpy.types.Operator):
    """Unload the model and free its (GPU) memory"""

    bl_idname = "p10.release_model"
    bl_label = "Release Model"

    @classmethod
    def poll(cls, context):
        return not generation.runner.busy or compat.poll_message(
            cls, "A job is running: cancel it before releasing the model")

    def execute(self, context):
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

    text: StringProperty(name="Text", default="", description="Prompt of the new zoom level")

    def execute(self, context):
        p10 = p10_of(context)
        p10.prompts.add().text = self.text
        new = len(p10.prompts) - 1
        at = min(p10.prompt_index + 1, new) if new else 0
        p10.prompts.move(new, at)
        p10.prompt_index = at
        return {"FINISHED"}


class P10_OT_prompt_remove(_NeedsPrompts, bpy.types.Operator):
    """Remove the active zoom level"""

    bl_idname = "p10.prompt_remove"
    bl_label = "Remove Prompt"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        p10 = p10_of(context)
        if not p10.prompts:
            self.report({"WARNING"}, "The prompt list is empty")
            return {"CANCELLED"}
        i = min(p10.prompt_index, len(p10.prompts) - 1)
        p10.prompts.remove(i)
        p10.prompt_index = max(0, min(i, len(p10.prompts) - 1))
        return {"FINISHED"}


class P10_OT_prompt_move(_NeedsPrompts, bpy.types.Operator):
    """Move the active zoom level up (outwards) or down (inwards)"""

    bl_idname = "p10.prompt_move"
    bl_label = "Move Prompt"
    bl_options = {"REGISTER", "UNDO"}

    direction: EnumProperty(name="Direction", description="Where the active zoom level moves",
                            items=[("UP", "Up", "Outwards (towards level 0)"),
                                   ("DOWN", "Down", "Inwards (towards the finest level)")])

    def execute(self, context):
        p10 = p10_of(context)
        i = p10.prompt_index
        j = i - 1 if self.direction == "UP" else i + 1
        if not (0 <= i < len(p10.prompts) and 0 <= j < len(p10.prompts)):
            return {"CANCELLED"}
        p10.prompts.move(i, j)
        p10.prompt_index = j
        return {"FINISHED"}


class P10_OT_prompt_duplicate(_NeedsPrompts, bpy.types.Operator):
    """Duplicate the active zoom level"""

    bl_idname = "p10.prompt_duplicate"
    bl_label = "Duplicate Prompt"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        p10 = p10_of(context)
        if not p10.prompts:
            return {"CANCELLED"}
        i = min(p10.prompt_index, len(p10.prompts) - 1)
        return bpy.ops.p10.prompt_add(text=p10.prompts[i].text)


class P10_OT_prompts_import(bpy.types.Operator, ImportHelper):
    """Replace the prompts (and settings) with a prompt file (.txt or .json)"""

    bl_idname = "p10.prompts_import"
    bl_label = "Import Prompts"
    bl_options = {"REGISTER", "UNDO"}

    filter_glob: StringProperty(default="*.txt;*.json", options={"HIDDEN"},
                                description="File types shown in the browser")

    def execute(self, context):
        try:
            texts, values = core_prompts.read_prompt_file(self.filepath)
        except P10Error as exc:
            return _fail(self, str(exc))
        p10 = p10_of(context)
        set_prompts(p10, texts)
        ignored = apply_settings(p10, values)
        msg = f"Imported {len(texts)} prompts"
        if ignored:
            msg += f" (ignored: {', '.join(sorted(ignored))})"
        self.report({"INFO"}, msg)
        return {"FINISHED"}


class P10_OT_prompts_export(_NeedsPrompts, bpy.types.Operator, ExportHelper):
    """Save the prompts and settings to a prompt file (.json keeps the settings)"""

    bl_idname = "p10.prompts_export"
    bl_label = "Export Prompts"

    filename_ext = ".json"
    check_extension = False  # .txt is fine too
    filter_glob: StringProperty(default="*.txt;*.json", options={"HIDDEN"},
                                description="File types shown in the browser")

    def execute(self, context):
        p10 = p10_of(context)
        try:
            core_prompts.write_prompt_file(self.filepath, prompts_of(p10), settings_dict(p10))
        except P10Error as exc:
            return _fail(self, str(exc))
        except OSError as exc:
            return _fail(self, f"Cannot write {self.filepath}: {exc.strerror or exc}")
        self.report({"INFO"}, f"Saved {self.filepath}")
        return {"FINISHED"}


class P10_OT_preset_load(bpy.types.Operator):
    """Load one of the paper's prompt sequences (asks before replacing typed prompts)"""

    bl_idname = "p10.preset_load"
    bl_label = "Load Preset"
    bl_options = {"REGISTER", "UNDO"}

    name: StringProperty(name="Preset", default="",
                         description="Example name (empty: the preset chosen in the panel)")
    mode: EnumProperty(
        name="Prompts", default="REPLACE",
        description="What happens to the prompts already in the list",
        items=[("REPLACE", "Replace", "Replace the prompt list and the preset's settings"),
               ("APPEND", "Append", "Add the preset's prompts after the list; keep settings")])

    def invoke(self, context, event):
        if any(item.text.strip() for item in p10_of(context).prompts):
            return context.window_manager.invoke_props_dialog(self)  # ask first
        return self.execute(context)

    def draw(self, context):
        self.layout.label(text=f"The list has {len(p10_of(context).prompts)} prompts:")
        self.layout.prop(self, "mode", expand=True)

    def execute(self, context):
        p10 = p10_of(context)
        name = self.name or p10.preset
        try:
            texts, values = core_prompts.load_example(name)
        except P10Error as exc:
            return _fail(self, str(exc))
        if self.mode == "APPEND":
            set_prompts(p10, prompts_of(p10) + list(texts))
        else:
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
        p10_of(context).seed = random.randrange(0, 2**31 - 1)
        return {"FINISHED"}


# -- dependencies ---------------------------------------------------------------------------

class P10_OT_install_dependencies(bpy.types.Operator):
    """Download and install torch, diffusers and friends for Blender's Python (large download)"""

    bl_idname = "p10.install_dependencies"
    bl_label = "Install Dependencies"

    @classmethod
    def poll(cls, context):
        if not dependencies.online_access():
            return compat.poll_message(
                cls, "Online access is off: enable it in Preferences > System > Network, or "
                     "point the add-on at an existing Python environment")
        if generation.runner.busy:
            return compat.poll_message(cls, "A job is running: wait or cancel it first")
        return True

    def execute(self, context):
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
    P10_OT_install_dependencies, P10_OT_extend_stack, P10_OT_regenerate_level,
]
