"""Model loading: hub id / local diffusers folder / single checkpoint file -> Backend.

Respects the Hugging Face cache and HF_HUB_OFFLINE: the cache is always tried first (no
network round trip when the model is there), the hub only when not offline. Anything that
cannot be found becomes one ModelNotFoundError line that says how to fix it.
"""

from __future__ import annotations

from contextlib import contextmanager

import gc
import importlib
import json
import os
from typing import Any

import torch

from ..errors import InvalidInputError, ModelNotFoundError
from ..models.cache import family_of_keys
from ..models.families import (FAMILY_MODULES, FAMILY_TITLES, FLOW_FAMILIES, PIPELINE_CLASSES,
                               SUPPORTED_TEXT, pipeline_class)
from .base import FAMILY_BACKENDS, Backend

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")
_PIPELINES = {"sd": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline", "if": "IFPipeline",
              "sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}
_NAMES = FAMILY_TITLES
_NO_SAFETY = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
_LOAD_KWARGS = {"sd": _NO_SAFETY, "sdxl": {}, "if": {**_NO_SAFETY, "watermarker": None}}
#: Families whose weights are released in bf16 (fp16 overflows in their transformers).
_BF16_FAMILIES = FLOW_FAMILIES


# --------------------------------------------------------------------------- device, dtype
def resolve_device(name: str | None = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else is taken as given (checked)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"unknown device {name!r}; use auto, cpu, cuda or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} was asked for but no CUDA GPU is available; use auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidInputError(f"there is no GPU {name!r} ({torch.cuda.device_count()} found)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError(f"device {name!r} was asked for but Apple Metal is not available; use auto or cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"unsupported device {name!r}; use auto, cpu, cuda or mps")
    return dev


def default_dtype(device: torch.device, family: str | None = None) -> torch.dtype:
    """fp16 on GPUs (half the memory, the weights' release precision), fp32 on the CPU;
    bf16 on GPUs for the rectified-flow transformers (SD3, FLUX: fp16 overflows there)."""
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if family in _BF16_FAMILIES else torch.float16


# --------------------------------------------------------------------------- sources
def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def model_source(model: str) -> tuple[str, str]:
    """("file" | "folder" | "hub", normalised path or id)."""
    path = os.path.expanduser(model.strip())
    if os.path.isfile(path):
        return "file", os.path.abspath(path)
    if os.path.isdir(path):
        return "folder", os.path.abspath(path)
    looks_like_path = (
        path.lower().endswith(CHECKPOINT_SUFFIXES) or path.startswith((".", "/", "~", "\\"))
        or path.count("/") > 1 or "\\" in path or (len(path) > 1 and path[1] == ":")
    )
    if looks_like_path:
        raise ModelNotFoundError(f"model file or folder {model!r} does not exist")
    return "hub", path


def _not_found(model: str, exc: BaseException | None = None) -> ModelNotFoundError:
    name = type(exc).__name__ if exc is not None else ""
    if "Gated" in name:
        return ModelNotFoundError(
            f"model {model!r} is gated: accept its licence on huggingface.co, log in with "
            "`hf auth login`, then try again"
        )
    if "RepositoryNotFound" in name or "HFValidation" in name:
        return ModelNotFoundError(
            f"model {model!r} does not exist on the Hugging Face hub; check the name, or give a "
            "local model folder or .safetensors file"
        )
    where = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
    return ModelNotFoundError(
        f"model {model!r} is not in the Hugging Face cache ({_cache_dir()}) and {where}: "
        f"download it once while online (`hf download {model}`), or give a local model folder "
        "or .safetensors file"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _hub_file(repo: str, filename: str) -> str:
    """A file of a hub repo: the cache first, then (when not offline) the network."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(repo, filename, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any miss means: try the network or give up
        if _offline() or "HFValidation" in type(exc).__name__:
            raise _not_found(repo, exc) from None
    try:
        return hf_hub_download(repo, filename)
    except Exception as exc:  # noqa: BLE001
        raise _not_found(repo, exc) from None


def _family_of_index(model: str, index_path: str) -> str:
    try:
        with open(index_path, encoding="utf-8") as f:
            cls = json.load(f).get("_class_name", "")
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read {index_path}: {_first_line(exc)}") from None
    if cls not in PIPELINE_CLASSES:
        raise InvalidInputError(
            f"model {model!r} is a {cls or 'unknown pipeline'}; supported are {SUPPORTED_TEXT}")
    return PIPELINE_CLASSES[cls]


def _family_of_checkpoint(path: str) -> str:
    """SD 1.x/2.x, SDXL, SD3 or FLUX from an original-format checkpoint's key names."""
    keys: list[str] = []
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        except Exception as exc:  # noqa: BLE001
            raise InvalidInputError(f"{path} is not a readable .safetensors file: {_first_line(exc)}") from None
    return family_of_keys(keys)  # SD 1.x/2.x for .ckpt files, unless the family is given


def detect_family(model: str, family: str | None = None) -> str:
    """The family ("sd", "sdxl", "if", "sd3", "flux") from model_index.json's _class_name (or the checkpoint keys)."""
    if family is not None and family not in _PIPELINES:
        raise InvalidInputError(f"unknown model family {family!r}; choose {', '.join(_PIPELINES)}")
    kind, where = model_source(model)
    if kind == "file":  # checkpoint keys are a heuristic: an explicit family wins
        return family or _family_of_checkpoint(where)
    if kind == "folder":
        index = os.path.join(where, "model_index.json")
        if not os.path.isfile(index):
            raise ModelNotFoundError(
                f"folder {model!r} is not a diffusers model folder (it has no model_index.json)"
            )
    else:
        index = _hub_file(where, "model_index.json")
    found = _family_of_index(model, index)
    if family is not None and family != found:  # the pipeline config is authoritative
        raise InvalidInputError(f"model {model!r} is a {_NAMES[found]} model, not {_NAMES[family]}")
    return found


# --------------------------------------------------------------------------- pipelines
def _quiet() -> None:
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetics only
        pass


def load_pipeline(model: str, family: str, dtype: torch.dtype, cls_name: str | None = None,
                  **extra: Any):
    """The diffusers pipeline of ``family`` from a hub id, folder or single checkpoint file."""
    import diffusers

    _quiet()
    kind, where = model_source(model)
    cls = getattr(diffusers, cls_name or _PIPELINES[family])
    kwargs = {**_LOAD_KWARGS.get(family, {}), **_absent_components(kind, where), **extra,
              "dtype": dtype}
    if kind == "file":
        if family == "if":
            raise InvalidInputError("DeepFloyd IF cannot load from a single file; give its folder or hub id")
        loader = cls.from_single_file
    else:
        loader = cls.from_pretrained
    try:
        return loader(where, local_files_only=True, **kwargs)
    except (ModelNotFoundError, InvalidInputError):
        raise
    except Exception as exc:  # noqa: BLE001 - classified below into one line
        if kind == "file" and _unreadable_checkpoint(exc):
            raise _corrupt_checkpoint(model, exc) from None
        if kind == "folder":
            locked = _unreadable_in(where)  # diffusers calls it "no file named config.json"
            raise ModelNotFoundError(
                f"cannot load the model folder {model!r}: "
                + (f"{locked} cannot be read (permission denied): check its permissions"
                   if locked else _first_line(exc))) from None
        if _offline():
            raise _not_found_file(model, kind, exc) from None
    try:  # not cached: the hub (model files, or the base config a single file needs)
        return loader(where, local_files_only=False, **kwargs)
    except Exception as exc:  # noqa: BLE001
        if kind == "file" and _unreadable_checkpoint(exc):
            raise _corrupt_checkpoint(model, exc) from None
        raise _not_found_file(model, kind, exc) from None


def _absent_components(kind: str, where: str) -> dict[str, None]:
    """Components a local folder's model_index.json lists as null (e.g. SD3 saved without its
    T5 encoder to save 9.5 GB): passed as None, which diffusers then accepts."""
    if kind != "folder":
        return {}
    try:
        with open(os.path.join(where, "model_index.json"), encoding="utf-8") as f:
            index = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: None for k, v in index.items()
            if not k.startswith("_") and isinstance(v, list) and v and v[0] is None}
def _unreadable_in(folder: str) -> str | None:
    """The first subfolder or file of ``folder`` this process may not read, or None."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            if not os.access(os.path.join(root, name), os.R_OK | os.X_OK):
                return os.path.join(root, name)
        for name in files:
            if not os.access(os.path.join(root, name), os.R_OK):
                return os.path.join(root, name)
    return None


# What torch / safetensors / diffusers say about a checkpoint file they cannot read.
_UNREADABLE = ("unable to load weights from checkpoint", "pytorchstreamreader", "unpickling",
               "invalid load key", "safetensorerror", "headertoolarge", "invalidheader",
               "error while deserializing", "ran out of input")


def _unreadable_checkpoint(exc: BaseException) -> bool:
    """True when loading failed on the checkpoint's own bytes, not on a missing configuration."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        text = f"{type(exc).__name__} {exc}".lower()
        if any(t in text for t in _UNREADABLE) or isinstance(exc, EOFError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _corrupt_checkpoint(model: str, exc: BaseException) -> InvalidInputError:
    inner = exc
    while (inner.__cause__ or inner.__context__) is not None:
        inner = inner.__cause__ or inner.__context__
    return InvalidInputError(f"checkpoint {model!r} cannot be read (corrupt or truncated?): "
                             f"{_first_line(inner)[:120]}")


def _not_found_file(model: str, kind: str, exc: BaseException) -> ModelNotFoundError:
    if kind == "file":
        where = "HF_HUB_OFFLINE is set" if _offline() else "the hub could not be reached"
        return ModelNotFoundError(
            f"checkpoint {model!r} needs its base model's configuration from the Hugging Face hub, "
            f"which is not cached and {where}: connect once, or use a diffusers model folder"
        )
    return _not_found(model, exc)


def _backend_class(family: str) -> type[Backend]:
    importlib.import_module(f".{FAMILY_MODULES[family]}", __package__)  # registers its class
    return FAMILY_BACKENDS[family]


def load_lora(pipe, lora: str) -> None:
    """Load a LoRA (hub id, folder or .safetensors file; e.g. LCM-LoRA) into ``pipe`` and fuse
    it into the weights (no per-step LoRA cost). Cache first, the hub only when not offline."""
    try:
        import peft  # noqa: F401 - diffusers' LoRA loader needs it
    except ImportError:
        raise InvalidInputError("loading a LoRA needs the peft package: "
                                "pip install peft==0.21.2") from None
    kind, where = model_source(lora)
    if kind == "file":
        args, kwargs = (os.path.dirname(where),), {"weight_name": os.path.basename(where)}
    else:
        args, kwargs = (where,), {}
    try:
        pipe.load_lora_weights(*args, local_files_only=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classified into one line
        if kind != "hub" or _offline():
            where_ = "" if kind != "hub" else " (not in the Hugging Face cache and HF_HUB_OFFLINE is set)"
            raise ModelNotFoundError(f"cannot load the LoRA {lora!r}{where_}: {_first_line(exc)}") from None
        try:
            pipe.load_lora_weights(*args, **kwargs)
        except Exception as exc2:  # noqa: BLE001
            raise ModelNotFoundError(f"cannot load the LoRA {lora!r}: {_first_line(exc2)}") from None
    pipe.fuse_lora()


def load_backend(model: str, *, family: str | None = None, device: str | torch.device = "auto",
                 dtype: torch.dtype | None = None, lora: str | None = None) -> Backend:
    """Load ``model`` (hub id, folder or checkpoint file) onto ``device`` as a Backend, with
    ``lora`` fused into its weights when given."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    fam = detect_family(model, family)
    dtype = dtype or default_dtype(dev, fam)
    pipe = load_pipeline(model, fam, dtype)
    if lora:
        load_lora(pipe, lora)
    cls = _backend_class(fam)
    cls.place(pipe, dev)
    pipe.set_progress_bar_config(disable=True)
    return cls(pipe, dev, dtype, model)


_STAGE_NAMES = {"IFSuperResolutionPipeline": "DeepFloyd IF stage II",
                "StableDiffusionUpscalePipeline": "Stable Diffusion x4 upscaler"}


def check_upscaler(source: str, pipeline: str = "IFSuperResolutionPipeline") -> None:
    """Fail fast (before sampling) when a super-resolution model is missing or of another kind."""
    what = _STAGE_NAMES.get(pipeline, pipeline)
    kind, where = model_source(source)
    if kind == "file":
        raise InvalidInputError(f"upscaler {source!r} must be a {what} folder or hub id")
    index = os.path.join(where, "model_index.json") if kind == "folder" else _hub_file(where, "model_index.json")
    if pipeline_class(index) != pipeline:
        raise InvalidInputError(f"upscaler {source!r} is not a {what} model")


def load_stage(backend: Backend, kind: str, source: str) -> Backend:
    """The super-resolution stage ``kind`` from ``source``, kept on ``backend`` for reuse."""
    from .super_resolution import STAGES

    stages = backend.__dict__.setdefault("_stages", {})
    held = stages.get(kind)
    if held is not None and held.source == source:
        return held
    if held is not None:
        held.release()
        stages.pop(kind)
        free_device_memory()
    cls = STAGES[kind]
    check_upscaler(source, cls.pipeline_class)
    pipe = load_pipeline(source, kind, backend.dtype, cls.pipeline_class, **cls.load_kwargs)
    pipe.to(backend.device)
    pipe.set_progress_bar_config(disable=True)
    stages[kind] = stage = cls(pipe, backend.device, backend.dtype, source)
    return stage


@contextmanager
def offloaded(*holders):
    """Move the pipelines of ``holders`` (loaded backends / stages on an accelerator) to the
    CPU while the block runs, and back afterwards, also when it fails. A ×4 stage never calls
    stage I's model, yet IF stage I (≈ 18 GB in fp16 with its T5) would otherwise sit beside
    stage II on the GPU. Holders already on the CPU are left alone."""
    moved = [h for h in holders if h is not None and torch.device(h.device).type != "cpu"]
    for holder in moved:
        holder.pipe.to("cpu")
    if moved:
        free_device_memory()
    try:
        yield moved
    finally:
        for holder in moved:  # as loading placed it (flow families keep text encoders off)
            place = getattr(type(holder), "place", None)
            if place is not None:
                place(holder.pipe, holder.device)
            else:
                holder.pipe.to(holder.device)


# --------------------------------------------------------------------------- cache
def free_device_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        mps.empty_cache()


class ModelCache:
    """Keeps the last loaded model so repeated generate() calls skip loading.

    One model at a time (a second model would not fit next to the first on most GPUs):
    asking for another releases the current one first. ``release()`` frees the GPU memory.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._backend: Backend | None = None

    @staticmethod
    def _key_of(model: str, family: str | None, device: torch.device, dtype: torch.dtype,
                lora: str | None = None) -> tuple:
        kind, where = model_source(model)
        return (where, family, str(device), str(dtype), lora)

    def get(self, model: str, *, family: str | None = None, device: str | torch.device = "auto",
            dtype: torch.dtype | None = None, lora: str | None = None) -> Backend:
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        key = self._key_of(model, family, dev, dtype, lora)  # dtype None: the family's default
        if self._backend is None or key != self._key:
            self.release()
            self._backend = load_backend(model, family=family, device=dev, dtype=dtype, lora=lora)
            self._key = key
        return self._backend

    @property
    def loaded(self) -> str | None:
        """The source of the model held, or None."""
        return self._backend.source if self._backend is not None else None

    def release(self) -> None:
        backend, self._backend, self._key = self._backend, None, None
        if backend is not None:
            backend.release()
            del backend
        free_device_memory()
