"""One dedicated thread that runs solves, one at a time.

Inference never runs inside an executor callback (it would block the timers, services and
subscriptions sharing the executor) and never twice at once (two solves would compete for
the same cores and both miss the budget). The control tick hands a job over with ``submit``,
which refuses while a job is in flight.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class InferenceWorker:
    """A single-slot job runner on its own thread: ``submit`` -> ``handler(job)`` on the worker."""

    def __init__(self, handler: Callable[[Any], None], name: str = "inference",
                 on_error: Callable[[BaseException], None] | None = None):
        self._handler = handler
        self._on_error = on_error
        self._cond = threading.Condition()
        self._job: Any = None
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy

    def submit(self, job: Any) -> bool:
        """Queue ``job`` unless one is queued or running; returns whether it was taken."""
        with self._cond:
            if self._busy or self._stopping:
                return False
            self._job = job
            self._busy = True
            self._cond.notify()
            return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._busy, timeout)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Finish the job in flight (if any) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._stopping)
                if self._job is None:
                    return
                job = self._job
                self._job = None
            try:
                self._handler(job)
            except Exception as exc:  # noqa: BLE001 - the thread must survive a failed job
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
