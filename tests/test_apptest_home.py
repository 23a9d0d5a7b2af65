"""The home page under Streamlit's AppTest (no browser): sidebar pickers, prediction, uploads."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")  # absolute: AppTest resolves a relative path from the test file's dir
CAT = r"(tabby|tiger cat|Egyptian cat)"


def says(at: AppTest) -> str:
    """The markdown line '**<model>** says: **<class>** with probability **NN.N%** (…)'."""
    lines = [md.value for md in at.markdown if " says: " in md.value]
    assert len(lines) == 1, [md.value for md in at.markdown]
    return lines[0]


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` (a few bytes, never decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def at() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)  # torch imports take seconds
    app.run()
    assert_ok(app)
    return app


def test_default_run_shows_a_cat(at: AppTest) -> None:
    assert at.title[0].value == "CNN Visualization Studio"
    assert at.selectbox(key="frame_model").value == "efficientnet_lite0"
    assert at.selectbox(key="frame_image").value == "chelsea"
    assert re.fullmatch(
        rf"\*\*EfficientNet-Lite0 \(bundled\)\*\* says: \*\*{CAT}\*\* with probability "
        r"\*\*\d{1,3}\.\d%\*\* \(ImageNet class 28[1-5]\)\.",
        says(at),
    ), says(at)
    bars = at.get("progress")
    assert len(bars) == 5, "the top-5 bars are missing"
    assert re.fullmatch(rf"{CAT} \(\d+\): \d{{1,3}}\.\d%", bars[0].proto.text), bars[0].proto.text
    values = [bar.proto.value for bar in bars]  # percent, largest first
    assert values == sorted(values, reverse=True) and values[0] > 0, values
    labels = [link.label for link in at.sidebar.get("page_link")]
    assert labels[0] == "Home"
    assert not at.error
    assert not at.sidebar.warning


def test_coffee_is_espresso(at: AppTest) -> None:
    at.selectbox(key="frame_image").set_value("coffee").run()
    assert_ok(at)
    assert "says: **espresso**" in says(at)


def test_squeezenet_sees_a_cat(at: AppTest) -> None:
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert_ok(at)
    assert re.match(rf"\*\*SqueezeNet 1\.1 \(bundled\)\*\* says: \*\*{CAT}\*\*", says(at)), says(at)


def test_model_without_weights_says_why(at: AppTest) -> None:
    at.selectbox(key="frame_model").set_value("vgg16").run()
    assert_ok(at)
    assert any("VGG-16" in info.value and "not available" in info.value for info in at.info)
    warnings = [w.value for w in at.sidebar.warning]
    assert len(warnings) == 1, warnings
    assert "not in torch's cache" in warnings[0]
    assert "Offline mode" in warnings[0]  # VIZCORE_OFFLINE=1 in the test suite
    assert not at.get("progress")  # the page stopped before predicting
    # a bundled model works again afterwards
    at.selectbox(key="frame_model").set_value("efficientnet_lite0").run()
    assert_ok(at)
    assert not at.sidebar.warning
    assert re.search(rf"says: \*\*{CAT}\*\*", says(at))


def test_bad_upload_shows_an_error(at: AppTest) -> None:
    before = says(at)
    at.file_uploader(key="frame_upload").set_value(("bad.jpg", b"not an image", "image/jpeg"))
    at.run()
    assert_ok(at)
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1, errors
    assert errors[0].startswith("bad.jpg: This file is not an image")
    assert at.selectbox(key="frame_image").value == "chelsea"  # nothing changed
    assert says(at) == before
    # removing the bad file removes its error
    at.file_uploader(key="frame_upload").clear().run()
    assert_ok(at)
    assert not at.sidebar.error


def test_huge_upload_shows_an_error(at: AppTest) -> None:
    at.file_uploader(key="frame_upload").set_value(("huge.png", huge_png(), "image/png")).run()
    assert_ok(at)
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1, errors
    assert re.match(r"huge\.png: The image is .*400 MP.*limit is 40 MP", errors[0]), errors
    assert at.selectbox(key="frame_image").value == "chelsea"


def test_good_upload_becomes_the_selected_image(at: AppTest) -> None:
    at.file_uploader(key="frame_upload").set_value(("bad.jpg", b"\xff\xd8broken", "image/jpeg"))
    at.run()
    assert at.sidebar.error
    coffee = Image.open(ROOT / "vizcore/data/samples/coffee.png").convert("RGBA")
    at.file_uploader(key="frame_upload").set_value(("mine.png", png_bytes(coffee), "image/png"))
    at.run()
    assert_ok(at)
    assert not at.sidebar.error  # the previous error is gone
    picker = at.selectbox(key="frame_image")
    assert picker.value == "upload:mine.png"
    assert "Uploaded: mine.png" in picker.options  # options are shown with their labels
    assert "says: **espresso**" in says(at)
    # the sample pickers still work after an upload
    at.selectbox(key="frame_image").set_value("chelsea").run()
    assert_ok(at)
    assert re.search(rf"says: \*\*{CAT}\*\*", says(at))
