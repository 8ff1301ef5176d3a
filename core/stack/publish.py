"""Output folders and files: checked before the long run, filled hidden, published atomically.

Rules (docs/faults.md): the output location is checked before any model loads (creatable,
writable, enough room); results are assembled in a hidden sibling and appear under their name
in one rename; an existing target is replaced only when asked, and then atomically (old moved
aside, new renamed in, old deleted); nothing the run did not create is ever deleted; files and
folders get the modes the umask allows (``tempfile`` would make them private: 0700 / 0600).

Stdlib only: the add-on checks its output folder with it before torch is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

from ..errors import InvalidInputError

MANIFEST = "manifest.json"  # a zoom stack's manifest (core.stack.stack_io.MANIFEST)
STACK_FORMAT = "p10-zoom-stack"  # its "format" field (core.stack.stack_io.FORMAT)
#: What a zoom-stack folder holds besides its manifest and the layers it lists: its preview
#: video, and the files a file manager leaves. ``--force`` replaces nothing else.
STACK_OWN_FILES = ("preview.mp4", ".DS_Store", "Thumbs.db", "desktop.ini")


# ----------------------------------------------------------------------------- hidden siblings
def make_hidden_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new empty folder ``parent/<prefix>XXXXXXXX``, mode 0777 less the umask."""
    for _ in range(100):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}"
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


def make_hidden_file(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """A new empty file ``parent/<prefix>XXXXXXXX<suffix>``, mode 0666 less the umask."""
    for _ in range(100):
        path = Path(parent) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {parent}")


# ------------------------------------------------------------------------------------- renames
def _rename_onto_own_dir(src: Path, placeholder: Path) -> None:
    """Rename ``src`` onto ``placeholder``, an empty folder this process just made."""
    if os.name == "nt":  # Windows never renames onto an existing folder
        os.rmdir(placeholder)
    os.rename(src, placeholder)  # POSIX: atomically replaces the empty placeholder


def rename_noreplace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the folder ``src`` to ``dst``; FileExistsError if anything is at ``dst``.

    ``os.rename`` would silently replace an empty folder at ``dst`` on POSIX: making ``dst``
    ourselves first (mkdir fails if anything is there) and renaming onto it closes that gap.
    """
    src, dst = Path(src), Path(dst)
    if os.name == "nt":
        os.rename(src, dst)
        return
    os.mkdir(dst, 0o700)
    try:
        os.rename(src, dst)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(dst)  # still our empty placeholder (rmdir refuses anything else)
        raise


def publish_dir(src: str | os.PathLike, dst: str | os.PathLike, *, replace: bool = False) -> Path:
    """Move the complete folder ``src`` to ``dst`` in one rename.

    Without ``replace`` an existing ``dst`` raises FileExistsError and is left alone. With it,
    the old ``dst`` is moved aside to a hidden sibling, ``src`` renamed in, then the old one
    deleted; if renaming in fails, the old one is put back. At every instant ``dst`` is either
    the complete old folder or the complete new one.
    """
    src, dst = Path(src), Path(dst)
    if not replace or not os.path.lexists(dst):
        rename_noreplace(src, dst)
        return dst
    aside = make_hidden_dir(dst.parent, f".{dst.name}.old-")
    _rename_onto_own_dir(dst, aside)
    try:
        rename_noreplace(src, dst)
    except BaseException:
        os.rename(aside, dst)
        raise
    _remove_old(aside)
    return dst


def _remove_old(folder: Path) -> None:
    """Delete the replaced old folder; a read-only subfolder (ours to delete: it was just
    replaced) is made writable first rather than left behind as a hidden copy."""
    def retry(func, path, exc_info):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path), 0o700)
            func(path)
    shutil.rmtree(folder, onerror=retry)


# ----------------------------------------------------------------------------------- checks
def _strerror(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_output_location(target: str | os.PathLike, needed_bytes: int = 0) -> None:
    """Raise InvalidInputError unless a folder ``target`` can be created and written.

    Side-effect free: the nearest existing ancestor must be a folder in which a probe folder
    can be made (and is removed again) - a real test, which also catches read-only disks and
    ACLs that ``os.access`` misses - with ``needed_bytes`` free.
    """
    target = Path(os.path.abspath(os.path.expanduser(str(target))))
    anc = nearest_existing(target.parent)
    if not anc.is_dir():
        raise InvalidInputError(f"cannot create the folder {target}: {anc} is a file, not a folder")
    try:
        os.rmdir(make_hidden_dir(anc, ".p10-probe-"))
    except OSError as exc:
        raise InvalidInputError(f"cannot write to the folder {anc}: {_strerror(exc)}") from None
    check_free_space(anc, needed_bytes)


def check_free_space(folder: Path, needed_bytes: int) -> None:
    if needed_bytes <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < needed_bytes:
        raise InvalidInputError(
            f"not enough free disk space in {folder}: {_bytes(free)} free, about "
            f"{_bytes(needed_bytes)} needed")


def _bytes(n: int) -> str:
    """A size with the digits that matter: '0 bytes', '12.3 KB', '4.1 MB', '2.5 GB'."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000.0
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"


def foreign_entries(path: Path) -> list[str] | None:
    """The entries of folder ``path`` that are not a zoom stack's own files, or None when it is
    not a zoom stack at all (no manifest.json of the stack format listing its layers)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        entries = sorted(os.listdir(path))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != STACK_FORMAT \
            or not isinstance(manifest.get("layers"), list):
        return None
    own = {MANIFEST, *STACK_OWN_FILES, *(n for n in manifest["layers"] if isinstance(n, str))}
    return [e for e in entries if e not in own or (path / e).is_symlink() or not (path / e).is_file()]


def is_replaceable(path: Path) -> bool:
    """What ``--force`` may replace: an empty folder, or a zoom-stack folder (its manifest has
    the stack format) holding nothing but its own files (manifest, layers, preview video)."""
    if path.is_symlink() or not path.is_dir():
        return False
    return not any(path.iterdir()) or foreign_entries(path) == []


def _unremovable(folder: Path) -> Path | None:
    """A folder inside ``folder`` (or itself) whose entries cannot be deleted, or None."""
    for root, _, _ in os.walk(folder):
        if not os.access(root, os.W_OK | os.X_OK):
            return Path(root)
    return None


def check_target(target: Path, replace: bool) -> None:
    """The output folder ``target`` may be created, or (``replace``) replaced. One-line errors."""
    if not target.name:
        raise InvalidInputError(f"{target} cannot be an output folder; name a new folder")
    if not os.path.lexists(target):
        return
    if not replace:
        raise InvalidInputError(f"{target} already exists; choose another output folder or add --force")
    cwd = Path.cwd().resolve()
    resolved = target.resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InvalidInputError(f"{target} is the current folder (or holds it); --force will not "
                                "replace it: choose another output folder")
    if target.is_symlink():
        raise InvalidInputError(f"{target} is a symbolic link (to {os.readlink(target)}); --force "
                                "replaces folders, not links: give the folder it points to")
    if not target.is_dir():
        raise InvalidInputError(f"{target} exists and is not a folder; --force replaces only a "
                                "zoom-stack folder")
    if not is_replaceable(target):
        foreign = foreign_entries(target)
        if foreign is None:
            raise InvalidInputError(f"{target} is not a zoom-stack folder (no {MANIFEST} of a "
                                    "zoom stack) and not empty; --force replaces only a zoom stack")
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise InvalidInputError(f"{target} holds files that are not part of its zoom stack "
                                f"({', '.join(foreign[:3])}{more}); --force replaces only a "
                                "stack's own files: move them or choose another output folder")
    locked = _unremovable(target)
    if locked is not None:  # replacing it would leave a hidden full copy that cannot be deleted
        raise InvalidInputError(f"{target} cannot be replaced: {locked} is read-only (make it "
                                "writable, or choose another output folder)")


# ----------------------------------------------------------------------------- staged folder
class StagedFolder:
    """An output folder built in a hidden sibling and published in one rename.

    Made before the long run (so a bad location fails at once, not after it):
    ``StagedFolder(target, replace=, needed_bytes=)`` checks the target, creates missing
    parents, and makes the hidden sibling ``.<name>.XXXXXXXX`` to fill (``.path``).
    ``publish()`` renames it into place; ``discard()`` (also on leaving a ``with`` block by an
    exception) removes it and the parent folders this object created, if still empty.
    """

    def __init__(self, target: str | os.PathLike, *, replace: bool = False, needed_bytes: int = 0):
        self.target = Path(os.path.abspath(os.path.expanduser(str(target))))
        self.replace = replace
        check_target(self.target, replace)
        check_output_location(self.target, needed_bytes)
        self._created: list[Path] = []
        try:
            self._make_parents(self.target.parent)
            self.path: Path | None = make_hidden_dir(self.target.parent, f".{self.target.name}.")
        except OSError as exc:
            self.discard()
            raise InvalidInputError(f"cannot create the folder {self.target}: {_strerror(exc)}") from None

    def _make_parents(self, folder: Path) -> None:
        missing = []
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            os.mkdir(d, 0o777)
            self._created.append(d)

    def publish(self) -> Path:
        """Rename the filled folder into place; return where it went.

        If the target appeared during the run (or, with ``replace``, became something
        ``--force`` must not replace), the result goes to the first free ``<name>-2``,
        ``<name>-3``... instead: nothing is lost, nothing is overwritten. The caller compares
        the result with ``target``.
        """
        assert self.path is not None, "already published or discarded"
        replace = self.replace and os.path.lexists(self.target) and is_replaceable(self.target)
        candidates = [self.target] + [self.target.with_name(f"{self.target.name}-{i}")
                                      for i in range(2, 1000)]
        for i, dst in enumerate(candidates):
            try:
                publish_dir(self.path, dst, replace=replace and i == 0)
                break
            except FileExistsError:  # something else is there: never replaced, never deleted
                continue
        else:
            raise FileExistsError(f"no free name next to {self.target}")
        self.path = None
        return dst

    def discard(self) -> None:
        """Remove the hidden folder and the parents this object made (only while empty)."""
        if getattr(self, "path", None) is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        self._created = []

    def __enter__(self) -> "StagedFolder":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.path is not None:
            self.discard()


__all__ = ["STACK_FORMAT", "StagedFolder", "check_output_location", "check_target",
           "foreign_entries", "is_replaceable", "make_hidden_dir", "make_hidden_file",
           "publish_dir", "rename_noreplace"]
