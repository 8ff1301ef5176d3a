"""Model backends: one module per family wrapping a diffusers pipeline for the zoom sampler.

Lazy names (PEP 562) keep ``import core.backends`` cheap; torch loads on first use.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Backend": "base", "Conditioning": "base", "LatentBackend": "base",
    "FAMILY_BACKENDS": "base", "register_family": "base",
    "upscale": "upscale", "upscale_plan": "upscale",
    "guided_prediction": "guidance", "batch_slices": "guidance",
    "make_scheduler": "schedulers", "default_steps": "schedulers",
    "check_scheduler_name": "schedulers",
    "ModelCache": "loading", "load_backend": "loading", "load_stage": "loading",
    "detect_family": "loading", "resolve_device": "loading", "default_dtype": "loading",
    "model_source": "loading",
    "StableDiffusionBackend": "stable_diffusion", "SDXLBackend": "sdxl",
    "DeepFloydIFBackend": "deepfloyd_if",
    "IFStageII": "super_resolution", "X4Upscaler": "super_resolution",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
