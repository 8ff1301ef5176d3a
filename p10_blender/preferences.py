"""Add-on preferences: where the Python dependencies come from, and installing them."""

from __future__ import annotations

import bpy
from bpy.props import CollectionProperty, EnumProperty, StringProperty

from . import dependencies, generation, models_ui

ADDON_ID = __package__.rpartition(".")[0]  # the extension's module: preferences are keyed by it

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


def get_prefs(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


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


CLASSES = [P10_AddonPreferences]
