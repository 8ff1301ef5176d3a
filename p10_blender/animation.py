"""The exponential zoom: an orthographic camera whose ortho_scale is s0 · p^(-level).

``zoom_levels`` is a pure function (numpy only) giving the zoom level shown at every frame;
``animate_zoom`` writes it as one LINEAR keyframe per frame, so every rendered frame carries
the exact value (no interpolation between frames is ever rendered).
"""

from __future__ import annotations

import numpy as np

DIRECTIONS = ("IN", "OUT")


def zoom_levels(num_levels: int, frames_per_level: int, *, direction: str = "IN",
                hold_start: int = 0, hold_end: int = 0, ease_frames: int = 0) -> np.ndarray:
    """Level (0 = outermost, N-1 = finest) shown at each frame, float64 ``(T,)``.

    The zoom itself lasts Z = (N-1)·F frames, so frame k·F shows level k exactly (with no
    ease). ``ease_frames`` ramps the speed (in levels per frame) up linearly at the start and
    down at the end (a trapezoidal speed profile, same total duration). Holds repeat the
    first/last level. ``direction='OUT'`` plays the same curve backwards.
    """
    if num_levels < 1:
        raise ValueError(f"a zoom needs at least one level, got {num_levels}")
    if frames_per_level < 1:
        raise ValueError(f"frames per level must be at least 1, got {frames_per_level}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    if hold_start < 0 or hold_end < 0 or ease_frames < 0:
        raise ValueError("hold and ease frame counts must not be negative")
    span = float(num_levels - 1)
    z = (num_levels - 1) * frames_per_level
    t = np.arange(z + 1, dtype=np.float64)
    e = float(min(ease_frames, z // 2))
    if e > 0:
        v = span / (z - e)  # distance = v·(Z - e) for a trapezoid with ramps of e frames
        level = np.where(
            t < e, 0.5 * v * t * t / e,
            np.where(t <= z - e, v * (t - 0.5 * e), span - 0.5 * v * (z - t) ** 2 / e))
    else:
        level = t / frames_per_level
    level[-1] = span  # exact end, whatever the rounding
    level = np.concatenate([np.zeros(hold_start), level, np.full(hold_end, span)])
    return level[::-1].copy() if direction == "OUT" else level


def ortho_scales(levels: np.ndarray, zoom: int, size: float) -> np.ndarray:
    """s(f) = s0 · p^(-level(f)): the frame spans exactly plane ``level`` at integer levels."""
    return size * np.power(float(zoom), -np.asarray(levels, dtype=np.float64))


def level_spans(levels: np.ndarray, num_levels: int) -> list[tuple[int, int, int]]:
    """(level k, first frame index, frame count) of each run where image k fills the frame.

    The frame at level x shows (a magnified centre of) image floor(x); the finest level
    counts from the moment it is reached.
    """
    shown = np.minimum(np.floor(np.asarray(levels) + 1e-9).astype(int), num_levels - 1)
    spans = []
    start = 0
    for i in range(1, len(shown) + 1):
        if i == len(shown) or shown[i] != shown[start]:
            spans.append((int(shown[start]), start, i - start))
            start = i
    return spans


def animate_zoom(scene, camera, *, zoom: int, num_levels: int, size: float,
                 frames_per_level: int, direction: str = "IN", hold_start: int = 0,
                 hold_end: int = 0, ease_frames: int = 0, frame_start: int = 1) -> np.ndarray:
    """Key the camera's ortho_scale at every frame (LINEAR) and fit the scene frame range.

    Replaces any previous zoom keys of this camera. Returns the level of each frame.
    """
    from . import compat

    levels = zoom_levels(num_levels, frames_per_level, direction=direction,
                         hold_start=hold_start, hold_end=hold_end, ease_frames=ease_frames)
    scales = ortho_scales(levels, zoom, size)
    cam = camera.data
    fc = compat.find_fcurve(cam, "ortho_scale")
    if fc is None:
        cam.ortho_scale = float(scales[0])
        cam.keyframe_insert("ortho_scale", frame=frame_start)
        fc = compat.find_fcurve(cam, "ortho_scale")
    fc.keyframe_points.clear()
    count = len(levels)
    fc.keyframe_points.add(count)
    frames = np.arange(frame_start, frame_start + count, dtype=np.float64)
    co = np.empty(2 * count, dtype=np.float64)
    co[0::2], co[1::2] = frames, scales
    fc.keyframe_points.foreach_set("co", co)
    # handles are ignored by LINEAR; set them anyway so the graph editor draws sanely
    fc.keyframe_points.foreach_set("handle_left", co)
    fc.keyframe_points.foreach_set("handle_right", co)
    linear = fc.keyframe_points[0].bl_rna.properties["interpolation"].enum_items["LINEAR"].value
    fc.keyframe_points.foreach_set("interpolation", np.full(count, linear, dtype=np.int32))
    fc.update()
    if cam.animation_data and cam.animation_data.action is not None:
        action = cam.animation_data.action
        build = camera.get("p10_build")
        if build is not None:
            action["p10_build"] = build  # removed together with the build
    scene.frame_start = frame_start
    scene.frame_end = frame_start + count - 1
    scene.frame_current = frame_start
    return levels
