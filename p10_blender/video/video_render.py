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
from ..setup import compat


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


def resolve_output(filepath: str, stack_dir: str, blend_path: str = "") -> Path:
    """Absolute MP4 path of the video setting.

    Empty: ``<stack folder name>.mp4`` beside the stack folder. ``//name``: relative to the
    saved .blend file, or beside the stack folder when the file is not saved. A folder (ending
    in a separator) gets ``<stack>.mp4`` inside it; a missing ``.mp4`` suffix is added.
    """
    stack = Path(stack_dir)
    base = stack.parent
    text = (filepath or "").strip()
    if not text:
        path = base / f"{stack.name}.mp4"
    elif text.startswith("//"):
        root = Path(blend_path).parent if blend_path else base
        path = root / text[2:]
    else:
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = base / path
    if text.endswith(("/", "\\")) or text == "//":
        path = path / f"{stack.name}.mp4"
    if path.suffix.lower() != ".mp4":
        path = path.with_name(path.name + ".mp4")
    path = Path(os.path.normpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot write the video to {path.parent}: "
                                f"{exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise InvalidInputError(f"cannot write the video to {path.parent}: not writable")
    return path


def _encode(frames: list[Path], out_path: Path, size: tuple[int, int], fps: int) -> Path:
    """Encode PNG frames (display values) to an H.264 MP4 through a temporary scene."""
    enc = bpy.data.scenes.new("P10 Encode")
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
        tmp = out_path.with_name(f".{out_path.stem}.part.mp4")
        compat.set_video_output(enc, str(tmp), fps)
        editor = enc.sequence_editor_create()
        strip = compat.strips(editor).new_image("P10 Frames", str(frames[0]), 1, 1)
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
                      ) -> Iterator[tuple[int, int]]:
    """Render ``video``'s frames, yielding ``(done, total)`` after each, then write the MP4.

    Closing the generator early (cancel) removes the frames and writes nothing.
    """
    out_path = Path(out_path)
    start, end = video.frame_start, video.frame_end
    total = end - start + 1
    size = (video.render.resolution_x * video.render.resolution_percentage // 100,
            video.render.resolution_y * video.render.resolution_percentage // 100)
    fps = video.render.fps
    frames_dir = Path(tempfile.mkdtemp(prefix=f".{out_path.stem}.frames.", dir=out_path.parent))
    settings = video.render.image_settings
    saved = (video.render.filepath, video.frame_current)
    # The sequencer renders scene strips and keyed strip values properly only for the scene
    # a window shows (its depsgraph is the one that writes animation back): show the video.
    window = _window()
    shown = window.scene if window is not None else None
    try:
        if window is not None:
            window.scene = video
        compat.set_still_output(video)  # PNG stills; the video format is put back below
        frames = []
        for i, frame in enumerate(range(start, end + 1)):
            video.frame_set(frame)
            _apply_animation(video, frame)
            path = frames_dir / f"f{frame:06d}.png"
            video.render.filepath = str(path)
            try:
                bpy.ops.render.render(write_still=True, scene=video.name)
            except RuntimeError as exc:
                raise _disk_full_or(exc, frames_dir) from None
            frames.append(path)
            yield i + 1, total
        _encode(frames, out_path, size, fps)
    finally:
        shutil.rmtree(frames_dir, ignore_errors=True)
        if "media_type" in settings.bl_rna.properties:
            settings.media_type = "VIDEO"
        settings.file_format = "FFMPEG"
        video.render.filepath = saved[0]
        video.frame_set(saved[1])
        if window is not None and shown is not None:
            window.scene = shown


def render_video(video: "bpy.types.Scene", out_path: str | os.PathLike, *,
                 on_frame: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> Path:
    """Render the whole video (blocking); ``cancel()`` is asked between frames."""
    steps = iter_render_video(video, out_path)
    try:
        for done, total in steps:
            if on_frame is not None:
                on_frame(done, total)
            if cancel is not None and cancel() and done < total:
                raise Cancelled("video render cancelled; nothing was written")
    finally:
        steps.close()
    return Path(out_path)
