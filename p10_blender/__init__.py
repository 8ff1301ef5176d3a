"""The Blender side of Powers of Ten: registration of every class, handler and timer.

Enabling must work without torch/diffusers: nothing here imports them.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from .setup import dependencies
from .generate import generation, jobs
from .generate import operators as generate_ops
from . import properties
from .interface import models_ui, panel, preferences, prompt_ops, targets
from .rig import operators as rig_ops
from .video import operators as video_ops

_EXTRA = [*rig_ops.CLASSES, *video_ops.CLASSES]

_registered: list = []


def _is_child_panel(cls) -> bool:
    return issubclass(cls, bpy.types.Panel) and bool(getattr(cls, "bl_parent_id", ""))


def _animation_type():
    for cls in _EXTRA:
        if cls.__name__ == "P10_AnimationSettings":
            return cls
    return None


def all_classes() -> list:
    """Registration order: the scene operators' property groups, ours, then the panels
    (parents before children)."""
    extra_first = [c for c in _EXTRA if not _is_child_panel(c)]
    extra_last = [c for c in _EXTRA if _is_child_panel(c)]
    return [*extra_first, *properties.make_classes(_animation_type()),
            *models_ui.PROPERTY_CLASSES, *preferences.CLASSES, *generate_ops.CLASSES,
            *prompt_ops.CLASSES,
            *models_ui.CLASSES, *panel.CLASSES, *extra_last]


@persistent
def p10_load_pre(*_args) -> None:
    """A file is replacing this one: cancel the running job before its scene goes away."""
    generation.on_file_load()


def one_line_description(cls) -> None:
    """An operator's tooltip is its docstring as one line: Blender keeps a docstring's line
    breaks and indentation, which the tooltip then shows."""
    if issubclass(cls, bpy.types.Operator) and cls.__doc__ and "bl_description" not in vars(cls):
        cls.bl_description = " ".join(cls.__doc__.split())


@persistent
def p10_depsgraph_update(scene, depsgraph) -> None:
    """Hand edits of a rig (retimed keys, a wider camera) update what depends on them."""
    rig_ops.on_depsgraph_update(scene, depsgraph)


def register() -> None:
    for cls in all_classes():
        one_line_description(cls)
        bpy.utils.register_class(cls)
        _registered.append(cls)
    bpy.types.Scene.p10 = bpy.props.PointerProperty(type=properties.P10_SceneSettings)
    if p10_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(p10_load_pre)
    if p10_depsgraph_update not in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.append(p10_depsgraph_update)
    properties.TARGET_HOOKS[:] = [targets.on_targets_changed]
    dependencies.refresh(preferences.get_prefs())


def unregister() -> None:
    properties.TARGET_HOOKS.clear()
    try:
        marker = bpy.data.images.get(targets.MARKER_IMAGE)
        if marker is not None:
            bpy.data.images.remove(marker)
    except (AttributeError, ReferenceError, RuntimeError):  # no bpy.data (Blender quitting)
        pass
    generation.stop_for_unregister()
    jobs.stop_polling(generation.runner)
    while p10_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(p10_load_pre)
    while p10_depsgraph_update in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.remove(p10_depsgraph_update)
    if hasattr(bpy.types.Scene, "p10"):
        del bpy.types.Scene.p10
    while _registered:
        cls = _registered.pop()
        try:
            bpy.utils.unregister_class(cls)
        except RuntimeError:
            pass
    dependencies.remove_paths()
