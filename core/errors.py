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


class WriteError(P10Error):
    """An output could not be written or came out unreadable (disk full, file-size limit...)."""


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


# Out-of-memory as raised by torch on each device (CUDA, MPS, the CPU allocator) and by Python.
# Matched on the text because torch's classes cannot be imported here (torch-free module) and
# the CPU allocator raises a plain RuntimeError, e.g. "[enforce fail at alloc_cpu.cpp:127] ...
# DefaultCPUAllocator: can't allocate memory: you tried to allocate 8589934592 bytes".
_OOM_TEXT = ("out of memory", "can't allocate memory", "cannot allocate memory",
             "not enough memory", "defaultcpuallocator", "alloc_cpu.cpp", "failed to allocate")


def is_out_of_memory(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) means the device ran out of memory.

    One detector for the command line, ``core.generate`` and the add-on: ``MemoryError``,
    ``torch.OutOfMemoryError`` / ``torch.cuda.OutOfMemoryError`` (by class name), and the
    RuntimeErrors of the CUDA, MPS and CPU allocators (by message).
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (MemoryError, OutOfMemoryError)) or type(exc).__name__ == "OutOfMemoryError":
            return True
        if isinstance(exc, RuntimeError):
            text = str(exc).lower()
            if any(t in text for t in _OOM_TEXT):
                return True
        exc = exc.__cause__ or exc.__context__
    return False
