"""Lean helpers to drive the real app in headless Debian Chromium with Playwright.

Adapted from the team's ``st_e2e.py`` notes (streamlit 1.67, playwright 1.65, Debian chromium).
Never run ``playwright install``: the browser is Debian's ``chromium`` package, passed to Playwright
with ``executable_path``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("VIZCORE_CHROMIUM", "/usr/bin/chromium")
CHROME_ARGS = [
    "--no-sandbox",  # required as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
IDLE_SELECTOR = (
    '[data-testid="stApp"]'
    '[data-test-connection-state="CONNECTED"]'
    '[data-test-script-state="notRunning"]'
)
_SKELETON = '[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]'
_RENDERED_JS = """() => {
  const q = (s) => [...document.querySelectorAll(s)];
  const plotlyOk = q('[data-testid="stPlotlyChart"]').every(e => e.querySelector('.main-svg'));
  const imgOk = q('[data-testid="stApp"] img').every(i => i.complete);
  return plotlyOk && imgOk;
}"""
_CONTENT_HEIGHT_JS = """() => {
  const m = document.querySelector('[data-testid="stMain"]');
  const s = document.querySelector('[data-testid="stSidebarContent"]');
  return Math.ceil(Math.max(m ? m.scrollHeight : 0, s ? s.scrollHeight : 0,
                            document.documentElement.scrollHeight));
}"""


def skip_module_without_browser() -> None:
    """At a module's top: skip the whole module when Chromium or Playwright is missing, before
    its module-scoped fixtures build anything, unless ``VIZCORE_REQUIRE_E2E=1`` (then the
    ``browser`` fixture fails instead)."""
    import shutil

    import pytest

    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        missing = True
    else:
        missing = not (Path(CHROMIUM).exists() or shutil.which("chromium"))
    if missing and os.environ.get("VIZCORE_REQUIRE_E2E") != "1":
        pytest.skip("chromium or playwright missing (set VIZCORE_REQUIRE_E2E=1 to fail instead)",
                    allow_module_level=True)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StreamlitServer:
    """``streamlit run app.py`` from the repo root on a free port (a context manager).

    ``start()`` returns once ``/_stcore/health`` answers ``ok``; ``stop()`` sends SIGTERM to the
    server's own process group (then SIGKILL after 10 s). The server runs with
    ``VIZCORE_OFFLINE=1``, so it never reaches for the network.
    """

    def __init__(self, script: str = "app.py", *, health_timeout: float = 120.0) -> None:
        self.script = script
        self.port = free_port()
        self.health_timeout = health_timeout
        fd, self.log_path = tempfile.mkstemp(prefix="vizcore-streamlit-", suffix=".log")
        os.close(fd)
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """``make run``'s command (``.streamlit/config.toml`` decides the file watcher), bound to
        127.0.0.1 on a free port, so a watcher regression shows in the browser tests too."""
        return [
            sys.executable, "-m", "streamlit", "run", self.script,
            "--server.headless", "true",
            "--server.address", "127.0.0.1",
            "--server.port", str(self.port),
            "--browser.gatherUsageStats", "false",
        ]  # fmt: skip

    def inotify_watches(self) -> int:
        """How many inotify watches the server process holds (Linux ``/proc``; 0 elsewhere)."""
        if self.proc is None:
            return 0
        total = 0
        fdinfo = Path(f"/proc/{self.proc.pid}/fdinfo")
        for entry in fdinfo.glob("*"):
            try:
                lines = entry.read_text().splitlines()
            except OSError:
                continue
            total += sum(line.startswith("inotify wd:") for line in lines)
        return total

    def log_tail(self, n: int = 4000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def start(self) -> StreamlitServer:
        env = {**os.environ, "VIZCORE_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = t0 + self.health_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {self.proc.returncode} before it was healthy.\n"
                    f"log:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as resp:
                    if resp.status == 200 and resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TimeoutError(
                    f"streamlit not healthy after {self.health_timeout} s.\nlog:\n{tail}"
                )
            time.sleep(0.05)
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            if not os.environ.get("VIZCORE_KEEP_LOGS"):
                Path(self.log_path).unlink(missing_ok=True)

    def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the group id is our child's PID
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> StreamlitServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def launch_chromium(pw: Any) -> Any:
    """Debian's chromium through Playwright (never a downloaded browser)."""
    return pw.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROME_ARGS, timeout=60_000
    )


class RunTracker:
    """Counts finished script runs from the ``script_finished`` messages on the websocket.

    Watching ``data-test-script-state`` alone misses fast reruns (React batches ``running`` and
    ``notRunning`` into one render); every run ends with one ``script_finished`` message.
    """

    def __init__(self, page: Any) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        self._msg = ForwardMsg
        self._early = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")
        self.finished = 0
        self.finished_at: list[float] = []  # time.monotonic() of each finished run
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, ws: Any) -> None:
        if "/_stcore/stream" in ws.url:
            ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            return
        msg = self._msg()
        try:
            msg.ParseFromString(payload)
        except Exception:  # noqa: BLE001 - a frame we cannot parse is not a finished run
            return
        if msg.WhichOneof("type") == "script_finished" and msg.script_finished != self._early:
            self.finished += 1
            self.finished_at.append(time.monotonic())


_TRACKERS: weakref.WeakKeyDictionary[Any, RunTracker] = weakref.WeakKeyDictionary()


def track_runs(page: Any) -> RunTracker:
    """The page's RunTracker (attached once; must happen before the page opens the app)."""
    tracker = _TRACKERS.get(page)
    if tracker is None:
        tracker = _TRACKERS[page] = RunTracker(page)
    return tracker


def wait_idle(page: Any, timeout_ms: int = 60_000, settle_ms: int = 200) -> None:
    """Wait until the websocket is connected and no script run is in progress."""
    page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout_ms)
    page.wait_for_selector(_SKELETON, state="detached", timeout=timeout_ms)
    if settle_ms:
        page.wait_for_timeout(settle_ms)
        page.wait_for_selector(IDLE_SELECTOR, state="attached", timeout=timeout_ms)


def wait_rendered(page: Any, timeout_ms: int = 60_000) -> None:
    """wait_idle, then every Plotly chart drawn, every <img> loaded and the fonts ready."""
    wait_idle(page, timeout_ms, settle_ms=0)
    page.wait_for_function(_RENDERED_JS, timeout=timeout_ms)
    page.evaluate("() => document.fonts.ready.then(() => true)")
    wait_idle(page, timeout_ms)


def open_app(page: Any, url: str, timeout_ms: int = 90_000) -> float:
    """Go to ``url`` and wait until the first script run has finished; returns seconds."""
    track_runs(page)
    t0 = time.monotonic()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout_ms)
    page.wait_for_selector(
        '[data-testid="stApp"]:not([data-test-script-state="initial"])',
        state="attached",
        timeout=timeout_ms,
    )
    wait_idle(page, timeout_ms)
    return time.monotonic() - t0


def rerun_and_wait(page: Any, action: Callable[[], object], timeout_ms: int = 60_000) -> None:
    """Do ``action()`` (a widget interaction) and wait until the rerun it causes has finished."""
    tracker = _TRACKERS.get(page)
    if tracker is None:
        raise RuntimeError("open the app with open_app() first (it attaches the run tracker)")
    before = tracker.finished
    action()
    deadline = time.monotonic() + timeout_ms / 1000
    while tracker.finished <= before:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no script run finished within {timeout_ms} ms of the action")
        page.wait_for_timeout(50)
    wait_idle(page, timeout_ms)


def assert_no_exception(page: Any) -> None:
    """Fail with the exception's text if the page shows a Streamlit exception box."""
    exc = page.locator('[data-testid="stException"]')
    if exc.count():
        raise AssertionError("Streamlit exception shown in the page:\n" + exc.first.inner_text())


def full_page_screenshot(page: Any, path: str | os.PathLike[str]) -> Path:
    """Screenshot the whole app: grow the viewport to the content (``stMain`` scrolls itself)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewport = page.viewport_size or {"width": 1280, "height": 900}
    height = min(max(page.evaluate(_CONTENT_HEIGHT_JS), viewport["height"]), 16_000)
    if height > viewport["height"]:
        page.set_viewport_size({"width": viewport["width"], "height": height})
        page.wait_for_timeout(400)  # charts re-layout on resize
    page.screenshot(path=str(out), full_page=True)
    if height > viewport["height"]:
        page.set_viewport_size(viewport)
    return out


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables (for a server started inside), then restore what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def checked_page(browser: Any, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A page in a fresh browser context (a new Streamlit session); fails on JavaScript errors.

    Uses the session's one Chromium (tests/e2e/conftest.py): a second ``sync_playwright()`` in
    the same process fails once another test has started the session's ("Sync API inside the
    asyncio loop").
    """
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


#: Screen position and customdata of a Plotly scatter point: ``[key, curve, index]`` -> ``[x, y,
#: customdata[0] (the point id), trace name, customdata[1] (the image's name)]``.
_POINT_XY = """([key, curve, index]) => {
  const gd = document.querySelector('.st-key-' + CSS.escape(key) + ' .js-plotly-plot');
  const trace = gd._fullData[curve];
  const fl = gd._fullLayout;
  const xa = fl[(trace.xaxis || 'x').replace('x', 'xaxis')];
  const ya = fl[(trace.yaxis || 'y').replace('y', 'yaxis')];
  const r = gd.querySelector('.main-svg').getBoundingClientRect();
  return [r.left + xa._offset + xa.c2p(xa.d2c(trace.x[index])),
          r.top + ya._offset + ya.c2p(ya.d2c(trace.y[index])),
          String(trace.customdata[index][0]), trace.name,
          String(trace.customdata[index][1])];
}"""


def point_xy(page: Any, chart: str, curve: int, index: int) -> tuple[float, float, str, str, str]:
    """Where point ``index`` of trace ``curve`` of the chart keyed ``chart`` is on screen:
    ``(x, y, point id, trace name, image name)``."""
    x, y, point_id, trace_name, name = page.evaluate(_POINT_XY, [chart, curve, index])
    return x, y, point_id, trace_name, name


def hover_thumbnail(page: Any, chart: str, curve: int, index: int) -> tuple[Any, str, str]:
    """Hover a map point: its floating thumbnail (``#vz-hover-thumb-<chart>``) shows that
    point's image, a JPEG data URL. Returns ``(thumbnail locator, point id, trace name)``."""
    from playwright.sync_api import expect

    page.locator(f".st-key-{chart} .js-plotly-plot").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    x, y, point_id, trace_name, _ = point_xy(page, chart, curve, index)
    page.mouse.move(x - 40, y - 40)
    page.mouse.move(x, y, steps=4)
    tip = page.locator(f"#vz-hover-thumb-{chart}")
    expect(tip).to_be_visible(timeout=10_000)
    expect(tip.locator("img")).to_have_attribute("data-point-id", point_id)
    expect(tip.locator("img")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    return tip, point_id, trace_name


def click_point(page: Any, chart: str, curve: int, index: int) -> str:
    """Click a map point and wait for the rerun it causes to render; returns the image name."""
    page.locator(f".st-key-{chart} .js-plotly-plot").scroll_into_view_if_needed()
    x, y, _, _, name = point_xy(page, chart, curve, index)
    rerun_and_wait(page, lambda: page.mouse.click(x, y), timeout_ms=120_000)
    wait_rendered(page, timeout_ms=60_000)
    return name
