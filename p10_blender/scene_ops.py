"""Operators and settings of the zoom rig: load a stack folder, make and render the video.

``CLASSES`` lists the settings PropertyGroup first (the add-on's root PropertyGroup points to
it as ``scene.p10.animation``), then the operators; ``panel`` draws the settings with
``draw_animation_settings`` / ``draw_video_settings``. Settings act on the rig at once
(update callbacks re-key ``zoom_level`` or re-set textures and render settings).
"""

# no "from __future__ import annotations": bpy reads the property annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ..core.errors import Cancelled, P10Error
from . import animation, compat, scene_build, sequencer, video_render
from .properties import settings_scene

ENGINES = (
    ("CYCLES", "Cycles", "CPU or GPU path tracer; frames match the core's renderer"),
    ("EEVEE", "Eevee", "Real-time engine: fast on a GPU, slightly softer frames"),
)


def _rekey(self, context) -> None:
    coll = scene_build.zoom_build(self.id_data)
    if coll is not None:
        animate_build(coll, _values(self))


def _relook(self, context) -> None:
    coll = scene_build.zoom_build(self.id_data)
    if coll is not None:
        apply_look(coll, _values(self))


class P10_AnimationSettings(bpy.types.PropertyGroup):
    """Zoom rig and video settings, stored at ``scene.p10.animation``."""

    use_current_scene: BoolProperty(
        name="Add to Current Scene", default=False,
        description="Build the rig in the current scene (beside its objects, its settings "
                    "untouched) instead of a scene of its own named after the stack")
    exact: BoolProperty(
        name="Exact Pixels", default=False, update=_relook,
        description="Pixel-exact frames: raw texel values averaged as the zoom stack does "
                    "('Non-Color', 'Raw' view, 'Closest' texels) instead of sRGB colours "
                    "sampled smoothly (lit objects then look flat)")
    frames_per_level: IntProperty(
        name="Frames per Level", default=48, min=1, soft_max=480, update=_rekey,
        description="Frames the zoom takes per level (a factor p); re-keys zoom_level")
    direction: EnumProperty(
        name="Direction", default="IN", update=_rekey,
        description="Whether the video zooms in or out",
        items=(("IN", "Zoom In", "From the outermost level to the finest"),
               ("OUT", "Zoom Out", "From the finest level to the outermost")))
    hold_start: IntProperty(name="Hold Start", default=12, min=0, update=_rekey,
                            description="Frames to hold the first level before zooming")
    hold_end: IntProperty(name="Hold End", default=24, min=0, update=_rekey,
                          description="Frames to hold the last level after zooming")
    ease_frames: IntProperty(
        name="Ease", default=48, min=0, update=_rekey,
        description="Length in frames of the keys' flat handles: the zoom speeds up and "
                    "slows down over about this long (0: constant speed, linear keys)")
    engine: EnumProperty(name="Engine", items=ENGINES, default="CYCLES", update=_relook,
                         description="Render engine of the rig's own scene")
    samples: IntProperty(
        name="Samples", default=16, min=1, soft_max=1024, update=_relook,
        description="Samples per pixel; they average the finer layers' texels (antialiasing)")
    video_size: IntProperty(name="Video Size", default=512, min=16, soft_max=4096,
                            subtype="PIXEL",
                            description="Pixels on the longer side of the video")
    fps: IntProperty(name="FPS", default=24, min=1, max=240,
                     description="Frames per second of the video")
    captions: BoolProperty(name="Captions", default=True,
                           description="Show each level's prompt at the bottom while it "
                                       "fills the frame")
    caption_size: IntProperty(name="Caption Size", default=0, min=0, soft_max=200,
                              description="Font size of captions in pixels (0: automatic)")
    fade_frames: IntProperty(name="Fade", default=12, min=0,
                             description="Fade in from and out to black over these frames")
    filepath: StringProperty(
        name="Output", default="", subtype="FILE_PATH", options=compat.PATH_OPTIONS,
        description="MP4 file to write (empty: <stack>.mp4 beside the stack folder; '//' "
                    "is the .blend's folder, or the stack's parent folder if unsaved)")


def _values(settings) -> dict:
    """Settings as plain values (defaults when the add-on's root group is not registered)."""
    names = [n for n in P10_AnimationSettings.__annotations__]
    if settings is None:
        return {n: P10_AnimationSettings.__annotations__[n].keywords.get("default")
                for n in names}
    return {n: getattr(settings, n) for n in names}


def _settings_of(scene):
    return getattr(getattr(settings_scene(scene), "p10", None), "animation", None)


def animate_build(coll, values: dict) -> None:
    """(Re)key the rig's ``zoom_level`` from the settings; fit its own scene's frame range."""
    info = scene_build.build_info(coll)
    scene = scene_build.build_scene(coll)
    keys = animation.zoom_keys(
        info["num_levels"], values["frames_per_level"], direction=values["direction"],
        hold_start=values["hold_start"], hold_end=values["hold_end"],
        ease_frames=values["ease_frames"])
    animation.key_zoom(scene_build.build_root(coll), keys, scene.frame_start)
    end = scene.frame_start + keys.length - 1
    if scene.get(scene_build.HOME_KEY) is not None:  # the rig's own scene: fit the shot
        scene.frame_end = end
        scene.frame_current = scene.frame_start
    elif scene.frame_end < end:  # a user's scene only grows to hold the zoom
        scene.frame_end = end


def apply_look(coll, values: dict) -> None:
    """Textures (exact or smooth) and, in the rig's own scene, engine, samples and view."""
    scene_build.set_build_look(coll, values["exact"])
    scene = scene_build.build_scene(coll)
    if scene is not None and scene.get(scene_build.HOME_KEY) is not None:
        scene_build.set_quality(scene, values["engine"], values["samples"])
        scene_build.set_scene_look(scene, values["exact"])


def build_and_animate(scene, directory: str):
    """Build the stack folder's rig for ``scene`` (in a scene of its own unless the settings
    say otherwise) and key its zoom from the settings: what "Load Zoom Stack" does, and what
    runs when a generation completes. Returns the build's collection.

    Raises core.errors.P10Error (StackFormatError) with a one-line message for a bad folder.
    """
    home = settings_scene(scene)
    values = _values(_settings_of(home))
    coll = scene_build.build_zoom_stack(
        home, directory, own_scene=not values["use_current_scene"], exact=values["exact"],
        engine=values["engine"], samples=values["samples"])
    animate_build(coll, values)
    return coll


def show_scene(context, scene) -> None:
    """Show ``scene`` in the window (when there is one, as with bpy in background)."""
    window = getattr(context, "window", None)
    if window is not None and scene is not None:
        window.scene = scene


def _has_build(cls, context) -> bool:
    return scene_build.zoom_build(context.scene) is not None or compat.poll_message(
        cls, "No zoom stack here: load or generate one first")


def make_video_scene(coll, values: dict, filepath: str = ""):
    """(Re)build the video scene of a rig and its output path: ``(video scene, Path)``."""
    info = scene_build.build_info(coll)
    scene = scene_build.build_scene(coll)
    path = video_render.resolve_output(filepath or values["filepath"], info["stack"],
                                       bpy.data.filepath)
    frames = range(scene.frame_start, scene.frame_end + 1)
    levels = animation.frame_levels(scene_build.build_root(coll), frames)
    size = sequencer.video_size(info["width"], info["height"], values["video_size"])
    if scene.get(scene_build.HOME_KEY) is not None:  # the rig's own scene renders at that size
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
    video = sequencer.build_video_scene(
        scene, levels=levels, prompts=info["prompts"], filepath=str(path), size=size,
        fps=values["fps"], captions=values["captions"], caption_size=values["caption_size"],
        fade_frames=values["fade_frames"], camera=scene_build.build_camera(coll))
    return video, path


class P10_OT_load_stack(bpy.types.Operator):
    """Build the zoom rig of a saved zoom stack: one plane per level and a camera, zoomed by
    the root's zoom_level (in a scene of its own unless Add to Current Scene is on)"""

    bl_idname = "p10.load_stack"
    bl_label = "Load Zoom Stack"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Stack Folder", subtype="DIR_PATH", options=compat.PATH_OPTIONS,
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
        scene = scene_build.build_scene(coll)
        show_scene(context, scene)
        self.report({"INFO"}, f"Loaded {info['num_levels']} levels into scene '{scene.name}'")
        return {"FINISHED"}


class P10_OT_make_video(bpy.types.Operator):
    """Set up a video scene (zoom, captions, fades) whose Render Animation writes the MP4"""

    bl_idname = "p10.make_video"
    bl_label = "Make Zoom Video"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="Output", subtype="FILE_PATH",
                             options=compat.PATH_OPTIONS, default="",
                             description="Video file (empty: the setting in the panel)")

    @classmethod
    def poll(cls, context):
        return _has_build(cls, context)

    def execute(self, context):
        coll = scene_build.zoom_build(context.scene)
        values = _values(_settings_of(context.scene))
        try:
            video, path = make_video_scene(coll, values, self.filepath)
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (OSError, RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, f"Could not set up the video: {exc}")
            return {"CANCELLED"}
        show_scene(context, video)  # Render Animation now renders the video
        self.report({"INFO"}, f"Video scene '{video.name}' ready: Render Animation (or Render "
                              f"Zoom Video) writes {path}")
        return {"FINISHED"}


class P10_OT_render_video(bpy.types.Operator):
    """Render the zoom video (captions, fades) to an MP4 file, with progress; Esc or Cancel
    stops it and writes nothing"""

    bl_idname = "p10.render_video"
    bl_label = "Render Zoom Video"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="Output", subtype="FILE_PATH",
                             options=compat.PATH_OPTIONS, default="",
                             description="Video file (empty: the setting in the panel)")

    _timer = None
    _steps = None

    @classmethod
    def poll(cls, context):
        if video_render.progress.running:
            return compat.poll_message(cls, "A video is rendering")
        return _has_build(cls, context)

    def _start(self, context):
        coll = scene_build.zoom_build(context.scene)
        values = _values(_settings_of(context.scene))
        video, path = make_video_scene(coll, values, self.filepath)
        state = video_render.progress
        state.running, state.frame, state.cancel_requested = True, 0, False
        state.total = video.frame_end - video.frame_start + 1
        state.path, state.message = str(path), ""
        return video, path

    def _finish(self, message: str, level: str = "INFO") -> None:
        state = video_render.progress
        state.running, state.message = False, message
        self.report({level}, message)
        generation_redraw()

    def execute(self, context):  # scripts and background mode: blocking, same steps
        try:
            video, path = self._start(context)
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        state = video_render.progress
        try:
            video_render.render_video(
                video, path, on_frame=lambda done, total: setattr(state, "frame", done),
                cancel=lambda: state.cancel_requested)
        except Cancelled as exc:
            self._finish(str(exc), "WARNING")
            return {"CANCELLED"}
        except (OSError, RuntimeError) as exc:
            self._finish(f"Could not render the video: {exc}", "ERROR")
            return {"CANCELLED"}
        self._finish(f"Wrote {path} ({state.total} frames)")
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        try:
            video, path = self._start(context)
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._steps = video_render.iter_render_video(video, path)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        state = video_render.progress
        if event.type == "ESC" or state.cancel_requested:
            self._stop(context)
            self._finish("Video render cancelled; nothing was written", "WARNING")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            state.frame, state.total = next(self._steps)
        except StopIteration:
            self._stop(context)
            self._finish(f"Wrote {state.path} ({state.total} frames)")
            return {"FINISHED"}
        except (OSError, RuntimeError) as exc:
            self._stop(context)
            self._finish(f"Could not render the video: {exc}", "ERROR")
            return {"CANCELLED"}
        generation_redraw()
        return {"RUNNING_MODAL"}

    def _stop(self, context) -> None:
        if self._steps is not None:
            self._steps.close()  # removes the frames rendered so far
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
        self._steps = self._timer = None


def generation_redraw() -> None:
    from .generation import tag_redraw
    tag_redraw()


def draw_animation_settings(layout, context, settings) -> None:
    """The Animation sub-panel: where the rig goes, its look, the zoom's keys, rendering."""
    layout.use_property_split = True
    col = layout.column(align=True)
    col.prop(settings, "use_current_scene")
    col.prop(settings, "exact")
    coll = scene_build.zoom_build(context.scene)
    root = scene_build.build_root(coll) if coll is not None else None
    if root is not None:  # the one animatable property that drives the zoom
        layout.prop(root, f'["{scene_build.ZOOM_PROP}"]', text="Zoom Level")
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
    """The Video sub-panel: size, captions, fades, output file, progress and the operators."""
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
    state = video_render.progress
    if state.running:
        box = layout.box()
        box.label(text=f"Rendering frame {state.frame}/{state.total}", icon="TIME")
        if hasattr(box, "progress") and state.total:
            box.progress(factor=state.frame / state.total, type="BAR",
                         text=f"{int(100 * state.frame / state.total)} %")
        box.operator("p10.cancel", icon="CANCEL")
        return
    row = layout.row(align=True)
    row.operator(P10_OT_make_video.bl_idname, icon="SEQUENCE")
    row.operator(P10_OT_render_video.bl_idname, icon="RENDER_ANIMATION")
    if state.message:
        layout.label(text=state.message, icon="INFO")


CLASSES = (P10_AnimationSettings, P10_OT_load_stack, P10_OT_make_video, P10_OT_render_video)
