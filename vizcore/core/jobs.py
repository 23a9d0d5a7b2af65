"""One bounded, first-come-first-served queue for heavy jobs shared by every session of a server.

A hosted share link runs many browser sessions on a small CPU server. The per-model lock
(:class:`vizcore.core.hooks.ModelLock`) keeps hook and autograd work on one model apart, batch by
batch, but it does not bound how many heavy jobs (optimizations, occlusion, Score-CAM, gallery
extraction, t-SNE) share the cores: eight sessions running eight optimizations make every page
eight times slower. :data:`HEAVY_JOBS` admits at most ``slots`` heavy jobs at a time, in arrival
order; the others wait, see their place in the line through ``on_wait`` and can leave it (Stop)
before they start. Light work (one forward or backward pass) never queues.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: Environment variable overriding the number of heavy jobs that may run at once.
SLOTS_ENV = "VIZCORE_HEAVY_JOBS"

#: ``on_wait(position)``: called about every ``poll_s`` while waiting, ``position`` 1 = next in
#: line; returning ``False`` leaves the line (:class:`JobCancelledError` is raised).
WaitCallback = Callable[[int], bool]


class JobCancelledError(RuntimeError):
    """The job left the queue before it started (``on_wait`` returned ``False``)."""


class JobQueue:
    """A FIFO admission queue with ``slots`` concurrent places (re-entrant per thread)."""

    def __init__(self, slots: int) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"A job queue needs at least one slot, not {slots!r}.")
        self.slots = slots
        self._cond = threading.Condition()
        self._waiting: deque[int] = deque()
        self._running: dict[int, int] = {}  # ticket -> thread id
        self._depth: dict[int, int] = {}  # thread id -> nesting depth (re-entrant)
        self._tickets = itertools.count()

    @property
    def running(self) -> int:
        """Jobs running now."""
        with self._cond:
            return len(self._running)

    @property
    def waiting(self) -> int:
        """Jobs waiting for a slot now."""
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def slot(self, *, on_wait: WaitCallback | None = None, poll_s: float = 0.25) -> Iterator[None]:
        """Hold one slot for the ``with`` body; wait for it in arrival order.

        A thread that already holds a slot enters again at once (a heavy job that calls
        another heavy function never waits for itself). The ticket leaves the queue in
        ``finally``, so an exception raised inside ``on_wait`` (Streamlit's rerun on Stop)
        never leaves a ghost in the line.

        Raises:
            JobCancelledError: ``on_wait`` returned ``False`` before the job started.
        """
        me = threading.get_ident()
        with self._cond:
            if self._depth.get(me):
                self._depth[me] += 1
                nested = True
            else:
                nested = False
        if nested:
            try:
                yield
            finally:
                with self._cond:
                    self._depth[me] -= 1
            return
        ticket = self._enter(me, on_wait, poll_s)
        try:
            yield
        finally:
            with self._cond:
                self._running.pop(ticket, None)
                self._depth.pop(me, None)
                self._cond.notify_all()

    def _enter(self, me: int, on_wait: WaitCallback | None, poll_s: float) -> int:
        with self._cond:
            ticket = next(self._tickets)
            self._waiting.append(ticket)
        admitted = False
        try:
            while True:
                with self._cond:
                    if self._waiting[0] == ticket and len(self._running) < self.slots:
                        self._waiting.popleft()
                        self._running[ticket] = me
                        self._depth[me] = 1
                        admitted = True
                        self._cond.notify_all()
                        return ticket
                    position = self._waiting.index(ticket) + 1
                    if on_wait is None:
                        self._cond.wait()
                        continue
                if not on_wait(position):
                    raise JobCancelledError("Left the queue before the job started.")
                with self._cond:
                    self._cond.wait(timeout=poll_s)
        finally:
            if not admitted:
                with self._cond:
                    if ticket in self._waiting:
                        self._waiting.remove(ticket)
                    self._cond.notify_all()


def default_slots() -> int:
    """``VIZCORE_HEAVY_JOBS``, else one job per torch intra-op thread pool that fits the cores.

    Raises:
        ValueError: The environment variable is not a positive integer.
    """
    value = os.environ.get(SLOTS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{SLOTS_ENV} must be a positive integer, not {value!r}.")
        return int(value)
    import torch

    cores = os.cpu_count() or 1
    return max(1, cores // max(1, torch.get_num_threads()))


#: The server-wide queue every heavy job in the app goes through.
HEAVY_JOBS = JobQueue(default_slots())
