"""Downloading hub models into the Hugging Face cache: progress in bytes, cancel, resume.

Fetches only what the add-on loads (``core.models.select_files``) with huggingface_hub's own
client: ``HfApi.repo_info`` and ``list_repo_tree`` (commit, file sizes), ``get_hf_file_metadata``
(HEAD: ETag, X-Repo-Commit, Content-Length) and a streamed GET with an HTTP ``Range`` to resume.
Each file streams into ``blobs/<etag>.p10part`` piece by piece as the network delivers it
(huggingface_hub's ``http_get`` reads 10 MB chunks, so a cancel would wait for a whole chunk
and lose it), is checked against its etag (the SHA-256 of LFS weights, the git blob id of small
files: ``core.models.checksums``) and continues from there next time; finished blobs are
linked into ``snapshots/<commit>/`` by ``hf_hub_download`` itself, and ``refs/main`` is written
last, so an interrupted download never looks loadable to diffusers. Files already on disk are
checked too: a corrupt one is fetched again. Torch-free.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
from typing import Callable

from ..errors import Cancelled, InvalidInputError, ModelNotFoundError, P10Error, is_cancelled
from .checksums import Digest, corrupt_files, forget, remember
from .cache import (CHECKPOINT_SUFFIXES, PARTIAL_SUFFIX, USABLE_CLASSES, _first_line,
                     _partial_bytes, _repo_folder, cache_dir, cached_snapshot, check_repo_id,
                     endpoint, format_bytes, offline, read_model_index, select_files)

#: progress(done_bytes, total_bytes, bytes_per_second)
DownloadProgress = Callable[[int, int, float], None]


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
    if isinstance(exc, ValueError) and any(c.__name__ == "JSONDecodeError" for c in type(exc).__mro__):
        # 200 with a web page: a hotel / train Wi-Fi login, a proxy's sign-in, a wrong HF_ENDPOINT
        return ModelNotFoundError(
            f"cannot download {repo_id!r}: {url or endpoint()} answered with a web page, not the "
            "hub's data (a Wi-Fi or proxy sign-in page?): sign in with a browser, or check HF_ENDPOINT")
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


def _stream(url: str, fh, have: int, headers: dict, meter: "_Meter", digest: Digest) -> None:
    """Append the bytes of ``url`` from byte ``have`` on to ``fh`` (which holds ``have`` bytes),
    hashing them into ``digest`` (already fed the first ``have``). Every piece is written before
    the meter may raise Cancelled, so a cancelled download keeps all it received; a watcher
    shuts the connection down on cancel, so a stalled read does not hold the cancel up either."""
    from huggingface_hub import constants
    from huggingface_hub.utils import hf_raise_for_status, http_stream_backoff

    headers = dict(headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    with http_stream_backoff("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT,
                             retry_on_exceptions=(), retry_on_status_codes=(408, 429)) as response:
        hf_raise_for_status(response)
        if have and response.status_code == 200:  # the server ignored the Range: start over
            fh.seek(0)
            fh.truncate()
            meter.add(-have)
            digest.restart()
        stop = threading.Event()

        def watch():
            while not stop.wait(0.05):
                if is_cancelled(meter.cancel):
                    _interrupt(response)
                    return
        watcher = threading.Thread(target=watch, name="p10-download-cancel", daemon=True)
        watcher.start()
        try:
            for piece in response.iter_bytes():  # as the network delivers it (≤ 64 KB a read)
                fh.write(piece)
                digest.update(piece)
                meter.add(len(piece))  # may raise Cancelled: the piece is on disk already
        except Exception:
            if is_cancelled(meter.cancel):
                raise Cancelled("download cancelled") from None
            raise
        finally:
            stop.set()
            fh.flush()
        if is_cancelled(meter.cancel):
            raise Cancelled("download cancelled")


def _interrupt(response) -> None:
    """Wake a read blocked on ``response``'s connection: shut its socket down (closing it from
    another thread would not wake the read; it would wait for the read timeout)."""
    import socket

    try:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


def _drop_corrupt(storage: str, snapshot: str, files: list[str]) -> list[str]:
    """Remove the cached files among ``files`` whose blobs fail their checksum (and those
    blobs), so they are fetched again; the files removed."""
    bad = corrupt_files(snapshot, [f for f in files if os.path.isfile(os.path.join(snapshot, f))])
    for f in bad:
        link = os.path.join(snapshot, f)
        blob = os.path.realpath(link)
        for path in (link, blob):
            try:
                os.remove(path)
            except OSError:
                pass
        forget(storage, blob)
    return bad


def download(repo_id: str, *, progress: DownloadProgress | None = None, cancel=None,
             cache: str | None = None, token: str | None = None,
             revision: str = "main") -> str:
    """Download what the add-on needs of hub model ``repo_id`` into the cache; its snapshot folder.

    ``progress(done_bytes, total_bytes, bytes_per_second)`` about ten times a second;
    ``cancel`` (Event or callable) stops within one network read (a fraction of a second) and
    keeps every byte fetched, so the next call resumes (whole files are kept, a partial file
    continues with an HTTP Range request). Every file is checked against its checksum; cached
    files that fail it (a damaged disk, a hand edit) are fetched again. Other failures (disk
    full, refused mid-way, a corrupt transfer) remove what this call added.
    Errors are one-line P10Errors: InvalidInputError, ModelNotFoundError, Cancelled.
    """
    rid = check_repo_id(repo_id)
    cache = cache or cache_dir()
    if offline():
        raise ModelNotFoundError(f"cannot download {rid!r}: HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import get_hf_file_metadata
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
    _drop_corrupt(storage, snapshot, wanted)

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
                        digest = Digest(meta.etag, meta.size)
                        with open(part, "a+b") as fh:
                            fh.seek(0)
                            for piece in iter(lambda: fh.read(1 << 20), b""):
                                digest.update(piece)  # the bytes kept from last time
                            fh.seek(0, os.SEEK_END)
                            _stream(meta.location, fh, have, headers, meter, digest)
                        got = os.path.getsize(part)
                        if meta.size is not None and got != meta.size:
                            raise ModelNotFoundError(
                                f"the download of {f} from {rid!r} arrived incomplete ({got} of "
                                f"{meta.size} bytes); nothing was kept: download again")
                        if not digest.matches():
                            os.remove(part)
                            raise ModelNotFoundError(
                                f"the download of {f} from {rid!r} came out corrupt (it fails its "
                                "checksum); nothing was kept: download again")
                        os.replace(part, blob)
                        remember(storage, blob)
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
