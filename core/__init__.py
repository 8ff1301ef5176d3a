"""Powers of Ten core: zoom-stack math, the joint multi-scale sampler, model backends, I/O.

Runs without Blender. The public names load lazily (PEP 562) so that torch-free modules such
as ``core.stack_io`` and ``core.settings`` import in a Blender whose Python has no torch yet.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "render_image": "zoom_stack", "render_noise": "zoom_stack", "blend": "zoom_stack",
    "sample_zoom_stack": "sampler", "SampleResult": "sampler",
    "P10Error": "errors", "InvalidInputError": "errors", "Cancelled": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
