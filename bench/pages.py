"""Time from choosing a new image to the finished page, per page, through a real browser.

Run from the repository root: ``python bench/pages.py [--quick] [--pages Attribution,...]``.

One ``streamlit run app.py`` server, started as ``make run`` starts it, is driven in Debian's
headless Chromium with Playwright (``tests/e2e/st_browser.py``). For every page: a fresh session
opens the page at its URL and waits until it is rendered (untimed: the model, the default image
and the page's caches are warm), then a sample image that no page has seen yet on this server is
chosen in the sidebar's Image picker; the time runs from that click until the rerun it caused has
finished and every image and Plotly chart of the page is drawn. That is what a user waits for
after choosing an image; a button-started run (Start, Run) is not part of it. Each page gets an
image new to the server, so no page profits from another page's cached work on that image
(the model input is recomputed too). ``--quick`` times the pages once each (the default) and
``--rounds N`` repeats each page with N more new images (minimum reported). The machine may be
shared: the load average before and after is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from st_browser import (  # noqa: E402
    _RENDERED_JS,
    CHROMIUM,
    StreamlitServer,
    assert_no_exception,
    launch_chromium,
    open_app,
    track_runs,
    wait_rendered,
)

from vizcore.data import images  # noqa: E402

#: (label, URL path) of every page, in sidebar order.
PAGES: tuple[tuple[str, str], ...] = (
    ("Home", "/"),
    ("Filters & activations", "/Filters_and_activations"),
    ("Feature space", "/Feature_space"),
    ("Attribution", "/Attribution"),
    ("Feature visualization", "/Feature_visualization"),
    ("Adversarial examples", "/Adversarial_examples"),
    ("Texture & style", "/Texture_and_style"),
)


def choose_image(page: Any, label: str) -> None:
    """Open the sidebar's Image picker and click ``label`` (retrying a list that stays shut)."""
    from playwright.sync_api import expect

    picker = page.locator('[data-testid="stSidebar"]').get_by_role("combobox", name="Image")
    for _ in range(3):
        picker.click()
        try:
            expect(picker).to_have_attribute("aria-expanded", "true", timeout=2_000)
            break
        except AssertionError:
            continue
    page.get_by_role("option", name=label, exact=True).click()


def time_page(
    browser: Any, server: StreamlitServer, path: str, image: str, timeout_s: float
) -> float:
    """A fresh session on ``path``; seconds from choosing ``image`` to the finished page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(int(timeout_s * 1000))
    try:
        page = context.new_page()
        tracker = track_runs(page)
        open_app(page, server.url + path, timeout_ms=int(timeout_s * 1000))
        wait_rendered(page, timeout_ms=int(timeout_s * 1000))
        before = tracker.finished
        t0 = time.perf_counter()
        choose_image(page, image)
        while tracker.finished <= before:
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{path}: no finished run within {timeout_s} s of the choice")
            page.wait_for_timeout(10)
        page.wait_for_function(_RENDERED_JS, timeout=int(timeout_s * 1000), polling=10)
        elapsed = time.perf_counter() - t0
        assert_no_exception(page)
        return elapsed
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each page once (the default)")
    parser.add_argument("--rounds", type=int, default=1, help="new images per page (minimum)")
    parser.add_argument("--pages", default="", help="comma-separated substrings of page labels")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per page")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on a timeout
    rounds = 1 if args.quick else max(1, args.rounds)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (make browser)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    pages = list(PAGES)
    if args.pages:
        wanted = [w.strip().lower() for w in args.pages.split(",") if w.strip()]
        pages = [p for p in pages if any(w in p[0].lower() for w in wanted)]
    fresh = [s.label for s in images.list_samples() if s.name != images.DEFAULT_SAMPLE]
    if len(fresh) < len(pages) * rounds:
        print(f"only {len(fresh)} new sample images for {len(pages) * rounds} timings: "
              "later pages reuse images seen by earlier ones", file=sys.stderr)  # fmt: skip
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    rows: list[tuple[str, list[tuple[str, float]]]] = []
    k = 0
    with StreamlitServer() as server, sync_playwright() as pw:
        print(f"server: {' '.join(server.command()[1:])} (started in {server.startup_s:.1f} s)")
        browser = launch_chromium(pw)
        try:
            for label, path in pages:
                times = []
                for _ in range(rounds):
                    image = fresh[k % len(fresh)]
                    k += 1
                    times.append((image, time_page(browser, server, path, image, args.timeout)))
                    print(f"{label:24s} {image:36s} {times[-1][1]:7.2f} s", flush=True)
                rows.append((label, times))
        finally:
            browser.close()
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("\n| page | new image | seconds to the finished page |\n|---|---|---:|")
    for label, times in rows:
        image, best = min(times, key=lambda t: t[1])
        print(f"| {label} | {image} | {best:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
