"""Classifier-free guidance with every prediction of a step in one (optionally micro-batched) call."""

from __future__ import annotations

from typing import Callable

import torch

from . import distributed

Rows = dict[str, torch.Tensor]


def batch_slices(total: int, micro_batch: int | None) -> list[slice]:
    """Consecutive slices of at most ``micro_batch`` rows (one slice when None)."""
    step = total if not micro_batch else max(1, int(micro_batch))
    return [slice(i, min(i + step, total)) for i in range(0, total, step)]


def batched_call(model: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                 rows: Rows, micro_batch: int | None) -> torch.Tensor:
    """``model(x, t, **rows)`` over the batch in chunks of ``micro_batch`` rows, concatenated.

    Each row is computed from its own inputs only, so chunking changes memory, not the result
    (up to kernel-level float reordering). Under torchrun each rank computes its shard of the
    rows and all ranks gather the rest (``core.backends.distributed``).
    """
    total = x.shape[0]
    rank, size = distributed.world()
    part = slice(0, total)
    if distributed.sharded() and total >= size:  # torchrun: this rank's rows, then all-gather
        part = distributed.shard(total, rank, size)
    start = part.start
    outs = [model(x[s], t[s], **{k: v[s] for k, v in rows.items()})
            for s in (slice(start + a.start, start + a.stop)
                      for a in batch_slices(part.stop - part.start, micro_batch))]
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return distributed.gather_rows(out, total) if part != slice(0, total) else out


def guided_prediction(model: Callable[..., torch.Tensor], x: torch.Tensor, t: torch.Tensor,
                      cond: Rows, uncond: Rows | None, scale: float,
                      micro_batch: int | None = None) -> torch.Tensor:
    """ε̂ = ε(x, ∅) + w (ε(x, y) - ε(x, ∅)) (the paper's Eq. 2) for a batch of B rows.

    The 2B conditional and unconditional predictions go through ``model`` together (one call
    unless ``micro_batch`` splits them). ``uncond`` rows are broadcast from one row if needed.
    Guidance is applied on the raw model output; it is linear, so for v- or x0-prediction
    models it equals guidance on ε.
    """
    b = x.shape[0]
    if uncond is None or scale == 1.0:
        return batched_call(model, x, t, cond, micro_batch)
    rows = {k: torch.cat([uncond[k].expand(b, *uncond[k].shape[1:]), v]) for k, v in cond.items()}
    out = batched_call(model, torch.cat([x, x]), torch.cat([t, t]), rows, micro_batch)
    out_uncond, out_cond = out.chunk(2)
    return out_uncond + scale * (out_cond - out_uncond)
