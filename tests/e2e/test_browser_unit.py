"""Real browser: the Unit page opened by its link, over a dataset index (issue 17 item 4).

Builds a Lite0 index of 12 crops of the bundled photos, starts ``streamlit run app.py`` with
``VIZCORE_INDEXES`` pointing at it, opens ``/Unit?unit=head.act:5&index=index`` on a fresh
server, checks the four views (feature visualization button, top patches from the index,
activation on the current image, classes), changes the channel and opens the resulting URL in a
new session. Skipped when chromium is missing, unless ``VIZCORE_REQUIRE_E2E=1``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.e2e.st_browser import (
    StreamlitServer,
    assert_no_exception,
    environment,
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, lite0: Any) -> Iterator[StreamlitServer]:
    from vizcore.data import index as vindex

    root = tmp_path_factory.mktemp("browser-unit")
    _crops(root / "photos", 12)
    vindex.build_index(root / "photos", model=lite0, model_key="efficientnet_lite0",
                       layers=["blocks.4", "head.act"], out=root / "index", shard_size=6,
                       top_k=4, num_workers=0)  # fmt: skip
    with environment(VIZCORE_CACHE_DIR=str(root / "cache"), VIZCORE_INDEXES=str(root / "index")):
        with StreamlitServer("app.py") as srv:
            yield srv


def _new_page(browser: Any, errors: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.on("pageerror", lambda e: errors.append(str(e)))
    return pg


def _query(page: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def _assert_unit_views(page: Any, layer: str, channel: int) -> None:
    main = page.locator('[data-testid="stMain"]')
    expect(main.get_by_text(f"{layer} · channel {channel}")).to_be_visible(timeout=60_000)
    for view in ("Feature visualization", "Top dataset patches", "Activation on",
                 "Classes it feeds most"):  # fmt: skip
        expect(main.get_by_text(re.compile(f"^{view}")).first).to_be_visible(timeout=30_000)
    expect(main.get_by_role("button", name="Visualize")).to_be_visible()
    expect(main.get_by_text("read from the index (no scan)")).to_be_visible()
    expect(main.get_by_text(re.compile(r"rank \d+ of \d+ channels by mean"))).to_be_visible()
    expect(main.get_by_text("Raises most")).to_be_visible()
    expect(main.locator('[data-testid="stDataFrame"]')).to_have_count(2)
    spin = main.get_by_role("spinbutton", name="Channel")
    expect(spin).to_have_value(str(channel))
    assert_no_exception(page)


def test_unit_link_opens_the_four_views_and_the_url_reopens_the_unit(
    server: StreamlitServer, browser: Any
) -> None:
    errors: list[str] = []
    page = _new_page(browser, errors)
    try:
        open_app(page, server.url + "/Unit?unit=head.act:5&index=index", timeout_ms=180_000)
        wait_rendered(page, timeout_ms=120_000)
        _assert_unit_views(page, "head.act", 5)
        assert _query(page)["unit"] == "head.act:5" and _query(page)["index"] == "index"
        # the top patches are the index's: 4 stored per channel, shown as images
        patches = page.locator('[data-testid="stMain"] [data-testid="stImage"]')
        assert patches.count() >= 4 + 2  # four patches, the activation's map and overlay
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "unit_page_index.png"), full_page=True)
        spin = page.locator('[data-testid="stMain"]').get_by_role("spinbutton", name="Channel")
        spin.fill("7")
        rerun_and_wait(page, lambda: spin.press("Enter"), timeout_ms=120_000)
        wait_rendered(page, timeout_ms=120_000)
        _assert_unit_views(page, "head.act", 7)
        assert _query(page)["unit"] == "head.act:7"
        link = page.url
    finally:
        page.context.close()
    again = _new_page(browser, errors)
    try:
        open_app(again, link, timeout_ms=180_000)
        wait_rendered(again, timeout_ms=120_000)
        _assert_unit_views(again, "head.act", 7)  # the same unit, the same index, a new session
        assert _query(again)["unit"] == "head.act:7" and _query(again)["index"] == "index"
    finally:
        again.context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
