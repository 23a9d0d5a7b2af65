"""A share link under load: 8 browser sessions, 2 running class visualizations, and a ninth opens.

Issue 16's target: the home page of a ninth session renders in a few seconds while two
optimizations run in other sessions (heavy jobs go through one queue, ``vizcore/core/jobs.py``; the
second optimization waits there and shows its place in line). One ``streamlit run app.py`` server
started as ``make run`` starts it, Debian's headless Chromium through Playwright (the browser
tests' helpers). Prints the load average, the ninth session's home page times with and without
the two optimizations, and what the waiting session shows. Two times per visit: *answered* (the
server has sent the whole page: its first run's ``script_finished`` message) and *rendered* (the
browser has drawn it). All browsers here run on the server's own cores, so *rendered* also pays
for drawing the other 8 sessions' pages (the two optimizations stream their frames); a viewer's
browser on their own machine does not.

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

from st_browser import (  # noqa: E402
    StreamlitServer,
    launch_chromium,
    open_app,
    track_runs,
    wait_rendered,
)


def _home_seconds(browser: Any, url: str) -> tuple[float, float]:
    """A new browser session opens the home page: ``(answered, rendered)`` seconds from the
    request. *answered*: the server has sent the whole page (the first run's
    ``script_finished`` message arrived); *rendered*: the browser has drawn it (charts, images,
    fonts). The browser shares this machine's cores, so *rendered* includes its own drawing."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    tracker = track_runs(page)
    start = time.monotonic()
    open_app(page, url)
    wait_rendered(page, 180_000)
    rendered = time.monotonic() - start
    answered = tracker.finished_at[0] - start
    context.close()
    return answered, rendered


def _summary(times: list[tuple[float, float]]) -> str:
    answered = sorted(t[0] for t in times)
    rendered = sorted(t[1] for t in times)
    mid = len(times) // 2
    return (f"answered {answered[mid]:.1f} s, rendered {rendered[mid]:.1f} s (median of "
            f"{len(times)}; answered {', '.join(f'{a:.1f}' for a in answered)})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="ninth-session visits per phase")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("VIZCORE_OFFLINE", "1")
    running = '[data-testid="stApp"][data-test-script-state="running"]'
    with StreamlitServer() as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        _home_seconds(browser, server.url)  # warm: models loaded, caches filled
        quiet = [_home_seconds(browser, server.url) for _ in range(args.repeats)]
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
        loaded = []
        for _ in range(args.repeats):
            loaded.append(_home_seconds(browser, server.url))
            both = all(page.locator(running).count() for _c, page in contexts[:2])
            if not both:  # an optimization finished: later visits would not be under load
                break
        load = os.getloadavg()
        for context, _page in contexts:
            context.close()
        browser.close()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; cores {os.cpu_count()}")
    print(f"ninth session's home page, quiet: {_summary(quiet)}")
    print(f"with {args.sessions} sessions, 2 optimizations running: {_summary(loaded)}"
          f"{'' if both else ' (an optimization finished during the last visit)'}")  # fmt: skip
    print(f"second optimization shows its place in line: {'yes' if waiting else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
