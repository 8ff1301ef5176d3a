"""Settings of the zoom rig and its video (``scene.p10.animation``), and Load Zoom Stack.

``CLASSES`` lists the settings PropertyGroup first (the add-on's root PropertyGroup points to
it as ``scene.p10.animation``), then the operator; ``panel`` draws the settings with
``draw_animation_settings`` (the video's: ``video.operators.draw_video_settings``). Settings act on the rig at once
(update callbacks re-key ``zoom_level`` or re-set textures and render settings).
"""

# no "from __future__ import annotations": bpy reads the property annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from ...core.errors import P10Error
from . import animation, scene_build
from ..setup import compat, paths
from ...core.stack.stack_io import read_manifest
from ..properties import apply_stack, settings_scene

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


def _refilter(self, context) -> None:
    coll = scene_build.zoom_build(self.id_data)
    if coll is not None:
        scene_build.set_build_look(coll, bool(coll.get("p10_exact")), self.texture_filter)


FILTER_ITEMS = (
    ("Linear", "Linear", "Smooth magnification (bilinear)"),
    ("Cubic", "Cubic", "Smoother magnification (bicubic)"),
    ("Closest", "Closest", "Hard texels, no interpolation"),
    ("Smart", "Smart", "Bicubic when magnifying, else bilinear (Eevee and viewport only)"),
)


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
    hold_levels: StringProperty(
        name="Hold at Levels", default="", update=_rekey,
        description="Inner levels where the zoom stops for Hold Frames, e.g. \"2\" or "
                    "\"1, 3\" (eased in and out, never overshooting)")
    hold_frames: IntProperty(name="Hold Frames", default=24, min=0, update=_rekey,
                             description="Frames to hold at each level of Hold at Levels")
    texture_filter: EnumProperty(
        name="Texture Filter", items=FILTER_ITEMS, default="Linear", update=_refilter,
        description="How the planes' textures are sampled outside Exact Pixels (kept across "
                    "Exact Pixels toggles and reloads)")
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
                            description="Pixels on the longer side of the video, in the "
                                        "stack's aspect; a resolution set on the rig's scene "
                                        "is kept instead (its size and aspect)")
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
        description="Video file, or folder of an image sequence (empty: named after the stack, "
                    "in the folder stacks go to; '//' and relative paths start at the .blend's "
                    "folder, at ~/zoom_stacks while the file is unsaved)")
    video_format: EnumProperty(
        name="Format", default="H264",
        description="A video file and its codec, or an image sequence in a folder",
        items=[(key, label, tip) for key, (label, tip, *_rest) in paths.OUTPUT_FORMATS.items()])


def _values(settings) -> dict:
    """Settings as plain values (defaults when the add-on's root group is not registered)."""
    names = [n for n in P10_AnimationSettings.__annotations__]
    if settings is None:
        return {n: P10_AnimationSettings.__annotations__[n].keywords.get("default")
                for n in names}
    return {n: getattr(settings, n) for n in names}


def _settings_of(scene):
    return getattr(getattr(settings_scene(scene), "p10", None), "animation", None)


def zoom_keys_for(coll, values: dict) -> "animation.ZoomKeys":
    """The keys the settings give this build. A loop zooms through N levels back to level 0
    at constant speed, without end holds (its last frame is the one before level N, which
    is level 0 again: the video repeats without a cut)."""
    info = scene_build.build_info(coll)
    loop = info["loop"]
    levels = info["num_levels"] + (1 if loop else 0)
    try:
        hold_levels = animation.parse_holds(values.get("hold_levels", ""), levels)
    except ValueError:
        hold_levels = []  # the panel shows the error under the field
    return animation.zoom_keys(
        levels, values["frames_per_level"], direction=values["direction"],
        hold_start=0 if loop else values["hold_start"],
        hold_end=0 if loop else values["hold_end"],
        ease_frames=0 if loop else values["ease_frames"],
        holds={k: values.get("hold_frames", 0) for k in hold_levels})


def animate_build(coll, values: dict, force: bool = False) -> bool:
    """(Re)key the rig's ``zoom_level`` from the settings and fit the frame range. Keys the
    artist edited (moved, added, reshaped) are kept unless ``force``; returns whether the
    rig was re-keyed."""
    scene = scene_build.build_scene(coll)
    root = scene_build.build_root(coll)
    rekey = force or not animation.keys_edited(root)
    if rekey:
        animation.key_zoom(root, zoom_keys_for(coll, values), scene.frame_start)
    fit_frame_range(coll, values)
    if rekey and scene.get(scene_build.HOME_KEY) is not None:
        scene.frame_current = scene.frame_start
    return rekey


def fit_frame_range(coll, values: dict) -> None:
    """The rig's own scene ends Hold End frames after the last zoom key (so retiming by hand
    moves the end too); a user's scene only grows to hold the zoom."""
    scene = scene_build.build_scene(coll)
    span = animation.key_range(scene_build.build_root(coll))
    if scene is None or span is None:
        return
    if scene_build.build_info(coll)["loop"]:
        end = int(round(span[1])) - 1  # the frame at level N is the first frame again
    else:
        end = int(round(span[1])) + int(values["hold_end"])
    if scene.get(scene_build.HOME_KEY) is not None:
        if scene.frame_end != end:
            scene.frame_end = end
    elif scene.frame_end < end:
        scene.frame_end = end


def apply_look(coll, values: dict) -> None:
    """Textures (exact or smooth) and, in the rig's own scene, engine, samples and view."""
    scene_build.set_build_look(coll, values["exact"])
    scene = scene_build.build_scene(coll)
    if scene is not None and scene.get(scene_build.HOME_KEY) is not None:
        scene_build.set_quality(scene, values["engine"], values["samples"])
        scene_build.set_scene_look(scene, values["exact"])


def build_and_animate(scene, directory: str, replaces: str = "", level_shift: int = 0):
    """Build the stack folder's rig for ``scene`` (in a scene of its own unless the settings
    say otherwise), or update its rig in place (the same stack, moved or not, or the stack
    ``replaces`` names: Extend / Regenerate), and key its zoom from the settings: what "Load
    Zoom Stack" does, and what runs when a job completes. The panel's stack, prompts and
    model then are the loaded stack's (Extend and Regenerate work on it). Returns the
    build's collection.

    Raises core.errors.P10Error (StackFormatError) with a one-line message for a bad folder.
    """
    home = settings_scene(scene)
    values = _values(_settings_of(home))
    coll = scene_build.build_zoom_stack(
        home, directory, own_scene=not values["use_current_scene"], exact=values["exact"],
        engine=values["engine"], samples=values["samples"], filter=values["texture_filter"],
        replaces=replaces or None, level_shift=level_shift)
    animate_build(coll, values)
    if getattr(home, "p10", None) is not None:
        apply_stack(home.p10, directory, read_manifest(directory))
    return coll


def show_scene(context, scene) -> None:
    """Show ``scene`` in the window (when there is one, as with bpy in background)."""
    window = getattr(context, "window", None)
    if window is not None and scene is not None:
        window.scene = scene


def _has_build(cls, context) -> bool:
    return scene_build.zoom_build(context.scene) is not None or compat.poll_message(
        cls, "No zoom stack here: load or generate one first")


class P10_OT_load_stack(bpy.types.Operator):
    """Build the zoom rig of a saved zoom stack: one plane per level and a camera, zoomed by
    the root's zoom_level (in a scene of its own unless Add to Current Scene is on)"""

    bl_idname = "p10.load_stack"
    bl_label = "Load Zoom Stack"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Stack Folder", subtype="DIR_PATH", options=compat.PATH_OPTIONS,
                              description="Folder of a saved zoom stack (manifest.json + PNGs)")
    replaces: StringProperty(
        name="Replaces", default="", options={"HIDDEN", "SKIP_SAVE"},
        description="Folder of the stack this one was made from (Extend, Regenerate): its rig "
                    "is updated in place")
    level_shift: IntProperty(
        name="Level Shift", default=0, min=0, options={"HIDDEN", "SKIP_SAVE"},
        description="Levels added outside the replaced stack (Extend Wider)")
    filter_folder: BoolProperty(default=True, options={"HIDDEN"},
                                description="Show only folders in the browser")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.directory:
            self.report({"ERROR"}, "Choose a zoom stack folder")
            return {"CANCELLED"}
        before = set(scene_build.find_builds())
        try:
            coll = build_and_animate(context.scene, self.directory, self.replaces,
                                     self.level_shift)
        except P10Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except (OSError, RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, f"Could not load the zoom stack: {exc}")
            return {"CANCELLED"}
        info = scene_build.build_info(coll)
        scene = scene_build.build_scene(coll)
        if coll not in before:  # a new rig: show it; an updated one stays where the artist is
            show_scene(context, scene)
        self.report({"INFO"}, f"Loaded {info['num_levels']} levels into scene '{scene.name}'")
        return {"FINISHED"}


class _OnRig:
    """Operators acting on the rig the panel shows (greyed out, with the reason, without)."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _has_build(cls, context)


class P10_OT_rekey_zoom(_OnRig, bpy.types.Operator):
    """Replace the zoom's keys with the ones the settings give (keys edited by hand are
    otherwise kept when a setting changes)"""

    bl_idname = "p10.rekey_zoom"
    bl_label = "Reset Zoom Keys"

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        coll = scene_build.zoom_build(context.scene)
        animate_build(coll, _values(_settings_of(context.scene)), force=True)
        self.report({"INFO"}, "Zoom keys reset from the settings")
        return {"FINISHED"}


class P10_OT_fit_overscan(_OnRig, bpy.types.Operator):
    """Set the rig's overscan to what its camera sees (lens, sensor, shift, ortho scale,
    position and rotation; over the whole shot when the camera or the rig is animated), so
    no coarser level is hidden while the view needs it"""

    bl_idname = "p10.fit_overscan"
    bl_label = "Fit Overscan to Camera"

    def execute(self, context):
        coll = scene_build.zoom_build(context.scene)
        root = scene_build.build_root(coll)
        need = shot_overscan(coll)
        root[scene_build.OVERSCAN_PROP] = max(1.0, need)
        root.update_tag()
        self.report({"INFO"}, f"Overscan {need:.2f}")
        return {"FINISHED"}


def _animated(idb) -> bool:
    """Keyed (the rig's own drivers on the camera data only follow the root's scale)."""
    anim = getattr(idb, "animation_data", None)
    return anim is not None and anim.action is not None


def shot_overscan(coll, samples: int = 100) -> float:
    """The widest the build's camera sees: now, or over the scene's frame range (about
    ``samples`` frames, every key frame of the camera's included) when it is animated."""
    scene = scene_build.build_scene(coll)
    cam = scene_build.build_camera(coll)
    moving = cam is not None and (
        _animated(cam) or _animated(cam.data) or len(cam.constraints) > 0
        or cam.parent != scene_build.build_root(coll))
    if scene is None or not moving:
        return scene_build.camera_overscan(coll)
    start, end = scene.frame_start, scene.frame_end
    frames = set(range(start, end + 1, max(1, (end - start) // samples)))
    for idb in (cam, cam.data):
        if idb.animation_data and idb.animation_data.action:
            frames.update(int(round(kp.co.x)) for fc in compat.fcurves_for(idb)
                          for kp in fc.keyframe_points if start <= kp.co.x <= end)
    current, need = scene.frame_current, 1.0
    try:
        for frame in sorted(frames | {end}):
            scene.frame_set(frame)
            need = max(need, scene_build.camera_overscan(coll, scene))
    finally:
        scene.frame_set(current)
    return need


def on_depsgraph_update(scene, depsgraph) -> None:
    """Hand edits follow: retimed zoom keys move the rig scene's end; a camera that sees
    more than the overscan raises it (never lowers it)."""
    ids = {getattr(u.id, "original", u.id) for u in depsgraph.updates}
    if not ids:
        return
    for coll in scene_build.find_builds():
        root, cam = scene_build.build_root(coll), scene_build.build_camera(coll)
        if root is None:
            continue
        action = root.animation_data.action if root.animation_data else None
        try:
            if action is not None and action in ids:
                fit_frame_range(coll, _values(_settings_of(scene_build.build_scene(coll))))
            if (cam is not None and (cam in ids or cam.data in ids)
                    and depsgraph.scene_eval.original == scene_build.build_scene(coll)):
                scene_build.fit_overscan(coll, depsgraph=depsgraph)
        except (ReferenceError, RuntimeError, ValueError, ZeroDivisionError):
            continue


def draw_animation_settings(layout, context, settings) -> None:
    """The Animation sub-panel: where the rig goes, its look, the zoom's keys, rendering."""
    layout.use_property_split = True
    col = layout.column(align=True)
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
    col.prop(settings, "hold_levels")
    sub = col.column()
    sub.active = bool(settings.hold_levels.strip())
    sub.prop(settings, "hold_frames")
    if coll is not None:
        levels = scene_build.build_info(coll)["num_levels"]
        try:
            animation.parse_holds(settings.hold_levels, levels)
        except ValueError as exc:
            col.label(text=str(exc), icon="ERROR")
        if animation.keys_edited(root):
            row = layout.row()
            row.label(text="Keys edited by hand: kept", icon="KEYFRAME_HLT")
            row.operator(P10_OT_rekey_zoom.bl_idname, text="Reset")
        box = layout.column(align=True)
        box.prop(root, f'["{scene_build.OVERSCAN_PROP}"]', text="Overscan")
        box.operator(P10_OT_fit_overscan.bl_idname, icon="CAMERA_DATA")
    layout.prop(settings, "texture_filter")
    col = layout.column(align=True)
    col.prop(settings, "engine")
    col.prop(settings, "samples")


CLASSES = (P10_AnimationSettings, P10_OT_load_stack, P10_OT_rekey_zoom, P10_OT_fit_overscan)
