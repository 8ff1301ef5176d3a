"""SIGTERM and SIGHUP handled like Ctrl-C, and signals held back during the final renames.
Stdlib only.

Python's default SIGTERM and SIGHUP (the terminal was closed) end the process without running
``finally`` blocks, which would leave the hidden staging folders of an interrupted run and the
parent folders it made behind; raising ``Terminated`` (a KeyboardInterrupt) instead runs every
cleanup path Ctrl-C runs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM (or SIGHUP: ``signum``); exit code 128 + signum."""

    def __init__(self, message: str = "terminated", signum: int = 15):
        super().__init__(message)
        self.signum = signum


#: Signals that end the process like SIGTERM (SIGHUP: the terminal was closed; POSIX only).
ENDING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_terminated(signum, frame):
    raise Terminated("terminated", signum)


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread (a no-op
    elsewhere)."""
    if not _in_main_thread() or not ENDING_SIGNALS:
        yield
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in ENDING_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_deferred(redeliver: bool = False) -> Iterator[list[int]]:
    """Hold SIGINT / SIGTERM back for a short critical section (e.g. moving the old output aside
    and renaming the new one in); the yielded list records the signals that arrived.
    ``redeliver``: on leaving, raise them again under the restored handlers (for a section that
    only arms its own cleanup, such as creating a temporary file and the process writing it)."""
    if not _in_main_thread():
        yield []
        return
    pending: list[int] = []
    signums = [s for s in (getattr(signal, "SIGINT", None), *ENDING_SIGNALS) if s]
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in signums}
    try:
        yield pending
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if redeliver:
            for s in dict.fromkeys(pending):  # each signal once, in the order it came
                signal.raise_signal(s)
