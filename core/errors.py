"""User-facing errors. Every message is one plain sentence a Blender artist can act on."""

from __future__ import annotations


class P10Error(Exception):
    """Base class: anything the UI or the CLI may show as a one-line message."""


class InvalidInputError(P10Error, ValueError):
    """Bad settings or data from the user (prompts, sizes, zoom factor, photo...)."""


class Cancelled(P10Error):
    """The user cancelled a running job; nothing was written."""


class ModelNotFoundError(P10Error):
    """The model is neither cached locally nor reachable."""


class OutOfMemoryError(P10Error):
    """The device ran out of memory; the message says what to reduce."""


class StackFormatError(P10Error):
    """A zoom-stack folder is incomplete or malformed."""


class ModelOutputError(P10Error, ValueError):
    """A denoiser returned a tensor of the wrong shape or with NaN/inf values."""


def is_cancelled(cancel) -> bool:
    """True when ``cancel`` (a ``threading.Event``-like object or a zero-arg callable) says so."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def raise_if_cancelled(cancel, what: str = "generation") -> None:
    """Raise ``Cancelled`` when the user asked to stop."""
    if is_cancelled(cancel):
        raise Cancelled(f"{what} cancelled")
