"""The model families: what each is, how to recognise it, where its backend lives. Torch-free.

One table to extend for a new family: its pipeline classes (``model_index.json``), native
size, latent or pixel space, and the ``core.backends`` module that implements it (loaded by name,
so nothing here or in ``core.backends.base`` imports a family).
"""

from __future__ import annotations

import json
import os

from ..errors import InvalidInputError

#: Model families: Stable Diffusion 1.x/2.x, SDXL (latent), DeepFloyd IF (pixel space).
FAMILIES = ("sd", "sdxl", "if")
LATENT_FAMILIES = ("sd", "sdxl")
#: Native sample size in pixels when the model cannot be asked (before loading).
NATIVE_SIZE = {"sd": 512, "sdxl": 1024, "if": 64}
#: Pixels per latent pixel.
VAE_SCALE = 8
#: The ``core.backends`` module of each family (``core.backends.loading`` imports it by name).
FAMILY_MODULES = {"sd": "stable_diffusion", "sdxl": "sdxl", "if": "deepfloyd_if"}

# Supported pipeline classes (model_index.json "_class_name") per family.
PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "LatentConsistencyModelPipeline": "sd",  # LCM-distilled SD (guidance embedded in the UNet)
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "IFPipeline": "if",
}


def pipeline_class(index_path: str) -> str:
    """``_class_name`` of a diffusers ``model_index.json`` ("" if absent or unreadable)."""
    if not index_path or not os.path.isfile(index_path):
        return ""
    try:
        with open(index_path, encoding="utf-8") as f:
            return str(json.load(f).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def family_hint(model: str) -> str:
    """Best guess of a model's family without torch: a local folder's model_index.json, else the name.

    Raises InvalidInputError for a local folder holding an unsupported pipeline.
    """
    cls = pipeline_class(os.path.join(os.path.expanduser(model), "model_index.json"))
    if cls:
        if cls in PIPELINE_CLASSES:
            return PIPELINE_CLASSES[cls]
        raise InvalidInputError(
            f"model {model!r} is a {cls}; supported are Stable Diffusion 1.x/2.x, SDXL and "
            "DeepFloyd IF stage I pipelines"
        )
    name = os.path.basename(model.rstrip("/\\")).lower()
    if name.startswith("if-i-") or "deepfloyd" in model.lower():
        return "if"
    if "xl" in name:
        return "sdxl"
    return "sd"


#: The ×4 super-resolution stages each family offers, in order (``Backend.upscale_stages``).
UPSCALE_STAGES = {"sd": ("x4",), "sdxl": ("x4",), "if": ("if-ii", "x4")}


def upscale_factor(family: str, upscale: int | None, upscaler: str | None) -> int:
    """Output size ÷ sampled size of a run: ``upscale`` (1, 4 or 16, already parsed), or the
    family's default when None (x4 for DeepFloyd IF: its stage II); 1 with upscaler "none"."""
    if [m.strip() for m in (upscaler or "").split(",") if m.strip()] == ["none"]:
        return 1
    if upscale is None:
        return 4 if family == "if" else 1
    return int(upscale) or 1
