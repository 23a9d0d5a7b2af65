"""The Attribution page's helpers: the live time left of a Run and the PNG downloads."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from vizcore.attribution import AttributionMap
from vizui import attribution_view as view


class FakeBar:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def progress(self, value: float, *, text: str) -> None:
        self.calls.append((value, text))


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def step(fraction: float, message: str = "working") -> SimpleNamespace:
    return SimpleNamespace(fraction=fraction, message=message)


def test_time_left_follows_measured_progress_not_the_first_estimate() -> None:
    bar, clock = FakeBar(), FakeClock()
    tasks = [view.RunTask("Occlusion", 40.0), view.RunTask("Occlusion deletion/insertion", 10.0)]
    run = view.RunProgress(bar, tasks, clock=clock)
    on_step = run.callback("Occlusion")
    assert on_step(step(0.0, "0/100 window positions"))
    assert bar.calls[-1] == (0.0, "Occlusion: 0/100 window positions · about 50 s left")
    # The machine is twice as fast as estimated: a quarter of the occlusion took 5 s, not 10 s.
    clock.now += 5.0
    on_step(step(0.25, "25/100 window positions"))
    value, text = bar.calls[-1]
    assert value == pytest.approx(10 / 50)
    assert text == "Occlusion: 25/100 window positions · about 20 s left"  # 40 s of work left x 0.5
    run.finish("Occlusion")
    clock.now += 15.0  # the rest of the occlusion took 15 s: 20 s for 40 estimated seconds
    curves = run.callback("Occlusion deletion/insertion")
    curves(step(0.5, "10/20"))
    assert bar.calls[-1][1].endswith("about 3 s left")  # 5 s of work x 20/45 s per estimated s
    run.finish("Occlusion deletion/insertion")
    run.done()
    assert bar.calls[-1] == (1.0, "Done in 20 s.")


def test_time_left_uses_the_estimate_until_progress_is_measured() -> None:
    bar, clock = FakeBar(), FakeClock()
    run = view.RunProgress(bar, [view.RunTask("Score-CAM", 125.0)], clock=clock)
    clock.now += 0.1
    run.callback("Score-CAM")(step(0.0, "0/1280 channels"))
    assert bar.calls[-1][1] == "Score-CAM: 0/1280 channels · about 2 min 05 s left"


def test_run_progress_checks_its_input() -> None:
    with pytest.raises(ValueError, match="finite and non-negative"):
        view.RunProgress(FakeBar(), [view.RunTask("x", float("nan"))])
    run = view.RunProgress(FakeBar(), [view.RunTask("x", 1.0)])
    with pytest.raises(ValueError, match="not a planned task"):
        run.callback("y")


def test_format_seconds() -> None:
    assert view.format_seconds(0.2) == "1 s"
    assert view.format_seconds(-3) == "0 s"
    assert view.format_seconds(59.5) == "1 min 00 s"
    assert view.format_seconds(521) == "8 min 41 s"


def test_overlay_png_is_the_tile_shown_on_screen() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    result = AttributionMap(
        method="saliency",
        map=rng.random((16, 16), dtype=np.float32),
        raw=rng.random((3, 16, 16), dtype=np.float32),
        target=1,
        layer=None,
        seconds=0.01,
    )
    png = view.overlay_png(image, result, alpha=0.7, colormap="inferno")
    decoded = np.asarray(Image.open(io.BytesIO(png)))
    expected = view.overlay_tile(image, result, alpha=0.7, colormap="inferno")
    np.testing.assert_array_equal(decoded, expected)
    bare = np.asarray(Image.open(io.BytesIO(view.map_png(result, "inferno"))))
    assert not np.array_equal(bare, decoded)  # the bare map is the other download
