"""Where and how the add-on writes stacks and videos: beside the .blend, never in the
extension's folder; the video's formats (files and image sequences).

The extension's own folder (``extension_path_user``) is deleted when the extension is
uninstalled or updated, so nothing an artist keeps goes there. Stacks default to
``//zoom_stacks/`` beside the saved .blend, or ``~/zoom_stacks`` for an unsaved file; videos
go to the same folder. Paths typed in the panel follow the .blend: ``//x`` and relative paths
resolve against its folder (against ``~/zoom_stacks`` while the file is unsaved).
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy

STACKS_FOLDER = "zoom_stacks"

# id: (label, tooltip, kind, Blender codec or image format, FFmpeg container, extension)
OUTPUT_FORMATS = {
    "H264": ("MP4 (H.264)", "A video file that plays everywhere", "VIDEO", "H264", "MPEG4",
             ".mp4"),
    "H265": ("MP4 (H.265)", "Smaller files at the same quality; newer players", "VIDEO", "H265",
             "MPEG4", ".mp4"),
    "PRORES": ("QuickTime (ProRes)", "For editing: near-lossless, large files", "VIDEO",
               "PRORES", "QUICKTIME", ".mov"),
    "FFV1": ("Matroska (FFV1)", "Lossless video, for archiving", "VIDEO", "FFV1", "MKV", ".mkv"),
    "PNG": ("PNG Sequence", "8-bit PNG frames in a folder (render farms, editors)", "IMAGES",
            "PNG", "", ".png"),
    "EXR": ("OpenEXR Sequence", "Half-float OpenEXR frames in a folder (compositing)", "IMAGES",
            "OPEN_EXR", "", ".exr"),
}


def blend_dir() -> Path | None:
    """Folder of the saved .blend, or None for an unsaved file."""
    return Path(bpy.path.abspath("//")) if bpy.data.filepath else None


def default_root() -> Path:
    """``//zoom_stacks`` beside the saved .blend; ``~/zoom_stacks`` for an unsaved file."""
    return (blend_dir() or Path.home()) / STACKS_FOLDER


def resolve(text: str) -> Path | None:
    """An output path typed by the artist, made absolute (None when empty): ``//`` and
    relative paths against the .blend's folder (``default_root()`` while unsaved), ``~``
    expanded. Nothing is created here."""
    text = (text or "").strip()
    if not text:
        return None
    base = blend_dir() or default_root()
    if text.startswith("//"):
        path = base / text[2:]
    else:
        path = Path(os.path.expanduser(text))
        if not path.is_absolute():
            path = base / path
    return Path(os.path.normpath(path))


def output_root(p10) -> Path:
    """The folder new stacks (and, by default, videos) go to: the panel's Output Folder, or
    ``default_root()``."""
    return resolve(p10.output_dir) or default_root()
