"""The sidebar camera under Streamlit's AppTest (issue 16 item 2): a photo is an image source.

The browser test (tests/e2e/test_browser_camera.py) takes the photo with Chromium's fake camera;
here ``AppTest`` hands ``st.camera_input`` a JPEG directly.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def jpeg_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.open(ROOT / "vizcore/data/samples" / name).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def says(at: AppTest) -> str:
    lines = [md.value for md in at.markdown if " says: " in md.value]
    assert len(lines) == 1, [md.value for md in at.markdown]
    return lines[0]


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]


def test_camera_photo_becomes_the_current_image() -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert_ok(at)
    assert not at.camera_input  # behind the toggle: no permission prompt until asked for
    at.toggle(key="frame_camera_on").set_value(True).run()
    assert_ok(at)
    camera = at.camera_input(key="frame_camera")
    # captured at 480p, not at the sidebar widget's size (240x180 px, below the models' input)
    assert camera.resolution == "480p"

    camera.set_value(("photo.jpg", jpeg_bytes("coffee.png"), "image/jpeg")).run()
    assert_ok(at)
    image = at.selectbox(key="frame_image")
    assert image.value == "upload:camera photo 1.jpg"
    assert image.format_func(image.value) == "Camera: photo 1"
    assert "says: **espresso**" in says(at)
    assert not at.sidebar.error

    # a second photo is photo 2; clearing the photo keeps the current image
    at.camera_input(key="frame_camera").set_value(
        ("photo.jpg", jpeg_bytes("chelsea.png"), "image/jpeg")
    ).run()
    assert_ok(at)
    assert at.selectbox(key="frame_image").value == "upload:camera photo 2.jpg"
    at.camera_input(key="frame_camera").set_value(None).run()
    assert_ok(at)
    assert at.selectbox(key="frame_image").value == "upload:camera photo 2.jpg"
    assert "Camera: photo 1" in at.selectbox(key="frame_image").options  # labels, both kept

    # the photo is the current image on another page too (same session)
    at.switch_page("pages/1_Filters_and_activations.py").run()
    assert_ok(at)
    assert at.selectbox(key="frame_image").value == "upload:camera photo 2.jpg"
