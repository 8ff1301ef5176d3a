"""Add-on preferences: where the Python dependencies come from, and installing them."""

from __future__ import annotations

import bpy
from bpy.props import CollectionProperty, EnumProperty, StringProperty

from ..setup import compat, dependencies
from ..generate import generation, jobs
from ..generate.operators import report_job_end
from . import models_ui

ADDON_ID = __package__.rsplit(".", 2)[0]  # the extension's module: preferences are keyed by it

TORCH_BUILD_ITEMS = [
    ("AUTO", "Automatic", "Detect the GPU: NVIDIA → CUDA, AMD → ROCm, macOS → default, else CPU"),
    ("CUDA", "NVIDIA CUDA", "PyTorch built for NVIDIA GPUs"),
    ("ROCM", "AMD ROCm", "PyTorch built for AMD GPUs (Linux)"),
    ("DEFAULT", "Default (macOS)", "PyPI's PyTorch; uses Apple Metal on macOS"),
    ("CPU", "CPU only", "Small download; slow generation"),
]


def _env_changed(self, context) -> None:
    dependencies.refresh(self)


class P10_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    python_env: StringProperty(
        name="Python Environment", subtype="DIR_PATH", default="", update=_env_changed,
        description="Folder of an existing Python environment (venv/conda) with torch and "
                    "diffusers, made with Blender's Python version. Leave empty to use the "
                    "packages installed by the button below")
    torch_build: EnumProperty(name="PyTorch Build", items=TORCH_BUILD_ITEMS, default="AUTO",
                              description="Which PyTorch Install Dependencies downloads")
    local_models: CollectionProperty(type=models_ui.P10_LocalModel, name="Local Models",
                                     description="Model folders and files added by hand")
    download_id: StringProperty(
        name="Hub Id", default="",
        description="Hugging Face model id to download, e.g. stabilityai/stable-diffusion-2-1-base")

    def draw(self, context) -> None:
        draw_dependencies(self.layout, self)
        models_ui.draw_models(self.layout, self)


get_prefs = dependencies.get_prefs


def draw_dependencies(layout, prefs) -> None:
    """Dependency status, the one fix button, and the install log (also used by the panel)."""
    dep = dependencies.status()
    col = layout.column()
    if dep.ok:
        col.label(text=dep.message, icon="CHECKMARK")
    else:
        col.label(text=dep.message, icon="ERROR")
    if prefs is not None:
        col.prop(prefs, "python_env")
        col.prop(prefs, "torch_build")
    job = generation.runner.current
    installing = job is not None and job.name == "install" and job.running
    row = col.row()
    row.enabled = not generation.runner.busy
    row.operator("p10.install_dependencies", icon="IMPORT",
                 text="Reinstall Dependencies" if dep.ok else "Install Dependencies")
    if not dependencies.online_access():
        col.label(text="Online access is off (Preferences > System > Network).", icon="INFO")
    if job is not None and job.name == "install":
        box = col.box()
        for line in generation.status_lines(job):
            box.label(text=line)
        for line in job.data.get("log", [])[-8:]:
            box.label(text=line[:120])
        if installing:
            box.operator("p10.cancel", icon="CANCEL")


# -- installing dependencies -------------------------------------------------------------

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
    dependencies.refresh(get_prefs())
    generation.tag_redraw()
    if job.state == jobs.DONE and not dependencies.status().ok:
        job.state = jobs.FAILED
        job.error = ("pip finished but packages are still missing: "
                     + dependencies.status().message)


CLASSES = [P10_AddonPreferences, P10_OT_install_dependencies]
