"""The prompt list's operators: add, remove, move, duplicate, import/export a prompt file, load
an example sequence, pick a random seed."""

from __future__ import annotations

import random

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..setup import compat
from ..generate.operators import _fail
from ..properties import apply_settings, p10_of, prompts_of, set_prompts, settings_dict
from ...core import prompts as core_prompts
from ...core.errors import P10Error


class _NeedsPrompts:
    """poll(): greyed out, with the reason, while the prompt list is empty."""

    @classmethod
    def poll(cls, context):
        return bool(p10_of(context).prompts) or compat.poll_message(cls, "The prompt list is empty")


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


CLASSES = [P10_OT_prompt_add, P10_OT_prompt_remove, P10_OT_prompt_move, P10_OT_prompt_duplicate,
           P10_OT_prompts_import, P10_OT_prompts_export, P10_OT_preset_load,
           P10_OT_seed_randomise]
