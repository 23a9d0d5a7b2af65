"""Real browser at 1280 px: what AppTest cannot see (issue 18 items 12, 13, 17; issue 19 item 1).

* The server starts the way ``make run`` starts it and holds no inotify watch (the default
  watcher put a recursive watch on the repository root, ``.venv`` included).
* Every choice is readable: no method name, toggle label or Gram-layer chip is cut off.
* Grids line up row by row: the attribution tiles and the home page's technique links.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from st_browser import StreamlitServer, assert_no_exception, open_app, wait_rendered
from streamlit.source_util import page_icon_and_name

from vizui import method_labels
from vizui.attribution_view import method_key

pytestmark = pytest.mark.e2e

#: True when the text of ``el`` is not wholly shown: cut by an ellipsis, or outside the box of an
#: ancestor that clips (a scrolling chip row, a column), or not laid out at all.
_CUT_JS = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const t = range.getBoundingClientRect();
  if (t.width === 0 || t.height === 0) return true;
  for (let a = el; a; a = a.parentElement) {
    const cs = getComputedStyle(a);
    if (cs.textOverflow === 'ellipsis' && a.scrollWidth > a.clientWidth + 1) return true;
    if (cs.overflowX !== 'visible') {
      const b = a.getBoundingClientRect();
      if (t.right > b.right + 1 || t.left < b.left - 1) return true;
    }
    if (a.getAttribute('data-testid') === 'stMain') break;
  }
  return false;
}"""
_TOP_JS = "(el) => el.getBoundingClientRect().top"


def url_path(page_path: str) -> str:
    return "/" + page_icon_and_name(Path(page_path))[1]


@pytest.fixture(scope="module")
def server() -> Iterator[StreamlitServer]:
    with StreamlitServer() as srv:
        yield srv


def is_cut(page: Any, element: Any) -> bool:
    return bool(page.evaluate(_CUT_JS, element.element_handle()))


def tops(page: Any, locator: Any) -> list[float]:
    return [page.evaluate(_TOP_JS, el) for el in locator.element_handles()]


def test_server_like_make_run_watches_no_folder_tree(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url, timeout_ms=180_000)
    wait_rendered(page)
    assert_no_exception(page)
    assert server.inotify_watches() == 0, "the file watcher holds inotify watches"
    assert "Inotify" not in server.log_tail(200_000)


def test_attribution_controls_readable_and_tiles_in_rows(
    page: Any, server: StreamlitServer
) -> None:
    open_app(page, server.url + url_path("pages/3_Attribution.py"), timeout_ms=180_000)
    wait_rendered(page)
    assert_no_exception(page)
    for label in method_labels.METHODS:
        box = page.locator(f".st-key-{method_key(label)}")
        text = box.get_by_text(label, exact=True)
        assert box.is_visible(), label
        assert not is_cut(page, text), f"method {label!r} is cut off"
    for key in ("attribution_auc", "attribution_sanity"):
        label = page.locator(f".st-key-{key} [data-testid='stWidgetLabel'] p").first
        assert not is_cut(page, label), f"{key} label is cut off"

    # The tiles: one bold title per method, rows of 4 whose titles share one top.
    y = []
    for label in method_labels.DEFAULT_METHODS:
        title = page.locator('[data-testid="stMarkdown"]').filter(
            has_text=re.compile(rf"^{re.escape(label)}$")
        )
        assert title.count() == 1, label
        y.append(page.evaluate(_TOP_JS, title.element_handle()))
    rows = [y[i : i + 4] for i in range(0, len(y), 4)]
    for row in rows:
        assert max(row) - min(row) <= 2, f"tiles of a row do not line up: {row}"
    assert all(a[0] < b[0] for a, b in itertools.pairwise(rows)), rows
    captions = page.locator('[data-testid="stImageCaption"]')
    for i in range(captions.count()):
        caption = captions.nth(i)
        style = page.evaluate(
            "(e) => [e.getBoundingClientRect().height, parseFloat(getComputedStyle(e).lineHeight)]",
            caption.element_handle(),
        )
        if "ms" in caption.inner_text():
            assert style[0] <= 1.6 * style[1], f"tile caption wraps: {caption.inner_text()!r}"


def test_texture_tab_shows_every_gram_layer(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url + url_path("pages/6_Texture_and_style.py"), timeout_ms=180_000)
    assert_no_exception(page)
    box = page.locator('[class*="st-key-texture_style_layers_"]')
    chips = box.locator('[aria-label="Selected values"] [data-tag]')
    count = chips.count()
    assert count >= 3, box.inner_html()[:2000]
    for i in range(count):
        assert not is_cut(page, chips.nth(i).locator("span").first), (
            f"chip {chips.nth(i).inner_text()!r} is hidden"
        )


def test_home_technique_links_line_up(page: Any, server: StreamlitServer) -> None:
    open_app(page, server.url, timeout_ms=180_000)
    wait_rendered(page)
    links = page.locator('[data-testid="stMain"] a[data-testid="stPageLink-NavLink"]')
    y = tops(page, links)
    assert len(y) >= 3
    rows = [y[i : i + 3] for i in range(0, len(y), 3)]
    for row in rows:
        assert max(row) - min(row) <= 2, f"technique links of a row do not line up: {y}"
