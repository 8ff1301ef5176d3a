"""Sparse matrices of the zoom-stack's linear pieces over vectorised images (rows and columns
(level, y, x), row-major): D_p, bilinear upsampling, crops, and Π_image / Π_noise as one matrix
(``render_operator``). Built in float64 with numpy indices; ``stack_operators`` and
``cycle_noise`` compose them."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .filters import cycle_depth, downsample_weights
from .geometry import Footprint


@contextmanager
def quiet():
    """Hide torch's notice that sparse CSR support is "beta" while building operators (the
    products used here are long-standing)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        yield


def coo(rows, cols, vals, shape: tuple[int, int]) -> torch.Tensor:
    """A float64 sparse COO matrix from index/value arrays (duplicates summed)."""
    idx = torch.as_tensor(np.stack([np.asarray(rows, np.int64).ravel(),
                                    np.asarray(cols, np.int64).ravel()]))
    return torch.sparse_coo_tensor(idx, torch.as_tensor(np.asarray(vals, np.float64).ravel()),
                                   shape, check_invariants=False).coalesce()


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(h), np.arange(w), indexing="ij")


def downsample_op(h: int, w: int, p: int, gain: float = 1.0) -> torch.Tensor:
    """D_p (times ``gain``) as an (h/p · w/p) x (h · w) matrix: block (y, x) <- taps w ⊗ w."""
    taps = downsample_weights(p, dtype=torch.float64).numpy()
    y, x, a, b = np.meshgrid(np.arange(h // p), np.arange(w // p), np.arange(p), np.arange(p),
                             indexing="ij")
    return coo(y * (w // p) + x, (y * p + a) * w + x * p + b, gain * taps[a] * taps[b],
               (h // p * (w // p), h * w))


def linear_1d(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) 1-D linear interpolation, align_corners=False: torch's own weights."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].T.numpy()


def upsample_op(h: int, w: int, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (``zoom_stack.upsample``) of an h x w image to ``size`` as a matrix."""
    uy, ux = linear_1d(h, size[0]), linear_1d(w, size[1])
    Y, y = np.nonzero(uy)
    X, x = np.nonzero(ux)
    rows = (Y[:, None] * size[1] + X[None, :])
    cols = (y[:, None] * w + x[None, :])
    vals = uy[Y, y][:, None] * ux[X, x][None, :]
    return coo(rows, cols, vals, (size[0] * size[1], h * w))


def select_op(height: int, width: int, top: int, left: int, h: int, w: int,
              col_offset: int = 0, cols_total: int | None = None) -> torch.Tensor:
    """(h · w) x (cols_total) matrix picking the h x w box at (top, left) of an image whose
    pixels start at column ``col_offset``."""
    y, x = grid(h, w)
    return coo(y * w + x, col_offset + (top + y) * width + left + x, np.ones(h * w),
               (h * w, cols_total or height * width))


def outside_op(height: int, width: int, left: int, top: int, h: int, w: int,
               col_offset: int = 0, cols_total: int | None = None) -> torch.Tensor:
    """(1 − M): the pixels outside the h x w footprint at (left, top) kept as they are, of an
    image whose pixels start at column ``col_offset``."""
    y, x = grid(height, width)
    outside = (y * width + x)[~((y >= top) & (y < top + h) & (x >= left) & (x < left + w))]
    return coo(outside, col_offset + outside, np.ones(outside.size),
               (height * width, cols_total or height * width))


def shift(m: torch.Tensor, rows: int, cols: int) -> tuple:
    """(indices, values) of the coalesced ``m`` moved by (rows, cols), for ``assemble``."""
    idx = m.indices() + torch.tensor([[rows], [cols]])
    return idx, m.values()


def assemble(blocks: list[tuple], shape: tuple[int, int], ordered: bool = False) -> torch.Tensor:
    """One coalesced COO matrix from shifted blocks (duplicates summed). ``ordered``: the blocks
    are coalesced and cover disjoint, increasing row ranges, so the result already is."""
    if not blocks:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long),
                                       torch.zeros(0, dtype=torch.float64), shape,
                                       check_invariants=False).coalesce()
    idx = torch.cat([b[0] for b in blocks], dim=1)
    vals = torch.cat([b[1] for b in blocks])
    if ordered:
        return torch.sparse_coo_tensor(idx, vals, shape, is_coalesced=True,
                                       check_invariants=False)
    return torch.sparse_coo_tensor(idx, vals, shape, check_invariants=False).coalesce()


def render_operator(num_levels: int, height: int, width: int, zoom: int, gain: float,
                    footprints: list[Footprint], loop: bool = False,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """R with Π(L) = R · vec(L), rows and columns (level, y, x): ``zoom_stack._render`` as a
    matrix. Level i's rows: image_i = M_i ⊙ g·D_p(image_{i+1}) + (1 − M_i) ⊙ L_i (Alg. 1 line 3),
    unrolled finest first, on a loop from ``cycle_depth`` levels beyond one turn (as ``_render``).
    Kept for the last few configurations (``StackOperators`` and ``cycle_noise`` both need it).
    """
    return _render_operator(num_levels, height, width, zoom, gain,
                            tuple(map(tuple, footprints)), loop, dtype)


@lru_cache(maxsize=4)
def _render_operator(n: int, height: int, width: int, p: int, gain: float,
                     footprints: tuple[Footprint, ...], loop: bool,
                     dtype: torch.dtype) -> torch.Tensor:
    hw = height * width
    start = cycle_depth(height, width, p, dtype) + n if loop else n - 1
    h, w = height // p, width // p
    down = downsample_op(height, width, p, gain)
    into, own = {}, {}  # per level: g·D_p placed into its footprint, and (1 − M) of its layer
    for i, (left, top) in enumerate(footprints):  # N − 1 transitions, N on a loop
        into[i] = torch.sparse.mm(select_op(height, width, top, left, h, w).t(), down)
        own[i] = outside_op(height, width, left, top, h, w, i * hw, n * hw)
    image = select_op(height, width, 0, 0, height, width, (start % n) * hw, n * hw)
    rows: dict[int, torch.Tensor] = {start % n: image} if start < n else {}
    for d in range(start - 1, -1, -1):  # image_i from image_{i+1}: (HW x N·HW) matrices
        i = d % n
        image = (torch.sparse.mm(into[i], image) + own[i]).coalesce()
        if d < n:
            rows[i] = image
    return assemble([shift(rows[i], i * hw, 0) for i in range(n)], (n * hw, n * hw),
                    ordered=True)


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N·H·W, C): one pixel per row, the matrices' column order."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def as_stack(rows: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``as_rows``: (N·H·W, C) -> (N, C, H, W) (a view)."""
    return rows.view(n, h, w, -1).permute(0, 3, 1, 2)
