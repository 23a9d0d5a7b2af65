"""The app in a real browser: a `streamlit run` server and headless Chromium (Playwright).

* every page listed by ``vizui.frame.existing_pages()`` opened by direct URL on a fresh server;
* the home page: prediction, the Image picker, uploads (good and bad) and the Plotly top-5 chart.

Set ``VIZCORE_SCREENSHOT=path.png`` to save a full-page screenshot of the home page (the README's
``assets/screenshot_home.png`` is made this way).
"""

from __future__ import annotations

import ast
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from st_browser import (
    ROOT,
    StreamlitServer,
    assert_no_exception,
    full_page_screenshot,
    open_app,
    rerun_and_wait,
    track_runs,
    wait_rendered,
)
from streamlit.source_util import page_icon_and_name

from vizui.frame import PageInfo, existing_pages

pytestmark = pytest.mark.e2e

APP_NAME = "CNN Visualization Studio"
SAMPLE_LABELS = {
    Path(entry["file"]).stem: entry["label"]
    for entry in json.loads((ROOT / "vizcore/data/samples/index.json").read_text(encoding="utf-8"))
}
CAT = r"(tabby|tiger cat|Egyptian cat)"
SAYS = '[data-testid="stMarkdown"]'


def expect(*args: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args)


# --------------------------------------------------------------------------------------------
# Pages and their URLs
# --------------------------------------------------------------------------------------------


def url_path(page_path: str) -> str:
    """The URL path Streamlit's file-based multipage mechanism gives a script.

    The entry script is ``/``. A file in ``pages/`` gets its name without the numeric prefix and
    ``.py``, runs of ``_`` and spaces collapsed to one ``_`` (``streamlit.source_util``):
    ``pages/3_Attribution.py`` -> ``/Attribution``.
    """
    if page_path == "app.py":
        return "/"
    return "/" + page_icon_and_name(Path(page_path))[1]


def page_title(info: PageInfo) -> str:
    """The title the page script passes to ``frame()`` (its first string argument)."""
    tree = ast.parse((ROOT / info.path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "frame"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            return node.args[0].value
    raise AssertionError(f"{info.path} does not call frame('<title>', ...) with a literal title")


def test_url_paths_follow_streamlit() -> None:
    assert url_path("app.py") == "/"
    assert url_path("pages/3_Attribution.py") == "/Attribution"
    assert url_path("pages/1_Filters_and_activations.py") == "/Filters_and_activations"
    assert url_path("pages/12 Texture  and_style.py") == "/Texture_and_style"


PAGES = existing_pages()


class FreshServers:
    """One fresh server per page, whose first request is that page's URL.

    Each server's first script run (torch import, model load) takes seconds, so the next page's
    server is started and its URL opened while the current page is being checked.
    """

    def __init__(self, browser: Any, infos: list[PageInfo]) -> None:
        self.browser = browser
        self.infos = infos
        self.opened: dict[str, tuple[StreamlitServer, Any, list[str]]] = {}

    def _open(self, info: PageInfo) -> None:
        if info.path in self.opened:
            return
        server = StreamlitServer().start()
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        track_runs(page)
        page.goto(server.url + url_path(info.path), wait_until="commit", timeout=60_000)
        self.opened[info.path] = (server, page, errors)

    def page(self, info: PageInfo) -> tuple[Any, list[str]]:
        """The browser page opened at ``info``'s URL on its own fresh server."""
        self._open(info)
        index = self.infos.index(info)
        if index + 1 < len(self.infos):
            self._open(self.infos[index + 1])  # prefetch: runs while this page is checked
        _, page, errors = self.opened[info.path]
        page.wait_for_selector(
            '[data-testid="stApp"]:not([data-test-script-state="initial"])',
            state="attached",
            timeout=90_000,
        )
        wait_rendered(page, timeout_ms=90_000)
        return page, errors

    def close(self, info: PageInfo) -> None:
        server, page, _ = self.opened.pop(info.path)
        page.context.close()
        server.stop()

    def close_all(self) -> None:
        for path in list(self.opened):
            server, page, _ = self.opened.pop(path)
            page.context.close()
            server.stop()


@pytest.fixture(scope="module")
def fresh_servers(browser: Any) -> Iterator[FreshServers]:
    servers = FreshServers(browser, PAGES)
    yield servers
    servers.close_all()


@pytest.mark.parametrize("info", PAGES, ids=[p.path for p in PAGES])
def test_page_by_direct_url_on_fresh_server(fresh_servers: FreshServers, info: PageInfo) -> None:
    """The page's URL is its server's first request; it shows its own title and the frame."""
    title = page_title(info)
    page, errors = fresh_servers.page(info)
    try:
        assert_no_exception(page)
        expect(page.locator('[data-testid="stMain"] h1').first).to_have_text(title)
        expected_title = title if title == APP_NAME else f"{title} · {APP_NAME}"
        expect(page).to_have_title(expected_title)

        sidebar = page.locator('[data-testid="stSidebar"]')
        expect(sidebar.locator('[data-testid="stSidebarNav"]')).to_have_count(0)
        links = sidebar.locator('a[data-testid="stPageLink-NavLink"]:visible')
        # the link text also holds the material icon's name ("home"), hence contain, not equal
        expect(links).to_contain_text([p.label for p in PAGES])
        expect(links).to_have_count(len(PAGES))
        expect(sidebar.get_by_role("combobox", name="Model")).to_have_value(
            "EfficientNet-Lite0 (bundled)"
        )
        expect(sidebar.get_by_role("combobox", name="Image")).to_have_value(
            SAMPLE_LABELS["chelsea"]
        )
        # The image uploader (the sidebar's "Your model" expander holds two more uploaders)
        image_uploader = sidebar.locator('[data-testid="stFileUploader"]').filter(
            has_text="Upload an image"
        )
        expect(image_uploader).to_have_count(1)
        expect(image_uploader).to_be_visible()
        assert_no_exception(page)
        assert not errors, f"JavaScript errors in the page: {errors}"
    finally:
        fresh_servers.close(info)


# --------------------------------------------------------------------------------------------
# Home page
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    with StreamlitServer() as srv:
        yield srv


def choose(page: Any, picker: str, option: str) -> None:
    """Pick ``option`` (its visible label) in the sidebar selectbox labelled ``picker``."""
    page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name=picker).click()
    rerun_and_wait(page, lambda: page.get_by_role("option", name=option, exact=True).click())


def upload(page: Any, path: Path) -> None:
    uploader = (
        page.locator('[data-testid="stFileUploader"]')
        .filter(has_text="Upload an image")
        .locator('[data-testid="stFileUploaderDropzoneInput"]')
    )
    rerun_and_wait(page, lambda: uploader.set_input_files(str(path)))


def huge_png(path: Path, width: int = 20_000, height: int = 20_000) -> Path:
    """A valid PNG header declaring ``width`` x ``height`` (a few bytes, never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
        + chunk(b"IEND", b"")
    )
    return path


def test_home_prediction_and_image_picker(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url)
    assert_no_exception(page)
    says = page.locator(SAYS, has_text="says:")
    expect(says).to_have_text(
        re.compile(
            rf"^EfficientNet-Lite0 \(bundled\) says: {CAT} with probability \d{{1,3}}\.\d% "
            r"\(ImageNet class 28[1-5]\)\.$"
        )
    )
    expect(page.locator('[data-testid="stImageCaption"]')).to_have_text(SAMPLE_LABELS["chelsea"])

    # torchvision models without a weights file are labelled as unavailable (offline)
    page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Model").click()
    expect(page.get_by_role("option", name="VGG-16 (torchvision) — unavailable")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("listbox")).to_have_count(0)

    choose(page, "Image", SAMPLE_LABELS["coffee"])
    expect(says).to_have_text(re.compile(r"says: espresso with probability \d{1,3}\.\d%"))
    expect(page.locator('[data-testid="stImageCaption"]')).to_have_text(SAMPLE_LABELS["coffee"])
    expect(
        page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Image")
    ).to_have_value(SAMPLE_LABELS["coffee"])
    assert_no_exception(page)


def test_upload_png_becomes_the_selected_image(
    page: Any, server: StreamlitServer, tmp_path: Path
) -> None:
    png = tmp_path / "my coffee.png"
    Image.open(ROOT / "vizcore/data/samples/coffee.png").convert("RGBA").save(png)
    open_app(page, server.url)
    says = page.locator(SAYS, has_text="says:")
    expect(says).to_contain_text("says:")

    upload(page, png)
    expect(page.locator('[data-testid="stFileChipName"]')).to_have_text(png.name)
    expect(
        page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Image")
    ).to_have_value(f"Uploaded: {png.name}")
    expect(page.locator('[data-testid="stImageCaption"]')).to_have_text(f"Uploaded: {png.name}")
    expect(says).to_have_text(re.compile(r"says: espresso with probability \d{1,3}\.\d%"))
    expect(page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]')).to_have_count(0)
    assert_no_exception(page)


def test_bad_uploads_show_a_clear_error(page: Any, server: StreamlitServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is a text file, not a JPEG\n")
    open_app(page, server.url)
    says = page.locator(SAYS, has_text="says:")
    expect(says).to_have_text(re.compile(rf"says: {CAT} with"))
    alert = page.locator('[data-testid="stSidebar"] [data-testid="stAlert"]')

    upload(page, bad)
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("bad.jpg: This file is not an image")
    expect(alert).to_contain_text("Choose a PNG or JPEG picture")
    assert_no_exception(page)
    # the page keeps working on the previous image
    expect(says).to_have_text(re.compile(rf"says: {CAT} with"))

    upload(page, huge_png(tmp_path / "huge.png"))
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text(re.compile(r"huge\.png: The image is .*400 MP.*limit is 40 MP"))
    assert_no_exception(page)
    expect(says).to_have_text(re.compile(rf"says: {CAT} with"))


def test_top5_bars_render(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url)
    wait_rendered(page)
    top5 = page.locator(".st-key-home_top5")
    expect(top5).to_have_count(1)
    expect(top5.locator("strong").first).to_have_text("Top-5 classes")
    bars = top5.locator('[data-testid="stProgress"]')
    expect(bars).to_have_count(5)
    texts = [bars.nth(i).inner_text().strip() for i in range(5)]
    assert re.fullmatch(rf"{CAT} \(\d+\): \d{{1,3}}\.\d%", texts[0]), texts  # top class first
    shares = [float(re.search(r"(\d+\.\d)%$", t).group(1)) for t in texts]
    assert shares == sorted(shares, reverse=True), shares
    widths = [bars.nth(i).locator('[role="progressbar"]').get_attribute("aria-valuenow")
              for i in range(5)]  # fmt: skip
    assert all(w is not None for w in widths), widths
    # the report buttons below show their whole labels (fixed columns once cut them to "D…")
    cut = page.evaluate("""() => [...document.querySelectorAll(
        '[data-testid="stDownloadButton"] button, [data-testid="stDownloadButton"] button *')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
    assert not cut, cut
    assert_no_exception(page)
    if shot := os.environ.get("VIZCORE_SCREENSHOT"):
        full_page_screenshot(page, shot)
