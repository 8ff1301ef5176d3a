"""GenerateSettings: everything one ``generate()`` run needs, validated without torch.

Torch-free on purpose (stdlib only): the Blender add-on validates its panel with it before the
heavy dependencies are installed. Checks that need the loaded model (its exact native size,
its family when the name does not tell) are repeated by ``core.generate`` once it is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields

from .errors import InvalidInputError
from .geometry import check_zoom

#: A Stable Diffusion 2.1-base-class model: 512 px, epsilon prediction, 865M-parameter UNet.
#: Fits an 8 GB GPU in fp16 with micro-batching; see docs/backends.md.
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"

#: Scheduler names -> default number of steps. "ddpm" is the paper's sampler (it used 256 steps
#: with Imagen); 100 is a practical default, the deterministic solvers need fewer.
SCHEDULERS: dict[str, int] = {"ddpm": 100, "ddim": 50, "dpmsolver++": 25, "euler": 30}

#: One line per scheduler, for menus (keys as SCHEDULERS).
SCHEDULER_INFO: dict[str, tuple[str, str]] = {
    "ddpm": ("DDPM", "Ancestral sampler used in the paper"),
    "ddim": ("DDIM", "Deterministic, fewer steps"),
    "dpmsolver++": ("DPM-Solver++", "Multistep solver, fewest steps"),
    "euler": ("Euler", "Euler discrete"),
}

#: Devices by name -> (label, description); validate() also accepts "cuda:<index>".
DEVICES: dict[str, tuple[str, str]] = {
    "auto": ("Auto", "Best available: CUDA, ROCm, Apple Metal, then CPU"),
    "cuda": ("CUDA / ROCm", "NVIDIA or AMD GPU"),
    "mps": ("Apple Metal", "Apple silicon GPU"),
    "cpu": ("CPU", "Slow, but always works"),
}

#: Model families: Stable Diffusion 1.x/2.x, SDXL (latent), DeepFloyd IF (pixel space).
FAMILIES = ("sd", "sdxl", "if")
LATENT_FAMILIES = ("sd", "sdxl")
#: Native sample size in pixels when the model cannot be asked (before loading).
NATIVE_SIZE = {"sd": 512, "sdxl": 1024, "if": 64}
#: Pixels per latent pixel.
VAE_SCALE = 8

# Supported pipeline classes (model_index.json "_class_name") per family.
PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
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


def size_multiple(family: str, zoom: int) -> int:
    """Pixel multiple width/height must have: 2p in the sampled space (zoom_stack.check_size)."""
    return (VAE_SCALE if family in LATENT_FAMILIES else 1) * 2 * zoom


@dataclass
class GenerateSettings:
    """One zoom-stack generation. ``prompts`` run outermost (level 0) to innermost.

    width/height are the sampled size in pixels (None: the model's native size; DeepFloyd IF
    samples 64 x 64 and its stage II then upscales 4x). steps None: the scheduler's default
    (``SCHEDULERS``). ``upscaler``: DeepFloyd IF stage II model (None: DeepFloyd/IF-II-L-v1.0,
    "none": keep the 64 px stage I output); ignored by latent models. ``family``: force the
    model family ("sd", "sdxl", "if") when it cannot be detected, e.g. for a .ckpt file.
    """

    prompts: list[str]
    zoom: int = 2
    model: str = DEFAULT_MODEL
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float = 7.5
    scheduler: str = "ddpm"
    seed: int = 0
    negative_prompt: str = ""
    photo: str | None = None
    device: str = "auto"
    micro_batch: int | None = None
    upscaler: str | None = None
    family: str | None = None
    extra: dict = field(default_factory=dict, repr=False)  # unknown keys kept from from_dict

    # ------------------------------------------------------------------ validation
    def validate(self, family: str | None = None) -> "GenerateSettings":
        """Raise InvalidInputError with one line for the first problem found; return self."""
        if isinstance(self.prompts, str):
            raise InvalidInputError("prompts must be a list of strings, one per zoom level")
        if not self.prompts:
            raise InvalidInputError("no prompts: give one prompt per zoom level, outermost first")
        for i, p in enumerate(self.prompts):
            if not isinstance(p, str) or not p.strip():
                raise InvalidInputError(f"the prompt of zoom level {i + 1} is empty")
        check_zoom(self.zoom)
        if self.scheduler not in SCHEDULERS:
            raise InvalidInputError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
            )
        if self.steps is not None and (
            not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1
        ):
            raise InvalidInputError(f"steps must be a whole number >= 1, got {self.steps!r}")
        if not isinstance(self.guidance, (int, float)) or isinstance(self.guidance, bool) \
                or self.guidance != self.guidance or self.guidance < 0:
            raise InvalidInputError(f"guidance must be a number >= 0, got {self.guidance!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise InvalidInputError(f"seed must be a whole number >= 0, got {self.seed!r}")
        if self.micro_batch is not None and (
            not isinstance(self.micro_batch, int) or isinstance(self.micro_batch, bool)
            or self.micro_batch < 1
        ):
            raise InvalidInputError(
                f"micro-batch size must be a whole number >= 1 (or empty), got {self.micro_batch!r}"
            )
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError("no model given: a hub id, a model folder or a .safetensors file")
        if self.family is not None and self.family not in FAMILIES:
            raise InvalidInputError(
                f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}"
            )
        if not isinstance(self.negative_prompt, str):
            raise InvalidInputError("the negative prompt must be text")
        self._validate_device()
        family = family or self.family or family_hint(self.model)
        mult = size_multiple(family, self.zoom)
        for name in ("width", "height"):
            n = getattr(self, name)
            if n is None:
                continue
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0 or n % mult:
                raise InvalidInputError(
                    f"{name} {n!r} must be a positive multiple of {mult} pixels for zoom "
                    f"{self.zoom} with this model"
                )
        if self.photo is not None:
            path = os.path.expanduser(str(self.photo))
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise InvalidInputError(f"cannot read the photo {self.photo!r}: no such file")
        return self

    def _validate_device(self) -> None:
        d = self.device
        ok = isinstance(d, str) and (
            d in DEVICES
            or (d.startswith("cuda:") and d[5:].isdigit())
        )
        if not ok:
            raise InvalidInputError(
                f"unknown device {d!r}; use auto, cpu, cuda, cuda:<index> or mps"
            )

    @property
    def num_levels(self) -> int:
        return len(self.prompts)

    def resolved_steps(self) -> int:
        return self.steps if self.steps is not None else SCHEDULERS[self.scheduler]

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompts"] = list(self.prompts)
        extra = d.pop("extra")
        return {**extra, **d}

    @classmethod
    def from_dict(cls, data: dict) -> "GenerateSettings":
        """Build from a dict (prompt-file JSON, manifest); unknown keys are kept in ``extra``."""
        if not isinstance(data, dict):
            raise InvalidInputError("settings must be a JSON object")
        if "prompts" not in data:
            raise InvalidInputError("settings have no 'prompts' list")
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        prompts = known.get("prompts")
        if not isinstance(prompts, (list, tuple)):
            raise InvalidInputError("'prompts' must be a list of strings, one per zoom level")
        known["prompts"] = list(prompts)
        if isinstance(known.get("photo"), bool):  # a manifest records only whether one was used
            extra["photo"] = known.pop("photo")
        return cls(**known, extra=extra)


__all__ = [
    "DEFAULT_MODEL", "DEVICES", "FAMILIES", "GenerateSettings", "LATENT_FAMILIES", "NATIVE_SIZE",
    "PIPELINE_CLASSES", "SCHEDULER_INFO", "SCHEDULERS", "VAE_SCALE", "family_hint", "size_multiple",
]
