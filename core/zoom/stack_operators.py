"""The per-step zoom-stack operations as precomputed sparse linear operators.

Π_image, Π_noise and Laplacian blending (``zoom_stack``) are linear in their input and the same
for every channel, so for one stack configuration (N, H, W, p, footprints, loop, blending) each
is a fixed matrix over the N·H·W pixels of the stack. Built once (cached), a sampling step then
costs a handful of kernels whatever N is, where the reference code issues a few per level and
per scale separation (docs/overhead.md: ~1000 launch-bound kernels per step at N = 8 on a GPU):

    Π_image(L)      = R L                    R = stack of image_i = M_i ⊙ D_p(image_{i+1}) + (1 − M_i) ⊙ L_i
    Π_noise(E)      = R_g E                  the same with D_p scaled by the gain g = 1 / Σw²
    Blending(x̂)    = collapse(A_avg · A_G x̂)
        A_G         every Gaussian level G_j = D_p^j of every observation (layer i's own image,
                    d = 0, and its pixel-aligned region in image i − d)
        A_avg       band_j = G_j − U(G_{j+1}) of each observation, weighted and averaged into
                    the layer's band k = j + d (Sec. 4.2: sums / counts)
        collapse    G_k = band_k + U(G_{k+1}), one bilinear upsample per pyramid level

The operators are built in float64 from the same D_p taps, bilinear weights, footprints and
counts as the reference functions, so results agree with them to float rounding (≤ 1e-6 in
float32, tests/test_stack_operators.py). The reference functions stay the public API and the
definition; the sampler uses these where sparse matrix products exist (CPU, CUDA), the reference
elsewhere (``supported``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .cycle_noise import cycle_correction
from .filters import noise_gain
from .geometry import Footprint, observation_box, pyramid_depth
from .sparse_ops import (as_rows, as_stack, assemble, coo, downsample_op, grid, outside_op,
                         quiet, render_operator, select_op, shift, upsample_op)
from .zoom_stack import SR_BLEND, SR_FEATHER, SR_RIM_WEIGHT, _rim

_FLOAT64 = torch.empty(0, dtype=torch.float64)  # what ``_rim`` builds its weights like

#: Blending methods with an operator form (the ablation "naive" keeps the reference code).
OPERATOR_BLENDS = ("laplacian", *SR_BLEND)


# ------------------------------------------------------------------------------ blending
@dataclass(frozen=True)
class BlendOperator:
    """Laplacian blending as A_avg · A_G, then the collapse (module docstring)."""
    gauss: torch.Tensor        # A_G: (Gaussian coefficients of every observation) x N·H·W
    average: torch.Tensor      # A_avg: (N · Σ_k h_k w_k averaged band coefficients) x (coeffs)
    band_shapes: tuple[tuple[int, int], ...]  # (h_k, w_k) of bands k = 0..top


def blend_operator(num_levels: int, height: int, width: int, zoom: int,
                   footprints: list[Footprint], loop: bool = False, method: str = "laplacian"
                   ) -> BlendOperator:
    """``zoom_stack.blend(images, zoom, method, footprints=..., loop=...)`` as two matrices.

    Observation (i, d): layer i's own image (d = 0) or its pixel-aligned region in image
    (i − d) mod N (``observation_box``). Its Gaussian levels G_j = D_p^j go into A_G; A_avg takes
    band_j = G_j − U(G_{j+1}) (the last: G_top itself) into the layer's band k = j + d with the
    observation's weight over the per-pixel count — ``blend``'s sums / counts, including the SR
    methods' exclusion of a coarser level's invented bands and their border rim.
    """
    n, p, hw = num_levels, zoom, height * width
    invented, feather, rim_weight = (SR_BLEND[method], SR_FEATHER, SR_RIM_WEIGHT) \
        if method in SR_BLEND else (0, 0, 1.0)
    top = pyramid_depth(height, width, p)
    depth = top if loop else min(n - 1, top)
    shapes = tuple((height // p**k, width // p**k) for k in range(top + 1))
    downs = {s: downsample_op(*s, p) for s in shapes[:-1]}
    ups = {s: upsample_op(*shapes[k + 1], s) for k, s in enumerate(shapes[:-1])}

    gauss_blocks, n_coeff = [], 0
    terms = []  # (layer i, band k, weight (h_k, w_k) or None, G_j offset, G_{j+1} offset or None)
    for d in range(depth + 1):
        for i in (range(n) if loop or d == 0 else range(d, n)):
            if d == 0:
                box = (0, 0, height, width)
            else:
                box = observation_box(footprints, height, width, p, i - d, d, loop)
                if box is None:
                    continue
            src = (i - d) % n
            g = select_op(height, width, box[0], box[1], box[2], box[3], src * hw, n * hw)
            offsets = []
            for j in range(top - d + 1):
                if j:
                    g = torch.sparse.mm(downs[shapes[d + j - 1]], g)
                gauss_blocks.append(shift(g, n_coeff, 0))
                offsets.append(n_coeff)
                n_coeff += g.shape[0]
            for j in range(top - d + 1):
                k = j + d
                weight = None
                if d and j < invented:  # a coarser upscaler's guess: only in the border rim,
                    if not feather or d > 1:  # and only the next coarser level's
                        continue
                    weight = rim_weight * _rim(*shapes[k], feather, _FLOAT64).numpy()
                terms.append((i, k, weight, offsets[j], offsets[j + 1] if j < top - d else None))

    counts = {(i, k): np.zeros(shapes[k]) for i in range(n) for k in range(top + 1)}
    for i, k, weight, _, _ in terms:  # the layer's own band (d = 0) counts 1 too
        counts[(i, k)] = counts[(i, k)] + (1.0 if weight is None else weight)
    band_offset = np.cumsum([0] + [n * h * w for h, w in shapes])
    avg_blocks = []
    for i, k, weight, g_off, next_off in terms:
        h, w = shapes[k]
        scale = (1.0 if weight is None else weight) / counts[(i, k)]
        row0 = int(band_offset[k]) + i * h * w
        y, x = grid(h, w)
        ident = coo(y * w + x, y * w + x, scale, (h * w, h * w))
        avg_blocks.append(shift(ident, row0, g_off))
        if next_off is not None:  # − U(G_{j+1}), scaled per output pixel
            up = ups[shapes[k]]
            r = up.indices()[0]
            scaled = torch.sparse_coo_tensor(
                up.indices(), -up.values() * torch.as_tensor(scale.ravel())[r], up.shape,
                check_invariants=False)
            avg_blocks.append(shift(scaled.coalesce(), row0, next_off))
    gauss = assemble(gauss_blocks, (n_coeff, n * hw), ordered=True)
    average = assemble(avg_blocks, (int(band_offset[-1]), n_coeff))
    return BlendOperator(gauss, average, shapes)


# -------------------------------------------------------------------------- known levels
def known_operator(num_levels: int, height: int, width: int, zoom: int,
                   footprints: list[Footprint], loop: bool, known_levels: tuple[int, ...],
                   iterations: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """``known.impose_known`` (no bounds) as matrices: impose(x) = A_x · vec(x) + A_k · vec(known),
    known stacked in ``known_levels`` order. The same passes on matrices over the columns
    [x | known]: a level's footprint becomes D_p of the finer level (fine to coarse), a level
    gets the block-constant correction U(target − D_p(level)) towards the coarser footprint
    (coarse to fine); on a loop the corrections run round the cycle, then Π_image."""
    n, p, hw = num_levels, zoom, height * width
    m, cols = len(known_levels), (num_levels + len(known_levels)) * hw
    h, w = height // p, width // p
    down = downsample_op(height, width, p)
    ys, xs = grid(height, width)
    block_up = coo((ys * width + xs), (ys // p) * w + xs // p, np.ones(hw), (hw, h * w))

    def box(i: int) -> torch.Tensor:
        left, top = footprints[i]
        return select_op(height, width, top, left, h, w)

    def paste(level: torch.Tensor, finer: torch.Tensor, i: int) -> torch.Tensor:
        keep = outside_op(height, width, *footprints[i], h, w)
        return (torch.sparse.mm(keep, level)
                + torch.sparse.mm(box(i).t(), torch.sparse.mm(down, finer))).coalesce()

    def correct(level: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        residual = (target - torch.sparse.mm(down, level)).coalesce()
        return (level + torch.sparse.mm(block_up, residual)).coalesce()

    slot = {k: j for j, k in enumerate(known_levels)}
    rows = [select_op(height, width, 0, 0, height, width,
                      ((n + slot[i]) if i in slot else i) * hw, cols) for i in range(n)]
    if loop:
        start = min(known_levels)
        for _ in range(iterations):
            for j in range(start + 1, start + n):
                i = j % n
                if i not in slot:
                    prev = (j - 1) % n
                    rows[i] = correct(rows[i], torch.sparse.mm(box(prev), rows[prev]))
        stacked = assemble([shift(r, i * hw, 0) for i, r in enumerate(rows)],
                           (n * hw, cols), ordered=True)
        render = render_operator(n, height, width, p, 1.0, footprints, loop=True)
        full = torch.sparse.mm(render, stacked).coalesce()
    else:
        lo = min(known_levels)
        for _ in range(iterations):
            for j in range(n - 2, -1, -1):
                if j not in slot:
                    rows[j] = paste(rows[j], rows[j + 1], j)
            for j in range(lo + 1, n):
                if j not in slot:
                    rows[j] = correct(rows[j], torch.sparse.mm(box(j - 1), rows[j - 1]))
        full = assemble([shift(r, i * hw, 0) for i, r in enumerate(rows)],
                        (n * hw, cols), ordered=True)
    idx, val = full.indices(), full.values()
    on_x = idx[1] < n * hw
    a_x = torch.sparse_coo_tensor(idx[:, on_x], val[on_x], (n * hw, n * hw),
                                  check_invariants=False).coalesce()
    known_idx = idx[:, ~on_x] - torch.tensor([[0], [n * hw]])
    a_k = torch.sparse_coo_tensor(known_idx, val[~on_x], (n * hw, m * hw),
                                  check_invariants=False).coalesce()
    return a_x, a_k


# ------------------------------------------------------------------------ runtime form
def _csr(m: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return m.to(dtype).to_sparse_csr().to(device)


class StackOperators:
    """The operators of one stack configuration on one device, ready to apply.

    Matrices are float64 for float32/float64 stacks (the long sums then round like the
    reference's short ones) and float32 for half-precision stacks (sparse products in fp16 are
    not available everywhere); results are cast back to the stack's dtype."""

    def __init__(self, num_levels: int, height: int, width: int, zoom: int,
                 footprints: list[Footprint], loop: bool, blending: str,
                 device: torch.device, dtype: torch.dtype):
        self.shape = (num_levels, height, width)
        self.op_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else torch.float64
        args = (num_levels, height, width, zoom)
        self.render = _csr(render_operator(*args, 1.0, footprints, loop, dtype), device,
                           self.op_dtype)
        noise = render_operator(*args, noise_gain(zoom), footprints, loop, dtype)
        self.noise = _csr(noise, device, self.op_dtype)
        # on a loop: Π_noise(E + B K E) = R_g E + (R_g B)(K E) (cycle_noise: unit variance)
        pair = cycle_correction(*args, footprints, dtype) if loop else None
        self.noise_fix = None if pair is None else (
            _csr(torch.sparse.mm(noise, pair[0]), device, self.op_dtype),
            _csr(pair[1], device, self.op_dtype))
        op = blend_operator(*args, footprints, loop, blending)
        self.gauss = _csr(op.gauss, device, self.op_dtype)
        self.average = _csr(op.average, device, self.op_dtype)
        self.band_sizes = [num_levels * h * w for h, w in op.band_shapes]
        self.band_shapes = op.band_shapes
        self._compiled = None  # None: not asked for; False: failed, eager; else the compiled fn
        self.zoom, self.footprints, self.loop = zoom, list(footprints), loop
        self._known: dict = {}  # known levels -> (A_x, A_k)

    def _apply(self, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, h, w = self.shape
        out = matrix @ as_rows(x.to(self.op_dtype))
        return as_stack(out, n, h, w).to(x.dtype)

    def render_image(self, layers: torch.Tensor) -> torch.Tensor:
        """Π_image (Alg. 1) of every level: ``zoom_stack.render_image`` to float rounding."""
        return self._apply(self.render, layers)

    def render_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Π_noise (Alg. 1 line 4): ``zoom_stack.render_noise`` to float rounding."""
        if self.noise_fix is None:
            return self._apply(self.noise, noise)
        n, h, w = self.shape
        rows = as_rows(noise.to(self.op_dtype))
        out = self.noise @ rows + self.noise_fix[0] @ (self.noise_fix[1] @ rows)
        return as_stack(out, n, h, w).to(noise.dtype)

    def blend(self, images: torch.Tensor) -> torch.Tensor:
        """Blending (Sec. 4.2): ``zoom_stack.blend`` to float rounding."""
        n = self.shape[0]
        coeffs = self.gauss @ as_rows(images.to(self.op_dtype))
        bands = torch.split(self.average @ coeffs, self.band_sizes)
        image = None
        for band, (h, w) in zip(reversed(bands), reversed(self.band_shapes)):
            band = as_stack(band, n, h, w)  # collapse: G_k = band_k + U(G_{k+1})
            image = band if image is None else band + F.interpolate(
                image, size=(h, w), mode="bilinear", align_corners=False)
        return image.to(images.dtype)

    def consolidate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, images) = (Blending(x̂), Π_image(Blending(x̂))): Alg. 2 lines 12 and 5.
        Through ``torch.compile`` after ``compile()``, eager again if that ever fails."""
        if self._compiled:
            try:
                return self._compiled(images)
            except Exception:  # noqa: BLE001 - no compiler, an unsupported op: stay eager
                self._compiled = False
        return self._consolidate(images)

    def _consolidate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        layers = self.blend(images)
        return layers, self.render_image(layers)

    def known_imposer(self, known: dict[int, torch.Tensor]):
        """impose(images) = ``known.impose_known(images, known, ...)`` (no bounds) to float
        rounding: one sparse product plus the known images' constant part, computed here once
        (call once per run and keep the function)."""
        n, h, w = self.shape
        levels = tuple(sorted(known))
        stacked = torch.stack([known[k] for k in levels])
        if levels not in self._known:  # the matrices depend on which levels are known only
            with quiet():
                a_x, a_k = known_operator(n, h, w, self.zoom, self.footprints, self.loop, levels)
                self._known[levels] = (_csr(a_x, stacked.device, self.op_dtype),
                                       _csr(a_k, stacked.device, self.op_dtype))
        a_x, a_k = self._known[levels]
        const = a_k @ as_rows(stacked.to(self.op_dtype))

        def impose(images: torch.Tensor) -> torch.Tensor:
            out = a_x @ as_rows(images.to(self.op_dtype)) + const
            return as_stack(out, n, h, w).to(images.dtype)
        return impose

    def compile(self) -> None:
        """Compile the consolidation (``torch.compile``: the collapse's upsample-adds fuse; the
        sparse products run as they are) — an option for GPUs, where the step is launch-bound.
        Falls back to eager on the first failure."""
        if self._compiled is None:
            try:
                self._compiled = torch.compile(self._consolidate, dynamic=False)
            except Exception:  # noqa: BLE001 - torch without a working compiler
                self._compiled = False


def supported(device: torch.device, dtype: torch.dtype, blending: str) -> bool:
    """Sparse products exist on CPU and CUDA; other devices (MPS) use the reference code."""
    return torch.device(device).type in ("cpu", "cuda") and blending in OPERATOR_BLENDS \
        and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 2  # an SDXL-size stack of 16 levels holds ~0.3 GB of matrices


def stack_operators(num_levels: int, height: int, width: int, zoom: int,
                    footprints: list[Footprint], loop: bool = False, blending: str = "laplacian",
                    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                    ) -> StackOperators:
    """The operators of this configuration, built once and kept (a few configurations)."""
    device = torch.device(device)
    key = (num_levels, height, width, zoom, tuple(map(tuple, footprints)), loop, blending,
           str(device), dtype)
    ops = _CACHE.get(key)
    if ops is None:
        with quiet():
            ops = StackOperators(num_levels, height, width, zoom, footprints, loop, blending,
                                 device, dtype)
        _CACHE[key] = ops
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return ops


def operator_nnz(ops: StackOperators) -> int:
    """Stored entries of every matrix (memory: about 16 bytes each in float64)."""
    fix = ops.noise_fix or ()
    return sum(int(m.values().numel())
               for m in (ops.render, ops.noise, ops.gauss, ops.average, *fix))


__all__ = ["BlendOperator", "OPERATOR_BLENDS", "StackOperators", "blend_operator",
           "known_operator", "operator_nnz", "stack_operators", "supported"]
