"""The zoom's timing: two keys on the rig root's ``zoom_level`` (drivers do the rest).

The exponential mapping lives in the plane drivers (``scene_build.drive_plane``), so the keys
are plain numbers: LINEAR keys give a constant apparent speed, the default BEZIER keys with
flat handles ease in and out. Retiming is moving the keys; speed is shaped in the Graph
Editor. ``zoom_keys`` and ``level_spans`` are pure (no bpy) and tested without Blender.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("IN", "OUT")
ZOOM_PATH = '["zoom_level"]'


@dataclass(frozen=True)
class ZoomKeys:
    """Two keys, frames relative to the scene's first frame, plus the eased handle length."""

    frames: tuple[int, int]
    values: tuple[float, float]
    ease: float           # handle length in frames (0: LINEAR keys, constant speed)
    length: int           # frames of the whole shot, holds included


def zoom_keys(num_levels: int, frames_per_level: int, *, direction: str = "IN",
              hold_start: int = 0, hold_end: int = 0, ease_frames: int = 0) -> ZoomKeys:
    """Keys of a zoom through ``num_levels`` levels, ``frames_per_level`` frames each.

    The zoom lasts (N-1)·F frames after ``hold_start`` still frames; ``hold_end`` follow.
    ``ease_frames`` is the length of the flat Bezier handles (capped at a third of the zoom,
    where a cubic is at its smoothest); 0 gives LINEAR keys. 'OUT' swaps the values.
    """
    if num_levels < 1:
        raise ValueError(f"a zoom needs at least one level, got {num_levels}")
    if frames_per_level < 1:
        raise ValueError(f"frames per level must be at least 1, got {frames_per_level}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if hold_start < 0 or hold_end < 0 or ease_frames < 0:
        raise ValueError("hold and ease frame counts must not be negative")
    span = (num_levels - 1) * frames_per_level
    first, last = hold_start, hold_start + span
    values = (0.0, float(num_levels - 1))
    if direction == "OUT":
        values = values[::-1]
    ease = min(float(ease_frames), span / 3.0)
    return ZoomKeys((first, last), values, ease, last + hold_end + 1)


def level_spans(levels: np.ndarray, num_levels: int) -> list[tuple[int, int, int]]:
    """(level k, first frame index, frame count) of each run where image k fills the frame.

    The frame at level x shows (a magnified centre of) image floor(x); the finest level
    counts from the moment it is reached.
    """
    shown = np.clip(np.floor(np.asarray(levels) + 1e-4).astype(int), 0, num_levels - 1)
    spans = []
    start = 0
    for i in range(1, len(shown) + 1):
        if i == len(shown) or shown[i] != shown[start]:
            spans.append((int(shown[start]), start, i - start))
            start = i
    return spans


def key_zoom(root, keys: ZoomKeys, frame_start: int) -> None:
    """Replace the root's ``zoom_level`` keys with ``keys`` (frames from ``frame_start``)."""
    from ..setup import compat

    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is not None:
        fc.keyframe_points.clear()
    for frame, value in zip(keys.frames, keys.values):
        root[ZOOM_PATH[2:-2]] = value
        root.keyframe_insert(ZOOM_PATH, frame=frame_start + frame)
    fc = compat.find_fcurve(root, ZOOM_PATH)
    if keys.frames[0] == keys.frames[1]:  # one level: nothing moves
        fc.update()
        return
    points = sorted(fc.keyframe_points, key=lambda kp: kp.co.x)
    for kp in points:
        kp.interpolation = "BEZIER" if keys.ease > 0 else "LINEAR"
        kp.handle_left_type = kp.handle_right_type = "FREE"
        x, y = kp.co
        kp.handle_left = (x - keys.ease, y)   # flat handles: speed 0 at both keys
        kp.handle_right = (x + keys.ease, y)
    fc.extrapolation = "CONSTANT"
    fc.update()
    action = root.animation_data.action
    action.name = f"{root.name} Zoom"  # stable across rebuilds (not the root's name then)
    build = root.get("p10_build")
    if build is not None:
        action["p10_build"] = build  # removed together with the build


def frame_levels(root, frames) -> np.ndarray:
    """``zoom_level`` at each frame as the animation gives it (the property's value where
    there is no F-curve or it is muted)."""
    from ..setup import compat

    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is None or fc.mute:
        return np.full(len(frames), float(root[ZOOM_PATH[2:-2]]))
    return np.array([fc.evaluate(f) for f in frames], dtype=np.float64)


def shift_levels(root, shift: int) -> None:
    """Add ``shift`` to ``zoom_level`` and every key of it (levels added outside the stack, as
    Extend Wider does: image k is now level k + shift), so each frame shows what it showed."""
    from ..setup import compat

    root[ZOOM_PATH[2:-2]] = float(root[ZOOM_PATH[2:-2]]) + shift
    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is None:
        return
    for kp in fc.keyframe_points:
        for point in (kp.co, kp.handle_left, kp.handle_right):
            point.y += shift
    fc.update()
