"""The Attribution page in Streamlit's AppTest: it runs, Run fills the grid, display is cheap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vizui import attribution_view

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/3_Attribution.py"


@pytest.fixture
def page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def _captions(at: AppTest) -> list[str]:
    return [c for image in at.image for c in image.captions]


def test_page_shows_fast_maps_and_waits_for_run_on_slow_ones(page):
    assert page.title[0].value == "Attribution"
    markdown = " ".join(m.value for m in page.markdown)
    for label in ("Saliency", "Guided backprop", "CAM", "Grad-CAM", "Grad-CAM++"):
        assert f"**{label}**" in markdown
    assert any("press **Run**" in info.value for info in page.info)  # occlusion waits
    assert any("625 window positions" in c.value for c in page.caption)
    assert not page.warning, [w.value for w in page.warning]


def test_run_fills_the_grid_and_opacity_does_not_recompute(page):
    page.multiselect(key="attribution_methods").set_value(["Occlusion", "Saliency", "Grad-CAM"])
    page.slider(key="attribution_window").set_value(112)
    page.slider(key="attribution_stride").set_value(64)
    page.run()
    assert any("9 window positions" in c.value for c in page.caption)
    page.button(key="attribution_run").click().run()
    assert not page.exception
    captions = _captions(page)
    scored = [c for c in captions if "deletion AUC" in c and "insertion AUC" in c]
    assert len(scored) == 3, captions
    assert page.progress and page.progress[0].value == 100

    before = dict(attribution_view.COMPUTE_CALLS)
    page.slider(key="attribution_alpha").set_value(0.8).run()
    page.selectbox(key="attribution_colormap").set_value("inferno").run()
    assert not page.exception
    assert dict(attribution_view.COMPUTE_CALLS) == before
    assert len([c for c in _captions(page) if "deletion AUC" in c]) == 3


def test_any_class_by_name_and_any_layer(page):
    page.multiselect(key="attribution_methods").set_value(["Grad-CAM"])
    page.radio(key="attribution_target_choice").set_value(-1).run()
    page.selectbox(key="attribution_target_search").set_value(1).run()
    page.selectbox(key="attribution_layer_efficientnet_lite0").set_value(
        "blocks.10.depthwise.act"
    ).run()
    assert not page.exception
    assert "goldfish" in page.subheader[0].value
    assert len(page.image) >= 2  # the input and the Grad-CAM tile


def test_grabcut_segmentation_from_a_map(page):
    captions = _captions(page)
    assert any(c.startswith("GrabCut mask") for c in captions), captions
    page.slider(key="attribution_seg_fg").set_value(90).run()
    page.selectbox(key="attribution_seg_map").set_value("Grad-CAM").run()
    assert not page.exception
    assert any(c.startswith("GrabCut mask") for c in _captions(page))


def test_an_all_zero_map_says_so_instead_of_a_blank_tile(page, monkeypatch):
    """A CAM whose weighted sum the ReLU clears everywhere: a message, not a dark tile."""
    real = attribution_view.compute_map

    def zeroed(model, x, params, on_step=None):
        result = real(model, x, params, on_step)
        if params.label != "Grad-CAM":
            return result
        return dataclasses.replace(result, map=np.zeros_like(result.map))

    monkeypatch.setattr(attribution_view, "compute_map", zeroed)
    attribution_view.fast_map.clear()
    try:
        page.multiselect(key="attribution_methods").set_value(["Saliency", "Grad-CAM"]).run()
        assert not page.exception
        warnings = [w.value for w in page.warning]
        assert len(warnings) == 1, warnings
        assert "Grad-CAM at `head.bn` is all zero" in warnings[0]
        assert "after an activation" in warnings[0]
        assert len(page.image) >= 2  # the input and the saliency tile only
        tiles = [c for c in _captions(page) if c.endswith(" ms")]
        assert len(tiles) == 1, _captions(page)
    finally:
        attribution_view.fast_map.clear()
