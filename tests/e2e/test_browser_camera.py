"""The camera as an image source, in a real browser (issue 16 item 2).

Chromium runs with a fake camera (``--use-fake-device-for-media-stream``, permission granted by
``--use-fake-ui-for-media-stream`` and the context) that plays a still of the coffee sample from a
Y4M file, so the photo has known content: the home page must call it an espresso. The sidebar's
"Camera" toggle shows ``st.camera_input``; the photo becomes "Camera: photo 1", the current image
on every page of ``vizui.frame.existing_pages()`` reached through the sidebar's page links (one
browser session, one ``streamlit run`` server).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps
from st_browser import (
    CHROME_ARGS,
    CHROMIUM,
    ROOT,
    StreamlitServer,
    assert_no_exception,
    open_app,
    rerun_and_wait,
)
from streamlit.source_util import page_icon_and_name

from vizui.frame import existing_pages

pytestmark = pytest.mark.e2e

PHOTO_LABEL = "Camera: photo 1"
SIDEBAR = '[data-testid="stSidebar"]'
CAMERA = f'{SIDEBAR} [data-testid="stCameraInput"]'
# Mean brightness of the <video>'s current frame (0-255; the first frame is black). null while
# the element has no frame yet.
_VIDEO_MEAN_JS = """(sel) => {
  const v = document.querySelector(sel + ' video');
  if (!v || v.readyState < 2 || !v.videoWidth) return null;
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0;
  for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
  return s / (d.length / 4) / 3;
}"""


def expect(*args: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args)


def write_y4m(src: Path, dst: Path, *, width: int = 640, height: int = 480) -> Path:
    """One-frame Y4M video (4:2:0) of ``src`` cropped to ``width`` x ``height``, for Chromium's
    ``--use-file-for-fake-video-capture`` (it loops the file)."""
    rgb = ImageOps.fit(Image.open(src).convert("RGB"), (width, height))
    y, cb, cr = rgb.convert("YCbCr").split()
    half = (width // 2, height // 2)
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()
    frame = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    dst.write_bytes(header + b"FRAME\n" + frame)
    return dst


def url_path(page_path: str) -> str:
    """The URL path Streamlit gives a page script (``/`` for the entry script)."""
    return "/" if page_path == "app.py" else "/" + page_icon_and_name(Path(page_path))[1]


@pytest.fixture(scope="module")
def camera_browser(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second Chromium whose camera shows the coffee sample (``browser`` decides skip/fail)."""
    video = write_y4m(
        ROOT / "vizcore/data/samples/coffee.png", tmp_path_factory.mktemp("camera") / "coffee.y4m"
    )
    args = [
        *CHROME_ARGS,
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
        # headless Chromium leaves Streamlit's <video autoplay> paused (currentTime 0, so every
        # photo is black) unless autoplay needs no user gesture; a desktop browser plays it
        "--autoplay-policy=no-user-gesture-required",
    ]
    chromium = browser.browser_type.launch(
        executable_path=CHROMIUM, headless=True, args=args, timeout=60_000
    )
    yield chromium
    chromium.close()


def test_camera_photo_is_the_current_image_on_every_page(camera_browser: Any) -> None:
    with StreamlitServer() as server:
        context = camera_browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["camera"], origin=server.url)
        context.set_default_timeout(60_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            open_app(page, server.url, timeout_ms=180_000)
            sidebar = page.locator(SIDEBAR)
            image_select = sidebar.get_by_role("combobox", name="Image")
            expect(image_select).not_to_have_value(PHOTO_LABEL)
            expect(page.locator(CAMERA)).to_have_count(0)  # no camera until asked for

            rerun_and_wait(page, lambda: sidebar.get_by_text("Camera", exact=True).click())
            shutter = page.locator(f'{CAMERA} [data-testid="stCameraInputButton"]')
            expect(shutter).to_have_text("Take Photo")
            # wait for a real frame of the coffee still (the stream starts with a black one)
            page.wait_for_function(
                f"(sel) => ({_VIDEO_MEAN_JS})(sel) > 20", arg=CAMERA, timeout=60_000, polling=200
            )
            rerun_and_wait(page, shutter.click, timeout_ms=120_000)

            assert_no_exception(page)
            expect(image_select).to_have_value(PHOTO_LABEL)
            expect(page.locator('[data-testid="stImageCaption"]')).to_have_text(PHOTO_LABEL)
            # the photo is the camera's 640x480, not the 240x180 of the sidebar widget's size
            expect(page.locator('[data-testid="stMain"]')).to_contain_text("Original 640×480 px")
            says = page.locator('[data-testid="stMarkdown"]', has_text="says:")
            expect(says).to_have_text(re.compile(r"says: espresso with probability"))

            # visible only: a rerun can leave a stale hidden copy of the links for a moment
            links = sidebar.locator('a[data-testid="stPageLink-NavLink"]:visible')
            for info in [*existing_pages()[1:], existing_pages()[0]]:  # and back home
                link = links.filter(has_text=info.label).first
                rerun_and_wait(page, link.click, timeout_ms=180_000)
                expect(page).to_have_url(re.compile(re.escape(server.url + url_path(info.path))))
                assert_no_exception(page)
                expect(image_select).to_have_value(PHOTO_LABEL)
            # home again: the photo is still the current image, and still the espresso
            expect(page.locator('[data-testid="stImageCaption"]')).to_have_text(PHOTO_LABEL)
            expect(says).to_have_text(re.compile(r"says: espresso with probability"))
            assert not errors, f"JavaScript errors in the page: {errors}"
        finally:
            context.close()
