"""The Zoom tab of the 3D View sidebar. Drawing only: every action is an operator."""

from __future__ import annotations

import bpy

from . import dependencies, generation, jobs, operators


class P10_UL_prompts(bpy.types.UIList):
    """One row per zoom level, outermost first."""

    bl_idname = "P10_UL_prompts"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname,
                  index=0, *args):
        row = layout.row(align=True)
        row.label(text=f"{index}")
        row.prop(item, "text", text="", emboss=False)


def draw_panel(layout, context) -> None:
    """The whole panel for the current state: missing dependencies, idle, running, error."""
    p10 = context.scene.p10
    runner = generation.runner
    job = runner.current
    busy = runner.busy

    dep = dependencies.status()
    if not dep.ok:
        box = layout.box()
        box.label(text="Dependencies missing", icon="ERROR")
        box.label(text=dep.message)
        if not (job is not None and job.name == "install" and job.running):
            box.operator("p10.install_dependencies", icon="IMPORT")
        box.label(text="or set a Python environment in the add-on preferences")

    # prompts
    col = layout.column()
    col.enabled = not busy
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

    # settings
    col.separator()
    col.prop(p10, "zoom", expand=True)
    sub = col.column(align=True)
    sub.prop(p10, "width")
    sub.prop(p10, "height")
    col.prop(p10, "steps")
    col.prop(p10, "guidance")
    col.prop(p10, "scheduler")
    row = col.row(align=True)
    row.prop(p10, "seed")
    row.operator("p10.seed_randomise", text="", icon="FILE_REFRESH")
    col.prop(p10, "model")
    col.prop(p10, "device")
    col.prop(p10, "use_photo")
    if p10.use_photo:
        col.template_ID(p10, "photo", open="image.open")
    col.prop(p10, "output_dir")

    # run / status
    layout.separator()
    if busy:
        draw_progress(layout, job)
        layout.operator("p10.cancel", icon="CANCEL")
    else:
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = dep.ok
        row.operator("p10.generate", icon="RENDER_STILL")
        layout.operator("p10.release_model", icon="TRASH")
    error = operators.last_error
    if not error and not busy and job is not None and job.state in (jobs.FAILED, jobs.CANCELLED):
        error = generation.status_lines(job)[0]
    if error and not busy:
        layout.label(text=error, icon="ERROR")
    elif job is not None and job.state == jobs.DONE:
        layout.label(text=generation.status_lines(job)[0], icon="CHECKMARK")
    if p10.last_stack_dir:
        layout.prop(p10, "last_stack_dir", text="Last")


def draw_progress(layout, job: jobs.Job) -> None:
    box = layout.box()
    for line in generation.status_lines(job):
        box.label(text=line, icon="TIME")
    if job.total:
        # progress bar widget only exists in 4.0+; a plain label elsewhere
        if hasattr(box, "progress"):
            box.progress(factor=job.fraction, type="BAR", text=f"{int(job.fraction * 100)} %")
    if job.name == "generate":
        n = job.data.get("levels", 0)
        names = [f"{generation.PREVIEW_PREFIX}{i:02d}" for i in range(n)]
        have = [name for name in names if name in bpy.data.images]
        if have:
            box.label(text=f"Live previews: {len(have)} images '{generation.PREVIEW_PREFIX}NN'")


class P10_PT_zoom(bpy.types.Panel):
    bl_idname = "P10_PT_zoom"
    bl_label = "Powers of Ten"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Zoom"

    def draw(self, context):
        try:
            draw_panel(self.layout, context)
        except Exception as exc:  # a drawing bug must not spam tracebacks on every redraw
            self.layout.label(text=f"Panel error: {exc}", icon="ERROR")


CLASSES = [P10_UL_prompts, P10_PT_zoom]
