"""Real browser: a page other than Attribution reopens from "Copy link to this view" (issue 16).

On the Adversarial page, like a presenter: pick FGSM and the target class flamingo, open "Copy link
to this view", read the link from its code box (it is the address bar's URL), open it in a *new
browser context* (a fresh session) and see the same attack and class. Then run the attack and
download "Download report (HTML)": it opens with no network request and shows every figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from st_browser import StreamlitServer, assert_no_exception, open_app, rerun_and_wait

pytestmark = pytest.mark.e2e


def expect(*args: Any, **kwargs: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    with StreamlitServer() as srv:
        yield srv


def _link_box_text(page: Any) -> str:
    box = page.locator('[data-testid="stExpander"]').filter(has_text="Copy link to this view")
    expect(box).to_have_count(1)
    if box.locator("details").get_attribute("open") is None:
        box.locator("summary").click()
    code = box.locator("code")
    expect(code).to_be_visible()
    return code.inner_text().strip()


def test_adversarial_view_reopens_from_the_link_box_and_its_report_is_offline(
    browser: Any, server: StreamlitServer, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    context.set_default_timeout(60_000)
    page = context.new_page()
    open_app(page, server.url + "/Adversarial_examples")
    rerun_and_wait(page, lambda: page.get_by_text("FGSM (one step)", exact=True).click())
    page.get_by_role("combobox", name="Target class").click()
    page.keyboard.type("flamingo")
    rerun_and_wait(page, lambda: page.get_by_role("option", name="130: flamingo").click())
    assert_no_exception(page)

    link = _link_box_text(page)
    query = parse_qs(urlsplit(link).query)
    assert query["attack"] == ["fgsm"] and query["target_class"] == ["130"], link
    assert urlsplit(link).path == urlsplit(page.url).path
    assert query == parse_qs(urlsplit(page.url).query), (link, page.url)

    fresh_context = browser.new_context(viewport={"width": 1400, "height": 1000})
    fresh = fresh_context.new_page()
    open_app(fresh, link)
    expect(fresh.get_by_role("combobox", name="Target class")).to_have_value("130: flamingo")
    expect(fresh.get_by_role("radio", name="FGSM (one step)")).to_be_checked()
    assert_no_exception(fresh)
    fresh_context.close()

    rerun_and_wait(page, lambda: page.get_by_role("button", name="Attack").click())
    expect(page.get_by_role("button", name="Download report (HTML)")).to_be_visible()
    with page.expect_download() as html_download:
        page.get_by_role("button", name="Download report (HTML)").click()
    report_path = tmp_path / "report.html"
    html_download.value.save_as(report_path)

    viewer = context.new_page()
    requests: list[str] = []

    def block(route: Any) -> None:
        local = route.request.url.startswith("file://")
        if not local:
            requests.append(route.request.url)
        route.continue_() if local else route.abort()

    viewer.route("**/*", block)
    viewer.goto(report_path.as_uri())
    text = viewer.locator("body").inner_text()
    for expected in ("Adversarial examples", "FGSM", "flamingo", "run time (s)"):
        assert expected in text, expected
    images = viewer.locator("img")
    shown = images.count()
    assert shown >= 4  # the input, the original, the adversarial image, the perturbation
    assert all(
        viewer.evaluate(
            "(img) => img.complete && img.naturalWidth > 0", images.nth(i).element_handle()
        )
        for i in range(shown)
    )
    assert requests == [], requests
    context.close()
