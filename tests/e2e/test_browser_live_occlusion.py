"""Real browser: moving the occlusion sliders runs occlusion live, coarse map first.

On the Attribution page with Occlusion only, a new window or stride value runs occlusion by
itself (no Run): a coarse preview ("Preview: k/n positions") shows in the tile before the
full-resolution map (caption "N ms") replaces it in place, and a new slider value while it
refines starts over with the new settings. Then Run scores the map and its progress shows a
live time left. Every caption and progress text the page shows is recorded in the browser by
a MutationObserver, so a short-lived preview is not missed between two polls.

The server runs with ``VIZCORE_LIVE_SECONDS=120``: the page decides "live" from the measured
pass times, and on a loaded 2-core machine the settings below can estimate above the default
15 s; the test is about what the live path shows, not about the machine's speed (the seconds
to the first map are printed).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from st_browser import StreamlitServer, assert_no_exception, open_app, rerun_and_wait, wait_idle
from streamlit.source_util import page_icon_and_name

from vizui import method_labels
from vizui.attribution_view import method_key

pytestmark = pytest.mark.e2e

PREVIEW = re.compile(r"^Preview: (\d+)/(\d+) positions")
FINAL = re.compile(r"^\d+ ms$")
TIME_LEFT = re.compile(r"about (\d+ s|\d+ min \d+ s) left")

_RECORDER_JS = """() => {
  window.__seen = [];
  const t0 = performance.now();
  const grab = () => {
    const q = (s) => [...document.querySelectorAll(s)].map(e => e.innerText.trim());
    for (const text of [...q('[data-testid="stImageCaption"]'),
                        ...q('[data-testid="stProgress"]'),
                        ...q('[data-testid="stCaptionContainer"]')]) {
      if (text && !window.__seen.some(e => e.text === text)) {
        window.__seen.push({text, t: (performance.now() - t0) / 1000});
      }
    }
  };
  new MutationObserver(grab).observe(document.body,
      {subtree: true, childList: true, characterData: true, attributes: true});
  grab();
  return true;
}"""


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VIZCORE_LIVE_SECONDS", "120")
        with StreamlitServer() as srv:
            yield srv


def seen(page: Any) -> list[dict]:
    return page.evaluate("() => window.__seen")


def tile_column(page: Any, method: str) -> Any:
    title = page.locator('[data-testid="stMarkdown"]').filter(
        has_text=re.compile(rf"^{re.escape(method)}$")
    )
    # .first: the grid's tile (the curves expander below has a column of the same title)
    return title.locator('xpath=ancestor::div[@data-testid="stColumn"][1]').first


def test_occlusion_slider_shows_a_coarse_map_first(page: Any, server: StreamlitServer) -> None:
    url = server.url + "/" + page_icon_and_name(Path("pages/3_Attribution.py"))[1]
    open_app(page, url, timeout_ms=180_000)
    for label in method_labels.DEFAULT_METHODS:
        if label != "Occlusion":
            rerun_and_wait(page, page.locator(f".st-key-{method_key(label)} label").click)
    auc = page.get_by_role("switch", name="Deletion / insertion AUC")
    rerun_and_wait(page, lambda: page.locator(".st-key-attribution_auc label").click())
    expect(auc).not_to_be_checked()
    occlusion = tile_column(page, "Occlusion")
    # The default 32/8 may itself run live: wait for whatever the page is doing to finish.
    wait_idle(page, timeout_ms=600_000)

    # Window 112: a new setting, which starts a live run (interrupted below).
    window = page.locator(".st-key-attribution_window input[type=range]")
    window.focus()
    window.press("End")
    expect(window).to_have_value("112")
    expect(occlusion.locator('[data-testid="stImageCaption"]')).to_have_text(
        PREVIEW, timeout=120_000
    )
    # Stride 12 while 112/8 refines: the old run stops, the new one starts coarse again.
    page.evaluate(_RECORDER_JS)
    stride = page.locator(".st-key-attribution_stride input[type=range]")
    stride.focus()
    t0 = time.monotonic()
    stride.press("ArrowRight")
    expect(stride).to_have_value("12")
    expect(occlusion.locator('[data-testid="stImageCaption"]')).to_have_text(
        re.compile(r"^Preview: \d+/121 positions"), timeout=120_000
    )
    first_map_s = time.monotonic() - t0
    expect(occlusion.locator('[data-testid="stImageCaption"]')).to_have_text(FINAL, timeout=300_000)
    full_map_s = time.monotonic() - t0
    wait_idle(page, timeout_ms=120_000)
    texts = [entry["text"] for entry in seen(page)]
    previews = [i for i, text in enumerate(texts) if re.match(r"^Preview: \d+/121 ", text)]
    finals = [i for i, text in enumerate(texts) if FINAL.match(text)]
    assert previews and finals and previews[0] < finals[0], texts
    # the interrupted 112/8 run (225 positions) never finished: no map of it was shown
    assert not any(re.match(r"^Preview: \d+/225 ", text) for text in texts[previews[0] :]), texts
    expect(occlusion).not_to_contain_text("press Run")
    assert_no_exception(page)
    log = server.log_tail(200_000)
    assert "Traceback" not in log, log[-4000:]

    # Run scores the live map; its progress shows a live time left.
    page.evaluate(_RECORDER_JS)
    rerun_and_wait(page, lambda: page.locator(".st-key-attribution_auc label").click())
    rerun_and_wait(
        page,
        page.locator(".st-key-attribution_run").get_by_role("button", name="Run").click,
        timeout_ms=300_000,
    )
    progress = [entry["text"] for entry in seen(page) if "deletion/insertion" in entry["text"]]
    assert any(TIME_LEFT.search(text) for text in progress), progress
    expect(page.locator('[data-testid="stProgress"]')).to_have_text(re.compile(r"^Done in "))
    expect(occlusion).to_contain_text("AUC: del.")
    assert_no_exception(page)
    print(f"live occlusion 112/12: first map {first_map_s:.1f} s, full map {full_map_s:.1f} s")
