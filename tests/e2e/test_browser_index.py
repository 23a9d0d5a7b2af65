"""Real browser: the Feature space page over a dataset index: hover thumbnails, click to select.

Builds a Lite0 index of 12 crops of the bundled photos, starts ``streamlit run app.py`` with
``VIZCORE_INDEXES`` pointing at it, chooses the index, computes the t-SNE map with its button,
then hovers and clicks a point in headless Debian Chromium (Playwright, the session's browser);
a second index with a map stored by ``vizcore index tsne`` opens from ``?index=mapped`` and
shows every point at once, with the same hover thumbnails.
Skipped when chromium is missing, unless ``VIZCORE_REQUIRE_E2E=1``.
"""

from __future__ import annotations

import os
import re
import shutil
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
from tests.test_index_lite0 import _crops

pytestmark = pytest.mark.e2e

skip_module_without_browser()
from playwright.sync_api import expect  # noqa: E402

SHOTS = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "shots"
CHART = "fspace-index-map"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lite0: Any) -> Iterator[StreamlitServer]:
    from vizcore.data import index as vindex
    from vizcore.data import index_tsne

    root = tmp_path_factory.mktemp("browser-index")
    _crops(root / "photos", 12)
    vindex.build_index(root / "photos", model=lite0, model_key="efficientnet_lite0",
                       layers=["blocks.4"], out=root / "index", shard_size=6, top_k=4,
                       num_workers=0)  # fmt: skip
    shutil.copytree(root / "index", root / "mapped")  # the same index with a stored map
    index_tsne.index_tsne(vindex.open_index(root / "mapped"), n_iter=50, seed=1)
    indexes = os.pathsep.join(str(root / n) for n in ("index", "mapped"))
    with environment(VIZCORE_CACHE_DIR=str(root / "cache"), VIZCORE_INDEXES=indexes):
        with StreamlitServer("app.py") as srv:
            yield srv


@pytest.fixture
def page(server: StreamlitServer, browser: Any) -> Iterator[Any]:
    with checked_page(browser) as pg:  # the session's one Chromium, 1400x1000
        yield pg


def test_index_map_hover_thumbnail_and_click_select(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url + "/Feature_space", timeout_ms=180_000)
    assert_no_exception(page)
    main = page.locator('[data-testid="stMain"]')
    main.get_by_role("combobox", name="Dataset index").click()
    option = page.get_by_role("option", name=re.compile(r"index: 12 images"))
    rerun_and_wait(page, option.click, timeout_ms=120_000)
    expect(page.get_by_text("over all 12 images")).to_be_visible(timeout=60_000)
    button = page.get_by_role("button", name="Compute the map")
    rerun_and_wait(page, button.click, timeout_ms=240_000)
    chart = page.locator(f".st-key-{CHART} .js-plotly-plot")
    expect(chart).to_be_visible(timeout=120_000)
    wait_rendered(page, timeout_ms=120_000)
    assert_no_exception(page)

    # (hover_thumbnail checks the tip is visible with this point's id and a JPEG data URL.)
    tip, _point_id, _name = hover_thumbnail(page, CHART, 0, 1)
    expect(tip).to_contain_text(".jpg")  # the caption is the image's path in the index
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "feature_space_index_hover.png"))

    page.mouse.move(5, 5)
    click_point(page, CHART, 0, 1)
    expect(page.get_by_text("Its nearest neighbours over all 12 images")).to_be_visible(
        timeout=60_000
    )
    assert_no_exception(page)
    page.screenshot(path=str(SHOTS / "feature_space_index_selected.png"), full_page=True)


def test_precomputed_map_from_the_link_shows_every_point_with_thumbnails(
    page: Any, server: StreamlitServer
) -> None:
    open_app(page, server.url + "/Feature_space?index=mapped", timeout_ms=180_000)
    assert_no_exception(page)
    expect(page.get_by_text("All 12 points", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"precomputed by\s*vizcore index tsne"))).to_be_visible()
    assert not page.get_by_role("button", name="Compute the map").count()
    chart = page.locator(f".st-key-{CHART} .js-plotly-plot")
    expect(chart).to_be_visible(timeout=120_000)
    wait_rendered(page, timeout_ms=120_000)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    hover_thumbnail(page, CHART, 0, 3)  # checks the tip shows this point's JPEG
    assert_no_exception(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "feature_space_index_precomputed.png"), full_page=True)
