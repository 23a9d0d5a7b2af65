"""Real browser: a link reopens the Attribution view, and its report is self-contained (issue 16).

One ``streamlit run app.py`` server (live occlusion off: ``VIZCORE_LIVE_SECONDS=0``, so the page
only runs its fast maps). Like a presenter, the test

* picks the coffee image and SqueezeNet in the sidebar, unticks Occlusion, ticks Score-CAM, picks
  another class ("Another class…" → goldfish) and another layer;
* opens "Link to this view", reads the link from its code box and opens it in a *new browser
  context* (a fresh session): the model, image, methods, class and layer are the same;
* downloads "Download report (HTML)" and opens the file in a page that blocks and counts every
  network request: none is made, every figure shown is embedded, and the parameters are there;
* downloads "Figures (zip)": it holds one PNG per figure and ``params.json``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from st_browser import StreamlitServer, assert_no_exception, open_app, rerun_and_wait

pytestmark = pytest.mark.e2e

SIDEBAR = '[data-testid="stSidebar"]'


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    previous = os.environ.get("VIZCORE_LIVE_SECONDS")
    os.environ["VIZCORE_LIVE_SECONDS"] = "0"
    try:
        with StreamlitServer() as srv:
            yield srv
    finally:
        if previous is None:
            os.environ.pop("VIZCORE_LIVE_SECONDS", None)
        else:
            os.environ["VIZCORE_LIVE_SECONDS"] = previous


def choose(page: Any, scope: Any, name: str, option: str, *, search: str | None = None) -> None:
    scope.get_by_role("combobox", name=name).click()
    if search is not None:  # long lists are virtualized: filter first
        page.keyboard.type(search)
    rerun_and_wait(page, lambda: page.get_by_role("option", name=option, exact=True).click())


def checkbox(page: Any, key: str) -> Any:
    return page.locator(f".st-key-{key} input[type=checkbox]")


def set_checkbox(page: Any, key: str, on: bool) -> None:
    box = checkbox(page, key)
    if box.is_checked() != on:
        rerun_and_wait(page, lambda: page.locator(f".st-key-{key} label").click())


def test_link_reopens_the_view_and_the_report_is_self_contained(
    browser: Any, server: StreamlitServer, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(60_000)
    page = context.new_page()
    open_app(page, server.url + "/Attribution")
    sidebar = page.locator(SIDEBAR)
    choose(page, sidebar, "Model", "SqueezeNet 1.1 (bundled)")
    choose(page, sidebar, "Image", "Coffee cup")
    set_checkbox(page, "attribution_method_occlusion", False)
    set_checkbox(page, "attribution_method_score_cam", True)
    rerun_and_wait(page, lambda: page.get_by_text("Another class…", exact=True).click())
    choose(page, page, "Search an ImageNet class", "goldfish (1)", search="goldfish")
    layer_box = page.get_by_role("combobox", name="Layer for Grad-CAM", exact=False)
    layer_box.click()
    options = page.get_by_role("option")
    other_layer = options.nth(2).inner_text().strip()
    rerun_and_wait(page, lambda: options.nth(2).click())
    assert_no_exception(page)

    link = page.url  # the address bar is the link: every run publishes the view to it
    assert link.startswith(server.url + "/Attribution?"), link
    for part in ("model=squeezenet1_1", "image=coffee", "target=1", "score_cam"):
        assert part in link, link

    fresh_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    fresh = fresh_context.new_page()
    open_app(fresh, link)
    fresh_sidebar = fresh.locator(SIDEBAR)
    expect(fresh_sidebar.get_by_role("combobox", name="Model")).to_have_value(
        "SqueezeNet 1.1 (bundled)"
    )
    expect(fresh_sidebar.get_by_role("combobox", name="Image")).to_have_value("Coffee cup")
    expect(fresh.get_by_role("combobox", name="Search an ImageNet class")).to_have_value(
        "goldfish (1)"
    )
    expect(fresh.get_by_role("combobox", name="Layer for Grad-CAM", exact=False)).to_have_value(
        other_layer
    )
    assert checkbox(fresh, "attribution_method_score_cam").is_checked()
    assert not checkbox(fresh, "attribution_method_occlusion").is_checked()
    expect(fresh.get_by_text("Why “goldfish”? (1)")).to_be_visible()
    assert_no_exception(fresh)
    fresh_context.close()

    with page.expect_download() as html_download:
        page.get_by_role("button", name="Download report (HTML)").click()
    report_path = tmp_path / "report.html"
    html_download.value.save_as(report_path)
    tiles = page.locator('[data-testid="stImage"]')  # every image on the page
    assert tiles.count() >= 2

    viewer = context.new_page()
    requests: list[str] = []

    def block(route: Any) -> None:
        if not route.request.url.startswith("file://"):
            requests.append(route.request.url)
        route.abort() if not route.request.url.startswith("file://") else route.continue_()

    viewer.route("**/*", block)
    viewer.goto(report_path.as_uri())
    text = viewer.locator("body").inner_text()
    for expected in ("SqueezeNet 1.1", "Coffee cup", "goldfish (1)", other_layer, "Score-CAM"):
        assert expected in text, expected
    images = viewer.locator("img")
    shown = images.count()
    assert shown >= 6  # the input and one tile per fast method shown
    assert all(
        viewer.evaluate(
            "(img) => img.complete && img.naturalWidth > 0", images.nth(i).element_handle()
        )
        for i in range(shown)
    )
    assert requests == [], requests

    with page.expect_download() as zip_download:
        page.get_by_role("button", name="Figures (zip)").click()
    archive = zipfile.ZipFile(io.BytesIO(Path(zip_download.value.path()).read_bytes()))
    names = archive.namelist()
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == shown and "params.json" in names
    meta = json.loads(archive.read("params.json"))
    assert meta["model"] == "SqueezeNet 1.1 (bundled)" and meta["link"].startswith(server.url)
    assert meta["params"]["layer (Grad-CAM family)"] == other_layer
    context.close()
