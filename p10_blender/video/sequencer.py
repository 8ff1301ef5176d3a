"""The zoom video: a sequencer scene holding the camera scene as a strip, captions and fades.

The video scene is separate from the camera scene (a scene strip cannot show its own scene).
Rendering it with ``bpy.ops.render.render(animation=True)`` writes an H.264 MP4.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import bpy

from ..properties import linked_scene
from ..setup import compat
from ..rig.animation import level_spans
from .video_render import set_output

VIDEO_KEY = "p10_video_of"  # custom property on a video scene: its camera scene


def even(n: float) -> int:
    """H.264 (yuv420p) needs even frame sizes."""
    return max(2, int(round(n / 2.0)) * 2)


def video_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """Frame size with the stack's aspect ratio and ``longest`` pixels on the longer side."""
    scale = longest / max(width, height)
    return even(width * scale), even(height * scale)


CAPTION_STRIP = 0.16  # captions never cover more than this part of the frame height, at the bottom


def caption_layout(text: str, width: int, height: int, font_size: int = 0) -> tuple[str, int, int]:
    """``(text, font size, lines)`` of a caption that fits a strip at the bottom of the frame.

    The font is ``height/20`` (at least 8 px) unless set; as many lines as fit in
    ``CAPTION_STRIP`` of the height (at least one) are kept, the text is shortened with an
    ellipsis past them (Blender's font is about 0.75 font sizes per glyph; lines wrap at 90 %).
    """
    font = int(font_size) or max(8, int(round(height / 20)))
    font = min(font, max(8, int(CAPTION_STRIP * height / 1.3)))
    lines = max(1, int(CAPTION_STRIP * height // (1.3 * font)))
    per_line = max(4, int(0.9 * width / (0.75 * font)))
    wrapped = textwrap.wrap(" ".join(str(text).split()), per_line - 1) or [""]
    text = " ".join(wrapped[:lines])
    if len(wrapped) > lines:
        text = text[:lines * per_line - 2].rstrip() + "…"
    return text, font, lines


def find_video_scene(source: "bpy.types.Scene") -> "bpy.types.Scene | None":
    for sc in bpy.data.scenes:
        if linked_scene(sc, VIDEO_KEY) == source and sc != source:
            return sc
    return None


def _key_alpha(strip, frames_values: Sequence[tuple[int, float]]) -> None:
    for frame, value in frames_values:
        strip.blend_alpha = value
        strip.keyframe_insert("blend_alpha", frame=frame)


def build_video_scene(source: "bpy.types.Scene", *, levels, prompts: Sequence[str],
                      filepath: str, size: tuple[int, int], fps: int, captions: bool = True,
                      caption_size: int = 0, fade_frames: int = 0,
                      camera: "bpy.types.Object | None" = None,
                      fmt: str = "H264") -> "bpy.types.Scene":
    """(Re)build the video scene of ``source``; the previous one is removed once done.

    ``levels`` is the zoom level of each of source's frames (``animation.frame_levels``); a
    caption with prompt k is shown while image k fills the frame. ``filepath`` should be
    absolute (see ``video_render.resolve_output``). ``source`` keeps its settings: the scene
    strip renders it at the video's size.
    """
    width, height = size
    start, end = source.frame_start, source.frame_end
    old = find_video_scene(source)
    video = bpy.data.scenes.new(f"{source.name} Video")
    try:
        video[VIDEO_KEY] = source  # a pointer: renaming keeps it
        video.frame_start, video.frame_end = start, end
        render = video.render
        render.resolution_x, render.resolution_y = width, height
        render.resolution_percentage = 100
        render.dither_intensity = 0.0
        render.use_sequencer = True
        render.use_compositing = False
        # The zoom scene's frames arrive as display values: pass them through unchanged
        # ('Standard' over sRGB, or 'Raw' for exact frames).
        video.view_settings.view_transform = \
            "Raw" if source.view_settings.view_transform == "Raw" else "Standard"
        video.view_settings.look = "None"
        video.view_settings.exposure, video.view_settings.gamma = 0.0, 1.0
        video.display_settings.display_device = source.display_settings.display_device
        video.sequencer_colorspace_settings.name = source.sequencer_colorspace_settings.name
        set_output(video, filepath, fps, fmt)  # a video file or a folder of frames

        editor = video.sequence_editor_create()
        strips = compat.strips(editor)
        zoom = strips.new_scene("Zoom", source, 1, start)
        if "scene_input" in zoom.bl_rna.properties:
            zoom.scene_input = "CAMERA"
        zoom.scene_camera = camera or source.camera
        # A scene strip renders at its scene's own resolution: scale it to fill the video
        # (a user's scene keeps its resolution; the rig's own scene is set to the video size).
        pct = source.render.resolution_percentage / 100.0
        sw, sh = source.render.resolution_x * pct, source.render.resolution_y * pct
        if (sw, sh) != (width, height) and sw > 0 and sh > 0 and hasattr(zoom, "transform"):
            zoom.transform.scale_x = zoom.transform.scale_y = min(width / sw, height / sh)

        if captions:
            for level, first, count in level_spans(levels, len(prompts)):
                raw = str(prompts[level]).strip() if level < len(prompts) else ""
                if not raw:
                    continue
                text, font, _ = caption_layout(raw, width, height, caption_size)
                strip = compat.new_effect_strip(strips, f"Caption {level:02d}", "TEXT",
                                                2, start + first, count)
                strip.text = text
                strip.font_size = font
                strip.use_shadow = True
                strip.wrap_width = 0.9
                if hasattr(strip, "use_box"):  # a dark band keeps the text readable
                    strip.use_box = True
                    strip.box_color = (0.0, 0.0, 0.0, 0.55)
                    if hasattr(strip, "box_margin"):
                        strip.box_margin = 0.01
                compat.set_text_layout(strip, (0.5, 0.02), "BOTTOM")
                strip.blend_type = "ALPHA_OVER"
        fade = min(int(fade_frames), (end - start + 1) // 2)
        if fade > 0:
            # A black strip above everything (captions included) fades to and from black.
            black = compat.new_effect_strip(strips, "Fade", "COLOR", 3, start,
                                            end - start + 1)
            black.color = (0.0, 0.0, 0.0)
            black.blend_type = "ALPHA_OVER"
            _key_alpha(black, [(start, 1.0), (start + fade, 0.0), (end - fade, 0.0),
                               (end, 1.0)])
    except BaseException:
        bpy.data.scenes.remove(video)
        raise
    if old is not None:
        for win in getattr(bpy.context.window_manager, "windows", ()):
            if win.scene == old:
                win.scene = video
        bpy.data.scenes.remove(old)
        video.name = f"{source.name} Video"  # the name the old one had (no ".001")
    return video
