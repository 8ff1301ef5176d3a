"""Make Zoom Video and Render Zoom Video: the video scene of a rig and its MP4 render (with
progress and cancel), and the Video sub-panel's drawing."""

# no "from __future__ import annotations": bpy reads the property annotations

import bpy
from bpy.props import StringProperty

from ...core.errors import Cancelled, P10Error
from ..rig import animation, scene_build
from ..rig.operators import _has_build, _settings_of, _values, show_scene
from ..setup import compat
from . import sequencer, video_render


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
    compat.tag_redraw()


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


CLASSES = (P10_OT_make_video, P10_OT_render_video)
