"""Models on disk: the Hugging Face cache and local folders/files; download, remove, hub token.

Torch-free (stdlib + huggingface_hub, imported lazily) so the add-on can list models before its
heavy dependencies are installed. The cache is huggingface_hub's own layout
(``<HF_HUB_CACHE>/models--owner--name/{blobs,snapshots/<commit>,refs}``), so models
downloaded here are found by diffusers and ``hf`` and the other way round.

Downloads fetch only what the add-on loads: ``model_index.json`` and, for every component it
names (the safety checker, feature extractor and watermarker excepted: they are never
loaded), the configs, tokenizer files and the non-variant weights (safetensors when present,
else ``.bin``). Files are streamed with huggingface_hub's ``http_get`` into
``blobs/<etag>.p10part`` and resumed from there with an HTTP ``Range`` request next time;
complete blobs are linked into the snapshot by ``hf_hub_download`` itself. ``refs/main`` is
written last, so an interrupted download never looks loadable to diffusers.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from .errors import Cancelled, InvalidInputError, ModelNotFoundError, P10Error, is_cancelled
from .settings import PIPELINE_CLASSES

#: model_index.json classes the add-on can use, with their family (IF stage II: the upscaler).
USABLE_CLASSES = {**PIPELINE_CLASSES, "IFSuperResolutionPipeline": "if-ii"}
FAMILY_NAMES = {"sd": "Stable Diffusion", "sdxl": "SDXL", "if": "DeepFloyd IF",
                "if-ii": "DeepFloyd IF stage II", "?": "unknown"}
#: Pipeline components the add-on never loads (passed as None): not downloaded, not required.
SKIPPED_COMPONENTS = ("safety_checker", "feature_extractor", "watermarker")
PARTIAL_SUFFIX = ".p10part"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")

#: progress(done_bytes, total_bytes, bytes_per_second)
DownloadProgress = Callable[[int, int, float], None]


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


def checkpoint_family(path: str) -> str:
    """SD 1.x/2.x or SDXL from a single checkpoint's tensor names (.ckpt: assumed SD)."""
    if path.lower().endswith(".safetensors"):
        keys = safetensors_header(path)
        if any(k.startswith("conditioner.embedders.1.") for k in keys):
            return "sdxl"
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
            f"folder {path!r} holds a {cls or 'unknown pipeline'}; supported are Stable Diffusion "
            "1.x/2.x, SDXL and DeepFloyd IF")
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
        complete = not missing and os.path.isfile(os.path.join(storage, "refs", "main"))
        if not missing and not complete:
            missing = ["refs/main"]
        out.append(ModelEntry(repo.repo_id, "hub", USABLE_CLASSES[cls],
                              int(repo.size_on_disk) + _partial_bytes(storage), complete, snap, missing))
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
    """The complete cached snapshot folder of ``repo_id``, or None."""
    storage = _repo_folder(repo_id, cache or cache_dir())
    if not os.path.isfile(os.path.join(storage, "refs", "main")):
        return None
    snap = _snapshot_of(storage)
    return snap if snap and not missing_files(snap) else None


# ----------------------------------------------------------------------------------- remove
def remove(repo_id: str, cache: str | None = None) -> int:
    """Delete a model from the hub cache (every revision, partial downloads too); bytes freed."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    rid = check_repo_id(repo_id)
    cache = cache or cache_dir()
    storage = _repo_folder(rid, cache)
    if not os.path.isdir(storage):
        raise ModelNotFoundError(f"model {rid!r} is not in the Hugging Face cache ({cache})")
    freed = folder_size_no_links(storage)
    try:
        info = scan_cache_dir(cache)
        revisions = [r.commit_hash for repo in info.repos if repo.repo_id == rid
                     and repo.repo_type == "model" for r in repo.revisions]
        if revisions:
            info.delete_revisions(*revisions).execute()
    except CacheNotFound:
        pass
    shutil.rmtree(storage, ignore_errors=True)  # refs, partial blobs, an unscannable leftover
    shutil.rmtree(os.path.join(cache, ".locks", os.path.basename(storage)), ignore_errors=True)
    if os.path.exists(storage):
        raise P10Error(f"could not remove {storage}: check its permissions")
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


# ----------------------------------------------------------------------------------- download
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _is_network_error(exc: BaseException) -> bool:
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"ConnectError", "TimeoutException", "RemoteProtocolError", "NetworkError",
                         "ReadError", "ProxyError", "ConnectionError", "OfflineModeIsEnabled"})


def hub_error(repo_id: str, exc: BaseException, url: str | None = None) -> P10Error:
    """One line for anything the hub client raised."""
    name = type(exc).__name__
    if "Gated" in name:
        return ModelNotFoundError(
            f"model {repo_id!r} is gated: accept its licence on huggingface.co, then set your hub "
            "token (add-on preferences, or `hf auth login`)")
    code = getattr(getattr(exc, "response", None), "status_code", None)
    if code == 401 and "HFValidation" not in name:  # the hub hides gated/private repos behind 401
        return ModelNotFoundError(
            f"model {repo_id!r} needs a valid hub token (HTTP 401): if it is gated, accept its "
            "licence on huggingface.co and set your token; otherwise check the name")
    if "RepositoryNotFound" in name or "HFValidation" in name:
        return ModelNotFoundError(f"model {repo_id!r} does not exist on the Hugging Face hub; check the name")
    if "RevisionNotFound" in name:
        return ModelNotFoundError(f"model {repo_id!r} has no such revision on the hub")
    if "OfflineModeIsEnabled" in name:
        return ModelNotFoundError(f"cannot download {repo_id!r}: HF_HUB_OFFLINE is set")
    if _is_network_error(exc):
        return ModelNotFoundError(
            f"cannot download {repo_id!r}: the hub ({url or endpoint()}) could not be reached; check "
            "the network connection")
    if code is not None:
        return ModelNotFoundError(f"cannot download {repo_id!r}: the hub answered HTTP {code}")
    return ModelNotFoundError(f"cannot download {repo_id!r}: {_first_line(exc)}")


class _Meter:
    """Bytes done / total, speed over the last seconds, cancel check: shared by all files."""

    def __init__(self, total: int, done: int, progress: DownloadProgress | None, cancel):
        self.total, self.done, self.progress, self.cancel = total, done, progress, cancel
        self.lock = threading.Lock()
        self.samples = [(time.monotonic(), done)]
        self.last_report = 0.0

    def speed(self) -> float:
        t0, d0 = self.samples[0]
        t1, d1 = self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def add(self, n: int, force: bool = False) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            self.samples.append((now, self.done))
            while len(self.samples) > 2 and now - self.samples[0][0] > 5.0:
                self.samples.pop(0)
            report = force or now - self.last_report >= 0.1
            if report:
                self.last_report = now
        if report and self.progress is not None:
            self.progress(self.done, self.total, self.speed())
        if is_cancelled(self.cancel):
            raise Cancelled("download cancelled")

    def bar(self):
        meter = self

        class Bar:  # the tqdm subset huggingface_hub's http_get calls
            def __init__(self, *args, **kwargs):
                self.n = kwargs.get("initial", 0) or 0

            def update(self, n=1):
                self.n += n or 0
                meter.add(int(n or 0))

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def close(self):
                pass

            def set_description(self, *a, **k):
                pass

            set_postfix_str = set_description_str = refresh = set_description

        return Bar


def _fetch_json(url: str, token) -> dict:
    import io

    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    buf = io.BytesIO()
    http_get(url, buf, headers=build_hf_headers(token=token), tqdm_class=_Meter(0, 0, None, None).bar())
    return json.loads(buf.getvalue().decode("utf-8"))


def download(repo_id: str, *, progress: DownloadProgress | None = None, cancel=None,
             cache: str | None = None, token: str | None = None,
             revision: str = "main") -> str:
    """Download what the add-on needs of hub model ``repo_id`` into the cache; its snapshot folder.

    ``progress(done_bytes, total_bytes, bytes_per_second)`` about ten times a second;
    ``cancel`` (Event or callable) stops within one chunk and keeps what was fetched, so the
    next call resumes (whole files are kept, a partial file continues with an HTTP Range
    request). Other failures (disk full, refused mid-way) remove what this call added.
    Errors are one-line P10Errors: InvalidInputError, ModelNotFoundError, Cancelled.
    """
    rid = check_repo_id(repo_id)
    cache = cache or cache_dir()
    if offline():
        raise ModelNotFoundError(f"cannot download {rid!r}: HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import get_hf_file_metadata, http_get
    from huggingface_hub.hf_api import RepoFile
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    url = endpoint()
    api = HfApi(endpoint=url, token=token)
    try:
        commit = api.repo_info(rid, revision=revision).sha
        sizes = {f.path: int(f.size) for f in api.list_repo_tree(rid, revision=commit, recursive=True)
                 if isinstance(f, RepoFile)}
        if "model_index.json" not in sizes:
            raise InvalidInputError(
                f"{rid!r} is not a diffusers pipeline (it has no model_index.json); use a Stable "
                "Diffusion, SDXL or DeepFloyd IF model")
        local_index = read_model_index(os.path.join(_repo_folder(rid, cache), "snapshots", commit))
        index = local_index or _fetch_json(
            hf_hub_url(rid, "model_index.json", revision=commit, endpoint=url), token)
    except P10Error:
        raise
    except Exception as exc:  # noqa: BLE001 - classified into one line
        raise hub_error(rid, exc, url) from None
    cls = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if cls not in USABLE_CLASSES:
        raise InvalidInputError(
            f"{rid!r} is a {cls or 'unknown pipeline'}; supported are Stable Diffusion 1.x/2.x, "
            "SDXL and DeepFloyd IF")
    wanted = sorted(f for f in select_files(index, sizes) if f in sizes)
    wanted.sort(key=lambda f: (f != "model_index.json", sizes[f]))  # index first, then small to big
    storage = _repo_folder(rid, cache)
    snapshot = os.path.join(storage, "snapshots", commit)
    existed = os.path.isdir(storage)
    added: list[str] = []

    def on_disk(f: str) -> int:
        if os.path.isfile(os.path.join(snapshot, f)):
            return sizes[f]
        return 0

    done = sum(on_disk(f) for f in wanted)
    total = sum(sizes[f] for f in wanted)
    partial = _partial_bytes(storage)
    need = total - done - partial
    os.makedirs(cache, exist_ok=True)
    free = shutil.disk_usage(cache).free
    if need > free:
        raise InvalidInputError(
            f"not enough disk space for {rid!r}: it needs {format_bytes(need)}, "
            f"{format_bytes(free)} are free in {cache}")
    meter = _Meter(total, done, progress, cancel)
    meter.add(0, force=True)
    headers = build_hf_headers(token=token)
    try:
        for f in wanted:
            if on_disk(f):
                continue
            meta = get_hf_file_metadata(hf_hub_url(rid, f, revision=commit, endpoint=url), token=token)
            blob = os.path.join(storage, "blobs", meta.etag)
            if not os.path.isfile(blob):
                os.makedirs(os.path.dirname(blob), exist_ok=True)
                part = blob + PARTIAL_SUFFIX
                if meta.size is not None and os.path.isfile(part) and os.path.getsize(part) > meta.size:
                    os.remove(part)
                added.append(part)
                # one writer per partial file (a second download of the same model waits here)
                lock = os.path.join(cache, ".locks", os.path.basename(storage), meta.etag + ".p10.lock")
                os.makedirs(os.path.dirname(lock), exist_ok=True)
                with WeakFileLock(lock):
                    if not os.path.isfile(blob):
                        have = os.path.getsize(part) if os.path.isfile(part) else 0
                        meter.add(have)
                        with open(part, "ab") as fh:
                            http_get(meta.location, fh, resume_size=have, headers=headers,
                                     expected_size=meta.size, tqdm_class=meter.bar(),
                                     displayed_filename=f)
                        os.replace(part, blob)
                    else:
                        meter.add(sizes[f])
                added.append(blob)
            else:
                meter.add(sizes[f])
            # the hub client links the blob into snapshots/<commit>/ (no download: it exists)
            hf_hub_download(rid, f, revision=commit, cache_dir=cache, endpoint=url, token=token)
            added.append(os.path.join(snapshot, f))
        _write_ref(storage, revision, commit)
    except Cancelled:
        raise
    except BaseException as exc:
        if _is_network_error(exc):  # keep what arrived: the next call resumes
            raise ModelNotFoundError(
                f"download of {rid!r} stopped: the hub ({url}) could not be reached "
                f"({format_bytes(meter.done)} of {format_bytes(total)} done; download again to resume)"
            ) from None
        _rollback(added, storage, existed, cache)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", -1)):
            raise InvalidInputError(
                f"the disk is full: downloading {rid!r} needs {format_bytes(total)} in {cache}; "
                "nothing was kept") from None
        if isinstance(exc, P10Error):
            raise
        if isinstance(exc, Exception):
            raise hub_error(rid, exc, url) from None
        raise
    meter.add(0, force=True)
    return snapshot


def _write_ref(storage: str, revision: str, commit: str) -> None:
    ref = os.path.join(storage, "refs", revision)
    os.makedirs(os.path.dirname(ref), exist_ok=True)
    tmp = ref + ".p10tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(commit)
    os.replace(tmp, ref)


def _rollback(added: list[str], storage: str, existed: bool, cache: str) -> None:
    """Remove what a failed download added (the whole repo folder if it was new)."""
    if not existed:
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(os.path.join(cache, ".locks", os.path.basename(storage)), ignore_errors=True)
        return
    for path in reversed(added):
        try:
            os.remove(path)
        except OSError:
            pass


def fetch_model(model: str, report: Callable[[str, int, int], None] | None = None,
                cancel=None) -> str | None:
    """Download hub model ``model`` when it is not complete in the cache (generate()'s first
    phase: ``report("downloading", done_bytes, total_bytes)``). Local paths, complete cached
    models and offline mode do nothing here: loading then reports what is missing."""
    path = os.path.expanduser((model or "").strip())
    if not path or os.path.exists(path) or path.count("/") != 1 or path.startswith((".", "/", "~")) \
            or path.lower().endswith(CHECKPOINT_SUFFIXES) or "\\" in path:
        return None
    try:
        rid = check_repo_id(path)
    except InvalidInputError:
        return None  # the loader words the error
    if offline() or cached_snapshot(rid) is not None:
        return None

    def progress(done: int, total: int, speed: float) -> None:
        if report is not None:
            report("downloading", done, total)

    return download(rid, progress=progress, cancel=cancel)
