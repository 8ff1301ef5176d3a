"""Models in Blender: the preferences' model list (download, remove, local folders, hub token),
the panel's compact model picker and the memory/time estimate shown before Generate.

Logic lives in ``core.models`` / ``core.estimate`` (torch-free); this module draws and wraps it
in operators. A download is a background job of the same runner as Generate (one job at a time,
progress in bytes, Cancel keeps what arrived so the next download resumes).
"""

from __future__ import annotations

import time

import bpy
from bpy.props import EnumProperty, StringProperty

from ..generate import generation, jobs
from ..properties import p10_of, prompts_of, settings_dict
from ...core.errors import P10Error

_listing: dict = {"entries": [], "error": None, "time": 0.0}
_estimate_memo: dict = {"key": None, "time": 0.0, "lines": [], "warn": False}
_pick_items: list = []  # Blender needs enum item strings kept alive


class P10_LocalModel(bpy.types.PropertyGroup):
    """A model folder or checkpoint file the user added to the list."""

    path: StringProperty(name="Path", subtype="FILE_PATH",
                         description="A diffusers model folder or a .safetensors/.ckpt file")


def _prefs(context=None):
    from ..setup.dependencies import get_prefs

    return get_prefs(context)


def local_paths(prefs=None) -> list[str]:
    prefs = prefs if prefs is not None else _prefs()
    return [m.path for m in prefs.local_models] if prefs is not None else []


# ------------------------------------------------------------------------------ listing
def refresh(prefs=None) -> list:
    """Rescan the Hugging Face cache and the local models (main thread, cheap)."""
    from ...core.models import cache as models

    try:
        _listing["entries"] = models.list_models(local_paths(prefs))
        _listing["error"] = None
    except ModuleNotFoundError as exc:
        _listing["entries"], _listing["error"] = [], (
            f"Python package '{exc.name}' is missing: install dependencies above")
    except Exception as exc:  # noqa: BLE001 - a broken cache must not break the preferences
        _listing["entries"], _listing["error"] = [], f"Cannot read the model cache: {exc}"
    _listing["time"] = time.monotonic()
    return _listing["entries"]


def entries() -> list:
    if not _listing["time"]:
        refresh()
    return _listing["entries"]


def _size(n: int) -> str:
    from ...core.models.cache import format_bytes

    return format_bytes(n)


def draw_models(layout, prefs) -> None:
    """The Models box of the preferences: list, download, local models, token."""
    from ...core.models import cache as models

    box = layout.box()
    row = box.row()
    row.label(text="Models", icon="FILE_3D")
    row.operator("p10.models_refresh", text="", icon="FILE_REFRESH")
    idle = not generation.runner.busy
    if _listing["error"]:
        box.label(text=_listing["error"], icon="ERROR")
    listed = entries()
    if not listed:
        box.label(text=f"No models yet in {_cache_dir_text()}")
    for i, e in enumerate(listed):
        row = box.row(align=True)
        row.label(text=e.name if e.source == "hub" else bpy.path.basename(e.name.rstrip("/\\")) or e.name,
                  icon="WORLD" if e.source == "hub" else "FILE_FOLDER")
        row.label(text=e.family_name)
        row.label(text=_size(e.size_bytes))
        row.label(text="Complete" if e.complete else "Corrupt" if e.corrupt else "Incomplete",
                  icon="CHECKMARK" if e.complete else "ERROR")
        sub = row.row(align=True)
        sub.enabled = idle
        sub.operator("p10.model_use", text="", icon="RESTRICT_SELECT_OFF").name = e.name
        if e.source == "hub":
            if not e.complete:
                sub.operator("p10.model_download", text="", icon="IMPORT").repo_id = e.name
            sub.operator("p10.model_remove", text="", icon="TRASH").repo_id = e.name
        else:
            sub.operator("p10.model_forget_local", text="", icon="X").path = e.name
    row = box.row(align=True)
    row.enabled = idle
    if prefs is not None:
        row.prop(prefs, "download_id", text="")
    row.operator("p10.model_download", text="Download", icon="IMPORT")
    row = box.row()
    row.enabled = idle
    row.operator("p10.model_add_local", icon="FILE_FOLDER")
    job = generation.runner.current
    if job is not None and job.name == "download":
        sub = box.box()
        for line in generation.status_lines(job):
            sub.label(text=line, icon="TIME" if job.running else "INFO")
        if job.running:
            if job.total and hasattr(sub, "progress"):
                sub.progress(factor=job.fraction, type="BAR", text=f"{int(job.fraction * 100)} %")
            sub.operator("p10.cancel", icon="CANCEL")
    try:
        token = models.token_status()
    except Exception:  # noqa: BLE001 - huggingface_hub missing: dependencies come first
        token = None
    row = box.row(align=True)
    row.label(text=f"Hub token: {token}" if token else "Hub token: not set (needed for gated models)",
              icon="LOCKED" if token else "UNLOCKED")
    row.operator("p10.hf_token_set", text="Set Token", icon="KEYINGSET")
    if token:
        row.operator("p10.hf_token_clear", text="", icon="X")


def _cache_dir_text() -> str:
    try:
        from ...core.models.cache import cache_dir

        return cache_dir()
    except Exception:  # noqa: BLE001
        return "the Hugging Face cache"


# ------------------------------------------------------------------------------ panel
def draw_picker(layout, context) -> None:
    """Model field + a search button listing the downloaded and added models + micro-batch."""
    p10 = p10_of(context)
    row = layout.row(align=True)
    row.prop(p10, "model")
    row.operator("p10.model_pick", text="", icon="VIEWZOOM")
    layout.prop(p10, "micro_batch")


def estimate_lines(context) -> tuple[list[str], bool]:
    """The estimate of the scene's settings as panel lines, and whether it warns."""
    from ...core.models.estimate import device_info, estimate
    from ...core.settings import GenerateSettings

    p10 = p10_of(context)
    values = settings_dict(p10)
    texts = [t for t in prompts_of(p10) if t.strip()]
    if not texts:  # nothing to estimate yet (the main panel asks for prompts)
        return [], False
    key = (tuple(sorted((k, str(v)) for k, v in values.items())), len(texts))
    if key == _estimate_memo["key"] and time.monotonic() - _estimate_memo["time"] < 5.0:
        return _estimate_memo["lines"], _estimate_memo["warn"]
    try:
        settings = GenerateSettings(prompts=texts, **values)
        info = device_info(settings.device, max_age=300.0)
        result = estimate(settings, info=info)
        lines, warn = result.lines(), bool(result.warnings)
    except Exception:  # noqa: BLE001 - invalid settings: Generate reports them
        lines, warn = [], False
    _estimate_memo.update(key=key, time=time.monotonic(), lines=lines, warn=warn)
    return lines, warn


def draw_estimate(layout, context) -> None:
    lines, warn = estimate_lines(context)
    if not lines:
        return
    box = layout.box()
    for i, line in enumerate(lines):
        icon = "ERROR" if line.startswith("Warning") else ("INFO" if i == 0 else "NONE")
        box.label(text=line.replace("Warning: ", ""), icon=icon)


# ------------------------------------------------------------------------------ operators
def _fail(op, message: str) -> set:
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


def _redraw() -> None:
    generation.tag_redraw()
    wm = bpy.context.window_manager
    for window in wm.windows if wm else ():
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


class P10_OT_models_refresh(bpy.types.Operator):
    """Scan the Hugging Face cache and the added model folders again"""

    bl_idname = "p10.models_refresh"
    bl_label = "Refresh Models"

    def execute(self, context):
        refresh(_prefs(context))
        return {"FINISHED"}


def _download_finished(job: jobs.Job) -> None:
    refresh()
    _redraw()


def _download_message(job: jobs.Job, kind: str, payload) -> None:
    _redraw()


class P10_OT_model_download(bpy.types.Operator):
    """Download a Hugging Face model into the cache (in the background; Cancel keeps what arrived and the next download resumes)"""

    bl_idname = "p10.model_download"
    bl_label = "Download Model"

    repo_id: StringProperty(name="Hub Id", default="",
                            description="Hugging Face model id (empty: the id typed in the preferences)")

    def execute(self, context):
        from ...core.models import cache as models

        prefs = _prefs(context)
        rid = self.repo_id.strip() or (prefs.download_id.strip() if prefs is not None else "")
        if generation.runner.busy:
            return _fail(self, "A job is running: wait or cancel it first")
        try:
            rid = models.check_repo_id(rid)
        except P10Error as exc:
            return _fail(self, str(exc))
        except ModuleNotFoundError as exc:
            return _fail(self, f"Python package '{exc.name}' is missing: install dependencies first")

        def work(reporter: jobs.Reporter) -> str:
            from ...core.models.downloads import download

            return download(rid, cancel=reporter.cancel_event,
                                   progress=lambda d, t, s: reporter.progress("downloading", d, t))

        job = jobs.Job(name="download", work=work, on_message=_download_message,
                       on_finish=_download_finished)
        job.data["repo_id"] = rid
        generation.runner.start(job)
        if bpy.app.background:  # timers never fire: run it to the end, like Generate
            from ..generate.operators import report_job_end

            generation.runner.drive(job)
            return report_job_end(self, job)
        jobs.start_polling(generation.runner)
        self.report({"INFO"}, f"Downloading {rid}… (progress in the add-on preferences)")
        return {"FINISHED"}


class P10_OT_model_remove(bpy.types.Operator):
    """Delete this model from the Hugging Face cache (asks first)"""

    bl_idname = "p10.model_remove"
    bl_label = "Remove Model"

    repo_id: StringProperty(name="Hub Id", default="", description="Hugging Face model id to delete")

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        from ...core.models import cache as models

        if generation.runner.busy:
            return _fail(self, "A job is running: wait or cancel it first")
        generation.release_model()  # the loaded model may be this one
        try:
            freed = models.remove(self.repo_id)
        except P10Error as exc:
            return _fail(self, str(exc))
        refresh(_prefs(context))
        self.report({"INFO"}, f"Removed {self.repo_id} ({models.format_bytes(freed)} freed)")
        return {"FINISHED"}


class P10_OT_model_add_local(bpy.types.Operator):
    """Add a diffusers model folder or a .safetensors/.ckpt file to the model list"""

    bl_idname = "p10.model_add_local"
    bl_label = "Add Local Model"

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="",
                             description="A .safetensors/.ckpt file, or any file inside a model folder")
    directory: StringProperty(name="Folder", subtype="DIR_PATH", default="",
                              description="A diffusers model folder (with model_index.json)")
    filter_glob: StringProperty(default="*.safetensors;*.ckpt;*.json", options={"HIDDEN"},
                                description="Files shown in the browser")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        import os

        from ...core.models import cache as models

        path = self.filepath
        if not path or not os.path.isfile(path) or path.endswith(".json"):
            path = self.directory or os.path.dirname(path)
        path = bpy.path.abspath(path)
        try:
            entry = models.describe_local(path)
        except P10Error as exc:
            return _fail(self, str(exc))
        prefs = _prefs(context)
        if prefs is None:
            return _fail(self, "The add-on preferences are not available")
        if entry.path not in local_paths(prefs):
            prefs.local_models.add().path = entry.path
        refresh(prefs)
        state = "complete" if entry.complete else "incomplete: " + ", ".join(entry.missing[:3])
        self.report({"INFO"}, f"Added {entry.path} ({entry.family_name}, {state})")
        return {"FINISHED"}


class P10_OT_model_forget_local(bpy.types.Operator):
    """Take this folder/file off the model list (nothing is deleted)"""

    bl_idname = "p10.model_forget_local"
    bl_label = "Forget Local Model"

    path: StringProperty(name="Path", default="", description="The model folder or file to forget")

    def execute(self, context):
        prefs = _prefs(context)
        if prefs is None:
            return {"CANCELLED"}
        for i, item in enumerate(prefs.local_models):
            if item.path == self.path:
                prefs.local_models.remove(i)
                break
        refresh(prefs)
        return {"FINISHED"}


def pick_names() -> list[str]:
    """What the picker offers: cached and added models, the default model, and the modern
    models (SD3.5, FLUX.1) even before they are downloaded (Generate downloads them)."""
    from ...core.models.families import SUGGESTED_MODELS
    from ...core.settings import DEFAULT_MODEL

    names = [e.name for e in entries()]
    return names + [m for m in (DEFAULT_MODEL, *SUGGESTED_MODELS) if m not in names]


def pick_tooltip(name: str) -> str:
    """The picker's tooltip: the model's facts (size, download, memory, steps, guidance)."""
    from ...core.settings import model_facts

    facts = model_facts(name)
    return f"Use {name}. {facts}" if facts else f"Use {name}"


def _pick_enum(self, context):
    global _pick_items
    # identifiers are indices: paths can be longer than an enum identifier may be
    _pick_items = [(str(i), n, pick_tooltip(n)) for i, n in enumerate(pick_names())]
    return _pick_items


class P10_OT_model_pick(bpy.types.Operator):
    """Choose a downloaded or added model (search)"""

    bl_idname = "p10.model_pick"
    bl_label = "Choose Model"
    bl_property = "choice"

    choice: EnumProperty(name="Model", items=_pick_enum,
                         description="Models in the Hugging Face cache and added folders/files")

    def invoke(self, context, event):
        refresh(_prefs(context))
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        names = pick_names()
        i = int(self.choice) if self.choice.isdigit() else -1
        if not 0 <= i < len(names):
            return {"CANCELLED"}
        p10_of(context).model = names[i]
        return {"FINISHED"}


class P10_OT_model_use(bpy.types.Operator):
    """Generate with this model"""

    bl_idname = "p10.model_use"
    bl_label = "Use Model"

    name: StringProperty(name="Model", default="", description="Hub id or local model path")

    def execute(self, context):
        p10_of(context).model = self.name
        return {"FINISHED"}


class P10_OT_hf_token_set(bpy.types.Operator):
    """Store a Hugging Face access token for gated models (DeepFloyd IF), where huggingface_hub keeps it (HF_HOME/token); it is never saved in the .blend or the preferences"""

    bl_idname = "p10.hf_token_set"
    bl_label = "Set Hub Token"

    token: StringProperty(name="Token", subtype="PASSWORD", default="", options={"SKIP_SAVE"},
                          description="An access token from huggingface.co/settings/tokens")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        from ...core.models import cache as models

        try:
            message = models.save_token(self.token)
        except P10Error as exc:
            return _fail(self, str(exc))
        finally:
            self.token = ""
        self.report({"INFO"}, message[0].upper() + message[1:])
        return {"FINISHED"}


class P10_OT_hf_token_clear(bpy.types.Operator):
    """Remove the stored Hugging Face token (log out)"""

    bl_idname = "p10.hf_token_clear"
    bl_label = "Clear Hub Token"

    def execute(self, context):
        from ...core.models import cache as models

        models.clear_token()
        self.report({"INFO"}, "Hub token removed")
        return {"FINISHED"}


PROPERTY_CLASSES = [P10_LocalModel]
CLASSES = [P10_OT_models_refresh, P10_OT_model_download, P10_OT_model_remove,
           P10_OT_model_add_local, P10_OT_model_forget_local, P10_OT_model_pick, P10_OT_model_use,
           P10_OT_hf_token_set, P10_OT_hf_token_clear]
