"""A share link under load: 8 browser sessions, 2 running class visualizations, and a ninth opens.

Issue 16's target: the home page of a ninth session renders in a few seconds while two
optimizations run in other sessions (heavy jobs go through one queue, ``vizcore/core/jobs.py``; the
second optimization waits there and shows its place in line). One ``streamlit run app.py`` server
started as ``make run`` starts it, Debian's headless Chromium through Playwright (the browser
tests' helpers). Prints the load average, the ninth session's time to a rendered home page with
and without the two optimizations, and what the waiting session shows.

Usage: ``python bench/share_load.py [--sessions 8]``. Results: bench/results/share_load.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from st_browser import StreamlitServer, launch_chromium, open_app, wait_rendered  # noqa: E402


def _home_seconds(browser: Any, url: str) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    start = time.monotonic()
    open_app(page, url)
    wait_rendered(page, 180_000)
    seconds = time.monotonic() - start
    context.close()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("VIZCORE_OFFLINE", "1")
    with StreamlitServer() as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        _home_seconds(browser, server.url)  # warm: models loaded, caches filled
        quiet = _home_seconds(browser, server.url)
        contexts = []
        for i in range(args.sessions):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            contexts.append((context, page))
            if i < 2:  # two of them start a class visualization
                open_app(page, server.url + "/Feature_visualization")  # default settings
                page.locator(".st-key-featvis_cv_start button").click()
            else:
                open_app(page, server.url)
        time.sleep(5)  # both optimizations under way (one runs, one waits in line)
        waiting = contexts[1][1].get_by_text("waits for the server").count()
        loaded = _home_seconds(browser, server.url)
        load = os.getloadavg()
        for context, _page in contexts:
            context.close()
        browser.close()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; cores {os.cpu_count()}")
    print(f"ninth session, home page rendered: quiet {quiet:.1f} s; with {args.sessions} "
          f"sessions, 2 optimizations started: {loaded:.1f} s")  # fmt: skip
    print(f"second optimization shows its place in line: {'yes' if waiting else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
