"""The numbers behind the rig's drivers (p10_blender.rig.path_keys), without Blender.

The rig is simulated the way Blender evaluates it — pivot Bezier keys with flat third-length
handles (a smoothstep), CONSTANT level keys, ``v = R + p^u (f - R)`` — and every level's plane
must land where ``core.zoom.camera_path`` (the MP4's path) puts the view, at and between
levels, with and without footprints and loops.
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from core.stack.stack_io import centred_footprints
from core.zoom.camera_path import fixed_points, level_view

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, rel: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pk = _load("p10_rig_path_keys", "p10_blender/rig/path_keys.py")
anim = _load("p10_rig_animation", "p10_blender/rig/animation.py")


def plan_of(zoom, w, h, n, footprints, loop=False):
    count = n if loop else n - 1
    fps = footprints or centred_footprints(h, w, zoom, count)
    return pk.plan_rig(zoom, w, h, n, fps, fixed_points(fps, zoom, w, h, count), loop), fps


def pivot_at(keys, z, period=None):
    """A Bezier F-curve through (k, r) with flat handles a third long, as Blender evaluates."""
    if period is not None:
        z = z % period
    xs = [k for k, *_ in keys]
    if z <= xs[0]:
        return keys[0][1:]
    if z >= xs[-1]:
        return keys[-1][1:]
    i = max(i for i, x in enumerate(xs) if x <= z)
    t = z - xs[i]  # x(t) = k + t: the handles sit at thirds
    e = 3 * t * t - 2 * t ** 3
    return tuple(keys[i][a] + (keys[i + 1][a] - keys[i][a]) * e for a in (1, 2))


def plane_rect(plan, j, z):
    """Virtual plane j's frame (left, top, size) in view fractions, as the rig composes it."""
    keys = pk.level_keys(plan, j)
    period = plan.period if plan.loop else None
    zz = z % period if period else z
    k = int(math.floor(zz + 1e-12))
    if not plan.loop:
        k = min(k, plan.num_levels - 1)
    _, x, y, size = next(key for key in keys if key[0] == k)
    rx, ry = pivot_at(pk.pivot_keys(plan), z, plan.num_levels if plan.loop else None)
    u = zz - k
    g = plan.zoom ** u
    return rx + g * (x - rx), ry + g * (y - ry), g * size


CASES = [
    (2, 64, 48, 4, None, False),
    (2, 64, 48, 4, [(8, 20), (30, 0), (16, 14)], False),
    (4, 64, 64, 3, [(40, 8), (4, 36)], False),
    (2, 64, 64, 3, [(24, 8), (4, 20), (16, 16)], True),
    (4, 32, 32, 2, [(0, 24), (20, 4)], True),
]


@pytest.mark.parametrize("zoom,w,h,n,footprints,loop", CASES)
def test_planes_follow_the_camera_path_at_and_between_levels(zoom, w, h, n, footprints, loop):
    plan, fps = plan_of(zoom, w, h, n, footprints, loop)
    top = 3 * n + 0.5 if loop else n - 1
    for z in np.linspace(0, top, 37):
        k, left, top_, s = level_view(z, footprints, zoom, w, h, n, loop)  # core's path
        # the plane showing level k (its occurrence in view) spans [-q/s, (1-q)/s]
        js = [j for j in range(plan.planes) if j % n == k and 0 <= plan.wrap(z - j) < 1]
        assert len(js) == 1, (z, js)  # exactly one copy of level k is the current one
        x, y, size = plane_rect(plan, js[0], z)
        assert math.isclose(size, 1 / s, rel_tol=1e-9)
        assert math.isclose(x, -left / s, abs_tol=1e-9) and math.isclose(y, -top_ / s, abs_tol=1e-9)
        # the next finer level sits in level k's footprint
        nxt = [j for j in range(plan.planes) if j % n == (k + 1) % n
               and -1 <= plan.wrap(z - j) < 0]
        if loop or k < n - 1:
            assert len(nxt) == 1, (z, nxt)
            fx, fy, fs = plane_rect(plan, nxt[0], z)
            a = fps[k % len(fps)]
            assert math.isclose(fx, x + a[0] / w * size, abs_tol=1e-9)
            assert math.isclose(fy, y + a[1] / h * size, abs_tol=1e-9)
            assert math.isclose(fs, size / zoom, rel_tol=1e-9)
        # deeper and coarser levels: footprints composed from level k's frame
        for m in (-2, -1, 2, 3):
            lv = k + m
            if not loop and not 0 <= lv < n:
                continue
            ex, ey, es = x, y, size
            for i in (range(k, lv) if m > 0 else range(k - 1, lv - 1, -1)):
                a = fps[i % len(fps)]
                if m > 0:
                    ex, ey, es = ex + a[0] / w * es, ey + a[1] / h * es, es / zoom
                else:
                    es = es * zoom
                    ex, ey = ex - a[0] / w * es, ey - a[1] / h * es
            js = [j for j in range(plan.planes)
                  if j % n == lv % n and -m <= plan.wrap(z - j) < 1 - m]
            if not js:
                continue
            gx, gy, gs = plane_rect(plan, js[0], z)
            assert math.isclose(gs, es, rel_tol=1e-9), (z, m)
            assert math.isclose(gx, ex, abs_tol=1e-9 * max(1, es))
            assert math.isclose(gy, ey, abs_tol=1e-9 * max(1, es))


def test_loop_period_holds_every_visible_plane_once_and_wraps():
    plan, _ = plan_of(2, 64, 64, 3, [(24, 8), (4, 20), (16, 16)], True)
    assert plan.period % 3 == 0 and plan.period >= plan.depth + plan.coarse + 2
    for j in range(plan.planes):
        assert plan.wrap(0.25 - j + plan.period) == pytest.approx(plan.wrap(0.25 - j))
        assert -(plan.period - plan.coarse - 1) <= plan.wrap(5.5 - j) < plan.coarse + 1
    first, last = pk.level_keys(plan, 4)[0], pk.level_keys(plan, 4)[-1]
    assert first[1:] == pytest.approx(last[1:])  # the Cycles modifier's period closes


SIMPLE = {"pow": pow, "floor": math.floor,
          "clamp": lambda x, lo, hi: min(max(x, lo), hi)}  # Blender's simple expressions


def covered_at(plan, j, d, overscan):
    """Evaluate plane j's real hide_render expression at zoom level j + d."""
    return bool(eval(pk.hide_expression(plan, j), dict(SIMPLE, z=j + d, o=overscan)))


def test_coarser_plane_stays_until_a_finer_one_covers_the_widened_view():
    plan, _ = plan_of(2, 64, 64, 4, None)  # centred
    # overscan 1 (the nominal view): covered as soon as the finer plane fills the view
    assert not covered_at(plan, 0, 0.999, 1.0) and covered_at(plan, 0, 1.0, 1.0)
    # a view 2x wider: one more level (the finer plane is then 2 views wide)
    assert not covered_at(plan, 0, 1.9, 2.0) and covered_at(plan, 0, 2.0, 2.0)
    # too small (finer than 1/4096 of the view) and beyond the kept window: hidden
    assert covered_at(plan, 3, -(plan.depth + 0.5), 1.0)
    assert covered_at(plan, 0, plan.coarse + 1, 64.0)
    # off-centre: the finer plane's margin on the near side is smaller; it hides later
    off, _ = plan_of(2, 64, 64, 4, [(4, 16)] * 3)
    assert not covered_at(off, 0, 2.0, 2.0)


@pytest.mark.parametrize("loop", [False, True])
def test_plane_expressions_clamp_order_and_wrap(loop):
    plan, _ = plan_of(2, 64, 64, 3, [(24, 8), (4, 20), (16, 16)] if loop else None, loop)
    for j in (0, 1):
        for d in (-20.5, -3.25, -0.5, 0.0, 0.75, 1.5, 9.0):
            z = j + d
            if z < 0:
                continue
            env = dict(SIMPLE, z=z, o=2.0)
            w = plan.wrap(d)
            scale = eval(pk.scale_expression(plan, j), env)
            # the level's empty scales p^w; the plane's own factor clamps the product
            world = 2.0 ** w * scale
            assert 2.0 ** -(plan.depth + 1) - 1e-12 <= world <= 2.0 ** (plan.coarse + 1) + 1e-9
            if -plan.depth - 1 <= w <= plan.coarse + 1:
                assert scale == pytest.approx(1.0)
            height = eval(pk.depth_expression(plan, j, 1e-4), env)
            assert height == pytest.approx(min(max(-w, -(plan.coarse + 1)), plan.depth + 1) * 1e-4)


def test_view_overscan_from_where_the_corner_rays_meet_the_planes():
    assert pk.view_overscan([(0.5, 0.5), (-0.5, -0.5)], 0.5, 0.5) == 1.0
    assert pk.view_overscan([(0.75, 0.1), (-0.2, -0.6)], 0.5, 0.5) == pytest.approx(1.5)
    assert pk.view_overscan([(0.1, 0.1), None], 0.5, 0.5) == pk.OVERSCAN_MAX


def test_hold_at_a_level_keys_two_flat_keys_and_parse_errors_name_the_entry():
    keys = anim.zoom_keys(5, 10, hold_start=2, hold_end=3, holds={2: 6})
    assert keys.frames == (2, 22, 28, 48) and keys.values == (0.0, 2.0, 2.0, 4.0)
    assert keys.length == 52
    out = anim.zoom_keys(5, 10, direction="OUT", holds={1: 4, 3: 4})
    assert out.values == (4.0, 3.0, 3.0, 1.0, 1.0, 0.0) and out.frames == (0, 10, 14, 34, 38, 48)
    assert anim.zoom_keys(5, 10).frames == (0, 40)  # no holds: two keys, as before
    assert anim.parse_holds(" 3, 1;1", 5) == [1, 3]
    for bad, word in (("x", "'x'"), ("4", "between 1 and 3"), ("0", "between")):
        with pytest.raises(ValueError, match=word):
            anim.parse_holds(bad, 5)
