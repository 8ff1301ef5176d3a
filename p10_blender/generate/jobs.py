"""Background jobs: a worker thread, a message queue, and a main-thread poller.

The worker never touches bpy (it may use torch); the main thread never blocks on the worker.
Messages cross through ``Job.queue`` and are applied by ``poll()``, which a ``bpy.app.timers``
timer calls (timer contract: return the seconds until the next call, or None to stop).
``bpy.app.timers`` never fire in background mode, so there ``drive(job)`` calls ``poll()`` in a
loop until the job ends: the same code path, run synchronously.

This module imports bpy only inside the timer helpers, so plain pytest can test it. A job is
cancelled when its work raises ``core.errors.Cancelled`` (or a subclass) or its cancel event is set.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from ...core.errors import Cancelled

POLL_INTERVAL = 0.1  # seconds between timer polls while a job runs

RUNNING, DONE, FAILED, CANCELLED = "RUNNING", "DONE", "FAILED", "CANCELLED"


class Reporter:
    """What a worker function gets: post progress / messages, and check for cancel."""

    def __init__(self, job: "Job"):
        self._job = job

    @property
    def cancel_event(self) -> threading.Event:
        return self._job.cancel_event

    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()

    def progress(self, phase: str, step: int, total: int, preview: Any = None) -> None:
        self._job.queue.put(("progress", (phase, int(step), int(total), preview)))

    def post(self, kind: str, payload: Any = None) -> None:
        """A custom message, handed to the job's ``on_message`` on the main thread."""
        self._job.queue.put((kind, payload))


@dataclass
class Job:
    """One background task. Fields other than ``queue``/``cancel_event`` are main-thread only."""

    name: str
    work: Callable[[Reporter], Any]
    on_message: Callable[["Job", str, Any], None] | None = None
    on_finish: Callable[["Job"], None] | None = None
    queue: "queue.Queue" = field(default_factory=queue.Queue)
    cancel_event: threading.Event = field(default_factory=threading.Event)
    state: str = RUNNING
    phase: str = "starting"
    step: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    step_started: float | None = None  # when the current phase's step counting began
    result: Any = None
    error: str | None = None
    detail: str | None = None  # traceback of an unexpected error, for the log only
    thread: threading.Thread | None = None
    data: dict = field(default_factory=dict)  # free room for the job's owner

    @property
    def running(self) -> bool:
        return self.state == RUNNING

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0

    def seconds_left(self) -> float | None:
        """Linear estimate for the current phase; None until a step has finished."""
        done = self.step - self.data.get("step_base", 0)
        if not self.total or done <= 0 or self.step_started is None:
            return None
        elapsed = time.monotonic() - self.step_started
        return elapsed / done * (self.total - self.step)

    def cancel(self) -> None:
        self.cancel_event.set()


def _run(job: Job, error_message: Callable[[BaseException], str | None]) -> None:
    reporter = Reporter(job)
    try:
        result = job.work(reporter)
    except BaseException as exc:  # report everything; the main thread decides what to show
        kind = "cancelled" if isinstance(exc, Cancelled) or job.cancel_event.is_set() else "failed"
        job.queue.put((kind, (error_message(exc) or str(exc) or type(exc).__name__,
                              traceback.format_exc())))
        return
    if job.cancel_event.is_set():
        job.queue.put(("cancelled", ("Cancelled.", None)))
    else:
        job.queue.put(("done", result))


class JobRunner:
    """At most one job at a time; ``current`` stays set after it ends so the UI can show it."""

    def __init__(self, error_message: Callable[[BaseException], str | None] = lambda e: None):
        self.current: Job | None = None
        self.error_message = error_message

    @property
    def busy(self) -> bool:
        return self.current is not None and self.current.running

    def start(self, job: Job) -> Job:
        if self.busy:
            raise RuntimeError(f"{self.current.name} is still running; cancel it first")
        self.current = job
        job.thread = threading.Thread(target=_run, args=(job, self.error_message),
                                      name=f"p10-{job.name}", daemon=True)
        job.thread.start()
        return job

    def poll(self) -> float | None:
        """Apply queued messages on the main thread. Timer contract: seconds, or None to stop."""
        job = self.current
        if job is None or not job.running:
            return None
        latest_progress = None
        while True:
            try:
                kind, payload = job.queue.get_nowait()
            except queue.Empty:
                break
            if kind == "progress":
                latest_progress = payload  # previews are costly: only the newest is applied
                self._apply_progress(job, payload, preview=False)
            elif kind in ("done", "failed", "cancelled"):
                if latest_progress is not None:
                    self._deliver(job, "progress", latest_progress)
                    latest_progress = None
                self._end(job, kind, payload)
                return None
            else:
                self._deliver(job, kind, payload)
        if latest_progress is not None:
            self._deliver(job, "progress", latest_progress)
        return POLL_INTERVAL

    def _apply_progress(self, job: Job, payload, preview: bool) -> None:
        phase, step, total, _ = payload
        if phase != job.phase or job.step_started is None or step < job.step:
            job.step_started, job.data["step_base"] = time.monotonic(), step  # new phase: new ETA
        job.phase, job.step, job.total = phase, step, total

    def _deliver(self, job: Job, kind: str, payload) -> None:
        if job.on_message is not None:
            try:
                job.on_message(job, kind, payload)
            except Exception as exc:  # a UI update failing must not kill the job's bookkeeping
                job.detail = traceback.format_exc()
                print(f"Powers of Ten: could not apply {kind}: {exc}")

    def _end(self, job: Job, kind: str, payload) -> None:
        if kind == "done":
            job.state, job.result = DONE, payload
        else:
            job.state = FAILED if kind == "failed" else CANCELLED
            job.error, job.detail = payload
        if job.on_finish is not None:
            try:
                job.on_finish(job)
            except Exception as exc:
                job.state, job.error = FAILED, f"Could not load the result: {exc}"
                job.detail = traceback.format_exc()
        if job.detail and job.state == FAILED:
            print(job.detail)

    def drive(self, job: Job, timeout: float | None = None, interval: float = 0.02) -> Job:
        """Run the poller synchronously until ``job`` ends (background mode, tests)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.running:
            self.poll()
            if not job.running:
                break
            if deadline is not None and time.monotonic() > deadline:
                job.cancel()
                deadline = None  # give the worker its step to stop, then keep draining
            time.sleep(interval)
        if job.thread is not None:
            job.thread.join(timeout=5)
        return job

    def cancel(self) -> bool:
        if self.busy:
            self.current.cancel()
            return True
        return False


# -- bpy timer glue ------------------------------------------------------------------------

def _timer(runner: JobRunner) -> Callable[[], float | None]:
    def p10_job_poller() -> float | None:
        return runner.poll()
    return p10_job_poller


_timers: dict[int, Callable] = {}


def start_polling(runner: JobRunner, force: bool = False) -> None:
    """Register the main-thread poller (no-op in background mode, where timers never fire,
    unless ``force``: tests use it to check unregister removes the timer)."""
    import bpy
    if bpy.app.background and not force:
        return
    fn = _timers.get(id(runner))
    if fn is None or not bpy.app.timers.is_registered(fn):
        fn = _timers[id(runner)] = _timer(runner)
        # persistent: a job cancelled by a file load must still be polled to its end
        bpy.app.timers.register(fn, first_interval=POLL_INTERVAL, persistent=True)


def stop_polling(runner: JobRunner) -> None:
    import bpy
    fn = _timers.pop(id(runner), None)
    if fn is not None and bpy.app.timers.is_registered(fn):
        bpy.app.timers.unregister(fn)


def registered_timers() -> list[Callable]:
    """Timers this module registered that are still live (tests check none leak)."""
    import bpy
    return [fn for fn in _timers.values() if bpy.app.timers.is_registered(fn)]
