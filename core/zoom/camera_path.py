"""The camera path through a zoom stack: where the view is at a continuous zoom level.

Stdlib only (the Blender rig imports it before torch/numpy matter). The same path drives
``core.stack.preview`` (the MP4) and the Blender rig.

Per axis, in level k's own frame coordinates ([0, 1] across the frame), the footprint of
transition k -> k+1 starts at ``a_k = left_k / W`` (``top_k / H``) and has size 1/p. The zoom
that maps level k's frame onto that footprint has the fixed point

    c_k = a_k / (1 - 1/p)                (0.5 when centred)

At zoom level ``z = k + u`` (k = floor(z), 0 <= u < 1) the view is the rect of size
``s = p^-u`` (a fraction of level k's frame, the same on both axes: the aspect is kept) whose
top-left is

    q = r_k(u) (1 - s),      r_k(u) = c_{k-1} + (c_k - c_{k-1}) (3u^2 - 2u^3)

with ``c_{-1} = c_0`` without a loop (level 0 is a plain fixed-point zoom) and
``c_{-1} = c_{N-1}`` with one. Properties (tests/test_camera_path.py):

* u = 0: q = 0, s = 1, the view is level k's frame exactly; u -> 1: q -> c_k (1 - 1/p) = a_k,
  s -> 1/p, the view is level k+1's frame.
* r_k(u) is a convex combination of fixed points in [0, 1], so 0 <= q <= 1 - s: the view never
  leaves level k's frame (no black border).
* The smoothstep's slope is 0 at both ends, so dq/du = -r s' there: in level-0 coordinates the
  pan's velocity is continuous across level boundaries (no kink), and the scale changes by
  the same factor per unit of z throughout.
* Without a loop z runs over [0, N-1]; with one z wraps modulo N (level N is level 0).
"""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import InvalidInputError

#: Zoom levels this close below an integer count as that integer (2.9999999 is level 3).
LEVEL_EPS = 1e-6

def _smoothstep(u: float) -> float:
    return u * u * (3.0 - 2.0 * u)


def fixed_points(footprints: Sequence[Sequence[int]] | None, zoom: int, width: int,
                 height: int, count: int) -> list[tuple[float, float]]:
    """``(c_x, c_y)`` of each of ``count`` transitions: the fixed point of the zoom from level k
    onto its footprint, in level k's frame fractions (0.5, 0.5 when centred)."""
    if footprints is None:
        return [(0.5, 0.5)] * count
    if len(footprints) != count:
        raise InvalidInputError(f"the camera path needs {count} footprints, got {len(footprints)}")
    shrink = 1.0 - 1.0 / zoom
    return [(left / width / shrink, top / height / shrink) for left, top in footprints]


def _level_and_fraction(z: float, num_levels: int, loop: bool) -> tuple[int, float]:
    try:
        z = float(z)
    except (TypeError, ValueError):
        raise InvalidInputError(f"zoom level must be a number, got {z!r}") from None
    if not math.isfinite(z):
        raise InvalidInputError(f"zoom level must be a finite number, got {z!r}")
    if loop:
        z = math.fmod(z, num_levels)
        if z < 0:
            z += num_levels
    elif not -LEVEL_EPS <= z <= num_levels - 1 + LEVEL_EPS:
        raise InvalidInputError(f"zoom level {z:g} is outside the stack's range 0..{num_levels - 1}")
    k = int(math.floor(z + LEVEL_EPS))
    u = min(max(z - k, 0.0), 1.0)
    if loop:
        k %= num_levels
    else:
        k = min(max(k, 0), num_levels - 1)
        if k == num_levels - 1:
            u = 0.0
    return k, u


def level_view(z: float, footprints: Sequence[Sequence[int]] | None, zoom: int, width: int,
               height: int, num_levels: int, loop: bool = False) -> tuple[int, float, float, float]:
    """``(k, left, top, size)``: the view at zoom level ``z`` in level k's frame fractions.

    ``footprints``: (left, top) pixels of level k+1 in level k, N-1 of them (N with ``loop``;
    the last places level 0 inside level N-1), or None for centred zooms. The view spans
    ``[left, left + size] x [top, top + size]`` of level k's frame (``size`` <= 1).
    """
    n = int(num_levels)
    if n < 1:
        raise InvalidInputError(f"a zoom stack needs at least one level, got {num_levels}")
    k, u = _level_and_fraction(z, n, loop)
    count = n if loop else n - 1
    c = fixed_points(footprints, zoom, width, height, count)
    s = float(zoom) ** -u
    if u == 0.0:
        return k, 0.0, 0.0, 1.0
    prev = c[k - 1] if k > 0 else (c[-1] if loop else c[0])
    h = _smoothstep(u)
    qx = (prev[0] + (c[k][0] - prev[0]) * h) * (1.0 - s)
    qy = (prev[1] + (c[k][1] - prev[1]) * h) * (1.0 - s)
    return k, qx, qy, s


def level_origin(k: int, footprints: Sequence[Sequence[int]] | None, zoom: int, width: int,
                 height: int, num_levels: int, loop: bool = False) -> tuple[float, float, float]:
    """``(left, top, size)`` of level k's frame in level-0 frame fractions (footprints composed)."""
    count = num_levels if loop else num_levels - 1
    if footprints is not None and len(footprints) != count:
        raise InvalidInputError(f"the camera path needs {count} footprints, got {len(footprints)}")
    x = y = 0.0
    size = 1.0
    for j in range(k):
        left, top = footprints[j % count] if footprints is not None else (
            (width - width // zoom) / 2, (height - height // zoom) / 2)
        x += left / width * size
        y += top / height * size
        size /= zoom
    return x, y, size


def view_rect(z: float, footprints: Sequence[Sequence[int]] | None, zoom: int, width: int,
              height: int, num_levels: int, loop: bool = False) -> tuple[float, float, float, float]:
    """The view at zoom level ``z`` as ``(left, top, width, height)`` in level-0 frame fractions.

    With ``loop`` z is taken modulo N first (level N is level 0, so the rect comes back).
    """
    k, qx, qy, s = level_view(z, footprints, zoom, width, height, num_levels, loop)
    ox, oy, size = level_origin(k, footprints, zoom, width, height, num_levels, loop)
    return ox + qx * size, oy + qy * size, s * size, s * size


__all__ = ["LEVEL_EPS", "fixed_points", "level_origin", "level_view", "view_rect"]
