"""Zoom-stack geometry in whole pixels: validation and footprints. Stdlib only (no torch),
so the Blender side can check sizes before dependencies are installed."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

from ..errors import InvalidInputError

#: Zoom factors p offered by the interfaces (check_zoom accepts any power of two >= 2).
ZOOM_FACTORS: tuple[int, ...] = (2, 4, 8)


def check_zoom(zoom: int) -> int:
    """Return the zoom factor p as an int; it must be a power of two >= 2.

    Raises InvalidInputError (a ValueError) naming the bad value.
    """
    if isinstance(zoom, bool) or not isinstance(zoom, numbers.Real) or zoom != int(zoom) \
            or int(zoom) < 2 or int(zoom) & (int(zoom) - 1):
        raise InvalidInputError(f"zoom factor must be a power of two (2, 4, 8, 16, ...), got {zoom!r}")
    return int(zoom)


def check_size(height: int, width: int, zoom: int) -> None:
    """H and W must be multiples of 2p: the centre H/p x W/p block then sits at whole pixels."""
    p = check_zoom(zoom)
    for name, n in (("height", height), ("width", width)):
        if n <= 0 or n % (2 * p):
            raise ValueError(
                f"image {name} {n} must be a positive multiple of {2 * p} for zoom factor {p} "
                f"(the centre 1/{p} crop must start on a whole pixel)"
            )


def centre_box(height: int, width: int, factor: int) -> tuple[int, int, int, int]:
    """(top, left, h, w) of the centre 1/factor crop in pixels."""
    h, w = height // factor, width // factor
    return (height - h) // 2, (width - w) // 2, h, w


def max_observation_depth(height: int, width: int, zoom: int) -> int:
    """Deepest d for which layer i's footprint in image i-d is a pixel-aligned block.

    The footprint is the centre H/p^d x W/p^d region of the coarser image. It is made of whole
    pixels, each equal to one D_p^d block of image i, only if its size is an integer and its
    offset (H - H/p^d)/2 is too. Deeper observations (e.g. a 1-pixel centre of an even-sized
    image, which straddles four pixels) would smear the neighbouring content in, so they are
    not used: those levels simply stop contributing.
    """
    p = check_zoom(zoom)
    d = 0
    while True:
        f = p ** (d + 1)
        if any(n % f or (n - n // f) % 2 for n in (height, width)):
            return d
        d += 1


def pyramid_depth(height: int, width: int, zoom: int) -> int:
    """Number of D_p reductions possible before a side stops being divisible by p."""
    p = check_zoom(zoom)
    k = 0
    while height % p ** (k + 1) == 0 and width % p ** (k + 1) == 0:
        k += 1
    return k


# ------------------------------------------------------------------------------ footprints
# Footprint of transition i -> i+1: (left, top), the top-left pixel, in level i's frame, of the
# W/p x H/p region that level i+1 shows (issue 19). N levels have N-1 transitions, or N on a
# loop (issue 20), whose last places level 0 inside level N-1.
Footprint = tuple[int, int]


def centred_footprint(height: int, width: int, zoom: int) -> Footprint:
    """(left, top) of the centre 1/p region: ((W - W/p)/2, (H - H/p)/2), the default."""
    top, left, _, _ = centre_box(height, width, check_zoom(zoom))
    return left, top


def transition_count(num_levels: int, loop: bool = False) -> int:
    """Footprints a stack of ``num_levels`` needs: N - 1, or N on a loop."""
    return num_levels if loop else max(num_levels - 1, 0)


def _whole(v) -> int | None:
    """v as an int if it is a whole real number (16 or 16.0), else None (bools are not)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        return int(v) if v == int(v) else None
    except (OverflowError, ValueError):  # inf, nan
        return None


def check_footprints(footprints, height: int, width: int, zoom: int, num_levels: int,
                     loop: bool = False) -> list[Footprint]:
    """Validated footprints as a list of (left, top) ints; None = every transition centred.

    Each entry must be two whole numbers with the W/p x H/p region inside the frame:
    0 <= left <= W - W/p, 0 <= top <= H - H/p, and there must be one per transition
    (``transition_count``). Raises InvalidInputError (one line) naming the first bad entry.
    """
    p = check_zoom(zoom)
    count = transition_count(num_levels, loop)
    if footprints is None:
        return [centred_footprint(height, width, p)] * count
    try:
        entries = list(footprints)
    except TypeError:
        raise InvalidInputError(f"footprints must be a list of [left, top] pairs, "
                                f"got {type(footprints).__name__}") from None
    if len(entries) != count:
        raise InvalidInputError(
            f"{num_levels} levels{' on a loop' if loop else ''} need {count} footprints "
            f"(one per transition), got {len(entries)}")
    h, w = height // p, width // p
    out: list[Footprint] = []
    for k, entry in enumerate(entries):
        where = f"footprint {k} (level {(k + 1) % num_levels if loop else k + 1} inside level {k})"
        pair = list(entry) if isinstance(entry, (list, tuple)) else None
        if pair is None or len(pair) != 2:
            raise InvalidInputError(f"{where} must be a [left, top] pair, got {entry!r}")
        left, top = (_whole(v) for v in pair)
        if left is None or top is None:
            raise InvalidInputError(f"{where} must be whole pixels, got {entry!r}")
        if not (0 <= left <= width - w and 0 <= top <= height - h):
            raise InvalidInputError(
                f"{where} [{left}, {top}] leaves the frame: the {w} x {h} region needs "
                f"0 <= left <= {width - w} and 0 <= top <= {height - h}")
        out.append((left, top))
    return out


def footprint_offset(footprints: list[Footprint], zoom: int, level: int, depth: int,
                     loop: bool = False) -> tuple[Fraction, Fraction] | None:
    """Exact (left, top) of level ``level + depth``'s region inside level ``level``, in level
    ``level``'s pixels: f_i + f_{i+1}/p + ... + f_{i+d-1}/p^(d-1) per axis (Fractions).

    None when level + depth runs past the finest level of a stack that is not a loop (on a
    loop the levels wrap: footprint j is footprints[j mod N])."""
    n = len(footprints)
    if depth < 0 or (not loop and level + depth > n) or (loop and n == 0):
        return None
    left = top = Fraction(0)
    for j in range(level + depth - 1, level - 1, -1):  # deepest first: o = f_j + o / p
        fl, ft = footprints[j % n]
        left, top = fl + left / zoom, ft + top / zoom
    return left, top


def observation_box(footprints: list[Footprint], height: int, width: int, zoom: int,
                    level: int, depth: int, loop: bool = False
                    ) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of level ``level + depth``'s region in level ``level`` when it is
    made of whole pixels that each equal one D_p^depth block of the finer level, else None.

    The region is D_p^depth(finer) exactly (through the chain of Π_image) only if, at every
    intermediate level, the finer footprint starts on the coarser D_p block grid: each partial
    offset f_j + f_{j+1}/p + ... (deepest first) must be a whole number, and so must the
    size H/p^depth. Centred footprints give ``max_observation_depth``; off-centre ones lose
    depth d >= 2 unless the footprints below are multiples of p (docs/sampler.md, "Targets").
    """
    p = check_zoom(zoom)
    n = len(footprints)
    f = p**depth
    if depth < 1 or height % f or width % f or (not loop and level + depth > n) or n == 0:
        return None
    left = top = 0
    for j in range(level + depth - 1, level - 1, -1):
        if left % p or top % p:
            return None  # the finer region straddles D_p blocks: not whole pixels
        fl, ft = footprints[j % n]
        left, top = fl + left // p, ft + top // p
    return top, left, height // f, width // f


def footprints_for_targets(targets, height: int, width: int, zoom: int,
                           grid: int = 1) -> list[Footprint]:
    """Footprints whose centres are as close to ``targets`` as the frame and the grid allow.

    ``targets``: one [x, y] per transition, fractions of the frame (0, 0 = top-left corner,
    0.5, 0.5 = centre). Per axis the footprint's start is a multiple of ``grid`` in
    [0, W - W/p] nearest to x·W − W/(2p) (ties: the one nearer the centred footprint).
    Choose ``grid`` = frame pixels per sampling pixel (e.g. 8 for a latent model's PNG
    pixels) so that the footprints are whole sampling pixels; a grid of p sampling pixels also
    keeps the depth-2 observations of the blending (``observation_box``).
    Raises InvalidInputError naming the first bad target.
    """
    p = check_zoom(zoom)
    g = _whole(grid)
    if g is None or g < 1:
        raise InvalidInputError(f"footprint grid must be a whole number >= 1, got {grid!r}")
    try:
        entries = list(targets)
    except TypeError:
        raise InvalidInputError(f"targets must be a list of [x, y] pairs, "
                                f"got {type(targets).__name__}") from None
    centre = centred_footprint(height, width, p)
    out: list[Footprint] = []
    for k, entry in enumerate(entries):
        pair = list(entry) if isinstance(entry, (list, tuple)) else None
        ok = pair is not None and len(pair) == 2 and all(
            not isinstance(v, bool) and isinstance(v, numbers.Real) and 0 <= v <= 1
            for v in pair)
        if not ok:
            raise InvalidInputError(f"target {k} must be [x, y] with x and y between 0 and 1 "
                                    f"(fractions of the frame), got {entry!r}")
        out.append(tuple(_snap(float(v) * size, size // p, size, g, c)
                         for v, size, c in zip(pair, (width, height), centre)))
    return out


def _snap(point: float, region: int, size: int, grid: int, centred: int) -> int:
    """Start of a ``region``-long span on the ``grid`` within [0, size] centred nearest to
    ``point``; ties towards ``centred``."""
    last = (size - region) // grid * grid
    want = point - region / 2
    low = min(max(int(want // grid) * grid, 0), last)
    high = min(low + grid, last)
    return min((low, high), key=lambda s: (abs(s - want), abs(s - centred)))


def scale_footprints(footprints: list[Footprint], num: int, den: int = 1) -> list[Footprint]:
    """Footprints in another pixel grid: × num / den (PNG pixels -> sampling pixels: den = the
    VAE scale; sampling -> SR pixels: num = 4). Raises InvalidInputError if one is not whole."""
    out: list[Footprint] = []
    for k, (left, top) in enumerate(footprints):
        if (left * num) % den or (top * num) % den:
            raise InvalidInputError(
                f"footprint {k} [{left}, {top}] is not on the sampling grid: it must be a "
                f"multiple of {den // math.gcd(den, num)} px")
        out.append((left * num // den, top * num // den))
    return out
