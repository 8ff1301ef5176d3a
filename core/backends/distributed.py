"""One zoom across several processes (GPUs) with torch.distributed, as started by ``torchrun``.

Every rank runs the same sampler on the same seeds, so every rank holds the same zoom stack
at every step. Only the model's rows are divided: the 2N conditional/unconditional UNet rows
of a step (N levels × CFG halves) are split into one contiguous shard per rank, each rank runs
its shard (micro-batched as usual), and an all-gather gives every rank all the x̂ rows (small:
N×C×H×W). Each rank then blends and re-renders the same stack (Alg. 1–2) itself, which is
cheaper than sending it around. The result equals the single-process run up to the float
reordering of a different batch split (docs/cli.md "Several GPUs").

NCCL on CUDA, gloo on the CPU. Only rank 0 writes the stack folder and the progress
(``core.cli``). A rank that fails exits non-zero; torchrun then stops the others with SIGTERM,
which every rank turns into a clean stop (nothing is published).
"""

from __future__ import annotations

import datetime
import os

import torch

#: How long a collective waits for a silent peer before failing (a peer that died is normally
#: noticed by torchrun first, which stops every rank at once).
TIMEOUT = datetime.timedelta(minutes=10)


def requested() -> bool:
    """True when this process was started by torchrun (or the like) with more than one rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init() -> None:
    """Join the process group named by torchrun's environment (idempotent)."""
    import torch.distributed as dist

    if not requested() or (dist.is_available() and dist.is_initialized()):
        return
    use_cuda = torch.cuda.is_available()
    if use_cuda:  # "cuda" then means this rank's own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=TIMEOUT)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def shard(total: int, rank: int, size: int) -> slice:
    """This rank's contiguous share of ``total`` rows (the first ranks take one more)."""
    base, extra = divmod(total, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


def gather_rows(local: torch.Tensor, total: int) -> torch.Tensor:
    """All ranks' shards, in rank order: (total, ...) on every rank.

    all_gather needs equal shapes, so shards are padded to the largest and trimmed after."""
    import torch.distributed as dist

    rank, size = world()
    longest = shard(total, 0, size).stop
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    rows = [parts[r][: len(range(total)[shard(total, r, size)])] for r in range(size)]
    return torch.cat(rows)


def sharded() -> bool:
    """Split the model's rows across ranks now? Not while autograd records the call:
    reconstruction guidance differentiates x̂ w.r.t. z_t, and a gather would cut that graph,
    so every rank then computes every row itself (the same result, without the speed-up)."""
    return world()[1] > 1 and not torch.is_grad_enabled()
