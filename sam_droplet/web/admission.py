"""Backpressure: a bounded number of segmentations at once, a bounded queue, a deadline for each.

A segmentation holds the model, a few hundred MB and every core for seconds; accepting more than
the process can run only grows memory and latency until clients time out. :class:`Admission` lets
``max_concurrent`` run, lets ``max_queue`` wait, and refuses the rest at once with
:class:`Overloaded` (HTTP 503 with Retry-After). Each admitted request gets a :class:`Deadline`
whose ``check`` the pipeline calls at bounded intervals inside every stage (at most about a second
of work apart on 2 cores) and between SAM batches (:class:`DeadlineExceeded`, HTTP 504).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import DeadlineExceeded, Overloaded

__all__ = ["Admission", "Deadline"]


@dataclass(frozen=True)
class Deadline:
    """A point in ``time.monotonic()`` seconds after which the request's work stops."""

    at: float
    budget_s: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    @property
    def remaining_s(self) -> float:
        return self.at - time.monotonic()

    def check(self, stage: str = "") -> None:
        """Raise :class:`DeadlineExceeded` when the deadline has passed."""
        if time.monotonic() > self.at:
            where = f" during {stage}" if stage else ""
            raise DeadlineExceeded(
                f"the segmentation took longer than {self.budget_s:g} s (REQUEST_TIMEOUT_S) and was stopped{where}; "
                "try a smaller image or the classical segmenter"
            )


class Admission:
    """At most ``max_concurrent`` segmentations at once and ``max_queue`` waiting (thread-safe).

    ``on_change(admission)`` is called, under the lock, whenever ``running`` or ``waiting`` changes
    (the web layer exports them as metrics).
    """

    def __init__(
        self,
        max_concurrent: int = 1,
        max_queue: int = 8,
        timeout_s: float = 300.0,
        on_change: Callable[[Admission], None] | None = None,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._slots = threading.Semaphore(max_concurrent)
        self._lock = threading.Lock()
        self._on_change = on_change or (lambda _admission: None)
        self.waiting = 0
        self.running = 0
        self._on_change(self)

    def fit_to_threads(self, threads: int, reserve: int = 2) -> None:
        """Never let segmentations (running or queued) hold more than ``threads - reserve`` of the
        server's ``threads`` worker threads: the rest answer /health, /metrics, the page and the
        refusals. A request that would need another thread is refused at once (503), instead of
        waiting for a thread where no deadline or queue limit sees it."""
        room = max(1, threads - reserve)
        with self._lock:
            if self.max_concurrent > room:
                # Only before any request: the semaphore is rebuilt with fewer slots.
                self.max_concurrent = room
                self._slots = threading.Semaphore(room)
            self.max_queue = max(0, min(self.max_queue, room - self.max_concurrent))
            self._on_change(self)

    @property
    def full(self) -> bool:
        """Whether one more segmentation would be refused now (every slot and queue place taken)."""
        return self.running >= self.max_concurrent and self.waiting >= self.max_queue

    def _retry_after(self) -> int:
        # About one segmentation's time per request ahead, at least a few seconds.
        return max(2, min(60, 3 * (self.waiting + 1) // self.max_concurrent))

    @contextmanager
    def slot(self) -> Iterator[Deadline]:
        """Wait for a slot (within the deadline) and hold it; yields the request's deadline.

        Raises:
            Overloaded: the queue is full, or no slot freed before the deadline.
        """
        deadline = Deadline.after(self.timeout_s)
        with self._lock:
            if not self._slots.acquire(blocking=False):
                if self.waiting >= self.max_queue:
                    raise Overloaded(
                        f"the service is busy ({self.running} running, {self.waiting} waiting); try again shortly",
                        retry_after_s=self._retry_after(),
                    )
                self.waiting += 1
                self._on_change(self)
                queued = True
            else:
                queued = False
        if queued:
            try:
                acquired = self._slots.acquire(timeout=max(0.0, deadline.remaining_s))
            finally:
                with self._lock:
                    self.waiting -= 1
                    self._on_change(self)
            if not acquired:
                raise Overloaded(
                    f"no segmentation slot freed within {self.timeout_s:g} s (REQUEST_TIMEOUT_S); try again later",
                    retry_after_s=self._retry_after(),
                )
        with self._lock:
            self.running += 1
            self._on_change(self)
        try:
            yield deadline
        finally:
            with self._lock:
                self.running -= 1
                self._on_change(self)
            self._slots.release()
