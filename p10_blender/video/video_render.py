"""Render the video scene to an MP4, one frame at a time, so the panel can show progress and
cancel between frames.

``iter_render_video`` is a plain generator (render frame, yield, ... then encode); the batch
function ``render_video`` drives it to the end, and ``P10_OT_render_video``'s modal timer
steps it (timers never fire in background mode). Frames are rendered as PNG stills of the
video scene (sequencer: zoom scene strip, captions, fades), then encoded by a throwaway scene
holding them as an image strip; the MP4 appears only when complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import bpy

from ...core.errors import Cancelled, InvalidInputError
from ...core.stack.publish import publish_dir
from ..setup import compat, paths
from ..setup.paths import OUTPUT_FORMATS


@dataclass
class VideoProgress:
    """What the panel shows while a video renders (main thread only)."""

    running: bool = False
    frame: int = 0
    total: int = 0
    path: str = ""
    cancel_requested: bool = False
    message: str = ""   # the last result: where the video went, or why it did not


progress = VideoProgress()


FRAME_PREFIX = "frame_"  # image sequences: <folder>/frame_0001.png ...


def is_sequence(fmt: str) -> bool:
    return OUTPUT_FORMATS[fmt][2] == "IMAGES"


def output_target(filepath: str, stack_name: str, root: Path, fmt: str = "H264") -> Path:
    """Absolute path of the video file (or, for an image sequence, its folder); nothing is
    made (see ``resolve_output``).

    Empty: ``<stack name>.mp4`` (``<stack name>-frames`` for a sequence) in ``root``, the
    folder stacks go to (``paths.output_root``: beside the .blend, never the extension's
    folder). ``//name`` and relative paths follow the .blend (``paths.resolve``). A folder
    (ending in a separator) gets the default name inside it; a missing extension is added.
    """
    extension = OUTPUT_FORMATS[fmt][5]
    default = f"{stack_name}-frames" if is_sequence(fmt) else f"{stack_name}{extension}"
    text = (filepath or "").strip()
    path = paths.resolve(text)
    if path is None:
        path = Path(root) / default
    elif text.endswith(("/", "\\")) or text == "//":
        path = path / default
    if not is_sequence(fmt) and path.suffix.lower() != extension:
        path = path.with_name(path.name + extension)
    return Path(os.path.normpath(path))


def resolve_output(filepath: str, stack_name: str, root: Path, fmt: str = "H264") -> Path:
    """``output_target``, its parent folder made and checked: one line when it cannot be
    written. Only the output's own folder is created (never the stack's old place)."""
    path = output_target(filepath, stack_name, root, fmt)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot write the video to {path.parent}: "
                                f"{exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise InvalidInputError(f"cannot write the video to {path.parent}: not writable")
    return path


def set_output(scene: "bpy.types.Scene", path: str | os.PathLike, fps: int,
               fmt: str = "H264") -> None:
    """Render Animation of ``scene`` writes ``path`` in ``fmt`` (a video file, or a folder of
    frames); one line when this Blender cannot encode it."""
    _, _, kind, codec, container, _ = OUTPUT_FORMATS[fmt]
    try:
        if kind == "VIDEO":
            compat.set_video_output(scene, str(path), fps, codec, container)
        else:
            compat.set_sequence_output(scene, os.path.join(str(path), FRAME_PREFIX), fps, codec)
    except ValueError as exc:
        raise InvalidInputError(f"{OUTPUT_FORMATS[fmt][0]}: {exc}; choose another format") \
            from None


def _encode(frames: list[Path], out_path: Path, size: tuple[int, int], fps: int,
            fmt: str = "H264") -> Path:
    """Encode PNG frames (display values) to a video file through a temporary scene."""
    enc = bpy.data.scenes.new("Zoom Encode")
    try:
        enc.render.resolution_x, enc.render.resolution_y = size
        enc.render.resolution_percentage = 100
        enc.render.dither_intensity = 0.0
        enc.render.use_sequencer = True
        enc.render.use_compositing = False
        enc.view_settings.view_transform = "Standard"  # sRGB frames pass through unchanged
        enc.view_settings.look = "None"
        enc.display_settings.display_device = "sRGB"
        enc.sequencer_colorspace_settings.name = "sRGB"
        enc.frame_start, enc.frame_end = 1, len(frames)
        tmp = out_path.with_name(f".{out_path.stem}.part{out_path.suffix}")
        set_output(enc, tmp, fps, fmt)
        editor = enc.sequence_editor_create()
        strip = compat.strips(editor).new_image("Frames", str(frames[0]), 1, 1)
        for frame in frames[1:]:
            strip.elements.append(frame.name)
        written = Path(bpy.path.abspath(enc.render.frame_path(frame=1)))
        try:
            _render_animation(enc)
            if not written.is_file():
                raise RuntimeError(f"the encoder wrote nothing at {written}")
            os.replace(written, out_path)
        except BaseException as exc:
            for leftover in {tmp, written}:  # a half-written MP4 is no video: never left behind
                with contextlib.suppress(OSError):
                    leftover.unlink()
            if isinstance(exc, (OSError, RuntimeError)):
                raise _disk_full_or(exc, out_path.parent) from None
            raise
    finally:
        bpy.data.scenes.remove(enc)
    return out_path


def _render_animation(scene: "bpy.types.Scene") -> None:
    """Render ``scene``'s animation (its FFmpeg output); a seam for the fault tests."""
    bpy.ops.render.render(animation=True, scene=scene.name)


#: Less free space than this where the video goes: a failed render is called a full disk
#: (Blender's FFmpeg writer says "unsupported codec combination" for any failure to write).
DISK_FULL_BYTES = 16 * 2**20


def _disk_full_or(exc: BaseException, folder: Path) -> BaseException:
    """``exc``, or an OSError saying the disk is full when ``folder`` has (almost) no room."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return exc
    if free >= DISK_FULL_BYTES:
        return exc
    from ...core.models.cache import format_bytes

    return OSError(f"the disk is full ({format_bytes(free)} free in {folder}): free some space "
                   "or choose another output folder")


def _window():
    wm = bpy.context.window_manager
    window = getattr(bpy.context, "window", None)
    if window is None and wm is not None and wm.windows:
        window = wm.windows[0]
    return window


def _apply_animation(scene: "bpy.types.Scene", frame: int) -> None:
    """Write the scene's own keyed values (the fade's alpha) for ``frame`` into its data.

    Only the depsgraph of the scene a window shows writes animation back to the data the
    sequencer renders from; a video scene rendered from elsewhere would keep stale values.
    """
    anim = scene.animation_data
    if anim is None or anim.action is None:
        return
    for fc in compat.fcurves_for(scene):
        if fc.mute:
            continue
        owner_path, _, prop = fc.data_path.rpartition(".")
        try:
            owner = scene.path_resolve(owner_path) if owner_path else scene
            value = fc.evaluate(frame)
            if isinstance(getattr(owner, prop), (int, float, bool)):
                setattr(owner, prop, type(getattr(owner, prop))(value))
            else:
                getattr(owner, prop)[fc.array_index] = value
        except (ValueError, AttributeError, TypeError, IndexError):
            continue  # a path that no longer resolves (strip deleted by the user)


def iter_render_video(video: "bpy.types.Scene", out_path: str | os.PathLike,
                      fmt: str = "H264") -> Iterator[tuple[int, int]]:
    """Render ``video``'s frames, yielding ``(done, total)`` after each, then write the video
    file (encoded from PNG frames) or move the folder of frames into place (a sequence).

    Closing the generator early (cancel) removes the frames and writes nothing.
    """
    out_path = Path(out_path)
    start, end = video.frame_start, video.frame_end
    total = end - start + 1
    size = (video.render.resolution_x * video.render.resolution_percentage // 100,
            video.render.resolution_y * video.render.resolution_percentage // 100)
    fps = video.render.fps
    frames_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.stem}.frames.", dir=out_path.parent))
    saved = (video.render.filepath, video.frame_current)
    # The sequencer renders scene strips and keyed strip values properly only for the scene
    # a window shows (its depsgraph is the one that writes animation back): show the video.
    window = _window()
    shown = window.scene if window is not None else None
    try:
        if window is not None:
            window.scene = video
        extension = OUTPUT_FORMATS[fmt][5] if is_sequence(fmt) else ".png"
        if fmt == "EXR":
            compat.set_sequence_output(video, "", fps, "OPEN_EXR")
        else:  # PNG stills; the output format is put back below
            compat.set_still_output(video)
        frames = []
        for i, frame in enumerate(range(start, end + 1)):
            video.frame_set(frame)
            _apply_animation(video, frame)
            path = frames_dir / f"{FRAME_PREFIX}{frame:04d}{extension}"
            video.render.filepath = str(path)
            try:
                bpy.ops.render.render(write_still=True, scene=video.name)
            except RuntimeError as exc:
                raise _disk_full_or(exc, frames_dir) from None
            frames.append(path)
            yield i + 1, total
        if is_sequence(fmt):  # the whole folder appears at once, replacing an older one
            publish_dir(frames_dir, out_path, replace=True)
        else:
            _encode(frames, out_path, size, fps, fmt)
    finally:
        shutil.rmtree(frames_dir, ignore_errors=True)
        set_output(video, out_path, fps, fmt)
        video.render.filepath = saved[0]
        video.frame_set(saved[1])
        if window is not None and shown is not None:
            window.scene = shown


def render_video(video: "bpy.types.Scene", out_path: str | os.PathLike, *,
                 on_frame: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None, fmt: str = "H264") -> Path:
    """Render the whole video (blocking); ``cancel()`` is asked between frames."""
    steps = iter_render_video(video, out_path, fmt)
    try:
        for done, total in steps:
            if on_frame is not None:
                on_frame(done, total)
            if cancel is not None and cancel() and done < total:
                raise Cancelled("video render cancelled; nothing was written")
    finally:
        steps.close()
    return Path(out_path)
