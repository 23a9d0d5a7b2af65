"""The Attribution page in Streamlit's AppTest: it runs, Run fills the grid, display is cheap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vizcore.techniques import attribution
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
    choose_methods(page, ["Occlusion", "Saliency", "Grad-CAM"])
    page.slider(key="attribution_window").set_value(112)
    page.slider(key="attribution_stride").set_value(64)
    page.run()
    assert any("9 window positions" in c.value for c in page.caption)
    page.button(key="attribution_run").click().run()
    assert not page.exception
    scored = _scores(page)
    assert len(scored) == 3, [c.value for c in page.caption]
    assert page.progress and page.progress[0].value == 100

    before = dict(attribution_view.COMPUTE_CALLS)
    page.slider(key="attribution_alpha").set_value(0.8).run()
    page.selectbox(key="attribution_colormap").set_value("inferno").run()
    assert not page.exception
    assert dict(attribution_view.COMPUTE_CALLS) == before
    assert len(_scores(page)) == 3


def test_estimate_counts_only_what_run_still_has_to_do(page):
    choose_methods(page, ["Occlusion", "Saliency", "Grad-CAM"])
    page.slider(key="attribution_window").set_value(112)
    page.slider(key="attribution_stride").set_value(64)
    page.run()
    estimate = _estimate(page)
    assert "Occlusion" in estimate and "deletion/insertion of 3 map(s)" in estimate, estimate
    page.button(key="attribution_run").click().run()
    assert not page.exception
    assert page.progress[0].proto.text.startswith("Done in ")
    # Everything is computed: Run has nothing left (it said ≈ the full cost before).
    assert "Run has nothing left to do" in _estimate(page)
    # A stride change: only the occlusion and its scoring are left, not the cached methods.
    page.slider(key="attribution_stride").set_value(56).run()
    estimate = _estimate(page)
    assert "not computed yet: Occlusion, deletion/insertion of 1 map(s)." in estimate, estimate
    page.toggle(key="attribution_sanity").set_value(True).run()
    estimate = _estimate(page)
    assert "sanity check of 2 method(s)" in estimate, estimate  # Saliency and Grad-CAM


def test_each_map_offers_the_overlay_and_the_bare_map(page):
    choose_methods(page, ["Saliency", "Grad-CAM"])
    page.run()
    keys = {button.key for button in page.get("download_button")}
    for label in ("Saliency", "Grad-CAM"):
        assert {
            f"attribution_overlay_png_{label}",
            f"attribution_png_{label}",
            f"attribution_npz_{label}",
        } <= keys, keys
    labels = {button.proto.label for button in page.get("download_button")}
    assert {"PNG: overlay, as shown", "PNG: colour map only"} <= labels, labels


def choose_methods(at: AppTest, labels: list[str]) -> None:
    """Tick exactly ``labels`` among the method checkboxes (no run)."""
    for label in attribution.METHODS:
        at.checkbox(key=attribution_view.method_key(label)).set_value(label in labels)


def _scores(at: AppTest) -> list[str]:
    """The AUC caption under each scored tile."""
    return [c.value for c in at.caption if c.value.startswith("AUC: del. **")]


def _estimate(at: AppTest) -> str:
    lines = [c.value for c in at.caption if "window positions" in c.value]
    assert len(lines) == 1, [c.value for c in at.caption]
    return lines[0]


def test_any_class_by_name_and_any_layer(page):
    choose_methods(page, ["Grad-CAM"])
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
        choose_methods(page, ["Saliency", "Grad-CAM"])
        page.run()
        assert not page.exception
        warnings = [w.value for w in page.warning]
        assert len(warnings) == 1, warnings
        # the layer is the derived CAM default (head.act); the map was zeroed above
        assert "Grad-CAM at `head.act` is all zero" in warnings[0]
        assert "after an activation" in warnings[0]
        assert len(page.image) >= 2  # the input and the saliency tile only
        tiles = [c for c in _captions(page) if c.endswith(" ms")]
        assert len(tiles) == 1, _captions(page)
    finally:
        attribution_view.fast_map.clear()
