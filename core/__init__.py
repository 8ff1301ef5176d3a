"""Powers of Ten core: zoom-stack math, the joint multi-scale sampler, model backends, I/O.

Runs without Blender. The public names below are the stable API (``from core import ...``);
they load lazily (PEP 562) so that ``import core`` is cheap and torch-free, and torch-free
modules such as ``core.stack.stack_io`` and ``core.settings`` import in a Blender whose Python
has no torch yet.

Packages: ``zoom`` (the paper's mathematics and the sampler), ``models`` (model facts, cache,
downloads, memory estimate), ``backends`` (the diffusers pipelines per family), ``stack`` (the
stack folder and its video), ``cli`` (``python -m core``). See docs/architecture.md.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module (relative to this package) that defines it
_LAZY = {
    # zoom-stack operators (Sec. 4.1-4.2)
    "render_image": "zoom.zoom_stack", "render_noise": "zoom.zoom_stack",
    "blend": "zoom.zoom_stack", "downsample": "zoom.zoom_stack",
    "crop_centre": "zoom.zoom_stack",
    # off-centre targets (issue 19) and loops (issue 20)
    "footprints_for_targets": "zoom.geometry", "check_footprints": "zoom.geometry",
    # the joint sampler (Alg. 2)
    "sample_zoom_stack": "zoom.sampler", "SampleResult": "zoom.sampler",
    "make_scheduler": "backends.schedulers",
    # the camera path through a stack (the preview's and the rig's)
    "view_rect": "zoom.camera_path",
    # the stack folder
    "ZoomStack": "stack.stack_io", "read_manifest": "stack.stack_io",
    # running it
    "GenerateSettings": "settings", "generate": "generate", "load_photo": "generate",
    "extend": "extend", "regenerate": "extend",
    # errors
    "P10Error": "errors", "InvalidInputError": "errors", "Cancelled": "errors",
    "StackFormatError": "errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
