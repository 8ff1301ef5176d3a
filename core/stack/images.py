"""Reading image files of any bit depth as 8-bit-range RGB (Pillow + numpy, imported lazily).

Pillow's ``convert("RGB")`` clips 16- and 32-bit greyscale ("I;16", "I") at 255 instead of
scaling, which turns a 16-bit greyscale PNG (photo or layer) white; these helpers scale it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

_WIDE_INT = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # 16-bit greyscale (Pillow's "I": 16-bit PNG/TIFF)


def to_float_rgb(im: "Image.Image") -> "np.ndarray":
    """``(H, W, 3)`` float32 in [0, 1], top row first, from an open Pillow image of any mode."""
    import numpy as np

    if im.mode in _WIDE_INT or im.mode == "F":
        scale = 1.0 if im.mode == "F" else 65535.0  # float images are taken as [0, 1]
        grey = np.clip(np.asarray(im, dtype=np.float32) / np.float32(scale), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / np.float32(255.0)


def to_rgb8(im: "Image.Image") -> "Image.Image":
    """An 8-bit RGB Pillow image of ``im``, wide greyscale scaled (not clipped) to 0..255."""
    import numpy as np
    from PIL import Image

    if im.mode in _WIDE_INT or im.mode == "F":
        grey = np.rint(to_float_rgb(im)[..., 0] * 255.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return im.convert("RGB")
