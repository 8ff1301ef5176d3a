"""Zoom-consistent noise on a loop at unit variance (Π_noise on the cycle, docs/sampler.md "Loops").

On a cycle the pixels that hold the loop's vanishing point ("chain" pixels: 1, 2 or 4 per level)
contain a p^N-times smaller copy of themselves: x_k = a_k x_π(k) + o_k, where π(k) is the chain
pixel of level i+1 in k's D_p block, a_k = g·w_a·w_b its tap (gain included) and o_k the taps
on the block's other pixels ("siblings"). Rendered from i.i.d. noise, o_k has variance 1 − a_k²
and is independent round the cycle, so the chain pixels come out at (1 + a^N) / (1 − a^N) > 1
(1.67 at p = 2, N = 2). No i.i.d. noise can be consistent there; instead the inputs are
corrected so that every pixel of every level stays N(0, 1) and Π_noise stays exact:

1. Chain values x with unit variance and cov(x_k, x_π(k)) = a_k — what x_k = a_k x_π(k) + o_k
   needs with var(o_k) = 1 − a_k²: one common factor per cycle, x_k = α_k Z + √(1 − α_k²) n_k
   with α_k α_π(k) = a_k (α = √a when the taps agree round the cycle). n_k and Z are drawn from
   input pixels the render never reads (inside footprints), so the map stays linear in E.
2. o_k = σ_k ζ_k with ζ_k = (x_k − a_k x_π(k)) / σ_k of unit variance: the siblings' component
   along their tap direction v_k = taps / σ_k is replaced by ζ_k, ỹ = y + v_k (ζ_k − v_kᵀ y).
3. Each sibling y_j = β_jᵀ E is a unit-norm combination of the ring inputs of its own subtree
   (disjoint subtrees), so E' = E + Σ_j β_j (ỹ_j − y_j) makes it ỹ_j while its ring inputs stay
   N(0, 1) and uncorrelated (the swap of a Gaussian's projection).

Π_noise(E) on a loop = Π(E + B (K E)): B (N·H·W × chain pixels) holds Σ_j v_kj β_j, K (chain
pixels × N·H·W) the coefficients of ζ_k − v_kᵀ y_k. Every other pixel is untouched. Where the
taps differ round an even cycle (off-centre targets whose phase changes between transitions)
α cannot match every a_k; the least-squares α keeps the deviation small (measured in the tests).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .filters import downsample_weights, noise_gain
from .geometry import Footprint
from .sparse_ops import as_rows, as_stack, coo, quiet, render_operator


def chain_pixels(num_levels: int, height: int, width: int, zoom: int,
                 footprints: list[Footprint]) -> list[np.ndarray]:
    """Per level, the (H, W) mask of pixels whose D_p block chain returns to them round the
    cycle: start from every footprint and keep the pixels whose block in the next level holds
    a kept pixel, until a whole turn changes nothing."""
    n, p = num_levels, zoom
    h, w = height // p, width // p
    kept = []
    for left, top in footprints:
        m = np.zeros((height, width), bool)
        m[top:top + h, left:left + w] = True
        kept.append(m)
    turns = math.ceil(math.log(max(height, width), p)) + 3
    for _ in range(turns):
        before = [m.copy() for m in kept]
        for i in range(n - 1, -1, -1):
            left, top = footprints[i]
            child = kept[(i + 1) % n].reshape(h, p, w, p).any(axis=(1, 3))
            m = np.zeros((height, width), bool)
            m[top:top + h, left:left + w] = child
            kept[i] = m
        if all((a == b).all() for a, b in zip(before, kept)):
            break
    return kept


@lru_cache(maxsize=8)
def _correction(num_levels: int, height: int, width: int, zoom: int,
                footprints: tuple[Footprint, ...], dtype: torch.dtype):
    """(B, K) sparse float64 with E' = E + B (K E), or None where no correction applies."""
    n, p, hw = num_levels, zoom, height * width
    fps = list(footprints)
    chain = chain_pixels(n, height, width, p, fps)
    taps = downsample_weights(p, dtype=torch.float64).numpy() * 1.0
    gain = noise_gain(p)
    render = render_operator(n, height, width, p, gain, fps, loop=True, dtype=dtype).to_sparse_csr()
    crow, col, val = (render.crow_indices().numpy(), render.col_indices().numpy(),
                      render.values().numpy())

    def index(level: int, y: int, x: int) -> int:
        return level * hw + y * width + x

    # chain pixel k -> (its child chain pixel, tap a_k, siblings [(index, tap)])
    links: dict[int, tuple[int, float, list[tuple[int, float]]]] = {}
    for i in range(n):
        left, top = fps[i]
        nxt = (i + 1) % n
        for y, x in zip(*np.nonzero(chain[i])):
            by, bx = (y - top) * p, (x - left) * p
            child, a, siblings = None, 0.0, []
            for dy in range(p):
                for dx in range(p):
                    t = gain * taps[dy] * taps[dx]
                    if chain[nxt][by + dy, bx + dx]:
                        if child is not None:
                            return None  # two chain pixels in one block: not a simple cycle
                        child, a = index(nxt, by + dy, bx + dx), t
                    else:
                        siblings.append((index(nxt, by + dy, bx + dx), t))
            if child is None:
                return None
            links[index(i, y, x)] = (child, a, siblings)
    if not links:
        return None

    cycles, seen = [], set()
    for start in links:
        if start in seen:
            continue
        cycle, k = [], start
        while k not in seen:
            seen.add(k)
            cycle.append(k)
            k = links[k][0]
        cycles.append(cycle)

    # unread inputs for the common factors Z: inside a footprint, not a chain pixel
    free = [index(i, y, x) for i in range(n) for y, x in zip(*np.nonzero(
        _inside(fps[i], height, width, p) & ~chain[i]))]
    if len(free) < len(cycles):
        return None
    alpha: dict[int, float] = {}
    factor: dict[int, int] = {}
    for c, cycle in enumerate(cycles):
        length = len(cycle)
        m = np.zeros((length, length))
        for pos in range(length):
            m[pos, pos] += 1
            m[pos, (pos + 1) % length] += 1
        logs = np.log([links[k][1] for k in cycle])
        sol = np.linalg.lstsq(m, logs, rcond=None)[0]
        for k, s in zip(cycle, np.minimum(np.exp(sol), 1.0)):
            alpha[k], factor[k] = float(s), free[c]

    rows_b, cols_b, vals_b, rows_k, cols_k, vals_k = [], [], [], [], [], []
    column = 0  # one rank-one term v_B · v_Kᵀ per column of B (rows of K)

    def add_term(b_cols, b_vals, k_cols, k_vals) -> None:
        nonlocal column
        rows_b.extend(b_cols)
        cols_b.extend([column] * len(b_cols))
        vals_b.extend(b_vals)
        rows_k.extend([column] * len(k_cols))
        cols_k.extend(k_cols)
        vals_k.extend(k_vals)
        column += 1

    for k, (child, a, siblings) in links.items():
        sib_taps = np.array([t for _, t in siblings])
        sigma = float(np.sqrt((sib_taps**2).sum()))
        betas = []
        for sib, _ in siblings:
            lo, hi = crow[sib], crow[sib + 1]
            if abs(float((val[lo:hi] ** 2).sum()) - 1.0) > 1e-9:
                return None  # a sibling that is not an i.i.d.-rendered unit pixel
            betas.append((col[lo:hi], val[lo:hi]))
        if child == k:
            # a one-level loop: x = o / (1 − a) needs var(o) = (1 − a)², less than the 1 − a²
            # of independent siblings: make them equicorrelated (ρ < 0), ỹ = (c I + d 11ᵀ) y
            m_sib, total = len(siblings), float(sib_taps.sum())
            rho = ((1 - a) ** 2 - sigma**2) / (total**2 - sigma**2)
            if rho < -1 / max(m_sib - 1, 1):
                return None
            c = math.sqrt(1 - rho)
            d = (-c + math.sqrt(c * c + m_sib * rho)) / m_sib
            for cols_j, beta in betas:  # (c − 1) y_j into sibling j's tree
                add_term(cols_j, (c - 1) * beta, cols_j, beta)
            all_cols = np.concatenate([cj for cj, _ in betas])
            all_beta = np.concatenate([bj for _, bj in betas])
            add_term(all_cols, d * all_beta, all_cols, all_beta)  # d Σ y into every tree
            continue
        v = sib_taps / sigma
        # ζ_k = (x_k − a_k x_π(k)) / σ_k with x = α Z + √(1 − α²) n  (n_k = E at k itself):
        # B[:, col] = Σ_j v_kj β_j, K[col] = ζ_k's coefficients − Σ_j v_kj β_jᵀ
        k_cols = [factor[k], k, factor[child], child]
        k_vals = [alpha[k] / sigma, math.sqrt(1 - alpha[k] ** 2) / sigma,
                  -a * alpha[child] / sigma, -a * math.sqrt(1 - alpha[child] ** 2) / sigma]
        b_cols, b_vals = [], []
        for (cols_j, beta), vj in zip(betas, v):
            b_cols.extend(cols_j)
            b_vals.extend(vj * beta)
            k_cols.extend(cols_j)
            k_vals.extend(-vj * beta)
        add_term(b_cols, b_vals, k_cols, k_vals)
    b = coo(rows_b, cols_b, vals_b, (n * hw, column))
    k = coo(rows_k, cols_k, vals_k, (column, n * hw))
    return b, k


def _inside(footprint: Footprint, height: int, width: int, p: int) -> np.ndarray:
    left, top = footprint
    m = np.zeros((height, width), bool)
    m[top:top + height // p, left:left + width // p] = True
    return m


def cycle_correction(num_levels: int, height: int, width: int, zoom: int,
                     footprints: list[Footprint], dtype: torch.dtype = torch.float32):
    """(B, K) of this loop (module docstring), float64 sparse, or None."""
    with quiet():
        return _correction(num_levels, height, width, zoom, tuple(map(tuple, footprints)), dtype)


def correct_cycle_noise(noise: torch.Tensor, zoom: int, footprints: list[Footprint]) -> torch.Tensor:
    """E' = E + B (K E): i.i.d. noise layers (N, C, H, W) whose loop render has unit variance."""
    n, _, height, width = noise.shape
    pair = cycle_correction(n, height, width, zoom, footprints, noise.dtype)
    if pair is None:
        return noise
    device = noise.device if noise.device.type in ("cpu", "cuda") else torch.device("cpu")
    b, k = (m.to(device) for m in pair)
    rows = as_rows(noise.to(device=device, dtype=torch.float64))
    fixed = rows + b @ (k @ rows)
    return as_stack(fixed, n, height, width).to(device=noise.device, dtype=noise.dtype)


__all__ = ["chain_pixels", "correct_cycle_noise", "cycle_correction"]
