"""Make Zoom Video and Render Zoom Video: the video scene of a rig and its MP4 render (with
progress and cancel), and the Video sub-panel's drawing."""

# no "from __future__ import annotations": bpy reads the property annotations

import os

import bpy
from bpy.props import StringProperty

from ...core.errors import Cancelled, InvalidInputError, P10Error
from ..rig import animation, scene_build
from ..rig.operators import _has_build, _settings_of, _values, show_scene
from ..properties import settings_scene
from ..setup import compat, paths
from . import sequencer, video_render


RESOLUTION_KEY = "p10_resolution"  # on a rig scene: the resolution the add-on last set


def frame_size(scene, info: dict, values: dict) -> tuple[int, int]:
    """The video's frame: the scene's own resolution (the artist's size and aspect: the zoom
    fills it, cropped by the camera), unless it is still the one the add-on set on the rig's
    own scene; then the stack's aspect with Video Size pixels on the longer side."""
    render = scene.render
    current = [render.resolution_x, render.resolution_y]
    owned = scene.get(scene_build.HOME_KEY) is not None and render.resolution_percentage == 100 \
        and list(scene.get(RESOLUTION_KEY, [info["width"], info["height"]])) == current
    if owned:
        return sequencer.video_size(info["width"], info["height"], values["video_size"])
    pct = render.resolution_percentage / 100.0
    return max(1, round(current[0] * pct)), max(1, round(current[1] * pct))


FIT_KEY = "p10_fit"  # on the rig camera's data: the view size Make Zoom Video last gave it


def fill_scale(plane_w: float, plane_h: float, frame_w: int, frame_h: int) -> float:
    """The view's longer side (sensor fit AUTO) for which a ``frame_w x frame_h`` frame lies
    inside the level's ``plane_w x plane_h`` plane: the zoom fills the frame, cropped."""
    aspect = frame_w / frame_h
    return min(plane_w, plane_h * aspect) if aspect >= 1 else min(plane_h, plane_w / aspect)


def fit_camera(coll, size: tuple[int, int]) -> None:
    """Crop a frame whose aspect differs from the stack's so the zoom fills it (a square frame
    of a 2:1 stack shows its middle, not bars), as long as the camera has the add-on's
    framing (the first load's, or the last fit); a camera the artist framed stays as it is."""
    cam = scene_build.build_camera(coll)
    if cam is None:
        return
    data, info = cam.data, scene_build.build_info(coll)
    unit = info["plane_size"]
    base = "rig_ortho_scale" if "rig_ortho_scale" in data else None
    current = float(data[base]) if base else float(data.ortho_scale)
    lens = data.sensor_width * scene_build.CAMERA_HEIGHT * unit / current
    owned = abs(current - float(data.get(FIT_KEY, unit))) < 1e-6 and abs(data.lens - lens) < 1e-4 \
        and data.sensor_fit == "AUTO" and data.shift_x == 0 and data.shift_y == 0
    if not owned:
        return
    sx, sy = scene_build.plane_size(info["width"], info["height"], 0, info["zoom"], unit)
    fit = fill_scale(sx, sy, *size)
    if abs(fit - current) < 1e-9:
        return
    if base:
        data[base] = fit  # the driver scales it by the root's size
    else:
        data.ortho_scale = fit
    data.lens = data.sensor_width * scene_build.CAMERA_HEIGHT * unit / fit
    data[FIT_KEY] = fit


def make_video_scene(coll, values: dict, filepath: str = ""):
    """(Re)build the video scene of a rig and its output path: ``(video scene, Path)``."""
    info = scene_build.build_info(coll)
    scene = scene_build.build_scene(coll)
    home = settings_scene(scene)
    fmt = values["video_format"]
    path = video_render.resolve_output(filepath or values["filepath"], build_label(coll),
                                       paths.output_root(home.p10), fmt)
    frames = range(scene.frame_start, scene.frame_end + 1)
    levels = animation.frame_levels(scene_build.build_root(coll), frames)
    size = frame_size(scene, info, values)
    if fmt in ("H264", "H265") and (size[0] % 2 or size[1] % 2):
        raise InvalidInputError(f"{video_render.OUTPUT_FORMATS[fmt][0]} needs an even width "
                                f"and height, the frame is {size[0]}x{size[1]}: change the "
                                f"resolution or the format")
    fit_camera(coll, size)
    if (scene.render.resolution_x, scene.render.resolution_y) != size \
            and scene.get(scene_build.HOME_KEY) is not None:  # the add-on's own size only
        scene.render.resolution_x, scene.render.resolution_y = size
        scene.render.resolution_percentage = 100
        scene[RESOLUTION_KEY] = list(size)
    video = sequencer.build_video_scene(
        scene, levels=levels, prompts=info["prompts"], filepath=str(path), size=size,
        fps=values["fps"], captions=values["captions"], caption_size=values["caption_size"],
        fade_frames=values["fade_frames"], camera=scene_build.build_camera(coll), fmt=fmt)
    return video, path


def build_label(coll) -> str:
    """The name the rig's objects carry (the stack folder's name when first loaded)."""
    return str(coll.get("p10_label") or os.path.basename(scene_build.build_info(coll)["stack"]))


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
    _format = "H264"

    @classmethod
    def poll(cls, context):
        if video_render.progress.running:
            return compat.poll_message(cls, "A video is rendering")
        return _has_build(cls, context)

    def _start(self, context):
        coll = scene_build.zoom_build(context.scene)
        values = _values(_settings_of(context.scene))
        video, path = make_video_scene(coll, values, self.filepath)
        self._format = values["video_format"]
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
                cancel=lambda: state.cancel_requested, fmt=self._format)
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
        self._steps = video_render.iter_render_video(video, path, self._format)
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
    layout.prop(settings, "video_format")
    layout.prop(settings, "filepath")
    coll = scene_build.zoom_build(context.scene)
    if coll is not None:  # where it goes and its frame, before anything is made
        scene = scene_build.build_scene(coll)
        values = _values(settings)
        target = video_render.output_target(
            settings.filepath, build_label(coll),
            paths.output_root(settings_scene(context.scene).p10), settings.video_format)
        w, h = frame_size(scene, scene_build.build_info(coll), values)
        layout.label(text=f"Writes {target}", icon="FILE_MOVIE")
        layout.label(text=f"Frame {w}x{h}", icon="IMAGE_DATA")
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
