"""The Attribution page in Streamlit's AppTest: it runs, Run fills the grid, display is cheap."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from vizcore import attribution
from vizui import attribution_view, method_labels
from vizui.report_view import LAST_REPORT

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/3_Attribution.py"


#: Pass times so slow that no occlusion setting runs live (the Run-driven tests below).
SLOW_TIMES = attribution.PassTimes(
    forward=10.0, batched_forward=10.0, backward=10.0, batched_backward=10.0
)
#: Pass times so fast that the default occlusion runs live.
FAST_TIMES = attribution.PassTimes(
    forward=0.001, batched_forward=0.001, backward=0.002, batched_backward=0.002
)


@pytest.fixture
def page(monkeypatch) -> AppTest:
    # The estimates (and whether occlusion runs live) come from measured pass times: fixed
    # here, so the page's choices do not depend on how loaded the machine is.
    monkeypatch.setattr(attribution_view, "pass_times", lambda key, size: SLOW_TIMES)
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
    for label in method_labels.METHODS:
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
    figures = {figure.title for figure in page.session_state[LAST_REPORT].figures}
    assert {"GrabCut seed map", "GrabCut seeds", "GrabCut mask"} <= figures  # in the report


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


def _occlusion_tile_captions(at: AppTest) -> list[str]:
    return [c for c in _captions(at) if c.endswith(" ms")]


def test_estimate_is_the_cost_of_what_will_run(page):
    """Seconds from the cost functions and the pass times, cached work excluded."""
    choose_methods(page, ["Occlusion", "Saliency", "Grad-CAM"])
    page.slider(key="attribution_window").set_value(112)
    page.slider(key="attribution_stride").set_value(64)
    page.run()
    # occlusion: 1 + 9 forwards; each scoring 1 + 2 x 21 forwards; 10 s per pass
    assert "Run ≈ **23 min 10 s**" in _estimate(page), _estimate(page)
    page.button(key="attribution_run").click().run()
    assert "Run has nothing left to do" in _estimate(page)
    page.slider(key="attribution_stride").set_value(56).run()  # 3 x 3 positions again
    assert "Run ≈ **8 min 50 s**" in _estimate(page), _estimate(page)
    page.toggle(key="attribution_sanity").set_value(True).run()
    # + sanity of Saliency and Grad-CAM: 4 calls x 1 forward+backward each
    assert "Run ≈ **10 min 10 s**" in _estimate(page), _estimate(page)


def test_short_occlusion_runs_live_and_a_new_stride_recomputes_only_it(page, monkeypatch):
    monkeypatch.setattr(attribution_view, "pass_times", lambda key, size: FAST_TIMES)
    choose_methods(page, ["Occlusion", "Grad-CAM"])
    page.toggle(key="attribution_auc").set_value(False)
    page.run()
    assert not page.exception
    assert not any("press **Run**" in info.value for info in page.info)
    assert len(_occlusion_tile_captions(page)) == 2  # occlusion and Grad-CAM, no Run pressed
    keys = {button.key for button in page.get("download_button")}
    assert "attribution_npz_Occlusion" in keys
    assert "Run has nothing left to do" in _estimate(page)  # refreshed after the live map

    before = attribution_view.COMPUTE_CALLS["map"]
    page.slider(key="attribution_stride").set_value(16).run()
    assert attribution_view.COMPUTE_CALLS["map"] == before + 1  # only the occlusion
    assert any("169 window positions" in c.value for c in page.caption)
    assert len(_occlusion_tile_captions(page)) == 2
    page.slider(key="attribution_stride").set_value(8).run()  # computed before: kept
    assert attribution_view.COMPUTE_CALLS["map"] == before + 1
    assert len(_occlusion_tile_captions(page)) == 2


def test_long_occlusion_still_waits_for_run(page, monkeypatch):
    # 10 ms per batched image: the default 625 positions run live, 3,025 do not
    times = attribution.PassTimes(
        forward=0.05, batched_forward=0.01, backward=0.1, batched_backward=0.02
    )
    monkeypatch.setattr(attribution_view, "pass_times", lambda key, size: times)
    choose_methods(page, ["Occlusion"])
    page.slider(key="attribution_window").set_value(8)
    page.slider(key="attribution_stride").set_value(4).run()  # 3,025 positions
    assert not page.exception
    estimate = _estimate(page)
    assert "runs live" not in estimate and "Run ≈ **31 s**" in estimate, estimate
    assert any("press **Run** (≈ 31 s)" in info.value for info in page.info)
