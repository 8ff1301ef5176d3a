"""Zoom-stack geometry in whole pixels: validation and footprints. Stdlib only (no torch),
so the Blender side can check sizes before dependencies are installed."""

from __future__ import annotations

import numbers

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
