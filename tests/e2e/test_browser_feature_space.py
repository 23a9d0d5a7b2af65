"""Real browser: the Feature space page's t-SNE shows a thumbnail on hover and selects on click.

Starts ``streamlit run app.py`` on a fresh server with an EMPTY cache folder and a small built-in
gallery (3 crops per photo), extracts the features through the page's button like a user, then
hovers and clicks points of the map in headless Debian Chromium (Playwright, never a downloaded
browser). Skipped when chromium is missing, unless ``VIZCORE_REQUIRE_E2E=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.st_browser import (
    StreamlitServer,
    assert_no_exception,
    checked_page,
    click_point,
    environment,
    hover_thumbnail,
    open_app,
    rerun_and_wait,
    skip_module_without_browser,
    wait_rendered,
)

pytestmark = pytest.mark.e2e

skip_module_without_browser()
from playwright.sync_api import expect  # noqa: E402

SHOTS = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "shots"
CHART = "fspace-map"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamlitServer]:
    cache = tmp_path_factory.mktemp("vizcore-cache")
    with environment(VIZCORE_CACHE_DIR=str(cache), VIZCORE_GALLERY_PER_PHOTO="3"):
        with StreamlitServer("app.py") as srv:
            yield srv


@pytest.fixture
def page(server: StreamlitServer, browser: Any) -> Iterator[Any]:
    with checked_page(browser) as pg:  # the session's one Chromium, 1400x1000
        yield pg


def test_tsne_hover_thumbnail_and_click_select(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url + "/Feature_space", timeout_ms=180_000)
    assert_no_exception(page)
    expect(page.locator("h1")).to_contain_text("Feature space")

    # Empty cache: extract the gallery's features like a user would.
    button = page.get_by_role("button", name="Extract gallery features")
    expect(button).to_be_visible(timeout=60_000)
    rerun_and_wait(page, button.click, timeout_ms=240_000)
    chart = page.locator(f".st-key-{CHART} .js-plotly-plot")
    expect(chart).to_be_visible(timeout=120_000)
    wait_rendered(page, timeout_ms=120_000)
    assert_no_exception(page)
    expect(page.get_by_text("t-SNE (openTSNE, Barnes-Hut")).to_be_visible()

    # Hover a gallery point (trace 1, point 1): the floating thumbnail shows that image.
    # (hover_thumbnail checks the tip is visible with this point's id and a JPEG data URL.)
    tip, _point_id, label = hover_thumbnail(page, CHART, 1, 1)
    expect(tip).to_contain_text(label)
    natural = page.evaluate(
        "(id) => document.querySelector('#' + id + ' img').naturalWidth", f"vz-hover-thumb-{CHART}"
    )
    assert natural > 0, "the thumbnail image did not decode"
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "feature_space_hover.png"))

    # Moving away hides it.
    page.mouse.move(5, 5)
    expect(tip).to_be_hidden()

    # Click the point: it becomes the selected image, with its neighbours below.
    name = click_point(page, CHART, 1, 1)
    caption = page.locator('[data-testid="stImageCaption"]', has_text=f"Selected: {name}")
    expect(caption).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Its nearest neighbours in feature space")).to_be_visible()
    expect(page.locator(f".st-key-{CHART} .legendtext", has_text="Selected")).to_have_count(1)
    assert_no_exception(page)
    page.screenshot(path=str(SHOTS / "feature_space_selected.png"), full_page=True)
