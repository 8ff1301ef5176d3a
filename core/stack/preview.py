"""Continuous-zoom frames of a zoom stack and the MP4 preview (numpy only; no torch).

Geometry (exact; the Blender renderer is compared against it)
--------------------------------------------------------------
World coordinates: image 0 spans ``X, Y in [-1, 1]`` (x right, y down, independent of the aspect
ratio), and image ``i`` of a stack with zoom factor ``p`` spans ``[-p^-i, p^-i]`` - the centre
``1/p^i`` of image 0. Pixel ``k`` of an image ``n`` pixels wide covers the continuous interval
``[k, k+1]``; its centre is ``k + 0.5`` (the half-pixel / ``align_corners=False`` convention).

The view at zoom level ``l`` (a real number in ``[0, N-1]``) spans ``[-p^-l, p^-l]`` and is drawn
on ``h x w`` output pixels. Output pixel ``(r, c)`` has its centre at world point::

    X = (2 (c + 0.5) / w - 1) * p^-l        Y = (2 (r + 0.5) / h - 1) * p^-l

which is continuous pixel position ``x_i = (X p^i + 1) W / 2`` (likewise ``y_i`` with H) in
image i. Equivalently, output coordinate ``c'`` maps to ``x_i = W/2 + (c' - w/2) * s`` with
``s = (W / w) p^(i - l)`` source pixels per output pixel; so at an integer level ``l = i`` with
``(h, w) == (H, W)`` output pixel centres land exactly on image i's pixel centres.

Which image draws which pixel: the base is image ``b = floor(l)``, the finest whose footprint
covers the whole view. The finer images ``b+1 .. k`` are pasted over it, each inside its own
footprint (the centred rectangle ``|c' - w/2| <= w / (2 p^(i-l))``, same for rows), where ``k``
is the coarsest image whose pixels are no larger than the output's (``s >= 1``): finer images add
nothing an output pixel can show. Footprint edges are anti-aliased by the fraction of each
output pixel they cover. Each image is resampled separably:

* minifying (``s >= 1``): exact area average - output pixel ``[c, c+1]`` maps to
  ``[x_i(c), x_i(c+1)]`` and each source pixel is weighted by its overlap (a box prefilter);
* magnifying (``s < 1``): bilinear at the pixel centre, clamped to the edge pixels.

Both are banded (at most ``ceil(s) + 1`` taps per pixel) and applied as a loop over taps.

At ``s == 1`` both reduce to the same linear interpolation, so the switch is seamless; at an
integer level with ``(h, w) == (H, W)`` the weights are exactly 0 and 1 and the frame is image
``l`` bit for bit.

Off-centre footprints and loops (issues 19, 20): the above is the centred case. In general the
view at level ``l = k + u`` is ``core.zoom.camera_path.level_view``'s rect of image k (top-left
``q``, size ``s = p^-u`` in image k's frame fractions), so output coordinate ``c'`` maps to
``x_k = (q_x + c' s / w) W`` and, in image ``j = k + m`` whose frame starts at ``o_m`` (the
footprints composed), to ``x_j = (q_x - o_m) p^m W + c' s p^m W / w``; image j is pasted inside
its own footprint ``[o_m, o_m + p^-m]``. With a loop image ``j`` is image ``j mod N``.

Zoom speed: :func:`zoom_levels_for_frames` gives ``l(f) = f / F`` for ``F`` frames per level, i.e.
the view scale ``p^(-f/F)`` shrinks by the same factor every frame (constant apparent speed).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..errors import Cancelled, InvalidInputError, WriteError, is_cancelled
from ..zoom.camera_path import level_view
from ..zoom.geometry import check_zoom
from .publish import make_hidden_file
from ..signals import signals_deferred

#: Bounds of the video options, checked before any work (docs/faults.md).
MAX_FRAMES_PER_LEVEL = 10_000
MAX_FPS = 1000.0
MAX_VIDEO_SIDE = 8192  # H.264's largest level (6.2) is 8192 pixels wide
MAX_LOOPS = 1000
#: H.264's largest frame (level 6.2): 139,264 macroblocks of 16 x 16 pixels, e.g. 8192 x 4320.
#: Larger frames encode, but players and hardware decoders refuse them.
MAX_VIDEO_MACROBLOCKS = 139_264

_EPS = 1e-6        # tolerance on levels: 2.9999999 is level 3
_SNAP = 2.0 ** 20  # positions are rounded to 2^-20 px so identity mappings give exact 0/1 weights


# ------------------------------------------------------------------------------ validation
def _check_images(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3 or min(a.shape[:3]) < 1:
        raise InvalidInputError(f"zoom-stack images must have shape (N, H, W, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255)
    return a.astype(np.float32, copy=False)


def _check_out_size(out_size, height: int, width: int) -> tuple[int, int]:
    if out_size is None:
        return height, width
    try:
        h, w = (int(v) for v in out_size)
    except (TypeError, ValueError):
        raise InvalidInputError(f"output size must be (height, width), got {out_size!r}") from None
    if h < 1 or w < 1:
        raise InvalidInputError(f"output size must be positive, got {(h, w)}")
    return h, w


# ------------------------------------------------------------------------- 1-D resampling
def _axis_taps(n_out: int, n_src: int, scale: float, rows: slice,
               offset: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Resampling taps ``(index, weight)``, each ``(len(rows), T)``, of output pixels ``rows``.

    Output coordinate c' maps to source ``offset + c' * scale`` (``offset`` None: the centred
    ``n_src/2 - n_out/2 * scale``). Banded: T is at most ceil(scale) + 1 (2 when magnifying),
    so applying the taps costs O(T) per pixel.
    """
    c = np.arange(rows.start, rows.stop, dtype=np.float64)
    if offset is None:
        offset = n_src / 2 - n_out / 2 * scale

    def to_src(cp):
        return np.round((offset + cp * scale) * _SNAP) / _SNAP

    if scale >= 1.0:
        # Box prefilter: overlap of the output pixel's footprint with each source pixel,
        # clipped to the image (only footprint-edge pixels are affected; they are renormalised).
        e0 = np.clip(to_src(c), 0, n_src)[:, None]
        e1 = np.clip(to_src(c + 1), 0, n_src)[:, None]
        k0 = np.minimum(np.floor(e0), n_src - 1)
        taps = int(np.max(np.ceil(e1) - k0)) if len(c) else 1
        k = k0 + np.arange(max(taps, 1))
        w = np.clip(np.minimum(e1, k + 1) - np.maximum(e0, k), 0, None)
        total = w.sum(axis=1, keepdims=True)
        w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    else:
        # Bilinear at the output pixel centre, clamped to the edge pixel centres.
        t = np.clip(to_src(c + 0.5) - 0.5, 0, n_src - 1)[:, None]
        k = np.floor(t) + np.arange(2)
        f = t - k[:, :1]
        w = np.concatenate([1 - f, f], axis=1)
    idx = np.clip(k, 0, n_src - 1).astype(np.intp)
    return idx, w.astype(np.float32)


def _apply_taps(x: np.ndarray, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Resample axis 0 of ``x``: ``out[n] = sum_t w[n, t] * x[idx[n, t]]`` (a loop over taps only)."""
    out = x[idx[:, 0]] * w[:, 0, None, None]
    for t in range(1, idx.shape[1]):
        out += x[idx[:, t]] * w[:, t, None, None]
    return out


def _coverage(n_out: int, lo: float, hi: float) -> np.ndarray:
    """Fraction of each output pixel ``[c, c+1]`` inside ``[lo, hi]`` (output coordinates)."""
    c = np.arange(n_out, dtype=np.float64)
    lo = np.round(lo * _SNAP) / _SNAP
    hi = np.round(hi * _SNAP) / _SNAP
    return np.clip(np.minimum(c + 1, hi) - np.maximum(c, lo), 0, 1)


def _resample(img: np.ndarray, out_h: int, out_w: int, sy: float, sx: float,
              rows: slice, cols: slice, oy: float | None = None,
              ox: float | None = None) -> np.ndarray:
    """Image ``(H, W, 3)`` resampled onto output pixels ``rows x cols`` (separable: rows, then
    columns); output coordinate ``c'`` reads source ``o + c' * s`` on each axis."""
    yi, yw = _axis_taps(out_h, img.shape[0], sy, rows, oy)
    xi, xw = _axis_taps(out_w, img.shape[1], sx, cols, ox)
    used = slice(int(xi.min()), int(xi.max()) + 1)  # only the columns the second pass reads
    tmp = _apply_taps(img[:, used], yi, yw)                              # (h', W', 3)
    return _apply_taps(tmp.transpose(1, 0, 2), xi - used.start, xw).transpose(1, 0, 2)  # (h', w', 3)


# ---------------------------------------------------------------------------------- frames
def render_zoom_frame(images: np.ndarray, zoom: int, level: float,
                      out_size: tuple[int, int] | None = None, *,
                      footprints: Sequence[Sequence[int]] | None = None,
                      loop: bool = False) -> np.ndarray:
    """The view at continuous zoom ``level``: float32 ``(h, w, 3)`` in [0, 1].

    ``images``: ``(N, H, W, 3)`` float32 in [0, 1] (uint8 is accepted too), outermost first, the
    images each level shows (a stack folder's PNGs). ``out_size``: ``(height, width)``, default
    ``(H, W)``; give it the images' aspect ratio (the view always spans the full frame).
    ``footprints``: ``(left, top)`` of image i+1 inside image i in pixels (None: centred; N of
    them with ``loop``). The view follows ``core.zoom.camera_path`` (the rig's path): level
    ``i`` is image i exactly, in between it pans smoothly inside image floor(level). ``level``
    runs over ``[0, N-1]``, or any number with ``loop`` (modulo N). See the module docstring
    for the pixel geometry.
    """
    imgs = _check_images(images)
    p = check_zoom(zoom)
    n, height, width = imgs.shape[:3]
    h, w = _check_out_size(out_size, height, width)
    base, qx, qy, size = level_view(level, footprints, p, width, height, n, loop)
    count = n if loop else n - 1
    boxes = list(footprints) if footprints is not None else \
        [((width - width // p) / 2, (height - height // p) / 2)] * count

    # Coarsest level whose pixels are no larger than output pixels on both axes (s >= 1).
    need = base - math.log(size, p) + math.log(max(w / width, h / height), p)
    finest = max(int(math.ceil(need - _EPS)), base)
    if not loop:
        finest = min(finest, n - 1)

    frame = _resample(imgs[base], h, w, height / h * size, width / w * size,
                      slice(0, h), slice(0, w), qy * height, qx * width)
    ox = oy = 0.0  # image base+m's frame in image base's frame fractions, size p^-m
    for m in range(1, finest - base + 1):
        left, top = boxes[(base + m - 1) % count]
        ox, oy = ox + left / width * p ** (1 - m), oy + top / height * p ** (1 - m)
        extent = p ** -m / size  # the image's side as a fraction of the view's
        lo_x, lo_y = (ox - qx) / size, (oy - qy) / size
        ay = _coverage(h, lo_y * h, (lo_y + extent) * h)
        ax = _coverage(w, lo_x * w, (lo_x + extent) * w)
        ry, rx = np.flatnonzero(ay), np.flatnonzero(ax)
        if ry.size == 0 or rx.size == 0:
            break  # outside the view or smaller than a pixel, and so is every finer image
        rows, cols = slice(ry[0], ry[-1] + 1), slice(rx[0], rx[-1] + 1)
        zoom_m = float(p) ** m
        fine = _resample(imgs[(base + m) % n], h, w, height / h * size * zoom_m,
                         width / w * size * zoom_m, rows, cols,
                         -lo_y * zoom_m * size * height, -lo_x * zoom_m * size * width)
        alpha = (ay[rows, None] * ax[None, cols]).astype(np.float32)[..., None]
        region = frame[rows, cols]
        frame[rows, cols] = region + alpha * (fine - region)
    return np.clip(frame, 0.0, 1.0, out=frame)


def zoom_levels_for_frames(num_levels: int, frames_per_level: int, direction: str = "in",
                           hold: int = 0, *, loop: bool = False, loops: int = 1) -> np.ndarray:
    """Zoom level of every frame: ``l(f) = f / F`` for ``f = 0 .. (N-1) F`` (``"in"``), reversed for
    ``"out"``, plus ``hold`` still frames repeating the first and the last view.

    With ``loop``: ``N F`` frames per loop (N levels: level N is level 0 again), ``loops`` times,
    levels taken modulo N; the frame after the last would be the first, so the video repeats
    without a cut ("out" runs the cycle backwards from level 0). ``hold`` is refused there (a
    still frame would be the cut).
    An exponential zoom: the view scale ``p^(-f/F)`` changes by the same factor every frame.
    """
    if int(num_levels) < 1:
        raise InvalidInputError(f"a zoom stack needs at least one level, got {num_levels}")
    if int(frames_per_level) < 1:
        raise InvalidInputError(f"frames per level must be at least 1, got {frames_per_level}")
    if int(hold) < 0:
        raise InvalidInputError(f"hold must be zero or more frames, got {hold}")
    if direction not in ("in", "out"):
        raise InvalidInputError(f"zoom direction must be 'in' or 'out', got {direction!r}")
    check_loops(loops, loop)
    f, n = int(frames_per_level), int(num_levels)
    if loop:
        if hold:
            raise InvalidInputError("hold frames would cut a loop: a looping video has none")
        steps = np.arange(n * f * int(loops), dtype=np.float64)
        return np.mod(steps if direction == "in" else -steps, n * f) / f
    levels = np.arange((n - 1) * f + 1, dtype=np.float64) / f
    if direction == "out":
        levels = levels[::-1].copy()
    return np.concatenate([np.full(int(hold), levels[0]), levels, np.full(int(hold), levels[-1])])


def check_loops(loops: int, loop: bool | None = None) -> None:
    """``loops`` must be a whole number 1..MAX_LOOPS, and above 1 only for a looping stack
    (``loop`` None: not known yet)."""
    if isinstance(loops, bool) or not isinstance(loops, (int, np.integer)) \
            or not 1 <= loops <= MAX_LOOPS:
        raise InvalidInputError(f"loops must be a whole number from 1 to {MAX_LOOPS}, got {loops!r}")
    if loops > 1 and loop is False:
        raise InvalidInputError(f"--loops {loops} needs a looping stack (made with --loop); this "
                                "stack zooms from its first level to its last once")


def iter_zoom_frames(images: np.ndarray, zoom: int, levels: Iterable[float],
                     out_size: tuple[int, int] | None = None, *,
                     footprints: Sequence[Sequence[int]] | None = None,
                     loop: bool = False) -> Iterable[np.ndarray]:
    """``render_zoom_frame`` for each level (validates once)."""
    imgs = _check_images(images)
    for lv in levels:
        yield render_zoom_frame(imgs, zoom, lv, out_size, footprints=footprints, loop=loop)


# ----------------------------------------------------------------------------------- video
def _stack_arrays(stack, zoom: int | None) -> tuple[np.ndarray, int, list | None, bool]:
    """``(images, zoom, footprints, loop)`` from a ZoomStack, a stack folder, or an
    (N, H, W, 3) array + zoom (centred, no loop)."""
    if isinstance(stack, (str, os.PathLike)):
        from .stack_io import ZoomStack
        stack = ZoomStack.load(stack)
    if isinstance(stack, np.ndarray):
        if zoom is None:
            raise InvalidInputError("give the zoom factor with an array of images")
        return _check_images(stack), check_zoom(zoom), None, False
    layers = getattr(stack, "layers", None)
    manifest = getattr(stack, "manifest", None)
    if layers is None or not isinstance(manifest, dict):
        raise InvalidInputError(f"expected a zoom stack, a stack folder or an image array, got {type(stack).__name__}")
    p = check_zoom(zoom if zoom is not None else manifest.get("zoom"))
    return _check_images(layers), p, manifest.get("footprints"), bool(manifest.get("loop", False))


def video_size(height: int, width: int, size: int | Sequence[int] | None) -> tuple[int, int]:
    """Even ``(height, width)`` for the video: ``size`` is None (the stack's), an int (the longer
    side; the aspect ratio is kept) or ``(height, width)``. H.264 4:2:0 needs even sides."""
    if size is None:
        h, w = height, width
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 2:
            raise InvalidInputError(f"video size must be at least 2 pixels, got {size}")
        h, w = _scaled(height, width, size)
    else:
        h, w = _check_out_size(size, height, width)
    h, w = max(2, h - h % 2), max(2, w - w % 2)
    if _macroblocks(h, w) > MAX_VIDEO_MACROBLOCKS:
        largest = max((s for s in range(2, MAX_VIDEO_SIDE + 1, 2)
                       if _macroblocks(*_scaled(height, width, s)) <= MAX_VIDEO_MACROBLOCKS), default=2)
        raise InvalidInputError(
            f"a {w}x{h} video is beyond H.264's largest frame (level 6.2: "
            f"{MAX_VIDEO_MACROBLOCKS} macroblocks of 16x16 pixels, e.g. 8192x4320), which players "
            f"refuse: give a video size of at most {largest} pixels for this stack")
    return h, w


def _macroblocks(h: int, w: int) -> int:
    return -(-h // 16) * -(-w // 16)


def _scaled(height: int, width: int, size: int) -> tuple[int, int]:
    """The even (h, w) with longer side ``size`` and the aspect of (height, width)."""
    k = size / max(height, width)
    h, w = max(1, round(height * k)), max(1, round(width * k))
    return max(2, h - h % 2), max(2, w - w % 2)


def check_video_options(frames_per_level: int = 24, fps: float = 24,
                        size: int | Sequence[int] | None = None, direction: str = "in",
                        frame: tuple[int, int] | None = None, loops: int = 1,
                        loop: bool | None = None) -> None:
    """Raise InvalidInputError for a bad video option (cheap: the CLI checks before generating).
    ``frame``: the stack's (height, width) when known, to check the video's frame size too;
    ``loop``: whether the stack loops (None: not known yet; ``loops`` > 1 needs one)."""
    check_loops(loops, loop)
    if isinstance(frames_per_level, bool) or not isinstance(frames_per_level, (int, np.integer)) \
            or not 1 <= frames_per_level <= MAX_FRAMES_PER_LEVEL:
        raise InvalidInputError(f"frames per level must be a whole number from 1 to "
                                f"{MAX_FRAMES_PER_LEVEL}, got {frames_per_level!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.number)) \
            or not math.isfinite(fps) or not 0 < fps <= MAX_FPS:
        raise InvalidInputError(f"frames per second must be a number above 0 and at most "
                                f"{MAX_FPS:g}, got {fps!r}")
    sides = [] if size is None else [size] if isinstance(size, (int, np.integer)) else list(size)
    for side in sides:
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) \
                or not 2 <= side <= MAX_VIDEO_SIDE:
            raise InvalidInputError(f"video size must be a whole number of pixels from 2 to "
                                    f"{MAX_VIDEO_SIDE}, got {side!r}")
    if direction not in ("in", "out"):
        raise InvalidInputError(f"zoom direction must be 'in' or 'out', got {direction!r}")
    if frame is not None:
        video_size(int(frame[0]), int(frame[1]), size)


def check_video_file(path: str | os.PathLike, frames: int, name: str | None = None) -> None:
    """Raise WriteError unless ``path`` is a readable MP4 holding ``frames`` frames.

    The FFmpeg writer does not report FFmpeg's own failures (a full disk, a file-size limit):
    the file is read back (stream copy, no decoding) before it may replace anything. ``name``:
    the file name to show (the final one, not the temporary file's).
    """
    import imageio_ffmpeg

    path = Path(path)
    name = name or path.name
    size = 0
    try:
        size = path.stat().st_size
        found = imageio_ffmpeg.count_frames_and_secs(str(path))[0] if size else 0
    except Exception as exc:  # noqa: BLE001 - any failure to read it back means a broken file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise WriteError(f"the video {name} came out unreadable ({size} bytes; is the disk full or "
                         f"a file-size limit set?): {lines[-1][:120] if lines else type(exc).__name__}"
                         ) from None
    if found != frames:
        raise WriteError(f"the video {name} came out incomplete ({found} of {frames} frames, "
                         f"{size} bytes): is the disk full or a file-size limit set?")


def _temporary_video(out_path: Path) -> Path:
    """The hidden sibling the video is written to (mode: the umask's)."""
    try:
        return make_hidden_file(out_path.parent, f".{out_path.stem}.", ".mp4")
    except OSError as exc:
        raise WriteError(f"cannot write the video in {out_path.parent}: "
                         f"{(exc.strerror or str(exc)).lower()}") from None


def _discard(writer, tmp: Path | None) -> None:
    """Stop FFmpeg (closing the writer waits for it to exit), then remove its file."""
    if writer is not None:
        writer.close()
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def write_preview_video(stack, out_path: str | os.PathLike, frames_per_level: int = 24, fps: float = 24,
                        size: int | Sequence[int] | None = None, *, direction: str = "in", hold: int = 0,
                        zoom: int | None = None, quality_crf: int = 18,
                        progress: Callable[[int, int], None] | None = None, cancel=None,
                        loops: int = 1) -> Path:
    """Write the zoom animation as an H.264 MP4 (yuv420p, plays everywhere) and return its path.

    ``stack``: a ``ZoomStack``, a stack folder, or an ``(N, H, W, 3)`` array (then pass ``zoom``).
    The frames follow the stack's footprints (``core.zoom.camera_path``); a looping stack gives
    N levels per loop, ``loops`` times, and the video repeats without a cut.
    ``size``: None, the longer side in pixels, or ``(height, width)``. ``progress(frame, total)``
    is called after each frame; ``cancel`` (Event or callable) stops with ``Cancelled``. The file
    appears only when complete (written to a temporary sibling, then renamed).
    """
    import imageio_ffmpeg  # the writer's only extra dependency; it bundles an ffmpeg binary

    check_video_options(frames_per_level, fps, size, direction, loops=loops)
    images, p, footprints, loop = _stack_arrays(stack, zoom)
    levels = zoom_levels_for_frames(len(images), frames_per_level, direction, hold, loop=loop,
                                    loops=loops)
    h, w = video_size(images.shape[1], images.shape[2], size)
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".mp4":
        raise InvalidInputError(f"preview video must be an .mp4 file, got {str(out_path)!r}")
    if not out_path.parent.is_dir():
        raise InvalidInputError(f"folder {str(out_path.parent)!r} for the video does not exist")

    # libx264 ships in imageio-ffmpeg's bundled binary; +faststart lets players start at once.
    params = ["-movflags", "+faststart", "-crf", str(int(quality_crf)), "-preset", "medium"]
    tmp: Path | None = None
    writer = None
    try:
        # Ctrl-C / SIGTERM wait until the temporary file and FFmpeg both exist and this try can
        # clean them up: one arriving inside Popen would orphan an FFmpeg that then recreates
        # the file this process had already removed.
        with signals_deferred(redeliver=True):
            tmp = _temporary_video(out_path)
            writer = imageio_ffmpeg.write_frames(tmp, (w, h), fps=fps, codec="libx264",
                                                 quality=None, macro_block_size=2,
                                                 output_params=params)
            writer.send(None)
        for n, lv in enumerate(levels):
            if is_cancelled(cancel):
                raise Cancelled("preview video cancelled; nothing was written")
            frame = render_zoom_frame(images, p, lv, (h, w), footprints=footprints, loop=loop)
            writer.send(np.ascontiguousarray(np.round(frame * 255), dtype=np.uint8))
            if progress is not None:
                progress(n + 1, len(levels))
        writer.close()  # FFmpeg finishes the file
        check_video_file(tmp, len(levels), out_path.name)  # only a complete file may replace the old one
        os.replace(tmp, out_path)
    except OSError as exc:  # FFmpeg died (its pipe broke), or the rename failed
        _discard(writer, tmp)
        raise WriteError(f"could not write the video {out_path.name}: "
                         f"{' '.join(str(exc).split())[:160]}") from None
    except BaseException:
        _discard(writer, tmp)
        raise
    return out_path
