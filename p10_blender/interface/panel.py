"""The Zoom tab of the 3D View sidebar. Drawing only: every action is an operator.

One main panel (dependencies, Generate/Cancel, progress, status) and one sub-panel per concern:
Prompts, Model, Sampling, Output, Animation, Video. Each sub-panel is a ``draw_<concern>``
function; a new setting goes into the function of its concern. Everything reads the settings
of ``properties.p10_of(context)``, so the panel works in the rig and video scenes too.
"""

from __future__ import annotations

import bpy

from ..setup import dependencies, paths
from ..generate import generation, jobs, operators
from . import models_ui, targets
from ..rig import operators as rig_ops, scene_build
from ..video import operators as video_ops
from ..properties import p10_of, settings_scene


class P10_UL_prompts(bpy.types.UIList):
    """One row per zoom level, outermost first."""

    bl_idname = "P10_UL_prompts"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname,
                  index=0, *args):
        row = layout.row(align=True)
        row.label(text=f"{index}")
        row.prop(item, "text", text="", emboss=False)


def _idle() -> bool:
    return not generation.runner.busy


# ----------------------------------------------------------------------------- main panel
def draw_main(layout, context) -> None:
    """Dependencies, the Generate/Cancel button, progress and the last result."""
    runner = generation.runner
    job = runner.current
    busy = runner.busy

    dep = dependencies.status()
    if not dep.ok:
        box = layout.box()
        box.label(text="Dependencies Missing", icon="ERROR")
        box.label(text=dep.message)
        if not (job is not None and job.name == "install" and job.running):
            box.operator("p10.install_dependencies", icon="IMPORT")
        box.label(text="or set a Python environment in the add-on preferences")

    if busy:
        draw_progress(layout, job)
        layout.operator("p10.cancel", icon="CANCEL")
    else:
        row = layout.row()
        row.scale_y = 1.5
        row.operator("p10.generate", icon="RENDER_STILL")
    error = operators.last_error
    if not error and not busy and job is not None and job.state in (jobs.FAILED, jobs.CANCELLED):
        error = generation.status_lines(job)[0]
    if error and not busy:
        layout.label(text=error, icon="ERROR")
    elif job is not None and job.state == jobs.DONE:
        layout.label(text=generation.status_lines(job)[0], icon="CHECKMARK")
    elif not busy and not p10_of(context).prompts:
        layout.label(text="Add prompts or load a preset below", icon="INFO")


def draw_progress(layout, job: jobs.Job) -> None:
    box = layout.box()
    for line in generation.status_lines(job):
        box.label(text=line, icon="TIME")
    if job.total:
        # progress bar widget only exists in 4.0+; a plain label elsewhere
        if hasattr(box, "progress"):
            box.progress(factor=job.fraction, type="BAR", text=f"{int(job.fraction * 100)} %")
    if job.name in generation.STACK_JOBS:
        n = job.data.get("levels", 0)
        names = [f"{generation.PREVIEW_PREFIX}{i:02d}" for i in range(n)]
        have = [name for name in names if name in bpy.data.images]
        if have:
            box.label(text=f"Live previews: {len(have)} images '{generation.PREVIEW_PREFIX}NN'")


# ------------------------------------------------------------------------------- sections
def draw_prompts(layout, context) -> None:
    p10 = p10_of(context)
    col = layout.column()
    col.enabled = _idle()
    row = col.row(align=True)
    row.prop(p10, "preset", text="")
    row.operator("p10.preset_load", text="", icon="PRESET")
    row = col.row()
    row.template_list("P10_UL_prompts", "", p10, "prompts", p10, "prompt_index", rows=4)
    side = row.column(align=True)
    side.operator("p10.prompt_add", text="", icon="ADD")
    side.operator("p10.prompt_remove", text="", icon="REMOVE")
    side.operator("p10.prompt_duplicate", text="", icon="DUPLICATE")
    side.separator()
    side.operator("p10.prompt_move", text="", icon="TRIA_UP").direction = "UP"
    side.operator("p10.prompt_move", text="", icon="TRIA_DOWN").direction = "DOWN"
    row = col.row(align=True)
    row.operator("p10.prompts_import", text="Import", icon="FILE_FOLDER")
    row.operator("p10.prompts_export", text="Export", icon="EXPORT")
    col.prop(p10, "negative_prompt")
    targets.draw_targets(col, p10)  # where each level sits (issue 19), the loop (issue 20)


def draw_model(layout, context) -> None:
    p10 = p10_of(context)
    col = layout.column()
    col.enabled = _idle()
    models_ui.draw_picker(col, context)
    col.prop(p10, "lora")
    col.prop(p10, "device")
    models_ui.draw_estimate(layout, context)
    layout.operator("p10.release_model", icon="TRASH")


def draw_sampling(layout, context) -> None:
    p10 = p10_of(context)
    col = layout.column()
    col.enabled = _idle()
    col.prop(p10, "zoom", expand=True)
    sub = col.column(align=True)
    sub.prop(p10, "width")
    sub.prop(p10, "height")
    col.prop(p10, "steps")
    row = col.row(align=True)
    row.prop(p10, "guidance_auto", text="", icon="AUTO")
    sub = row.row(align=True)
    sub.enabled = not p10.guidance_auto
    sub.prop(p10, "guidance")
    col.prop(p10, "scheduler")
    col.prop(p10, "upscale")
    row = col.row(align=True)
    row.prop(p10, "seed")
    row.operator("p10.seed_randomise", text="", icon="FILE_REFRESH")
    col.prop(p10, "use_photo")
    if p10.use_photo:
        col.template_ID(p10, "photo", open="image.open")
        col.prop(p10, "photo_level")


def draw_output(layout, context) -> None:
    p10 = p10_of(context)
    layout.prop(p10, "output_dir")
    if not p10.output_dir.strip():  # the default, shown: beside the .blend or under home
        layout.label(text=f"Stacks go to {paths.default_root()}", icon="FILE_FOLDER")
    if p10.last_stack_dir:
        layout.prop(p10, "last_stack_dir", text="Last")
    layout.operator("p10.load_stack", icon="FILE_FOLDER")
    anim = getattr(p10, "animation", None)
    if anim is not None:  # where Load Zoom Stack (and Generate) put the rig
        layout.prop(anim, "use_current_scene")
        if anim.use_current_scene:
            draw_colour_note(layout, settings_scene(context.scene), anim.exact)


def draw_colour_note(layout, scene, exact: bool) -> None:
    """Which view transforms show the planes as the PNGs (Add to Current Scene keeps the
    scene's own): 'Standard' (sRGB textures), or 'Raw' with Exact Pixels; any other (AgX,
    Filmic...) tone-maps them like everything else in the scene."""
    view = scene.view_settings.view_transform
    want = scene_build.EXACT_VIEW if exact else scene_build.VIEW_TRANSFORM
    if view != want:
        box = layout.box()
        box.label(text=f"'{view}' tone-maps the planes: only '{want}' shows the PNG colours",
                  icon="ERROR")
        box.prop(scene.view_settings, "view_transform")


def draw_known_levels(layout, context) -> None:
    """Extend the last stack (the prompt rows after / before its own) or regenerate the level
    of the active row; the previous stack stays until the new one is complete."""
    p10 = p10_of(context)
    col = layout.column()
    col.enabled = _idle() and bool(p10.last_stack_dir)
    row = col.row(align=True)
    row.operator("p10.extend_stack", text="Extend Deeper", icon="ZOOM_IN").direction = "DEEPER"
    row.operator("p10.extend_stack", text="Extend Wider", icon="ZOOM_OUT").direction = "WIDER"
    row = col.row(align=True)
    row.prop(p10, "extend_overlap")
    row.prop(p10, "extend_window")
    col.operator("p10.regenerate_level", icon="FILE_REFRESH")
    if not p10.last_stack_dir:
        layout.label(text="Generate or load a stack first", icon="INFO")


def draw_animation(layout, context) -> None:
    settings = getattr(p10_of(context), "animation", None)
    if settings is None:
        return
    rig_ops.draw_animation_settings(layout, context, settings)


def draw_video(layout, context) -> None:
    settings = getattr(p10_of(context), "animation", None)
    if settings is None:
        return
    video_ops.draw_video_settings(layout, context, settings)


SECTIONS = (draw_prompts, draw_model, draw_sampling, draw_output, draw_known_levels,
            draw_animation, draw_video)


def draw_panel(layout, context) -> None:
    """The whole panel, main part and every sub-panel in order (one call for tests)."""
    draw_main(layout, context)
    for draw in SECTIONS:
        draw(layout, context)


def _draw_safely(draw, layout, context) -> None:
    try:
        draw(layout, context)
    except Exception as exc:  # a drawing bug must not spam tracebacks on every redraw
        layout.label(text=f"Panel error: {exc}", icon="ERROR")


# --------------------------------------------------------------------------------- panels
class _ZoomPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Zoom"


class P10_PT_zoom(_ZoomPanel, bpy.types.Panel):
    bl_idname = "P10_PT_zoom"
    bl_label = "Powers of Ten"

    def draw(self, context):
        _draw_safely(draw_main, self.layout, context)


class _SubPanel(_ZoomPanel):
    bl_parent_id = "P10_PT_zoom"


class P10_PT_prompts(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_prompts"
    bl_label = "Prompts"

    def draw(self, context):
        _draw_safely(draw_prompts, self.layout, context)


class P10_PT_model(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_model"
    bl_label = "Model"

    def draw(self, context):
        _draw_safely(draw_model, self.layout, context)


class P10_PT_sampling(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_sampling"
    bl_label = "Sampling"

    def draw(self, context):
        _draw_safely(draw_sampling, self.layout, context)


class P10_PT_output(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_output"
    bl_label = "Output"

    def draw(self, context):
        _draw_safely(draw_output, self.layout, context)


class P10_PT_known_levels(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_known_levels"
    bl_label = "Extend / Regenerate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        _draw_safely(draw_known_levels, self.layout, context)


class P10_PT_animation(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_animation"
    bl_label = "Animation"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        _draw_safely(draw_animation, self.layout, context)


class P10_PT_video(_SubPanel, bpy.types.Panel):
    bl_idname = "P10_PT_video"
    bl_label = "Video"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        _draw_safely(draw_video, self.layout, context)


# Parents before children: Blender registers a child panel only under a registered parent.
CLASSES = [P10_UL_prompts, P10_PT_zoom, P10_PT_prompts, P10_PT_model, P10_PT_sampling,
           P10_PT_output, P10_PT_known_levels, P10_PT_animation, P10_PT_video]
