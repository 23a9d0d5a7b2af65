"""AppTest: widget defaults that follow the model, image and layer, and choices that are kept.

* Filters page: the Channel fields default to the channel most active on the current image and
  follow a model, image or layer change, while a user's explicit choice for the same
  model/image/layer comes back (issue 18 item 14).
* Attribution page: the CAM layer chosen on one model survives switching to another model and
  back (issue 18 item 16).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vizcore.data.images import load_sample
from vizcore.inside.filters import activation_maps
from vizcore.models.registry import get_spec, load_model, preprocess

ROOT = Path(__file__).resolve().parent.parent
FILTERS = "pages/1_Filters_and_activations.py"
ATTRIBUTION = "pages/3_Attribution.py"


@pytest.fixture(autouse=True)
def small_cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def most_active(model_key: str, sample: str, layer: str) -> int:
    spec = get_spec(model_key)
    x = preprocess(load_sample(sample), spec)
    maps = activation_maps(load_model(model_key), x, layer=layer, sort="mean")
    return int(np.argmax(maps.means))


def test_filters_channel_follows_model_image_and_layer_and_keeps_a_choice() -> None:
    at = _app(FILTERS)
    layer = at.selectbox(key="filters_patch_layer").value
    assert at.number_input(key="filters_patch_channel").value == most_active(
        "efficientnet_lite0", "chelsea", layer
    )
    at.number_input(key="filters_patch_channel").set_value(3).run()
    assert at.number_input(key="filters_patch_channel").value == 3

    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert not at.exception
    at.selectbox(key="filters_patch_layer").set_value("fire5").run()
    squeeze = most_active("squeezenet1_1", "chelsea", "fire5")
    assert at.number_input(key="filters_patch_channel").value == squeeze
    assert at.number_input(key="filters_maps_ch").value == most_active(
        "squeezenet1_1", "chelsea", at.selectbox(key="filters_maps_layer").value
    )

    at.selectbox(key="frame_image").set_value("coffee").run()
    assert at.number_input(key="filters_patch_channel").value == most_active(
        "squeezenet1_1", "coffee", "fire5"
    )

    # Back to Lite0 on chelsea at the first layer: the user's explicit 3 is still there,
    # also after a visit to another page.
    at.selectbox(key="frame_model").set_value("efficientnet_lite0").run()
    at.selectbox(key="frame_image").set_value("chelsea").run()
    at.selectbox(key="filters_patch_layer").set_value(layer).run()
    assert at.number_input(key="filters_patch_channel").value == 3
    at.switch_page("app.py").run()
    at.switch_page(FILTERS).run()
    assert not at.exception
    assert at.number_input(key="filters_patch_channel").value == 3


def test_cam_layer_is_kept_per_model() -> None:
    at = _app(ATTRIBUTION)
    lite_key = "attribution_layer_efficientnet_lite0"
    at.selectbox(key=lite_key).set_value("blocks.10.depthwise.act").run()
    assert not at.exception
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    squeeze_key = "attribution_layer_squeezenet1_1"
    assert at.selectbox(key=squeeze_key).value == "fire9"
    at.selectbox(key=squeeze_key).set_value("fire7.expand3x3_act").run()
    at.selectbox(key="frame_model").set_value("efficientnet_lite0").run()
    assert not at.exception
    assert at.selectbox(key=lite_key).value == "blocks.10.depthwise.act"
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert at.selectbox(key=squeeze_key).value == "fire7.expand3x3_act"
