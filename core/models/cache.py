"""Models on disk: the Hugging Face cache and local folders/files; download, remove, hub token.

Torch-free (stdlib + huggingface_hub, imported lazily) so the add-on can list models before its
heavy dependencies are installed. The cache is huggingface_hub's own layout
(``<HF_HUB_CACHE>/models--owner--name/{blobs,snapshots/<commit>,refs}``), so models
downloaded here are found by diffusers and ``hf`` and the other way round.

A model is *complete* when everything the add-on loads is there: ``model_index.json`` and, for
every component it names (the safety checker, feature extractor and watermarker excepted: they
are never loaded), a config and the non-variant weights (``select_files`` is what a download
fetches; ``core.downloads`` does the downloading).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

from ..errors import InvalidInputError, ModelNotFoundError, P10Error
from .checksums import corrupt_files
from .families import PIPELINE_CLASSES, SUPPORTED_TEXT

#: model_index.json classes the add-on can use, with their family (the ×4 stages: IF stage II
#: and the Stable Diffusion x4 upscaler, see core/backends/super_resolution.py).
USABLE_CLASSES = {**PIPELINE_CLASSES, "IFSuperResolutionPipeline": "if-ii",
                  "StableDiffusionUpscalePipeline": "x4"}
FAMILY_NAMES = {"sd": "Stable Diffusion", "sdxl": "SDXL", "if": "DeepFloyd IF",
                "sd3": "Stable Diffusion 3", "flux": "FLUX.1",
                "if-ii": "DeepFloyd IF stage II", "x4": "Stable Diffusion x4 upscaler",
                "?": "unknown"}
#: Pipeline components the add-on never loads (passed as None): not downloaded, not required.
SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "watermarker")
PARTIAL_SUFFIX = ".p10part"  # a file being downloaded (core.downloads), resumable
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


@dataclass
class ModelEntry:
    """One usable model: a hub id in the cache, or a local folder / checkpoint file."""

    name: str                 # hub id, or the local path
    source: str               # "hub", "folder" or "file"
    family: str               # "sd", "sdxl", "if", "if-ii" or "?"
    size_bytes: int           # on disk (a cached model: its blobs, partial downloads included)
    complete: bool            # everything the add-on loads is there
    path: str                 # snapshot folder / local path
    missing: list[str] = field(default_factory=list)  # what is missing when not complete
    corrupt: list[str] = field(default_factory=list)  # files failing their checksum (hub models)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES.get(self.family, self.family)


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KB' (decimal units, like download managers and the hub)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


# ----------------------------------------------------------------------------------- where
def cache_dir() -> str:
    """The Hugging Face hub cache folder (HF_HUB_CACHE / HF_HOME/hub), read now, not at import."""
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return os.path.expanduser(env)
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def endpoint() -> str:
    """The hub URL: HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    from huggingface_hub import constants

    return constants.ENDPOINT


def offline() -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    if env:
        return env in {"1", "ON", "YES", "TRUE"}
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _repo_folder(repo_id: str, cache: str) -> str:
    return os.path.join(cache, "models--" + repo_id.replace("/", "--"))


def check_repo_id(repo_id: str) -> str:
    """A well-formed hub id ('owner/name') or InvalidInputError."""
    rid = (repo_id or "").strip()
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(rid)
    except HFValidationError:
        rid = ""
    if not rid or rid.count("/") != 1:
        raise InvalidInputError(f"{repo_id!r} is not a Hugging Face model id (owner/name)")
    return rid


# ----------------------------------------------------------------------------------- files
def read_model_index(folder: str) -> dict | None:
    path = os.path.join(folder, "model_index.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def components(index: dict) -> dict[str, tuple[str, str]]:
    """{folder: (library, class)} of the pipeline components the add-on loads."""
    out = {}
    for name, value in index.items():
        if name.startswith("_") or name in SKIPPED_COMPONENTS:
            continue
        if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] and value[1]:
            out[name] = (str(value[0]), str(value[1]))
    return out


def _needs_weights(name: str, cls: str) -> bool:
    return not (name.startswith(("scheduler", "tokenizer"))
                or any(w in cls for w in ("Scheduler", "Tokenizer", "ImageProcessor", "FeatureExtractor")))


def _is_variant(filename: str) -> bool:
    """'diffusion_pytorch_model.fp16.safetensors', 'x.safetensors.index.fp16.json' are variants."""
    base = os.path.basename(filename)
    for suffix in WEIGHT_SUFFIXES:
        if base.endswith(suffix):
            return "." in base[: -len(suffix)]
    if ".index." in base:
        return not base.endswith((".safetensors.index.json", ".bin.index.json"))
    return False


def select_files(index: dict, repo_files: Iterable[str]) -> list[str]:
    """The files of a diffusers repo the add-on needs: model_index.json, configs, tokenizers,
    and per component the non-variant safetensors (else .bin) weights (with shard index)."""
    files = list(repo_files)
    chosen = ["model_index.json"]
    for comp in components(index):
        inside = [f for f in files if f.startswith(comp + "/") and f.count("/") == 1]
        weights = [f for f in inside if f.endswith(WEIGHT_SUFFIXES) and not _is_variant(f)]
        st = [f for f in weights if f.endswith(".safetensors")]
        keep_ext = ".safetensors" if st else ".bin"
        for f in inside:
            base = os.path.basename(f)
            if f.endswith(WEIGHT_SUFFIXES):
                if f.endswith(keep_ext) and not _is_variant(f):
                    chosen.append(f)
            elif ".index." in base:  # shard index: only the one of the kept weights
                if base.endswith(keep_ext + ".index.json") and not _is_variant(f):
                    chosen.append(f)
            elif base.endswith((".json", ".txt", ".model")):
                chosen.append(f)
    return list(dict.fromkeys(chosen))


def missing_files(folder: str) -> list[str]:
    """What a diffusers folder lacks for the add-on to load it ([] = complete)."""
    index = read_model_index(folder)
    if index is None:
        return ["model_index.json"]
    missing = []
    for comp, (_, cls) in components(index).items():
        d = os.path.join(folder, comp)
        try:
            names = os.listdir(d)
        except OSError:
            missing.append(comp + "/")
            continue
        present = [n for n in names if os.path.isfile(os.path.join(d, n))]  # follows symlinks
        if not any(n.endswith(".json") for n in present):
            missing.append(f"{comp}/ (config)")
        if not _needs_weights(comp, cls):
            continue
        weights = [n for n in present if n.endswith(WEIGHT_SUFFIXES) and not _is_variant(n)]
        if not weights:
            missing.append(f"{comp}/ (weights)")
            continue
        for idx_name in [n for n in present if n.endswith((".safetensors.index.json", ".bin.index.json"))]:
            try:
                with open(os.path.join(d, idx_name), encoding="utf-8") as f:
                    shards = set(json.load(f).get("weight_map", {}).values())
            except (OSError, ValueError, AttributeError):
                shards = {"?"}
            missing += [f"{comp}/{s}" for s in sorted(shards) if s not in present]
    return missing


def folder_size(path: str) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                total += os.stat(os.path.join(root, n)).st_size  # follows snapshot symlinks
            except OSError:
                pass
    return total


def safetensors_header(path: str) -> dict:
    """The JSON header of a .safetensors file (tensor names -> dtype, shape), torch-free."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error) as exc:
        raise InvalidInputError(f"{path} is not a readable .safetensors file ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise InvalidInputError(f"{path} is not a readable .safetensors file")
    return header


def safetensors_params(path: str) -> int:
    """Number of parameters stored in a .safetensors file (from its header)."""
    count = 0
    for name, info in safetensors_header(path).items():
        if name != "__metadata__" and isinstance(info, dict):
            n = 1
            for d in info.get("shape", []):
                n *= int(d)
            count += n
    return count


def family_of_keys(keys: Iterable[str]) -> str:
    """SD 1.x/2.x, SDXL, SD3 (MMDiT joint blocks) or FLUX (double + single blocks) from an
    original-format checkpoint's tensor names."""
    keys = list(keys)
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    if any("joint_blocks." in k for k in keys):
        return "sd3"
    if any("double_blocks." in k for k in keys):
        return "flux"
    return "sd"


def checkpoint_family(path: str) -> str:
    """The family of a single checkpoint from its tensor names (.ckpt: assumed SD)."""
    if path.lower().endswith(".safetensors"):
        return family_of_keys(safetensors_header(path))
    return "sd"


# ----------------------------------------------------------------------------------- list
def describe_local(path: str) -> ModelEntry:
    """A local diffusers folder or checkpoint file as a ModelEntry; one-line error otherwise."""
    p = os.path.abspath(os.path.expanduser((path or "").strip()))
    if os.path.isfile(p):
        if not p.lower().endswith(CHECKPOINT_SUFFIXES):
            raise InvalidInputError(f"{path!r} is not a model file (.safetensors or .ckpt)")
        return ModelEntry(p, "file", checkpoint_family(p), os.path.getsize(p), True, p)
    if not os.path.isdir(p):
        raise ModelNotFoundError(f"model file or folder {path!r} does not exist")
    index = read_model_index(p)
    if index is None:
        raise InvalidInputError(f"folder {path!r} is not a diffusers model folder (it has no model_index.json)")
    cls = str(index.get("_class_name", ""))
    if cls not in USABLE_CLASSES:
        raise InvalidInputError(
            f"folder {path!r} holds a {cls or 'unknown pipeline'}; supported are {SUPPORTED_TEXT}")
    missing = missing_files(p)
    return ModelEntry(p, "folder", USABLE_CLASSES[cls], folder_size(p), not missing, p, missing)


def _partial_bytes(storage: str) -> int:
    blobs = os.path.join(storage, "blobs")
    total = 0
    try:
        for n in os.listdir(blobs):
            if n.endswith((PARTIAL_SUFFIX, ".incomplete")):
                total += os.path.getsize(os.path.join(blobs, n))
    except OSError:
        pass
    return total


def _snapshot_of(storage: str) -> str | None:
    """The snapshot refs/main points to, else the newest snapshot folder."""
    try:
        with open(os.path.join(storage, "refs", "main"), encoding="utf-8") as f:
            commit = f.read().strip()
        snap = os.path.join(storage, "snapshots", commit)
        if os.path.isdir(snap):
            return snap
    except OSError:
        pass
    snaps = os.path.join(storage, "snapshots")
    try:
        folders = [os.path.join(snaps, n) for n in os.listdir(snaps)]
    except OSError:
        return None
    folders = [f for f in folders if os.path.isdir(f)]
    return max(folders, key=os.path.getmtime) if folders else None


def cached_models(cache: str | None = None) -> list[ModelEntry]:
    """The diffusers pipelines in the hub cache the add-on can use (complete or not)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = cache or cache_dir()
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
        if repo.repo_type != "model":
            continue
        storage = str(repo.repo_path)
        snap = _snapshot_of(storage)
        index = read_model_index(snap) if snap else None
        cls = str((index or {}).get("_class_name", ""))
        if cls not in USABLE_CLASSES:
            continue
        missing = missing_files(snap)
        corrupt = [] if missing else corrupt_files(snap)
        complete = not missing and not corrupt and os.path.isfile(os.path.join(storage, "refs", "main"))
        if not missing and not corrupt and not complete:
            missing = ["refs/main"]
        out.append(ModelEntry(repo.repo_id, "hub", USABLE_CLASSES[cls],
                              int(repo.size_on_disk) + _partial_bytes(storage), complete, snap,
                              missing, corrupt))
    return out


def list_models(local: Sequence[str] = (), cache: str | None = None) -> list[ModelEntry]:
    """Cached hub models, then the local folders/files given (unreadable ones are skipped)."""
    out = cached_models(cache)
    for path in local:
        try:
            out.append(describe_local(path))
        except P10Error:
            out.append(ModelEntry(path, "folder", "?", 0, False, path, ["not found or not a model"]))
    return out


def cached_snapshot(repo_id: str, cache: str | None = None) -> str | None:
    """The complete and intact (checksums: ``core.models.checksums``) cached snapshot folder
    of ``repo_id``, or None."""
    storage = _repo_folder(repo_id, cache or cache_dir())
    if not os.path.isfile(os.path.join(storage, "refs", "main")):
        return None
    snap = _snapshot_of(storage)
    return snap if snap and not missing_files(snap) and not corrupt_files(snap) else None


def model_reference(model: str) -> str:
    """What a manifest records for ``model`` (or a LoRA): the absolute path of a local file or
    folder, so the stack can be extended from any working folder; a hub id unchanged."""
    path = os.path.expanduser(str(model).strip())
    return os.path.abspath(path) if path and os.path.exists(path) else model


def looks_like_path(model: str) -> bool:
    """``model`` names a file or folder, not a hub id (``owner/name``)."""
    m = os.path.expanduser(str(model).strip())
    return (os.path.isabs(m) or m.startswith((".", "~")) or "\\" in m or m.count("/") > 1
            or m.lower().endswith((*CHECKPOINT_SUFFIXES, ".bin", ".pt", ".pth")))


def model_is_here(model: str) -> bool:
    """``model`` can be loaded without the network: an existing file or folder, or a complete
    snapshot of the hub id in the cache."""
    if os.path.exists(os.path.expanduser(str(model).strip())):
        return True
    if looks_like_path(model) or str(model).count("/") != 1:
        return False
    try:
        return cached_snapshot(str(model).strip()) is not None
    except (OSError, ValueError):
        return False


# ----------------------------------------------------------------------------------- remove
def remove(repo_id: str, cache: str | None = None) -> int:
    """Delete a model from the hub cache (every revision, partial downloads too); bytes freed."""
    rid = check_repo_id(repo_id)
    cache = cache or cache_dir()
    storage = _repo_folder(rid, cache)
    if not os.path.isdir(storage):
        raise ModelNotFoundError(f"model {rid!r} is not in the Hugging Face cache ({cache})")
    freed = folder_size_no_links(storage)
    # Refuse before deleting anything when the cache cannot be changed (a half-removed model
    # would look like a corrupt download); huggingface_hub's own delete would also log a
    # traceback for every file it cannot remove.
    for folder in (cache, storage, *(os.path.join(storage, d) for d in ("blobs", "snapshots", "refs"))):
        if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
            raise P10Error(f"cannot remove {rid!r}: {folder} is not writable (check its permissions)")
    shutil.rmtree(storage, ignore_errors=True)  # snapshots, blobs, refs, partial downloads
    shutil.rmtree(os.path.join(cache, ".locks", os.path.basename(storage)), ignore_errors=True)
    if os.path.lexists(storage):
        raise P10Error(f"could not remove {storage} completely: check its permissions")
    return freed


def folder_size_no_links(path: str) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for n in names:
            full = os.path.join(root, n)
            if not os.path.islink(full):
                try:
                    total += os.path.getsize(full)
                except OSError:
                    pass
    return total


# ----------------------------------------------------------------------------------- token
def token_status() -> str | None:
    """The active hub token, masked ('hf_…abcd'), or None when not logged in."""
    from huggingface_hub import get_token

    tok = get_token()
    return f"{tok[:3]}…{tok[-4:]}" if tok else None


def save_token(token: str) -> str:
    """Store a hub token the way ``hf auth login`` does (HF_HOME/token); returns a status line.

    The token is checked with the hub first; when the hub cannot be reached it is stored
    unchecked (a later download will tell). An invalid token is refused with one line.
    """
    tok = (token or "").strip()
    if not tok:
        raise InvalidInputError("the token is empty: paste a token from huggingface.co/settings/tokens")
    if any(c.isspace() for c in tok):
        raise InvalidInputError("a hub token has no spaces: paste it again")
    from huggingface_hub import login
    from huggingface_hub.errors import HfHubHTTPError

    if not offline():
        try:
            _with_endpoint(lambda: login(token=tok, add_to_git_credential=False))
            return f"token saved ({tok[:3]}…{tok[-4:]}, checked with the hub)"
        except HfHubHTTPError as exc:
            code = getattr(getattr(exc, "response", None), "status_code", None)
            if code in (401, 403):
                raise InvalidInputError("the hub refused this token: check it on huggingface.co/settings/tokens") from None
            # any other hub answer: fall through and store it unchecked
        except ValueError as exc:
            raise InvalidInputError(_first_line(exc)) from None
        except Exception:  # noqa: BLE001 - unreachable hub: store unchecked below
            pass
    path = token_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(tok)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return f"token saved ({tok[:3]}…{tok[-4:]}, not checked: the hub could not be reached)"


def token_path() -> str:
    if os.environ.get("HF_TOKEN_PATH"):
        return os.path.expanduser(os.environ["HF_TOKEN_PATH"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "token")
    from huggingface_hub import constants

    return str(constants.HF_TOKEN_PATH)


def clear_token() -> bool:
    """Log out (remove the stored tokens); False when none was stored."""
    from huggingface_hub import logout

    had = os.path.isfile(token_path())
    try:
        logout()
    except Exception:  # noqa: BLE001 - logout of an unknown name etc.: remove the file below
        pass
    try:
        os.remove(token_path())
    except OSError:
        pass
    return had


def _with_endpoint(fn):
    """Run ``fn`` with huggingface_hub's module-level endpoint set to HF_ENDPOINT as of now."""
    from huggingface_hub import constants, hf_api

    url = endpoint()
    old_const, old_api = constants.ENDPOINT, hf_api.api.endpoint
    constants.ENDPOINT, hf_api.api.endpoint = url, url
    try:
        return fn()
    finally:
        constants.ENDPOINT, hf_api.api.endpoint = old_const, old_api


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
