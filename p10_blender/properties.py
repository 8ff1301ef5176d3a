"""Scene settings: one PropertyGroup at ``scene.p10`` (prompts + every generation setting).

Only persistent user choices live here; the running job's state is runtime-only (``jobs``).
"""

from __future__ import annotations

import math

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       FloatVectorProperty, IntProperty, PointerProperty, StringProperty)

from ..core import prompts as core_prompts
from ..core.zoom.geometry import ZOOM_FACTORS
from ..core.settings import (DEFAULT_MODEL, DEVICES, MAX_GUIDANCE, SCHEDULER_CHOICES,
                             SCHEDULER_INFO, SCHEDULERS, UPSCALE_FACTORS, parse_upscale)
from .setup import compat

# Custom properties linking the scenes the add-on makes to the scene holding the settings:
# a video scene points to its zoom scene, a rig scene to the scene it was loaded from (ID
# pointers: renaming a scene keeps the link; older files hold names, still read).
SOURCE_KEYS = ("p10_video_of", "p10_home")

# Enum items are built from core's own tables, so a name core adds appears here by itself.
ZOOM_ITEMS = [(str(p), f"{p}×", f"Each level shows the centre 1/{p} of the previous one")
              for p in ZOOM_FACTORS]
SCHEDULER_ITEMS = [(name, SCHEDULER_INFO.get(name, (name.upper(), ""))[0],
                    SCHEDULER_INFO.get(name, ("", name))[1]
                    + (f" ({SCHEDULERS[name]} steps by default)" if name in SCHEDULERS else ""))
                   for name in SCHEDULER_CHOICES]
DEVICE_ITEMS = [(name, label, text) for name, (label, text) in DEVICES.items()]
UPSCALE_ITEMS = [("0", "Model Default", "DeepFloyd IF: 4× (its stage II); SD/SDXL: none")] + [
    (str(f), f"{f}×" if f > 1 else "None",
     "The sampled size" if f == 1 else f"{f}× the sampled size, upscaled jointly across levels"
     + (" (DeepFloyd IF only)" if f > 4 else "")) for f in UPSCALE_FACTORS]

_preset_items_cache: list = []  # Blender needs the enum item strings kept alive


def preset_items(self, context) -> list:
    global _preset_items_cache
    try:
        names = core_prompts.list_examples()
    except Exception:  # a broken install must not break drawing
        names = []
    _preset_items_cache = [(n, n.replace("_", " ").title(), f"Prompts of the paper's '{n}' example")
                           for n in names] or [("NONE", "No presets", "")]
    return _preset_items_cache


# Called (scene) when a zoom target, the target mode, the loop or the active row changes: the
# panel's marker image follows (interface.targets registers itself; no import from here).
TARGET_HOOKS: list = []


def _targets_changed(self, context) -> None:
    for hook in TARGET_HOOKS:
        hook(self.id_data)


TARGET_MODES = (
    ("CENTRE", "Centre", "Each level sits in the centre of the coarser one"),
    ("ONE", "One for All", "Every level sits at the same point of the coarser one"),
    ("EACH", "Per Level", "Each prompt row sets where the next level sits inside it"),
)


class P10_PromptItem(bpy.types.PropertyGroup):
    """One zoom level's prompt (level 0 = outermost)."""

    text: StringProperty(name="Prompt", description="What this zoom level shows",
                         default="")
    target: FloatVectorProperty(
        name="Target", size=2, default=(0.5, 0.5), min=0.0, max=1.0, precision=3,
        update=_targets_changed,
        description="Where the next level sits inside this one (Per Level targets): x from "
                    "the left, y from the top, as fractions of the frame (0.5, 0.5 = centre)")


def _base_annotations() -> dict:
    return {
        "prompts": CollectionProperty(type=P10_PromptItem, name="Prompts",
                                      description="One prompt per zoom level, outermost first"),
        "prompt_index": IntProperty(name="Active Prompt", default=0, min=0,
                                    update=_targets_changed,
                                    description="The selected zoom level in the prompt list"),
        # Static items (the shipped examples do not change while Blender runs): a callback
        # enum read where Blender has no context warns "current value '0' matches no enum".
        "preset": EnumProperty(name="Preset", items=list(preset_items(None, None)),
                               description="Prompt sequences from the paper"),
        "zoom": EnumProperty(name="Zoom Factor", items=ZOOM_ITEMS, default="2",
                             description="Zoom between consecutive levels (p in the paper)"),
        "width": IntProperty(name="Width", default=512, min=64, max=4096, step=64,
                             subtype="PIXEL", description="Image width (a multiple of 2·zoom)"),
        "height": IntProperty(name="Height", default=512, min=64, max=4096, step=64,
                              subtype="PIXEL", description="Image height (a multiple of 2·zoom)"),
        "steps": IntProperty(name="Steps", default=0, min=0, max=1000,
                             description="Denoising steps (0: the scheduler's default)"),
        "guidance": FloatProperty(name="Guidance", default=7.5, min=0.0, max=50.0,
                                  description="Classifier-free guidance scale (<= 1: none)"),
        "guidance_auto": BoolProperty(name="Auto Guidance", default=True,
                                      description="The model's guidance: 7.5, or none for "
                                                  "LCM, LCM-LoRA and Turbo models"),
        "scheduler": EnumProperty(name="Scheduler", items=SCHEDULER_ITEMS, default="auto",
                                  description="Sampler that steps the joint diffusion"),
        "lora": StringProperty(name="LoRA", default="",
                               description="Optional LoRA: hub id, folder or .safetensors "
                                           "file (LCM-LoRA: fast, 8 steps)"),
        "seed": IntProperty(name="Seed", default=0, min=0, description="Random seed"),
        "upscale": EnumProperty(name="Upscale", items=UPSCALE_ITEMS, default="0",
                                description="Layer size ÷ sampled size: ×4 super-resolution "
                                            "stages sampled jointly (for video resolution)"),
        "negative_prompt": StringProperty(name="Negative Prompt", default="",
                                          description="What no level should show"),
        "model": StringProperty(name="Model", default=DEFAULT_MODEL, subtype="DIR_PATH",
                                options=compat.PATH_OPTIONS,
                                description="Hugging Face model id, or a local model folder "
                                            "(browse)"),
        "device": EnumProperty(name="Device", items=DEVICE_ITEMS, default="auto",
                               description="Where the model runs"),
        "micro_batch": IntProperty(name="Micro-Batch", default=0, min=0, max=256,
                                   description="UNet rows per model call (0: the largest that "
                                               "fits the free memory; less memory, same result)"),
        "use_photo": BoolProperty(name="Start From Photo", default=False,
                                  description="One level shows a photo exactly"),
        "photo": PointerProperty(type=bpy.types.Image, name="Photo",
                                 description="Image the outermost level must match"),
        "photo_level": IntProperty(name="Photo Level", default=0, min=-1, soft_max=16,
                                   description="The level that shows the photo exactly: 0 = "
                                               "outermost (zoom into it), -1 = finest (zoom out "
                                               "of it)"),
        "loop": BoolProperty(name="Loop", default=False, update=_targets_changed,
                             description="The finest level zooms back into the first: a "
                                         "zoom video that never ends (2 levels or more)"),
        "target_mode": EnumProperty(name="Zoom Target", items=TARGET_MODES, default="CENTRE",
                                    update=_targets_changed,
                                    description="Where each level sits inside the coarser one"),
        "target": FloatVectorProperty(
            name="Target", size=2, default=(0.5, 0.5), min=0.0, max=1.0, precision=3,
            update=_targets_changed,
            description="Where every level sits inside the coarser one (One for All): x from "
                        "the left, y from the top, as fractions of the frame (0.5, 0.5 = centre)"),
        "extend_overlap": IntProperty(name="Overlap", default=2, min=1, max=16,
                                      description="Levels of the stack kept known in every "
                                                  "window of an extension"),
        "extend_window": IntProperty(name="Window", default=4, min=2, max=64,
                                     description="Levels sampled at once while extending: sets "
                                                 "the peak memory, whatever the total depth"),
        "output_dir": StringProperty(name="Output Folder", default="", subtype="DIR_PATH",
                                     options=compat.PATH_OPTIONS,
                                     description="Where stacks and videos go (empty: "
                                                 "zoom_stacks beside the saved .blend, or in "
                                                 "your home folder while it is unsaved)"),
        "last_stack_dir": StringProperty(name="Last Stack", default="", subtype="DIR_PATH",
                                         options=compat.PATH_OPTIONS,
                                         description="Folder of the last generated stack"),
    }


class P10_SceneSettings(bpy.types.PropertyGroup):
    """Everything the Zoom panel edits. Annotations are filled in by ``make_classes``."""


def make_classes(animation_type=None) -> list:
    """Property classes in registration order; hooks the animation settings if present."""
    ann = _base_annotations()
    if animation_type is not None:
        ann["animation"] = PointerProperty(type=animation_type, name="Animation",
                                           description="Zoom rig and video settings")
    P10_SceneSettings.__annotations__ = ann
    return [P10_PromptItem, P10_SceneSettings]


def settings_scene(scene):
    """The scene whose ``p10`` settings drive ``scene``: a video or rig scene made by the add-on
    hands over to the scene it came from, so the panel works whichever scene a window shows."""
    seen = set()
    while scene is not None and scene.name not in seen:
        seen.add(scene.name)
        for key in SOURCE_KEYS:
            source = linked_scene(scene, key)
            if source is not None and source != scene:
                scene = source
                break
        else:
            return scene
    return scene


def linked_scene(idb, key: str):
    """The scene an ID's custom property ``key`` points to: an ID pointer (renaming the
    scene keeps the link), or a scene name as older files stored it."""
    value = idb.get(key) if idb is not None else None
    if isinstance(value, bpy.types.Scene):
        return value
    if isinstance(value, str) and value:
        return bpy.data.scenes.get(value)
    return None


def p10_of(context):
    """The settings (``scene.p10``) the panel and the operators edit in this context."""
    return settings_scene(context.scene).p10


def prompts_of(settings) -> list[str]:
    """The prompt texts, outermost first, exactly as typed."""
    return [item.text for item in settings.prompts]


def set_prompts(settings, texts: list[str]) -> None:
    settings.prompts.clear()
    for text in texts:
        settings.prompts.add().text = text
    settings.prompt_index = 0


# Settings keys of prompt files / presets that map one-to-one onto scene properties.
SIMPLE_KEYS = ("width", "height", "steps", "guidance", "seed", "negative_prompt", "model",
               "scheduler", "device", "micro_batch")


def apply_settings(settings, values: dict) -> list[str]:
    """Copy known keys of a prompt file's settings onto ``settings``; return the ignored keys."""
    ignored = []
    for key, value in values.items():
        try:
            if key == "zoom":
                settings.zoom = str(int(value))
            elif key in ("steps", "micro_batch") and value is None:
                setattr(settings, key, 0)
            elif key == "upscale":
                settings.upscale = str(parse_upscale(value) or 0)
            elif key == "guidance":
                if value is not None:
                    number = float(value)  # "nan", "inf" parse: refused below, not imported
                    if isinstance(value, bool) or not math.isfinite(number) \
                            or not 0 <= number <= MAX_GUIDANCE:
                        raise ValueError(f"guidance {value!r}")
                    settings.guidance = number
                settings.guidance_auto = value is None
            elif key == "lora":
                settings.lora = value or ""
            elif key == "loop":
                settings.loop = bool(value)
            elif key == "targets":
                set_targets(settings, value)
            elif key in SIMPLE_KEYS and value is not None:
                setattr(settings, key, type(getattr(settings, key))(value))
            else:
                ignored.append(key)
        except (TypeError, ValueError):
            ignored.append(key)
    return ignored


def settings_dict(settings) -> dict:
    """The scene's settings as prompt-file / GenerateSettings keys (no prompts, no photo)."""
    out = {"zoom": int(settings.zoom)}
    out.update({key: getattr(settings, key) for key in SIMPLE_KEYS})
    out["steps"] = out["steps"] or None  # 0 means the scheduler's default
    out["micro_batch"] = out["micro_batch"] or None  # 0: the largest that fits
    out["upscale"] = int(settings.upscale) or None  # 0 means the model family's default
    out["lora"] = settings.lora.strip() or None
    if settings.guidance_auto:
        out["guidance"] = None
    out["loop"] = bool(settings.loop)
    out["targets"] = targets_of(settings)
    return out


def transitions_of(settings) -> int:
    """Level-to-level transitions of the prompt list: N-1, or N with a loop (N-1 -> 0)."""
    n = len(settings.prompts)
    return n if settings.loop else max(0, n - 1)


def targets_of(settings) -> list | None:
    """``GenerateSettings.targets`` of the panel: None (centred), one ``[x, y]`` for every
    transition, or one per transition from the prompt rows (row i: level i+1 inside i)."""
    if settings.target_mode == "ONE":
        return [[round(float(v), 6) for v in settings.target]]
    if settings.target_mode == "EACH":
        rows = list(settings.prompts)[:transitions_of(settings)]
        return [[round(float(v), 6) for v in item.target] for item in rows] or None
    return None


def apply_stack(settings, directory, manifest: dict) -> None:
    """A stack was loaded: it becomes the panel's last stack, and its prompts, loop and targets
    (unless the list already holds its prompts as one run of rows), model and seed become the
    panel's, so Extend and Regenerate work on it at once."""
    settings.last_stack_dir = str(directory)
    prompts = [str(p) for p in manifest.get("prompts", [])]
    rows = [t.strip() for t in prompts_of(settings)]
    n = len(prompts)
    if not any(rows[i:i + n] == prompts for i in range(len(rows) - n + 1)):
        # another stack: its prompts, loop and targets (the list's own rows, targets and
        # loop stay when it holds the stack's prompts already: Generate, Extend)
        set_prompts(settings, prompts)
        settings.loop = bool(manifest.get("loop", False))
        set_targets(settings, stack_targets(manifest))
    if isinstance(manifest.get("model"), str) and manifest["model"]:
        settings.model = manifest["model"]
    seed = manifest.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 31:
        settings.seed = seed


def stack_targets(manifest: dict) -> list | None:
    """The targets a stack was made with, from its footprints (each region's centre as
    fractions of the frame); one pair when they are all the same; None when centred."""
    footprints = manifest.get("footprints")
    if not footprints:
        return None
    w, h, p = int(manifest["width"]), int(manifest["height"]), int(manifest["zoom"])
    pairs = [[round((left + w / p / 2) / w, 6), round((top + h / p / 2) / h, 6)]
             for left, top in footprints]
    if all(pair == [0.5, 0.5] for pair in pairs):
        return None
    return pairs[:1] if all(pair == pairs[0] for pair in pairs) else pairs


def set_targets(settings, targets) -> None:
    """The panel's targets from ``GenerateSettings.targets`` (None, one pair, or one per
    transition: onto the prompt rows)."""
    if not targets:
        settings.target_mode = "CENTRE"
    elif len(targets) == 1:
        settings.target_mode, settings.target = "ONE", [float(v) for v in targets[0]]
    else:
        for item, pair in zip(settings.prompts, targets):
            item.target = [float(v) for v in pair]
        settings.target_mode = "EACH"
