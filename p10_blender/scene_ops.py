"""Operators and settings for the zoom scene: load a stack folder, make the zoom video.

``CLASSES`` lists the settings PropertyGroup first (the add-on's root PropertyGroup points to
it as ``scene.p10.animation``), then the operators; ``panel`` draws the settings with
``draw_animation_settings`` / ``draw_video_settings``.
"""

import os  # no "from __future__ import annotations": bpy reads the property annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..core.errors import P10Error
from . import animation, compat, scene_build, sequencer

ENGINES = (
    ("CYCLES", "Cycles", "CPU or GPU path tracer; frames match the core's renderer exactly"),
    ("EEVEE", "Eevee", "Real-time engine: fast on a GPU, slightly softer frames"),
)


class P10_AnimationSettings(bpy.types.PropertyGroup):
    """Zoom camera and video settings, stored at ``scene.p10.animation``."""

    frames_per_level: IntProperty(
        name="Frames per Level", default=48, min=1, soft_max=480,
        description="Frames the camera takes to zoom by one level (a factor p)")
    direction: EnumProperty(
        name="Direction", default="IN",
        description="Whether the video zooms in or out",
        items=(("IN", "Zoom In", "From the outermost level to the finest"),
               ("OUT", "Zoom Out", "From the finest level to the outermost")))
    hold_start: IntProperty(name="Hold Start", default=12, min=0,
                            description="Frames to hold the first level before zooming")
    hold_end: IntProperty(name="Hold End", default=24, min=0,
                          description="Frames to hold the last level after zooming")
    ease_frames: IntProperty(
        name="Ease", default=0, min=0,
        description="Frames over which the zoom speeds up at the start and slows at the end")
    engine: EnumProperty(name="Engine", items=ENGINES, default="CYCLES",
                         description="Render engine for the zoom scene")
    samples: IntProperty(
        name="Samples", default=16, min=1, soft_max=1024,
        description="Samples per pixel; they average the finer layers' texels (antialiasing)")
    video_size: IntProperty(name="Video Size", default=512, min=16, soft_max=4096,
                            subtype="PIXEL",
                            description="Pixels on the longer side of the video")
    fps: IntProperty(name="FPS", default=24, min=1, max=240,
                     description="Frames per second of the video")
    captions: BoolProperty(name="Captions", default=True,
                           description="Show each level's prompt while it fills the frame")
    caption_size: IntProperty(name="Caption Size", default=0, min=0, soft_max=200,
                              description="Font size of captions (0: automatic)")
    fade_frames: IntProperty(name="Fade", default=12, min=0,
                             description="Fade in from and out to black over these frames")
    filepath: StringProperty(name="Output", default="//zoom.mp4", subtype="FILE_PATH",
                             description="Video file to write")


def _zoom_scene(scene):
    """The scene holding the zoom: ``scene`` itself, or the source of a video scene."""
    source = bpy.data.scenes.get(str(scene.get(sequencer.VIDEO_KEY, "")))
    return source if source is not None else scene


def _settings(context) -> "P10_AnimationSettings | None":
    return _settings_of(_zoom_scene(context.scene))


def _values(settings) -> dict:
    """Settings as plain values (defaults when the add-on's root group is not registered)."""
    names = [n for n in P10_AnimationSettings.__annotations__]
    if settings is None:
        return {n: P10_AnimationSettings.__annotations__[n].keywords.get("default")
                for n in names}
    return {n: getattr(settings, n) for n in names}


def animate_build(scene, coll, values: dict):
    """(Re)key the build's camera from the settings; returns the per-frame levels."""
    info = scene_build.build_info(coll)
    return animation.animate_zoom(
        scene, scene_build.build_camera(coll), zoom=info["zoom"],
        num_levels=info["num_levels"], size=info["plane_size"],
        frames_per_level=values["frames_per_level"], direction=values["direction"],
        hold_start=values["hold_start"], hold_end=values["hold_end"],
        ease_frames=values["ease_frames"])


def build_and_animate(scene, directory: str):
    """Build the stack folder's planes in ``scene`` and key the zoom camera from the scene's
    settings (what "Load Zoom Stack" does; call it when a generation completes).

    Raises core.errors.P10Error (StackFormatError) with a one-line message for a bad folder.
    """
    values = _values(_settings_of(scene))
    coll = scene_build.build_zoom_stack(scene, directory, engine=values["engine"],
                                        samples=values["samples"])
    animate_build(scene, coll, values)
    return coll


def _settings_of(scene):
    return getattr(getattr(scene, "p10", None), "animation", None)


class P10_OT_load_stack(bpy.types.Operator):
    """Build one plane per layer of a saved zoom stack, with an animated zoom camera"""

    bl_idname = "p10.load_stack"
    bl_label = "Load Zoom Stack"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Stack Folder", subtype="DIR_PATH",
                              description="Folder of a saved zoom stack (manifest.json + PNGs)")
    filter_folder: BoolProperty(default=True, options={"HIDDEN"},
                                description="Show only folders in the browser")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, "Choose a zoom stack folder")
            return {"CANCELLED"}
        try:
            coll = build_and_animate(context.scene, self.directory)
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (OSError, RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, f"Could not load the zoom stack: {exc}")
            return {"CANCELLED"}
        info = scene_build.build_info(coll)
        self.report({"INFO"}, f"Loaded {info['num_levels']} levels from "
                              f"{os.path.basename(os.path.normpath(self.directory))}")
        return {"FINISHED"}


class P10_OT_make_video(bpy.types.Operator):
    """Set up the sequencer to render the zoom (with captions and fades) to an MP4 file"""

    bl_idname = "p10.make_video"
    bl_label = "Make Zoom Video"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Output", subtype="FILE_PATH", default="",
                             description="Video file (empty: the setting in the panel)")

    @classmethod
    def poll(cls, context):
        return scene_build.active_build(_zoom_scene(context.scene)) is not None or \
            compat.poll_message(cls, "No zoom stack in this scene: load or generate one first")

    def execute(self, context):
        scene = _zoom_scene(context.scene)  # from the video scene: remake it for its source
        coll = scene_build.active_build(scene)
        if coll is None:
            self.report({"ERROR"}, "This scene has no zoom stack: load one first")
            return {"CANCELLED"}
        values = _values(_settings_of(scene))  # the zoom scene's settings
        filepath = self.filepath or values["filepath"] or "//zoom.mp4"
        try:
            scene.camera = scene_build.build_camera(coll)
            levels = animate_build(scene, coll, values)
            info = scene_build.build_info(coll)
            size = sequencer.video_size(info["width"], info["height"], values["video_size"])
            video = sequencer.build_video_scene(
                scene, levels=levels, prompts=info["prompts"], filepath=filepath,
                size=size, fps=values["fps"], captions=values["captions"],
                caption_size=values["caption_size"], fade_frames=values["fade_frames"])
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (OSError, RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, f"Could not set up the video: {exc}")
            return {"CANCELLED"}
        if context.window is not None:
            context.window.scene = video  # so Render Animation renders the video
        self.report({"INFO"}, f"Video scene '{video.name}' ready: render the animation to "
                              f"write {filepath}")
        return {"FINISHED"}


def draw_animation_settings(layout, settings) -> None:
    """The Animation sub-panel: loading a stack and the zoom's timing and rendering."""
    layout.use_property_split = True
    col = layout.column(align=True)
    col.prop(settings, "frames_per_level")
    col.prop(settings, "direction")
    col.prop(settings, "hold_start")
    col.prop(settings, "hold_end")
    col.prop(settings, "ease_frames")
    col = layout.column(align=True)
    col.prop(settings, "engine")
    col.prop(settings, "samples")


def draw_video_settings(layout, context, settings) -> None:
    """The Video sub-panel: size, captions, fades, output file and the video operators."""
    layout.use_property_split = True
    col = layout.column(align=True)
    col.prop(settings, "video_size")
    col.prop(settings, "fps")
    col.prop(settings, "fade_frames")
    col.prop(settings, "captions")
    sub = col.column()
    sub.active = settings.captions
    sub.prop(settings, "caption_size")
    layout.prop(settings, "filepath")
    layout.operator(P10_OT_make_video.bl_idname, icon="SEQUENCE")


CLASSES = (P10_AnimationSettings, P10_OT_load_stack, P10_OT_make_video)
