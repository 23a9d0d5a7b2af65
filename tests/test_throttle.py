"""Live progress and frames are throttled by time, not sent on every step (issue 19 item 2).

The run helpers of the optimization pages are driven with a fake clock and fake Streamlit
elements: 1,000 steps in 2 simulated seconds, a frame every 5 steps. Before the throttle every
step updated the bar (1,000 messages) and every frame was encoded and sent (200 images).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import streamlit as st
from PIL import Image

from vizcore.core.progress import StepInfo
from vizui import style_view, synthesis_view
from vizui.throttle import FRAME_INTERVAL, PROGRESS_INTERVAL, Throttle, preview_jpeg

STEPS = 1000
STEP_SECONDS = 0.002  # 2 simulated seconds in all
FRAME_EVERY = 5
SIM_SECONDS = STEPS * STEP_SECONDS


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeElement:
    """Records every update of a bar, a slot, a button with the fake clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.progress_calls: list[float] = []
        self.image_calls: list[tuple[float, Any, Any]] = []

    def progress(self, value: float, text: str = "") -> FakeElement:
        self.progress_calls.append(self.clock.now)
        return self

    def image(self, image: Any, caption: str = "", width: Any = None) -> None:
        self.image_calls.append((self.clock.now, image, width))

    def button(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def empty(self) -> None:
        pass

    def container(self) -> FakeElement:
        return self

    def columns(self, spec: int | list[int], **kwargs: Any) -> list[FakeElement]:
        return [self] * (len(spec) if isinstance(spec, list) else spec)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeClock, FakeElement]:
    clock = FakeClock()
    element = FakeElement(clock)
    monkeypatch.setattr(st, "progress", lambda *a, **k: element)
    monkeypatch.setattr(st, "empty", lambda: element)

    def columns(spec: int | list[int], **kwargs: Any) -> list[FakeElement]:
        return [element] * (len(spec) if isinstance(spec, list) else spec)

    monkeypatch.setattr(st, "columns", columns)
    for key in list(st.session_state):
        del st.session_state[key]
    return clock, element


def fake_run(clock: FakeClock, on_step: Any, *, stop_at: int | None = None) -> str:
    frame = np.random.default_rng(0).integers(0, 255, (224, 672, 3), dtype=np.uint8)
    for step in range(1, STEPS + 1):
        clock.now += STEP_SECONDS
        on_step(
            StepInfo(step, STEPS, loss=1.0 / step, frame=frame if step % FRAME_EVERY == 0 else None)
        )
        if step == stop_at:
            raise KeyboardInterrupt("stopped")  # stands in for Streamlit's rerun exception
    return "done"


def max_per_window(times: list[float], window: float = 1.0) -> int:
    return max((sum(t <= u < t + window for u in times) for t in times), default=0)


def assert_throttled(element: FakeElement) -> None:
    bars, frames = element.progress_calls, [t for t, _, _ in element.image_calls]
    assert len(bars) <= SIM_SECONDS / PROGRESS_INTERVAL + 2, len(bars)
    assert max_per_window(bars) <= 1 / PROGRESS_INTERVAL + 1, max_per_window(bars)
    assert len(frames) <= SIM_SECONDS / FRAME_INTERVAL + 2, len(frames)
    assert max_per_window(frames) <= 1 / FRAME_INTERVAL + 1, max_per_window(frames)
    assert len(bars) >= SIM_SECONDS / PROGRESS_INTERVAL - 1  # still live: about 4 a second
    assert len(frames) >= SIM_SECONDS / FRAME_INTERVAL - 1


def test_throttle_lets_one_event_per_interval() -> None:
    clock = FakeClock()
    gate = Throttle(0.25, clock=clock)
    passed = []
    for _ in range(100):
        clock.now += 0.01
        passed.append(gate.ready())
    assert passed[0] and sum(passed) == 4  # at 0.01, 0.26, 0.51, 0.76 (of 1 s)
    with pytest.raises(ValueError, match="interval"):
        Throttle(-1.0)


def test_preview_jpeg_is_downscaled_jpeg() -> None:
    frame = np.zeros((224, 672, 3), dtype=np.uint8)
    data = preview_jpeg(frame, width=420)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG" and image.size == (420, 140)
    small = Image.open(io.BytesIO(preview_jpeg(frame[:, :100], width=420)))
    assert small.size == (100, 224)  # never upscaled
    with pytest.raises(ValueError, match="uint8"):
        preview_jpeg(frame.astype(np.float32), width=420)
    with pytest.raises(ValueError, match="width"):
        preview_jpeg(frame, width=0)


def test_synthesis_progress_and_frames_are_throttled(fakes: tuple[FakeClock, FakeElement]) -> None:
    clock, element = fakes
    synthesis_view.run_with_progress(
        "t", ("params",), lambda on_step: fake_run(clock, on_step), frame_width=420, clock=clock
    )
    assert_throttled(element)
    # Live frames are small JPEGs at the display width, not the full array.
    _, image, width = element.image_calls[0]
    assert isinstance(image, bytes) and Image.open(io.BytesIO(image)).size[0] <= width == 420
    assert st.session_state["t_result"] == {"params": ("params",), "result": "done"}


def test_synthesis_stop_keeps_every_frame(fakes: tuple[FakeClock, FakeElement]) -> None:
    clock, _ = fakes
    with pytest.raises(KeyboardInterrupt):
        synthesis_view.run_with_progress(
            "t", (), lambda on_step: fake_run(clock, on_step, stop_at=503), clock=clock
        )
    partial = st.session_state["t_partial"]
    assert partial["step"] == 503 and partial["total"] == STEPS
    assert len(partial["frames"]) == 503 // FRAME_EVERY  # kept although only some were shown


def test_style_progress_and_frames_are_throttled(fakes: tuple[FakeClock, FakeElement]) -> None:
    clock, element = fakes

    def fn(*, on_step: Any, value: int) -> str:
        assert value == 7
        return fake_run(clock, on_step)

    assert style_view.run_with_progress("s", "Style", fn, clock=clock, value=7) == "done"
    assert_throttled(element)
    _, image, width = element.image_calls[0]
    assert isinstance(image, bytes) and Image.open(io.BytesIO(image)).size[0] <= width


def test_style_stop_keeps_the_latest_frame(fakes: tuple[FakeClock, FakeElement]) -> None:
    clock, _ = fakes
    with pytest.raises(KeyboardInterrupt):
        style_view.run_with_progress(
            "s", "Style", lambda *, on_step: fake_run(clock, on_step, stop_at=503), clock=clock
        )
    partial = st.session_state["s_partial"]  # every frame kept, with its context (style page)
    assert (partial["step"], partial["total"]) == (500, STEPS)
    assert partial["frames"][-1].shape == (224, 672, 3)
    assert len(partial["frames"]) == 500 // FRAME_EVERY
