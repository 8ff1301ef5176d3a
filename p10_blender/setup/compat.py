"""Feature-detecting helpers for the Blender API differences between 4.2 LTS and 5.0.

Each helper asks Blender what it has (RNA properties, function parameters) rather than
comparing version numbers, so point releases in between keep working.
"""

from __future__ import annotations

import os

import bpy


# ------------------------------------------------------------------------------ sequencer
def strips(editor: "bpy.types.SequenceEditor"):
    """Top-level strips collection: ``strips`` in 4.5/5.0, ``sequences`` in 4.2-4.4."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: "bpy.types.SequenceEditor"):
    """Every strip, meta contents included: ``strips_all`` / ``sequences_all``."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def strip_data_path(strip) -> str:
    """Path from the scene to a strip property owner, for keyframes and fcurve lookups."""
    collection = "strips_all" if hasattr(strip.id_data.sequence_editor, "strips_all") \
        else "sequences_all"
    return f'sequence_editor.{collection}["{bpy.utils.escape_identifier(strip.name)}"]'


def new_effect_strip(collection, name: str, type: str, channel: int, frame_start: int,
                     length: int):
    """``new_effect`` takes ``length`` since 4.5/5.0 and ``frame_end`` before."""
    params = collection.bl_rna.functions["new_effect"].parameters
    if "length" in params:
        return collection.new_effect(name=name, type=type, channel=channel,
                                     frame_start=frame_start, length=length)
    return collection.new_effect(name=name, type=type, channel=channel,
                                 frame_start=frame_start, frame_end=frame_start + length)


def set_text_layout(strip, location: tuple[float, float], align_y: str = "BOTTOM") -> None:
    """Centre a text strip horizontally at ``location`` (align_* in 4.2, anchor_* later)."""
    strip.location = location
    props = strip.bl_rna.properties
    if "anchor_x" in props:
        strip.anchor_x, strip.anchor_y = "CENTER", align_y
        if "alignment_x" in props:
            strip.alignment_x = "CENTER"
    elif "align_x" in props:
        strip.align_x, strip.align_y = "CENTER", align_y


# ------------------------------------------------------------------------------ rendering
def set_video_output(scene: "bpy.types.Scene", filepath: str, fps: int, codec: str = "H264",
                     container: str = "MPEG4") -> None:
    """FFmpeg ``codec`` in ``container`` (default H.264 in MP4). 5.0 splits image/video
    formats by ``media_type``. A codec this Blender's FFmpeg lacks raises ValueError."""
    settings = scene.render.image_settings
    if "media_type" in settings.bl_rna.properties:
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    ff = scene.render.ffmpeg
    if codec not in {i.identifier for i in ff.bl_rna.properties["codec"].enum_items}:
        raise ValueError(f"this Blender's FFmpeg has no {codec} encoder")
    ff.format = container
    ff.codec = codec
    if "constant_rate_factor" in ff.bl_rna.properties and codec in ("H264", "H265", "AV1"):
        ff.constant_rate_factor = "HIGH"
    ff.audio_codec = "NONE"
    scene.render.fps = int(fps)
    scene.render.fps_base = 1.0
    scene.render.filepath = filepath
    scene.render.use_file_extension = True


def set_sequence_output(scene: "bpy.types.Scene", filepath: str, fps: int,
                        file_format: str = "PNG") -> None:
    """An image sequence: 8-bit RGB PNG, or half-float OpenEXR (ZIP) for a compositor."""
    settings = scene.render.image_settings
    if "media_type" in settings.bl_rna.properties:
        settings.media_type = "IMAGE"
    settings.file_format = file_format
    settings.color_mode = "RGB"
    if file_format == "OPEN_EXR":
        settings.color_depth = "16"
        settings.exr_codec = "ZIP"
    else:
        settings.color_depth = "8"
    scene.render.fps = int(fps)
    scene.render.fps_base = 1.0
    scene.render.filepath = filepath
    scene.render.use_file_extension = True


def set_still_output(scene: "bpy.types.Scene") -> None:
    """8-bit RGB PNG stills (the inverse of ``set_video_output``)."""
    settings = scene.render.image_settings
    if "media_type" in settings.bl_rna.properties:
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    settings.color_mode = "RGB"
    settings.color_depth = "8"


def eevee_engine_names() -> tuple[str, ...]:
    """Eevee's engine id: 'BLENDER_EEVEE_NEXT' in 4.2-4.4, 'BLENDER_EEVEE' otherwise."""
    return ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")


def set_engine(scene: "bpy.types.Scene", engine: str) -> str:
    """Set the render engine: 'CYCLES', 'EEVEE' or 'WORKBENCH'; returns the id used.

    The enum is filled from the registered engines at run time, so try the candidates.
    """
    candidates = {
        "CYCLES": ("CYCLES",),
        "EEVEE": eevee_engine_names(),
        "WORKBENCH": ("BLENDER_WORKBENCH",),
    }.get(engine, (engine,))
    for name in candidates:
        try:
            scene.render.engine = name
            return name
        except TypeError:
            continue
    raise RuntimeError(f"render engine {engine} is not available in this Blender")


# --------------------------------------------------------------------------------- images
def load_image_packed(filepath: str | os.PathLike, name: str,
                      colorspace: str = "sRGB") -> "bpy.types.Image":
    """Load an image file as a new datablock, set its colour space, pack it into the .blend.

    Loading from a file (not pixels.foreach_set) keeps the 8-bit values exact; the colour
    space is set before packing so the packed buffer is decoded as sRGB.
    """
    image = bpy.data.images.load(os.fspath(filepath), check_existing=False)
    image.name = name
    image.colorspace_settings.name = colorspace
    image.alpha_mode = "NONE"  # layers are opaque RGB
    image.pack()
    return image


def write_rgb_image(name: str, rgb) -> "bpy.types.Image":
    """The image datablock ``name`` holding float RGB ``(h, w, 3)`` pixels given top row first
    (Blender's rows are bottom-up); made, or remade at another size, as needed."""
    import numpy as np

    rgb = np.asarray(rgb, dtype=np.float32)
    h, w = rgb.shape[:2]
    img = bpy.data.images.get(name)
    if img is not None and tuple(img.size) != (w, h):
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, w, h, alpha=False)
        img.colorspace_settings.name = "sRGB"  # before pixels: setting it afterwards wipes them
    rgba = np.ones((h, w, 4), dtype=np.float32)
    rgba[..., :3] = np.clip(rgb[::-1], 0.0, 1.0)
    img.pixels.foreach_set(rgba.ravel())
    img.update()
    return img


# ----------------------------------------------------------------------------- animation
def fcurves_for(id_data) -> "bpy.types.bpy_prop_collection":
    """The F-curves animating ``id_data``: ``action.fcurves`` before 4.4, the slot's
    channelbag with layered actions (4.4+, the only kind in 5.0)."""
    anim = id_data.animation_data
    action = anim.action
    if hasattr(action, "fcurves") and not hasattr(action, "layers"):
        return action.fcurves
    try:
        from bpy_extras.anim_utils import action_get_channelbag_for_slot
        bag = action_get_channelbag_for_slot(action, anim.action_slot)
        if bag is not None:
            return bag.fcurves
    except ImportError:
        pass
    return action.fcurves


def find_fcurve(id_data, data_path: str, index: int = 0):
    if id_data.animation_data is None or id_data.animation_data.action is None:
        return None
    for fc in fcurves_for(id_data):
        if fc.data_path == data_path and fc.array_index == index:
            return fc
    return None


# ----------------------------------------------------------------------------- properties
#: ``options`` of a path property that accepts "//" (relative to the .blend): 4.5+ warns
#: without the flag, 4.2 does not know it and refuses to register it.
PATH_OPTIONS: set = ({"PATH_SUPPORTS_BLEND_RELATIVE"}
                     if "is_path_supports_blend_relative"
                     in bpy.types.StringProperty.bl_rna.properties else set())


# ------------------------------------------------------------------------------ operators
def poll_message(cls, message: str) -> bool:
    """Tell the user why an operator is greyed out (``poll_message_set``: Blender 3.0+; a
    tooltip and the RuntimeError of a scripted call show it). Returns False for ``poll``."""
    setter = getattr(cls, "poll_message_set", None)
    if setter is not None:
        setter(message)
    return False


def tag_redraw() -> None:
    """Redraw the areas that show the panel and the stack's images (progress, results)."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                area.tag_redraw()
