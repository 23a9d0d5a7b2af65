"""Real browser: the Stop button cancels long work while it runs, and the app stays usable.

* Attribution: Occlusion with an 8 px window and a 4 px stride (thousands of window positions,
  tens of seconds of work) is started with Run and stopped part-way: the page is idle again within
  seconds, says it stopped, its progress no longer moves, the server stops computing, and a fast
  method added afterwards still renders.
* Feature visualization: the class visualization is started and stopped part-way: the page is idle
  again within seconds and says at which step it stopped.

Both pages are opened by direct URL on one server (``streamlit run app.py``) in Debian's headless
Chromium (Playwright, never a downloaded browser).

"Stopped" is checked in the browser (a finished rerun, the message, a frozen progress bar) and on
the server (its process uses almost no CPU afterwards): a callback that swallowed Streamlit's
rerun exception would leave the page looking stopped while the old run keeps computing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from st_browser import (
    StreamlitServer,
    assert_no_exception,
    open_app,
    rerun_and_wait,
    wait_idle,
)
from streamlit.source_util import page_icon_and_name

from vizui import method_labels
from vizui.attribution_view import method_key

pytestmark = pytest.mark.e2e

#: Seconds within which a stopped run must leave the page idle (one occlusion batch or one
#: optimization step is well under a second; the rest is the rerun itself on a loaded machine).
STOP_WITHIN_S = 15.0
OCCLUSION_PROGRESS = re.compile(r"Occlusion: (\d+)/(\d+) window positions")
STEP_PROGRESS = re.compile(r"Step (\d+)/(\d+)")
STOPPED_INFO = (
    "Stopped. Methods that finished are kept; the one interrupted starts again from the "
    "beginning on the next Run."
)


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


def url_path(page_path: str) -> str:
    """``pages/3_Attribution.py`` -> ``/Attribution`` (Streamlit's file-based page URLs)."""
    return "/" + page_icon_and_name(Path(page_path))[1]


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    # Occlusion never runs live here (a fast machine could run 8/4 live): Run and Stop drive it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIZCORE_LIVE_SECONDS", "0")
        with StreamlitServer() as srv:
            yield srv


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress_texts(page: Any) -> list[str]:
    return page.locator('[data-testid="stProgress"]').all_inner_texts()


def assert_progress_frozen(page: Any, seconds: float = 2.0) -> None:
    """Any progress bar left on the page shows the same text for ``seconds``."""
    before = progress_texts(page)
    page.wait_for_timeout(int(seconds * 1000))
    after = progress_texts(page)
    assert after == before, f"progress still moves after Stop: {before} -> {after}"


def assert_server_quiet(server: StreamlitServer, seconds: float = 2.0) -> float:
    """The server process uses little CPU: the stopped computation is not going on unseen."""
    assert server.proc is not None
    start = cpu_seconds(server.proc.pid)
    time.sleep(seconds)
    used = cpu_seconds(server.proc.pid) - start
    assert used < 0.4 * seconds, f"server used {used:.2f} s of CPU in {seconds} s after Stop"
    return used


def assert_no_traceback(server: StreamlitServer) -> None:
    log = server.log_tail(200_000)
    assert "Traceback" not in log, f"server log has a traceback:\n{log[-4000:]}"


def stop_and_wait(page: Any, stop_button: Any) -> float:
    """Click Stop; return the seconds until its rerun has finished and the page is idle."""
    t0 = time.monotonic()
    rerun_and_wait(page, stop_button.click, timeout_ms=int(STOP_WITHIN_S * 1000))
    elapsed = time.monotonic() - t0
    assert elapsed < STOP_WITHIN_S, f"the page was idle only {elapsed:.1f} s after Stop"
    return elapsed


def tile_column(page: Any, method: str) -> Any:
    """The grid column whose bold title is exactly ``method``."""
    title = page.locator('[data-testid="stMarkdown"]').filter(
        has_text=re.compile(rf"^{re.escape(method)}$")
    )
    return title.locator('xpath=ancestor::div[@data-testid="stColumn"][1]')


def test_attribution_occlusion_stops_and_page_stays_usable(
    page: Any, server: StreamlitServer
) -> None:
    open_app(page, server.url + url_path("pages/3_Attribution.py"), timeout_ms=180_000)
    assert_no_exception(page)

    # Methods: Occlusion only.
    for label in method_labels.DEFAULT_METHODS:
        if label != "Occlusion":
            box = page.locator(f".st-key-{method_key(label)} label")
            rerun_and_wait(page, box.click)
    for label in method_labels.METHODS:
        checkbox = page.locator(f".st-key-{method_key(label)} input[type=checkbox]")
        if label == "Occlusion":
            expect(checkbox).to_be_checked()
        else:
            expect(checkbox).not_to_be_checked()

    # Smallest window and stride: thousands of window positions.
    for key, minimum in (("attribution_window", "8"), ("attribution_stride", "4")):
        thumb = page.locator(f".st-key-{key} input[type=range]")
        thumb.focus()
        rerun_and_wait(page, lambda thumb=thumb: thumb.press("Home"))
        expect(thumb).to_have_value(minimum)
    caption = page.get_by_text(re.compile(r"Occlusion: \d+×\d+ = \d+ window positions"))
    positions = int(re.search(r"= (\d+) window", caption.inner_text()).group(1))
    assert positions >= 2000, caption.inner_text()

    auc = page.get_by_role("switch", name="Deletion / insertion AUC")
    rerun_and_wait(page, lambda: page.locator(".st-key-attribution_auc label").click())
    expect(auc).not_to_be_checked()
    occlusion = tile_column(page, "Occlusion")
    expect(occlusion).to_contain_text("Slow: press Run")
    assert_no_exception(page)

    # Run, and wait until the occlusion has done some window positions.
    page.locator(".st-key-attribution_run").get_by_role("button", name="Run").click()
    progress = page.locator('[data-testid="stProgress"]')
    expect(progress).to_have_text(
        re.compile(r"Occlusion: [1-9]\d*/\d+ window positions"), timeout=90_000
    )
    done, total = map(int, OCCLUSION_PROGRESS.search(progress.inner_text()).groups())
    assert total == positions and 0 < done < total, (done, total)

    stopped_after = stop_and_wait(
        page, page.locator(".st-key-attribution_stop").get_by_role("button", name="Stop")
    )
    expect(page.locator('[data-testid="stAlert"]', has_text=STOPPED_INFO)).to_be_visible()
    assert_progress_frozen(page)
    for text in progress_texts(page):  # if a bar is still shown, it never reached the end
        match = OCCLUSION_PROGRESS.search(text)
        assert match is None or int(match.group(1)) < total, text
    cpu = assert_server_quiet(server)
    expect(occlusion).to_contain_text("Slow: press Run")  # no map: it did not finish
    assert_no_exception(page)
    assert_no_traceback(server)

    # The page still works: a fast method renders its map (fast methods need no Run).
    rerun_and_wait(page, page.locator(f".st-key-{method_key('Grad-CAM')} label").click)
    gradcam = tile_column(page, "Grad-CAM")
    expect(gradcam.locator('[data-testid="stImage"] img')).to_be_visible(timeout=60_000)
    expect(gradcam.locator('[data-testid="stImageCaption"]')).to_have_text(re.compile(r"^\d+ ms$"))
    assert page.evaluate(
        "(img) => img.complete && img.naturalWidth > 0",
        gradcam.locator('[data-testid="stImage"] img').element_handle(),
    )
    expect(page.locator('[data-testid="stAlert"]', has_text=STOPPED_INFO)).to_have_count(0)
    assert_no_exception(page)
    assert_no_traceback(server)
    print(
        f"attribution: stopped at {done}/{total}; idle {stopped_after:.1f} s after Stop, "
        f"server CPU {cpu:.2f} s in 2 s"
    )


def test_class_visualization_stops(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url + url_path("pages/4_Feature_visualization.py"), timeout_ms=180_000)
    assert_no_exception(page)
    # Every tab has its own Start and Stop (and a button with a tooltip is drawn twice, once
    # hidden for measuring): scope to the class visualization's keyed containers, by role.
    start = page.locator(".st-key-featvis_cv_start").get_by_role("button", name="Start")
    stop = page.locator(".st-key-featvis_cv_stop").get_by_role("button", name="Stop")
    expect(start).to_be_visible()
    expect(stop).to_be_visible()

    start.click()
    progress = page.locator('[data-testid="stProgress"]')
    expect(progress).to_have_text(re.compile(r"Step [1-9]\d*/\d+"), timeout=90_000)
    step, total = map(int, STEP_PROGRESS.search(progress.inner_text()).groups())
    assert 0 < step < total, (step, total)

    stopped_after = stop_and_wait(page, stop)
    warning = page.locator('[data-testid="stAlert"]', has_text="Stopped at step")
    expect(warning).to_have_count(1)
    match = re.search(r"Stopped at step (\d+) of (\d+)\.", warning.inner_text())
    assert match, warning.inner_text()
    k, n = map(int, match.groups())
    assert n == total and step <= k < n, (step, k, n)
    assert_progress_frozen(page)
    cpu = assert_server_quiet(server)
    wait_idle(page)
    assert_no_exception(page)
    assert_no_traceback(server)
    print(
        f"class visualization: stopped at step {k}/{n}; idle {stopped_after:.1f} s after Stop, "
        f"server CPU {cpu:.2f} s in 2 s"
    )
