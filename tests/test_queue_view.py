"""Heavy runs of the app wait in the server's one queue and show their place in line."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.core import jobs
from vizui import queue_view

ROOT = Path(__file__).resolve().parent.parent


def test_a_slow_step_waits_for_a_busy_server_then_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = jobs.JobQueue(1)
    monkeypatch.setattr(jobs, "HEAVY_JOBS", queue)
    seen: list[int] = []
    original = queue_view._say

    def record(slot: object, label: str, position: int) -> None:
        seen.append(position)
        original(slot, label, position)

    monkeypatch.setattr(queue_view, "_say", record)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/7_Lecture_tour.py").run()
    release = threading.Event()
    held = threading.Event()

    def other_session() -> None:  # another user's optimization holds the only slot
        with queue.slot():
            held.set()
            release.wait(30)

    worker = threading.Thread(target=other_session)
    worker.start()
    held.wait(5)
    threading.Timer(2.0, release.set).start()
    started = time.monotonic()
    at.button(key="tour_deepdream_run").click().run()
    worker.join(10)
    assert not at.exception
    assert time.monotonic() - started >= 2.0  # it waited for the other job
    assert seen and set(seen) == {1}  # "next in line" while the other job ran
    tiles = [c for image in at.image for c in image.captions]
    assert any(c.startswith("DeepDream · `") for c in tiles)  # then it ran
    assert queue.running == 0 and queue.waiting == 0
