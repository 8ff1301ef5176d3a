"""Peak tensor memory of a piece of torch code on any device, CPU and ``meta`` included.

    with TensorMemory() as mem:
        unet(x, t, encoder_hidden_states=c)
    mem.peak_bytes        # most bytes held by tensors created inside the block at one time

``torch.cuda.max_memory_allocated`` exists only on CUDA; this counts, through a
TorchDispatchMode, the storages of every tensor an operator returns while it is alive (views
and in-place results share their storage and are counted once). That is what a caching
allocator must hold at least, so it is comparable to ``max_memory_allocated`` minus what
existed before (weights, inputs). Kernel-internal workspaces are not seen. On the ``meta``
device nothing is allocated at all: the same walk gives the activation peak of a full-size
model in milliseconds (how ``core.models.estimate``'s constants were fitted).
"""

from __future__ import annotations

import threading
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemory(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple, list] = {}   # storage key -> [nbytes, live tensor count]
        self.seen: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak_bytes = 0
        self.lock = threading.Lock()

    @staticmethod
    def _key(t: torch.Tensor) -> tuple:
        s = t.untyped_storage()  # a new wrapper per call; _cdata is the storage itself
        return (t.device.type, s._cdata, s.nbytes())

    def _release(self, key: tuple) -> None:
        with self.lock:
            entry = self.live.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] <= 0:
                self.current -= entry[0]
                del self.live[key]

    def _track(self, t: torch.Tensor) -> None:
        ref = self.seen.get(id(t))
        if ref is not None and ref() is t:
            return  # an in-place op returned a tensor already counted
        key = self._key(t)
        with self.lock:
            entry = self.live.get(key)
            if entry is None:
                self.live[key] = [key[2], 1]
                self.current += key[2]
                self.peak_bytes = max(self.peak_bytes, self.current)
            else:
                entry[1] += 1
        self.seen[id(t)] = weakref.ref(t)
        weakref.finalize(t, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out
