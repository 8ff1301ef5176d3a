"""The zoom video: a sequencer scene holding the camera scene as a strip, captions and fades.

The video scene is separate from the camera scene (a scene strip cannot show its own scene).
Rendering it with ``bpy.ops.render.render(animation=True)`` writes an H.264 MP4.
"""

from __future__ import annotations

from typing import Sequence

import bpy

from . import compat
from .animation import level_spans

VIDEO_KEY = "p10_video_of"  # custom property on a video scene: the camera scene's name


def even(n: float) -> int:
    """H.264 (yuv420p) needs even frame sizes."""
    return max(2, int(round(n / 2.0)) * 2)


def video_size(width: int, height: int, longest: int) -> tuple[int, int]:
    """Frame size with the stack's aspect ratio and ``longest`` pixels on the longer side."""
    scale = longest / max(width, height)
    return even(width * scale), even(height * scale)


def find_video_scene(source: "bpy.types.Scene") -> "bpy.types.Scene | None":
    for sc in bpy.data.scenes:
        if sc.get(VIDEO_KEY) == source.name and sc != source:
            return sc
    return None


def _key_alpha(strip, frames_values: Sequence[tuple[int, float]]) -> None:
    for frame, value in frames_values:
        strip.blend_alpha = value
        strip.keyframe_insert("blend_alpha", frame=frame)


def build_video_scene(source: "bpy.types.Scene", *, levels, prompts: Sequence[str],
                      filepath: str, size: tuple[int, int], fps: int, captions: bool = True,
                      caption_size: int = 0, fade_frames: int = 0) -> "bpy.types.Scene":
    """(Re)build the video scene of ``source``; the previous one is removed once done.

    ``levels`` is the zoom level of each of source's frames (``animation.zoom_levels``); a
    caption with prompt k is shown while image k fills the frame.
    """
    width, height = size
    start, end = source.frame_start, source.frame_end
    old = find_video_scene(source)
    video = bpy.data.scenes.new(f"{source.name} Video")
    try:
        video[VIDEO_KEY] = source.name
        video.frame_start, video.frame_end = start, end
        render = video.render
        render.resolution_x, render.resolution_y = width, height
        render.resolution_percentage = 100
        render.dither_intensity = 0.0
        render.use_sequencer = True
        render.use_compositing = False
        # The camera scene's pixels are display values already (Raw view): keep them so.
        video.view_settings.view_transform = source.view_settings.view_transform
        video.view_settings.look = "None"
        video.view_settings.exposure, video.view_settings.gamma = 0.0, 1.0
        video.display_settings.display_device = source.display_settings.display_device
        video.sequencer_colorspace_settings.name = source.sequencer_colorspace_settings.name
        compat.set_video_output(video, filepath, fps)
        source.render.fps, source.render.fps_base = int(fps), 1.0
        source.render.resolution_x, source.render.resolution_y = width, height
        source.render.resolution_percentage = 100

        editor = video.sequence_editor_create()
        strips = compat.strips(editor)
        zoom = strips.new_scene("P10 Zoom", source, 1, start)
        if "scene_input" in zoom.bl_rna.properties:
            zoom.scene_input = "CAMERA"
        zoom.scene_camera = source.camera

        if captions:
            font = caption_size or max(12, height // 18)
            for level, first, count in level_spans(levels, len(prompts)):
                text = str(prompts[level]).strip() if level < len(prompts) else ""
                if not text:
                    continue
                strip = compat.new_effect_strip(strips, f"P10 Caption {level:02d}", "TEXT",
                                                2, start + first, count)
                strip.text = text
                strip.font_size = font
                strip.use_shadow = True
                strip.wrap_width = 0.9
                compat.set_text_layout(strip, (0.5, 0.06), "BOTTOM")
                strip.blend_type = "ALPHA_OVER"
        fade = min(int(fade_frames), (end - start + 1) // 2)
        if fade > 0:
            # A black strip above everything (captions included) fades to and from black.
            black = compat.new_effect_strip(strips, "P10 Fade", "COLOR", 3, start,
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
    return video
