"""The zoom's timing: keys on the rig root's ``zoom_level`` (drivers do the rest).

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
    """Keys (frames relative to the scene's first frame) plus the eased handle length."""

    frames: tuple[int, ...]
    values: tuple[float, ...]
    ease: float           # handle length in frames (0: LINEAR keys, constant speed)
    length: int           # frames of the whole shot, holds included


def parse_holds(text: str, num_levels: int) -> list[int]:
    """Levels to hold at, from "2" or "1, 3" (inner levels only: 0 and N-1 hold already).

    Raises ValueError with one line naming the bad entry."""
    levels = []
    for part in str(text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            level = int(part)
        except ValueError:
            raise ValueError(f"hold level {part!r} is not a whole number") from None
        if not 0 < level < num_levels - 1:
            raise ValueError(f"hold level {level} is not between 1 and {num_levels - 2}")
        levels.append(level)
    return sorted(set(levels))


def zoom_keys(num_levels: int, frames_per_level: int, *, direction: str = "IN",
              hold_start: int = 0, hold_end: int = 0, ease_frames: int = 0,
              holds: dict[int, int] | None = None) -> ZoomKeys:
    """Keys of a zoom through ``num_levels`` levels, ``frames_per_level`` frames each.

    The zoom lasts (N-1)·F frames after ``hold_start`` still frames; ``hold_end`` follow.
    ``holds`` {level: frames} stops the zoom at inner levels (two keys each, on the way in or
    out). ``ease_frames`` is the length of the flat Bezier handles (capped at a third of the
    segment between keys, where a cubic is at its smoothest); 0 gives LINEAR keys. 'OUT'
    swaps the direction.
    """
    if num_levels < 1:
        raise ValueError(f"a zoom needs at least one level, got {num_levels}")
    if frames_per_level < 1:
        raise ValueError(f"frames per level must be at least 1, got {frames_per_level}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if hold_start < 0 or hold_end < 0 or ease_frames < 0:
        raise ValueError("hold and ease frame counts must not be negative")
    holds = {k: int(f) for k, f in (holds or {}).items() if 0 < k < num_levels - 1 and f > 0}
    order = range(num_levels) if direction == "IN" else range(num_levels - 1, -1, -1)
    frames, values = [hold_start], [float(order[0])]
    t = hold_start
    for prev, level in zip(order, order[1:]):
        t += frames_per_level * abs(level - prev)
        if level in holds:
            frames.append(t)
            values.append(float(level))
            t += holds[level]
        frames.append(t)
        values.append(float(level))
    if len(frames) == 1:  # one level: nothing moves
        frames.append(hold_start)
        values.append(values[0])
    # merge the plain pass-through keys (only holds and ends carry keys)
    keep = [0] + [i for i in range(1, len(frames) - 1)
                  if values[i] in (values[i - 1], values[i + 1])] + [len(frames) - 1]
    frames = [frames[i] for i in keep]
    values = [values[i] for i in keep]
    span = frames[-1] - frames[0]
    ease = min(float(ease_frames), span / 3.0)
    return ZoomKeys(tuple(frames), tuple(values), ease, frames[-1] + hold_end + 1)


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


FINGERPRINT = "p10_keys"  # on the zoom action: the keys as last written by the add-on


def _fingerprint(fc) -> str:
    """The keys of an F-curve as a string (frames, values, interpolation, handles)."""
    parts = []
    for kp in sorted(fc.keyframe_points, key=lambda kp: kp.co.x):
        parts.append("%.3f,%.4f,%s,%.3f,%.4f,%.3f,%.4f" % (
            kp.co.x, kp.co.y, kp.interpolation, kp.handle_left.x, kp.handle_left.y,
            kp.handle_right.x, kp.handle_right.y))
    return ";".join(parts)


def keys_edited(root) -> bool:
    """Whether the zoom's keys differ from what the add-on last wrote (moved, added, handles
    changed in the Graph Editor): such a curve is never re-keyed without asking."""
    from ..setup import compat

    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is None or not len(fc.keyframe_points):
        return False
    stored = root.animation_data.action.get(FINGERPRINT)
    return stored is None or stored != _fingerprint(fc)


def key_range(root) -> tuple[float, float] | None:
    """First and last key frame of the zoom (None without keys)."""
    from ..setup import compat

    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is None or not len(fc.keyframe_points):
        return None
    xs = [kp.co.x for kp in fc.keyframe_points]
    return min(xs), max(xs)


def key_zoom(root, keys: ZoomKeys, frame_start: int) -> None:
    """Replace the root's ``zoom_level`` keys with ``keys`` (frames from ``frame_start``).

    Every key gets flat handles no longer than a third of its neighbouring segments: each
    segment is a monotone ease, so a hold never overshoots (Auto Clamped handles would)."""
    from ..setup import compat

    fc = compat.find_fcurve(root, ZOOM_PATH)
    if fc is not None:
        fc.keyframe_points.clear()
    for frame, value in zip(keys.frames, keys.values):
        root[ZOOM_PATH[2:-2]] = value
        root.keyframe_insert(ZOOM_PATH, frame=frame_start + frame)
    fc = compat.find_fcurve(root, ZOOM_PATH)
    points = sorted(fc.keyframe_points, key=lambda kp: kp.co.x)
    xs = [kp.co.x for kp in points]
    for i, kp in enumerate(points):
        kp.interpolation = "BEZIER" if keys.ease > 0 else "LINEAR"
        kp.handle_left_type = kp.handle_right_type = "FREE"
        x, y = kp.co
        left = min(keys.ease, (x - xs[i - 1]) / 3.0) if i > 0 else keys.ease
        right = min(keys.ease, (xs[i + 1] - x) / 3.0) if i + 1 < len(xs) else keys.ease
        kp.handle_left = (x - left, y)   # flat handles: speed 0 at every key
        kp.handle_right = (x + right, y)
    fc.extrapolation = "CONSTANT"
    fc.update()
    action = root.animation_data.action
    action.name = f"{root.name} Zoom"  # stable across rebuilds (not the root's name then)
    build = root.get("p10_build")
    if build is not None:
        action["p10_build"] = build  # removed together with the build
    action[FINGERPRINT] = _fingerprint(fc)


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
