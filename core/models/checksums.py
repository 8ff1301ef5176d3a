"""Checksums of downloaded model files: a cached blob's name is its checksum; check it.

In the Hugging Face cache every file of a snapshot links to ``blobs/<etag>``, and the hub's
etag *is* a checksum of the content: the SHA-256 of an LFS file (the weights: 64 hex digits)
or the git blob id of a small file (SHA-1 of ``"blob <size>\\0" + content``: 40 hex digits).
So a model can be verified offline, without asking the hub. Hashing gigabytes takes seconds
(about 1 GB/s), so a blob found intact is remembered by (size, mtime) in
``<repo folder>/p10-checksums.json`` and hashed again only when it changes. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

#: The record of blobs found intact, in the repo folder (huggingface_hub ignores it).
RECORD = "p10-checksums.json"
_PIECE = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


class Digest:
    """An incremental checksum of the kind an etag names: ``update(bytes)``, ``hexdigest()``."""

    def __init__(self, etag: str, size: int | None = None):
        self.etag, self.size = etag.strip('"').lower(), size
        self.restart()

    def restart(self) -> None:
        """Forget the bytes given so far."""
        if _SHA256.fullmatch(self.etag):
            self.kind, self._h = "sha256", hashlib.sha256()
        elif _GIT_SHA1.fullmatch(self.etag) and self.size is not None:
            self.kind, self._h = "git-sha1", hashlib.sha1(b"blob %d\0" % self.size)
        else:  # not a checksum (a proxy's etag): nothing to check
            self.kind, self._h = None, None

    def update(self, data: bytes) -> None:
        if self._h is not None:
            self._h.update(data)

    def matches(self) -> bool:
        """True when the bytes given hash to the etag (or the etag is no checksum)."""
        return self._h is None or self._h.hexdigest() == self.etag


def file_matches(path: str, etag: str) -> bool:
    """Whether the file ``path`` hashes to ``etag`` (True when ``etag`` is no checksum)."""
    size = os.path.getsize(path)
    digest = Digest(etag, size)
    if digest.kind is None:
        return True
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(_PIECE), b""):
            digest.update(piece)
    return digest.matches()


def _stamp(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _load(storage: str) -> dict:
    try:
        with open(os.path.join(storage, RECORD), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(storage: str, record: dict) -> None:
    path = os.path.join(storage, RECORD)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError:  # a read-only cache: check again next time
        try:
            os.remove(tmp)
        except OSError:
            pass


def remember(storage: str, blob: str) -> None:
    """Record the blob ``storage/blobs/<etag>`` as intact (it was just hashed while written)."""
    record = _load(storage)
    record[os.path.basename(blob)] = _stamp(blob)
    _save(storage, record)


def forget(storage: str, blob: str) -> None:
    record = _load(storage)
    if record.pop(os.path.basename(blob), None) is not None:
        _save(storage, record)


def corrupt_files(snapshot: str, files: list[str] | None = None) -> list[str]:
    """The files of a cached snapshot whose blob does not hash to its name ([] = intact).

    ``files``: the snapshot's relative paths to check (default: all). Files that are not links
    into ``blobs/`` (a local folder, Windows copies without links) cannot be checked: skipped.
    """
    storage = os.path.dirname(os.path.dirname(os.path.abspath(snapshot)))
    blobs = os.path.join(storage, "blobs")
    if files is None:
        files = [os.path.relpath(os.path.join(root, n), snapshot)
                 for root, _, names in os.walk(snapshot) for n in names]
    record, changed, bad = _load(storage), False, []
    for rel in sorted(files):
        link = os.path.join(snapshot, rel)
        blob = os.path.realpath(link)
        if os.path.dirname(blob) != os.path.realpath(blobs) or not os.path.isfile(blob):
            continue
        name = os.path.basename(blob)
        stamp = _stamp(blob)
        if record.get(name) == stamp:
            continue
        if file_matches(blob, name):
            record[name], changed = stamp, True
        else:
            bad.append(rel.replace(os.sep, "/"))
            changed = record.pop(name, None) is not None or changed
    if changed:
        _save(storage, record)
    return bad


__all__ = ["Digest", "RECORD", "corrupt_files", "file_matches", "forget", "remember"]
