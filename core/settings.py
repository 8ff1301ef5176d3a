"""GenerateSettings: everything one ``generate()`` run needs, validated without torch.

Torch-free on purpose (stdlib only): the Blender add-on validates its panel with it before the
heavy dependencies are installed. Checks that need the loaded model (its exact native size,
its family when the name does not tell) are repeated by ``core.generate`` once it is loaded.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields

from .errors import InvalidInputError
from .models.families import (FAMILIES, FLOW_FAMILIES, LATENT_FAMILIES, NATIVE_SIZE,
                              PIPELINE_CLASSES, VAE_SCALE, family_hint, pipeline_class,
                              upscale_factor)
from .models.fast_models import FLOW_DEFAULT_SCHEDULER
from .zoom.geometry import check_zoom

#: A Stable Diffusion 2.1-base-class model: 512 px, epsilon prediction, 865M-parameter UNet.
#: Fits an 8 GB GPU in fp16 with micro-batching; see docs/backends.md.
DEFAULT_MODEL = "stabilityai/stable-diffusion-2-1-base"

#: Scheduler names -> default number of steps. "ddpm" is the paper's sampler (it used 256 steps
#: with Imagen); "sde-dpmsolver++" is the stochastic DPM-Solver++(2M) with zoom-consistent
#: noise; "lcm" the renoise (consistency) sampler of LCM / LCM-LoRA / Turbo models.
SCHEDULERS: dict[str, int] = {"ddpm": 100, "ddim": 50, "dpmsolver++": 25, "euler": 30,
                              "sde-dpmsolver++": 20, "lcm": 8, "flow-euler": 28,
                              "flow-renoise": 28}
#: Samplers of rectified-flow models (SD3, FLUX: ``FLOW_FAMILIES``), and only of those.
FLOW_SCHEDULERS = ("flow-euler", "flow-renoise")
#: "auto": the family's default below, or the few-step model's (core.models.fast_models).
SCHEDULER_CHOICES = ("auto", *SCHEDULERS)
#: Scheduler per model family when the settings say "auto": the best success at the fewest
#: model evaluations on the analytic priors (benchmarks/samplers.py, docs/sampler.md).
DEFAULT_SCHEDULER: dict[str, str] = {"sd": "sde-dpmsolver++", "sdxl": "sde-dpmsolver++",
                                     "if": "sde-dpmsolver++", "sd3": FLOW_DEFAULT_SCHEDULER,
                                     "flux": FLOW_DEFAULT_SCHEDULER}
#: One line per scheduler, for menus (keys as SCHEDULER_CHOICES; the add-on's enum is built
#: from this).
SCHEDULER_INFO: dict[str, tuple[str, str]] = {
    "auto": ("Auto", "The model's best: SDE DPM-Solver++, or LCM for LCM/LCM-LoRA/Turbo models"),
    "ddpm": ("DDPM", "Ancestral sampler used in the paper"),
    "ddim": ("DDIM", "Deterministic, fewer steps; loses levels at zoom 4"),
    "dpmsolver++": ("DPM-Solver++", "Deterministic multistep solver; loses levels at zoom 4"),
    "euler": ("Euler", "Euler discrete"),
    "sde-dpmsolver++": ("SDE DPM-Solver++", "Stochastic multistep solver with zoom-consistent "
                        "noise: keeps levels together at few steps"),
    "lcm": ("LCM", "Few-step renoise sampler for LCM, LCM-LoRA and Turbo models"),
    "flow-euler": ("Flow Euler", "SD3/FLUX: deterministic Euler on the rectified flow"),
    "flow-renoise": ("Flow Renoise", "SD3/FLUX: x̂ re-noised with zoom-consistent noise each "
                     "step: keeps levels together"),
}

#: Devices by name -> (label, description); validate() also accepts "cuda:<index>".
DEVICES: dict[str, tuple[str, str]] = {
    "auto": ("Auto", "Best available: CUDA, ROCm, Apple Metal, then CPU"),
    "cuda": ("CUDA / ROCm", "NVIDIA or AMD GPU"),
    "mps": ("Apple Metal", "Apple silicon GPU"),
    "cpu": ("CPU", "Slow, but always works"),
}

#: Output size ÷ sampled size: 1 (none), 4 (one ×4 super-resolution stage, every family),
#: 16 (two: DeepFloyd IF stage II, then the x4 upscaler).
UPSCALE_FACTORS = (1, 4, 16)

#: Bounds checked before any model loads (docs/faults.md). Every supported model is trained with
#: a 1000-step schedule, and a scheduler cannot take more inference steps than that;
#: ``core.generate`` repeats the check against the loaded model's own schedule.
MAX_STEPS = 1000
#: Classifier-free guidance above this only saturates the images (usual values: 1-15).
MAX_GUIDANCE = 100.0
#: Seeds are 64-bit signed on every device's generator.
MAX_SEED = 2**63 - 1
#: Largest sampled side as a multiple of the model's native size (memory grows with its square;
#: content quality falls long before). DeepFloyd IF's stage II then upscales 4x.
MAX_SIZE_FACTOR = 4
#: Float32 copies of the stack's full-resolution RGB images alive at once (decoded pixels,
#: pixel-space blending and rendering, the 8-bit quantisation, the preview), used by the
#: memory bound of ``check_memory``.
PIXEL_COPIES = 8

def _whole(value) -> int | None:
    """``value`` as an int if it is a whole number (int, or a float such as JSON's 64.0), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def available_memory() -> int | None:
    """Bytes of memory this machine can still give a process (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def output_size(family: str, width: int | None, height: int | None, upscaler: str | None,
                upscale: int | None = None) -> tuple[int, int]:
    """(height, width) of the finished layers: the sampled size times the upscale factor
    (None: the family's default, x4 for IF's stage II unless ``upscaler`` is "none")."""
    native = NATIVE_SIZE[family]
    h, w = height or native, width or native
    factor = upscale_factor(family, parse_upscale(upscale), upscaler)
    return factor * h, factor * w


def check_memory(settings: "GenerateSettings", family: str) -> None:
    """Raise InvalidInputError when the sizes cannot fit, before any model loads.

    A simple, conservative bound (one place to plug a finer estimator into): each sampled side
    at most ``MAX_SIZE_FACTOR`` times the model's native size, and the stack's full-resolution
    images (N levels x H x W x 3 float32, ``PIXEL_COPIES`` copies) within the memory this
    machine has available. The model's own activations are not counted (micro-batching bounds
    them; running out of device memory there is reported as out-of-memory).
    """
    native = NATIVE_SIZE[family]
    limit = MAX_SIZE_FACTOR * native
    for name in ("width", "height"):
        n = getattr(settings, name)
        if n is not None and n > limit:
            raise InvalidInputError(
                f"{name} {n} is too large for this model: at most {limit} pixels "
                f"({MAX_SIZE_FACTOR}x its native {native})")
    h, w = output_size(family, settings.width, settings.height, settings.upscaler, settings.upscale)
    need = len(settings.prompts) * h * w * 3 * 4 * PIXEL_COPIES
    have = available_memory()
    if have is not None and need > have:
        raise InvalidInputError(
            f"{len(settings.prompts)} levels of {w}x{h} pixels need about {need / 2**30:.1f} GiB "
            f"of memory, more than the {have / 2**30:.1f} GiB available: use fewer levels or a "
            "smaller size")


def check_scheduler_family(scheduler: str, family: str) -> None:
    """Rectified-flow families take the flow samplers only, the others every other sampler."""
    if scheduler == "auto" or (scheduler in FLOW_SCHEDULERS) == (family in FLOW_FAMILIES):
        return
    if family in FLOW_FAMILIES:
        raise InvalidInputError(f"scheduler {scheduler!r} does not fit a rectified-flow model "
                                f"(SD3, FLUX): use auto, {' or '.join(FLOW_SCHEDULERS)}")
    raise InvalidInputError(f"scheduler {scheduler!r} is for rectified-flow models (SD3, FLUX) "
                            "only: choose another, or auto")
#: Largest photo accepted, in pixels (Pillow's own decompression-bomb warning threshold, ~89
#: megapixels): it is decoded whole, in memory, before being resized to the stack's size.
MAX_PHOTO_PIXELS = 89_478_485


def check_photo(path: str) -> None:
    """InvalidInputError unless ``path`` is an image of at most ``MAX_PHOTO_PIXELS`` (read from
    its header: a decompression bomb is refused before it is decoded). Skipped without Pillow
    (the add-on before its dependencies are installed): loading checks it then."""
    import warnings

    try:
        from PIL import Image
    except ImportError:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                im.verify()  # the whole file's structure (PNG checksums, truncation)
    except Image.DecompressionBombError:
        raise InvalidInputError(f"the photo {path!r} has far too many pixels to decode (a "
                                "decompression bomb?): use an image of at most 89 megapixels") from None
    except Exception as exc:  # noqa: BLE001 - anything Pillow cannot read: not an image
        raise InvalidInputError(f"the photo {path!r} is not an image Pillow can read (PNG, JPEG, "
                                f"WebP, TIFF ...): {type(exc).__name__}") from None
    if w * h > MAX_PHOTO_PIXELS:
        raise InvalidInputError(f"the photo {path!r} is {w} x {h} pixels ({w * h / 1e6:.0f} "
                                "megapixels): at most 89 megapixels; scale it down first")


def check_lora(lora: str) -> None:
    """InvalidInputError when a LoRA given as a path (not a hub id ``owner/name``) is missing."""
    path = os.path.expanduser(lora.strip())
    local = (os.path.isabs(path) or path.startswith(".") or path.count("/") != 1 or "\\" in path
             or path.lower().endswith((".safetensors", ".bin", ".ckpt", ".pt", ".pth")))
    if local and not os.path.exists(path):
        raise InvalidInputError(f"the LoRA {lora!r} does not exist: give a .safetensors file, a "
                                "LoRA folder or a hub id (owner/name)")


def parse_upscale(value) -> int | None:
    """An upscale factor from user input: 1/4/16, "x4", "×4", "none"/"off" (1); None stays None."""
    if value is None or isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().lower().lstrip("x×")
    if text in ("none", "off", "no", ""):
        return 1
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(
            f"upscale must be one of {', '.join(map(str, UPSCALE_FACTORS))}, got {value!r}") from None


def upscaler_models(models: str | None) -> list[str]:
    """The comma-separated upscaler models of ``GenerateSettings.upscaler``, one per ×4 stage."""
    return [m.strip() for m in (models or "").split(",") if m.strip()]


def size_multiple(family: str, zoom: int) -> int:
    """Pixel multiple width/height must have: 2p in the sampled space (zoom_stack.check_size)."""
    return (VAE_SCALE if family in LATENT_FAMILIES else 1) * 2 * zoom


def check_targets(targets, transitions: int, what: str = "target") -> list[list[float]] | None:
    """``targets`` as a list of ``[x, y]`` fractions of the frame (a bare ``[x, y]`` is one
    pair), one per transition or one for all; InvalidInputError naming the first bad entry."""
    if targets is None:
        return None
    if isinstance(targets, (list, tuple)) and len(targets) == 2 \
            and all(_is_number(v) for v in targets):
        targets = [targets]  # a single pair: the same for every transition
    if isinstance(targets, (str, bytes)) or not isinstance(targets, (list, tuple)) or not targets:
        raise InvalidInputError(f"{what}s must be a list of [x, y] fractions of the frame, one "
                                f"per transition, got {targets!r}")
    out = []
    for i, pair in enumerate(targets):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 \
                or not all(_is_number(v) and 0 <= v <= 1 for v in pair):
            raise InvalidInputError(f"{what} {i + 1} must be [x, y] with fractions of the frame "
                                    f"from 0 to 1 (0.5, 0.5 = centre), got {pair!r}")
        out.append([float(pair[0]), float(pair[1])])
    if len(out) != 1 and len(out) != transitions:
        raise InvalidInputError(f"{len(out)} {what}s given for {transitions} transition(s) "
                                f"between levels: give one per transition, or one for all")
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class GenerateSettings:
    """One zoom-stack generation. ``prompts`` run outermost (level 0) to innermost.

    width/height are the sampled size in pixels (None: the model's native size; DeepFloyd IF
    samples 64 x 64). scheduler "auto", steps None and guidance None take the model's defaults
    (``resolved``: the family's ``DEFAULT_SCHEDULER`` and 7.5, or a few-step model's, see
    core.models.fast_models); guidance <= 1 means no classifier-free guidance. ``lora``: a LoRA (hub
    id, folder or .safetensors file) loaded into the model, e.g. LCM-LoRA. ``upscale``:
    output size ÷ sampled size, 1, 4 or 16 (``UPSCALE_FACTORS``; None: the family's default,
    4 for DeepFloyd IF = its stage II, 1 otherwise); every ×4 stage is sampled jointly.
    ``upscaler``: the models of those stages, comma-separated in order (None: the defaults,
    DeepFloyd/IF-II-L-v1.0 then stabilityai/stable-diffusion-x4-upscaler for IF, the x4
    upscaler for SD/SDXL; "none": no upscaling). ``pixel_blend``: blend in pixel space
    (decode -> blend -> encode) for timesteps t < pixel_blend · T (0: latents only).
    ``family``: force the model family ("sd", "sdxl", "if", "sd3", "flux") when it cannot be
    detected,
    e.g. for a .ckpt file.
    ``photo_level``: the level the photo shows exactly (0 = outermost: zoom into the photo,
    -1 = finest: zoom out of it; docs/sampler.md, "Known levels").
    ``targets``: where each level sits inside the coarser one: None (centred), or a list of
    ``[x, y]`` fractions of the frame (0, 0 top-left; 0.5, 0.5 the centre), one per transition
    (N-1, or N with ``loop``), or a single pair for every transition; the footprint's centre
    lands as close to it as the frame and the pixel grid allow (``transition_targets``).
    ``loop``: a cyclic stack, level 0 is the finer level of level N-1 (needs 2+ levels).
    """

    prompts: list[str]
    zoom: int = 2
    model: str = DEFAULT_MODEL
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str = "auto"
    seed: int = 0
    negative_prompt: str = ""
    photo: str | None = None
    photo_level: int = 0
    device: str = "auto"
    micro_batch: int | None = None
    upscaler: str | None = None
    family: str | None = None
    upscale: int | None = None
    pixel_blend: float = 0.0
    lora: str | None = None
    targets: list | None = None
    loop: bool = False
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
        self.zoom = check_zoom(self.zoom)  # 2.0 (JSON) -> 2
        if not isinstance(self.model, str) or not self.model.strip():
            raise InvalidInputError("no model given: a hub id, a model folder or a .safetensors file")
        if not isinstance(self.negative_prompt, str):
            raise InvalidInputError("the negative prompt must be text")
        for name in ("scheduler", "device"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"{name} must be text, got {getattr(self, name)!r}")
        for name in ("family", "upscaler"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"{name} must be text, got {getattr(self, name)!r}")
        if self.photo is not None and not isinstance(self.photo, (str, os.PathLike)):
            raise InvalidInputError(f"photo must be a file path, got {self.photo!r}")
        if self.scheduler not in SCHEDULER_CHOICES:
            raise InvalidInputError(
                f"unknown scheduler {self.scheduler!r}; choose one of {', '.join(SCHEDULER_CHOICES)}"
            )
        if self.steps is not None:
            steps = _whole(self.steps)
            if steps is None or not 1 <= steps <= MAX_STEPS:
                raise InvalidInputError(
                    f"steps must be a whole number from 1 to {MAX_STEPS} (the models' training "
                    f"schedule), got {self.steps!r}")
            self.steps = steps
        if self.lora is not None and (not isinstance(self.lora, str) or not self.lora.strip()):
            raise InvalidInputError("lora must be a hub id, a LoRA folder or a .safetensors file")
        if self.guidance is not None and (
                not isinstance(self.guidance, (int, float)) or isinstance(self.guidance, bool)
                or not math.isfinite(self.guidance) or not 0 <= self.guidance <= MAX_GUIDANCE):
            raise InvalidInputError(
                f"guidance must be a number from 0 to {MAX_GUIDANCE:g}, got {self.guidance!r}")
        seed = _whole(self.seed)
        if seed is None or not 0 <= seed <= MAX_SEED:
            raise InvalidInputError(f"seed must be a whole number from 0 to 2**63-1, got {self.seed!r}")
        self.seed = seed
        if self.micro_batch is not None:
            micro = _whole(self.micro_batch)
            if micro is None or micro < 1:
                raise InvalidInputError(
                    f"micro-batch size must be a whole number >= 1 (or empty), got {self.micro_batch!r}"
                )
            self.micro_batch = micro
        if self.family is not None and self.family not in FAMILIES:
            raise InvalidInputError(
                f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}"
            )
        self._validate_device()
        self.upscale = parse_upscale(self.upscale)
        if self.upscale is not None and self.upscale not in UPSCALE_FACTORS:
            raise InvalidInputError(
                f"upscale must be one of {', '.join(map(str, UPSCALE_FACTORS))}, got {self.upscale!r}")
        if self.upscaler is not None and not isinstance(self.upscaler, str):
            raise InvalidInputError("upscaler must be text: model ids or folders, comma-separated")
        if upscaler_models(self.upscaler) == ["none"] and self.upscale not in (None, 1):
            raise InvalidInputError(f"upscaler 'none' contradicts upscale {self.upscale}; give one of them")
        if not isinstance(self.pixel_blend, (int, float)) or isinstance(self.pixel_blend, bool) \
                or not 0 <= self.pixel_blend <= 1:
            raise InvalidInputError(f"pixel blend must be a fraction from 0 to 1, got {self.pixel_blend!r}")
        family = family or self.family or family_hint(self.model)
        check_scheduler_family(self.scheduler, family)
        models = upscaler_models(self.upscaler)
        if self.upscale is None and models and models != ["none"]:
            self.upscale = 4 ** len(models)  # --upscaler alone: one x4 stage per model named
        if self.pixel_blend and family not in LATENT_FAMILIES:
            raise InvalidInputError(
                "pixel blend applies to latent models (Stable Diffusion, SDXL); DeepFloyd IF "
                "samples pixels and always blends them: leave it at 0")
        if (self.upscale or 1) > 4 and family != "if":
            raise InvalidInputError(
                f"upscale {self.upscale} is offered for DeepFloyd IF only (stage II, then the x4 "
                "upscaler); choose 1 or 4")
        mult = size_multiple(family, self.zoom)
        for name in ("width", "height"):
            n = getattr(self, name)
            if n is None:
                continue
            whole = _whole(n)
            if whole is None or whole <= 0 or whole % mult:
                raise InvalidInputError(
                    f"{name} {n!r} must be a positive multiple of {mult} pixels for zoom "
                    f"{self.zoom} with this model"
                )
            setattr(self, name, whole)
        check_memory(self, family)
        n = len(self.prompts)
        level = _whole(self.photo_level)
        if level is None:
            raise InvalidInputError(f"photo level must be a whole number (0 = outermost, -1 = the "
                                    f"finest), got {self.photo_level!r}")
        self.photo_level = level
        if not -n <= self.photo_level < n:
            raise InvalidInputError(
                f"photo level {self.photo_level!r} is out of range: the stack has levels "
                f"0..{n - 1} (-1 = the finest)")
        self._validate_loop_and_targets()
        if self.photo is not None:
            path = os.path.expanduser(str(self.photo))
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise InvalidInputError(f"cannot read the photo {self.photo!r}: no such file")
            check_photo(path)
        if self.lora is not None:
            check_lora(self.lora)
        return self

    def _validate_loop_and_targets(self) -> None:
        if not isinstance(self.loop, bool):
            raise InvalidInputError(f"loop must be true or false, got {self.loop!r}")
        if self.loop and len(self.prompts) < 2:
            raise InvalidInputError("a loop needs at least 2 levels: level 0 must follow the last")
        self.targets = check_targets(self.targets, self.num_transitions)

    @property
    def num_transitions(self) -> int:
        """Level-to-level transitions: N-1, or N with ``loop`` (the last one N-1 -> 0)."""
        return len(self.prompts) if self.loop else len(self.prompts) - 1

    def transition_targets(self) -> list[tuple[float, float]] | None:
        """One (x, y) target per transition (a single pair repeated), or None when centred."""
        if self.targets is None:
            return None
        pairs = [(float(x), float(y)) for x, y in self.targets]
        return pairs * self.num_transitions if len(pairs) == 1 else pairs

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

    def resolved(self, family: str | None = None, scheduler_class: str = "") -> dict:
        """The sampler this run uses: {"scheduler", "steps", "guidance", "fast_model",
        "scheduler_config"}. Explicit settings win; "auto"/None take the few-step model's
        defaults (LCM, LCM-LoRA, Turbo: core.models.fast_models) or the family's."""
        from .models.fast_models import DEFAULT_GUIDANCE, FAMILY_GUIDANCE, detect_fast_model

        family = family or self.family or family_hint(self.model)
        fast = detect_fast_model(self.model, self.lora, scheduler_class, family)
        scheduler = self.scheduler
        if scheduler == "auto":
            scheduler = fast.scheduler if fast else DEFAULT_SCHEDULER.get(family, "ddpm")
        on_profile = fast is not None and scheduler == fast.scheduler
        steps = self.steps if self.steps is not None else (
            fast.steps if on_profile else SCHEDULERS[scheduler])
        guidance = self.guidance if self.guidance is not None else (
            fast.guidance if fast else FAMILY_GUIDANCE.get(family, DEFAULT_GUIDANCE))
        return {"scheduler": scheduler, "steps": steps, "guidance": float(guidance),
                "fast_model": fast.name if fast else None,
                "scheduler_config": dict(fast.scheduler_config) if on_profile else {}}

    def resolved_steps(self) -> int:
        return self.resolved()["steps"]

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


def model_facts(model: str) -> str:
    """One line for a model menu's tooltip: family, size, download, memory, steps, guidance,
    licence (the reference numbers of its family; torch-free, nothing downloaded)."""
    from .models.estimate import GB, download_bytes, model_spec, weights_bytes
    from .models.families import FAMILY_TITLES, SUGGESTED_MODELS

    try:
        family = family_hint(model)
    except Exception:  # noqa: BLE001 - an unsupported folder: no facts
        return ""
    spec = model_spec(model, family)
    choice = GenerateSettings(prompts=["a"], model=model).resolved(family)
    gib = lambda n: f"{n / GB:.0f} GB"  # noqa: E731
    parts = [f"{FAMILY_TITLES.get(family, family)}: {spec.unet_params / 1e9:.1f}B-parameter "
             f"{'transformer' if spec.transformer else 'UNet'}"]
    if spec.transformer:
        parts.append(f"about {gib(download_bytes(spec))} download")
        parts.append(f"GPU: {gib(weights_bytes(spec, 2))} bf16 weights "
                     f"({gib(weights_bytes(spec, 2, fp8=True))} in fp8 on Ada/Hopper) "
                     f"+ {gib(spec.encoder_params * 2)} text encoders while encoding")
    guidance = "no guidance" if choice["guidance"] <= 1 else (
        f"guidance {choice['guidance']:g}" + (" (embedded)" if family == "flux" else ""))
    parts.append(f"{choice['steps']} steps, {guidance}")
    if SUGGESTED_MODELS.get(model):
        parts.append("gated: accept its licence on huggingface.co")
    return "; ".join(parts)


__all__ = [
    "DEFAULT_MODEL", "DEFAULT_SCHEDULER", "DEVICES", "FAMILIES", "FLOW_FAMILIES", "FLOW_SCHEDULERS",
    "check_scheduler_family", "model_facts", "GenerateSettings", "LATENT_FAMILIES", "MAX_GUIDANCE",
    "MAX_SEED", "MAX_SIZE_FACTOR", "MAX_STEPS", "NATIVE_SIZE", "PIPELINE_CLASSES",
    "SCHEDULER_CHOICES", "SCHEDULER_INFO",
    "SCHEDULERS", "UPSCALE_FACTORS", "VAE_SCALE", "available_memory", "check_memory",
    "check_lora", "check_photo", "check_targets", "family_hint", "output_size", "parse_upscale",
    "size_multiple", "upscaler_models",
]
