"""Generate, Extend, Regenerate Level, Cancel and Release Model: thin operators over
``generation`` / ``known_levels`` jobs that report in plain words."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty

from ..setup import compat
from . import generation, jobs
from ..video import video_render
from ..properties import p10_of
from ...core.errors import P10Error

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


CLASSES = [P10_OT_generate, P10_OT_cancel, P10_OT_release_model, P10_OT_extend_stack,
           P10_OT_regenerate_level]
