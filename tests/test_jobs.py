"""The heavy-job queue: bounded, first come first served, positions shown, leaving the line."""

from __future__ import annotations

import threading
import time

import pytest

from vizcore.core import jobs
from vizcore.core.jobs import JobCancelledError, JobQueue


def _wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_at_most_slots_run_and_the_line_is_fifo() -> None:
    queue = JobQueue(1)
    release = threading.Event()
    order: list[str] = []
    positions: dict[str, list[int]] = {"b": [], "c": []}

    def holder() -> None:
        with queue.slot():
            order.append("a")
            release.wait(5)

    def waiter(name: str) -> None:
        def seen(position: int) -> bool:
            positions[name].append(position)
            return True

        with queue.slot(on_wait=seen, poll_s=0.01):
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    _wait_until(lambda: queue.running == 1)
    for name in ("b", "c"):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        _wait_until(lambda n=name: bool(positions[n]))
    assert queue.running == 1 and queue.waiting == 2
    assert positions["b"][-1] == 1 and positions["c"][-1] == 2
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["a", "b", "c"]
    assert queue.running == 0 and queue.waiting == 0


def test_leaving_the_line_removes_the_job_and_the_next_moves_up() -> None:
    queue = JobQueue(1)
    release = threading.Event()
    leave = threading.Event()
    c_positions: list[int] = []
    outcome: dict[str, object] = {}

    def holder() -> None:
        with queue.slot():
            release.wait(5)

    def quitter() -> None:
        try:
            with queue.slot(on_wait=lambda _p: not leave.is_set(), poll_s=0.01):
                outcome["b"] = "ran"
        except JobCancelledError:
            outcome["b"] = "cancelled"

    def third() -> None:
        with queue.slot(on_wait=lambda p: c_positions.append(p) or True, poll_s=0.01):
            outcome["c"] = "ran"

    a = threading.Thread(target=holder)
    a.start()
    _wait_until(lambda: queue.running == 1)
    b = threading.Thread(target=quitter)
    b.start()
    _wait_until(lambda: queue.waiting == 1)
    c = threading.Thread(target=third)
    c.start()
    _wait_until(lambda: c_positions and c_positions[-1] == 2)
    leave.set()
    b.join(5)
    assert outcome["b"] == "cancelled"
    _wait_until(lambda: c_positions[-1] == 1)  # moved up
    release.set()
    a.join(5)
    c.join(5)
    assert outcome["c"] == "ran" and queue.waiting == 0 and queue.running == 0


def test_an_exception_while_waiting_leaves_no_ghost() -> None:
    queue = JobQueue(1)
    release = threading.Event()

    def holder() -> None:
        with queue.slot():
            release.wait(5)

    def boom(_position: int) -> bool:
        raise KeyboardInterrupt  # what Streamlit's rerun-on-Stop looks like to this code

    a = threading.Thread(target=holder)
    a.start()
    _wait_until(lambda: queue.running == 1)
    with pytest.raises(KeyboardInterrupt), queue.slot(on_wait=boom):
        pass
    assert queue.waiting == 0
    release.set()
    a.join(5)
    with queue.slot():  # the slot is free again
        assert queue.running == 1


def test_re_entrant_in_one_thread_and_two_slots_run_together() -> None:
    queue = JobQueue(1)
    with queue.slot(), queue.slot():  # a heavy job calling another heavy job never self-waits
        assert queue.running == 1
    assert queue.running == 0
    two = JobQueue(2)
    inside = threading.Barrier(2, timeout=5)

    def job() -> None:
        with two.slot():
            inside.wait()  # both must be inside at once, or the barrier times out

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not inside.broken


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_slot_counts_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        JobQueue(bad)  # type: ignore[arg-type]


def test_default_slots_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(jobs.SLOTS_ENV, "3")
    assert jobs.default_slots() == 3
    monkeypatch.setenv(jobs.SLOTS_ENV, "zero")
    with pytest.raises(ValueError, match="VIZCORE_HEAVY_JOBS must be a positive integer"):
        jobs.default_slots()
    monkeypatch.delenv(jobs.SLOTS_ENV)
    assert jobs.default_slots() >= 1
