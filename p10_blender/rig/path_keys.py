"""The numbers behind the rig's drivers: where each level sits as ``zoom_level`` runs.

Pure (stdlib only, no bpy): ``scene_build`` turns these into driver F-curves, and the tests
check them without Blender against ``core.zoom.camera_path`` (the same camera path as
``core.stack.preview``).

The camera never moves. At zoom level ``z = k + u`` the view is, in level k's frame
fractions (per axis), the rect of size ``s = p^-u`` at ``q = r_k(u) (1 - s)`` (the brief's
camera path; ``r_k`` eases between the fixed points ``c_{k-1}`` and ``c_k``). Seen from the
view, level k's frame is then ``v = r + p^u (f - r)``: a scale by ``p^u`` about the pivot
``r``. The rig builds that map from three parts, each a function of z alone:

* the *pivot* empty: location ``R(z)`` — a Bezier F-curve through ``(k, c_{k-1})`` with flat
  handles a third long, which is exactly ``c_{k-1} + (c_k - c_{k-1}) (3u^2 - 2u^3)`` — and
  scale ``p^(z - floor z)`` (a simple expression);
* the *frame* empty (its child): location ``-R(z)``;
* one *level* empty per level (children of the frame): level j's frame as seen from level
  ``k = floor z`` at u = 0 — offset ``S_kj`` (footprints composed), size ``p^(k-j)`` — a step
  function of z (CONSTANT keys). Unclamped: an object parented to it zooms with the level at
  every zoom level.

Each level's plane is a child of its level empty whose scale is clamped (driver), so what
renders stays near unit size. A loop repeats with period ``V`` (a multiple of N holding the
visible window; the planes are instanced ``V / N`` times) through a Cycles modifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FINEST_VIEW_FRACTION = 1.0 / 4096  # finer planes smaller than this part of the view: hidden
OVERSCAN_MAX = 64.0                # coarser planes are kept up to this many views wide
MAX_EXPONENT = 120.0               # |log2| of level-empty scales (float32 range, deep stacks)


def visible_depth(zoom: int) -> int:
    """Finer levels drawn beyond the current one: p^-D is the smallest plane (1/4096 view)."""
    return max(1, int(math.floor(math.log(1.0 / FINEST_VIEW_FRACTION, zoom) + 1e-9)))


def coarse_depth(zoom: int) -> int:
    """Coarser levels a plane may stay visible behind a finer one (overscan up to 64 views)."""
    return max(1, int(math.ceil(math.log(OVERSCAN_MAX, zoom) - 1e-9)))


@dataclass(frozen=True)
class RigPlan:
    """Everything the drivers need, in frame fractions (x right, y down)."""

    zoom: int
    num_levels: int
    loop: bool
    period: int                  # V: zoom levels after which everything repeats (loops)
    depth: int                   # D: finer levels drawn
    coarse: int                  # coarser levels a plane may stay behind a finer one
    offsets: list[tuple[float, float]]   # a_k per transition (left/W, top/H)
    fixed: list[tuple[float, float]]     # c_k per transition
    spread: list[float]          # per virtual plane: 1 / (2 min(c, 1-c)) over its transitions

    @property
    def planes(self) -> int:
        """Virtual planes: N, or V for a loop (level J mod N)."""
        return self.period if self.loop else self.num_levels

    def wrap(self, d: float) -> float:
        """Relative level d = z - J of a virtual plane, wrapped into its window for loops."""
        if not self.loop:
            return d
        a = self.period - (self.coarse + 1)
        return d + a - self.period * math.floor((d + a) / self.period) - a


def plan_rig(zoom: int, width: int, height: int, num_levels: int, footprints, fixed,
             loop: bool = False) -> RigPlan:
    """The rig's plan for a stack: offsets ``a_k`` of each transition's footprint (pixels,
    one per transition, the last placing level 0 in level N-1 for a loop), their fixed points
    ``c_k`` (``core.zoom.camera_path.fixed_points``), the visible window (D finer, ``coarse``
    coarser levels) and, for a loop, its period V."""
    count = len(footprints)
    offsets = [(left / width, top / height) for left, top in footprints]
    fixed = [tuple(c) for c in fixed]
    depth, coarse = visible_depth(zoom), coarse_depth(zoom)
    period = num_levels
    if loop:  # every virtual plane's window [-D, coarse] fits in one period: no plane twice
        period = num_levels * int(math.ceil((depth + coarse + 2) / num_levels))
    planes = period if loop else num_levels
    spread = []
    for j in range(planes):
        near = []
        for i in range(j, j + coarse + 1):
            if count and (loop or i < count):
                near.append(min(min(fixed[i % count]), 1.0 - max(fixed[i % count])))
        m = min(near) if near else 0.5
        spread.append(1e6 if m <= 1e-6 else min(1.0 / (2.0 * m), 1e6))
    return RigPlan(zoom, num_levels, loop, period, depth, coarse, offsets, fixed, spread)


def level_offset(plan: RigPlan, k: int, j: int) -> tuple[float, float, float]:
    """``(x, y, size)`` of (virtual) level j's frame in level k's frame fractions.

    Footprints composed from the nearer level, so a deep stack never subtracts huge numbers
    (S_kj = sum_{i=k}^{j-1} a_i p^(k-i) ahead, minus the same sum behind).
    """
    count = len(plan.offsets)
    p = float(plan.zoom)
    x = y = 0.0
    lo, hi, sign = (k, j, 1.0) if j >= k else (j, k, -1.0)
    for i in range(lo, hi):
        a = plan.offsets[i % count] if count else (0.0, 0.0)
        w = p ** (k - i)
        x += sign * a[0] * w
        y += sign * a[1] * w
    size = 2.0 ** max(min((k - j) * math.log2(p), MAX_EXPONENT), -MAX_EXPONENT)
    return x, y, size


def level_keys(plan: RigPlan, j: int) -> list[tuple[int, float, float, float]]:
    """CONSTANT keys ``(k, x, y, size)`` of virtual level j's empty: its frame (left, top in
    level k's fractions, size) from integer zoom level k on. A loop's keys span one period
    (k = 0..V, the last repeating the first for the Cycles modifier)."""
    if not plan.loop:
        return [(k, *level_offset(plan, k, j)) for k in range(plan.num_levels)]
    keys = []
    for k in range(plan.period + 1):
        d = plan.wrap(float(k - j))
        occurrence = k - int(round(d))  # the copy of level j this window shows
        keys.append((k, *level_offset(plan, k, occurrence)))
    return keys


def pivot_keys(plan: RigPlan) -> list[tuple[int, float, float]]:
    """Bezier keys ``(k, r_x, r_y)`` of the pivot: r_k(0) = c_{k-1} (c_{-1} = c_0 without a
    loop); flat handles a third long make each segment the brief's smoothstep."""
    n, c = plan.num_levels, plan.fixed
    if not c:
        return [(0, 0.5, 0.5)]
    if plan.loop:
        return [(k, *c[(k - 1) % n]) for k in range(n + 1)]
    return [(k, *c[max(k - 1, 0)]) for k in range(n)]


def relative_level(plan: RigPlan, j: int) -> str:
    """``z - j`` as a simple expression, wrapped into the plane's window for a loop."""
    if not plan.loop:
        return f"(z - {j})"
    a = plan.period - (plan.coarse + 1)
    b = a - j
    return f"(z + {b} - {plan.period} * floor((z + {b}) / {plan.period}) - {a})"


def scale_expression(plan: RigPlan, j: int) -> str:
    """Plane j's scale under its level's empty: 1, or what clamps it to p^-(D+1) .. p^(C+1)
    views where it is hidden (so float32 never sees an extreme number)."""
    d = relative_level(plan, j)
    return f"pow({plan.zoom}, clamp({d}, {-(plan.depth + 1)}, {plan.coarse + 1}) - {d})"


def depth_expression(plan: RigPlan, j: int, step: float) -> str:
    """Plane j's height: finer planes a hair (``step``) per level in front."""
    d = relative_level(plan, j)
    return f"clamp(-{d}, {-(plan.coarse + 1)}, {plan.depth + 1}) * {step!r}"


def hide_expression(plan: RigPlan, j: int) -> str:
    """Plane j's ``hide_render`` (``o``: the root's overscan): smaller than 1/4096 of the
    view, more than C levels behind, or covered by the finer plane once that one reaches
    ``1 + (o - 1) g`` views (g = 1 centred; larger off-centre, where its near margin is
    thinner)."""
    d = relative_level(plan, j)
    spread = round(plan.spread[j], 6)
    return (f"{d} < {-plan.depth} or {d} >= {plan.coarse + 1} or "
            f"pow({plan.zoom}, {d} - 1) >= 1 + (o - 1) * {spread!r}")


def view_overscan(points, half_width: float, half_height: float,
                  limit: float = OVERSCAN_MAX) -> float:
    """How many times wider than the nominal view (about its centre) the camera sees, from
    where its corner rays meet the planes (``None``: a ray misses them: ``limit``)."""
    worst = 1.0
    for pt in points:
        if pt is None:
            return limit
        worst = max(worst, abs(pt[0]) / half_width, abs(pt[1]) / half_height)
    return min(worst, limit)
