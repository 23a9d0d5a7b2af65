"""Every page's main controls travel in the link, and every page with figures has a report.

For each page: set non-default values, read the query parameters, open a fresh AppTest with them
(a new session from the link) and see the same values; a bad value falls back to the default with
a notice; the page's report embeds each figure as a data URI and loads nothing over http(s).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.core.report import to_html
from vizui.report_view import LAST_REPORT

pytestmark = pytest.mark.usefixtures("small_cold_cache")  # a temporary cache, a small gallery

ROOT = Path(__file__).resolve().parent.parent
FILTERS = "pages/1_Filters_and_activations.py"


def _page(path: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _extract(at: AppTest) -> None:
    """Press "extract" when the gallery's features are not on disk yet (a cold cache)."""
    button = next((b for b in at.button if b.key == "fspace_extract"), None)
    if button is not None:
        button.click().run()
        assert not at.exception


def _flat(at: AppTest) -> dict[str, str]:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def _notices(at: AppTest) -> str:
    return " ".join(i.value for i in at.info)


def _assert_report(at: AppTest, *, titles: tuple[str, ...]) -> None:
    page_report = at.session_state[LAST_REPORT]
    built = page_report.build()
    assert built.link is None or "?" in built.link  # AppTest has no browser URL
    shown = [f.title for f in built.figures]
    for title in titles:
        assert any(title in t for t in shown), (title, shown)
    page = to_html(built)
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == len(built.figures) >= 2
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""src=["']?https?:""", page)
    assert "<link" not in page and "<script" not in page
    assert built.params


def test_filters_controls_round_trip_through_the_link() -> None:
    at = _page(FILTERS)
    layers = at.selectbox(key="filters_maps_layer").options
    other = layers[1]
    at.selectbox(key="filters_maps_layer").set_value(other).run()
    at.radio(key="filters_maps_sort").set_value("max").run()
    at.number_input(key="filters_maps_ch").set_value(5).run()
    at.number_input(key="filters_kernel_filter").set_value(3).run()
    at.slider(key="filters_patch_k").set_value(5).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    flat = _flat(at)
    assert flat["maps_layer"] == other and flat["sort"] == "max", flat
    assert flat["channel"] == "5" and flat["filter"] == "3" and flat["top_k"] == "5", flat
    _assert_report(at, titles=("First-layer filters", "Activation maps", "over the input"))

    fresh = _page(FILTERS, **flat)
    assert fresh.selectbox(key="filters_maps_layer").value == other
    assert fresh.radio(key="filters_maps_sort").value == "max"
    assert fresh.number_input(key="filters_maps_ch").value == 5
    assert fresh.number_input(key="filters_kernel_filter").value == 3
    assert fresh.slider(key="filters_patch_k").value == 5
    assert not fresh.warning and "does not fit" not in _notices(fresh)
    assert _flat(fresh) == flat


def test_filters_bad_link_values_fall_back_with_a_notice() -> None:
    at = _page(FILTERS, maps_layer="no.such.layer", channel="99999", top_k="0", sort="big")
    layer = at.selectbox(key="filters_maps_layer").value
    assert layer != "no.such.layer"
    assert at.slider(key="filters_patch_k").value == 12
    assert at.radio(key="filters_maps_sort").value == "mean"
    assert at.number_input(key="filters_maps_ch").value < 99999
    for param in ("maps_layer", "channel", "top_k", "sort"):
        assert f"The link's {param} “" in _notices(at), _notices(at)


FEATURE_SPACE = "pages/2_Feature_space.py"


def test_feature_space_controls_round_trip_through_the_link() -> None:
    at = _page(FEATURE_SPACE)
    _extract(at)
    layers = at.selectbox(key="fspace_layer").options
    at.selectbox(key="fspace_layer").set_value(layers[1]).run()
    _extract(at)  # the second layer's features
    at.radio(key="fspace_metric").set_value("cosine").run()
    at.slider(key="fspace_k").set_value(5).run()
    at.radio(key="fspace_method").set_value("pca").run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    flat = _flat(at)
    assert flat["feature_layer"] == layers[1] and flat["metric"] == "cosine", flat
    assert flat["neighbours"] == "5" and flat["map"] == "pca", flat
    _assert_report(at, titles=("Input", "Nearest in feature space", "Nearest in pixel space"))
    assert at.session_state[LAST_REPORT].tables  # the map's points, as numbers

    fresh = _page(FEATURE_SPACE, **flat)
    assert fresh.selectbox(key="fspace_layer").value == layers[1]
    assert fresh.radio(key="fspace_metric").value == "cosine"
    assert fresh.slider(key="fspace_k").value == 5
    assert fresh.radio(key="fspace_method").value == "pca"
    assert not fresh.warning and "does not fit" not in _notices(fresh)


def test_feature_space_bad_link_values_fall_back_with_a_notice() -> None:
    at = _page(FEATURE_SPACE, feature_layer="nope", neighbours="13", map="umap", metric="pca")
    for param in ("feature_layer", "neighbours", "map", "metric"):
        assert f"The link's {param} “" in _notices(at), _notices(at)
    _extract(at)
    assert at.selectbox(key="fspace_layer").value == at.selectbox(key="fspace_layer").options[0]
    assert at.slider(key="fspace_k").value == 8
    assert at.radio(key="fspace_method").value == "tsne"


FEATVIS = "pages/4_Feature_visualization.py"
INV = "featvis_inv_layers_efficientnet_lite0"
FACET_CLASS = "featvis_mf_class_efficientnet_lite0"


def test_feature_visualization_tabs_round_trip_through_the_link() -> None:
    at = _page(FEATVIS)
    layers = at.selectbox(key="featvis_nv_layer").options
    at.selectbox(key="featvis_nv_layer").set_value(layers[2]).run()
    at.number_input(key="featvis_nv_channel").set_value(4)
    at.number_input(key="featvis_nv_count").set_value(2)
    at.radio(key="featvis_nv_mode").set_value("neuron").run()
    at.multiselect(key=INV).set_value(["blocks.2", "blocks.7"])
    at.selectbox(key=FACET_CLASS).set_value(130)
    at.slider(key="featvis_mf_facets").set_value(2).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    flat = _flat(at)
    assert flat["neuron_layer"] == layers[2] and flat["neuron_channel"] == "4", flat
    assert flat["neuron_count"] == "2" and flat["neuron_mode"] == "neuron", flat
    assert flat["inversion_layers"] == "blocks.2,blocks.7", flat
    assert flat["facet_class"] == "130" and flat["facets"] == "2", flat

    fresh = _page(FEATVIS, **flat)
    assert fresh.selectbox(key="featvis_nv_layer").value == layers[2]
    assert fresh.number_input(key="featvis_nv_channel").value == 4
    assert fresh.number_input(key="featvis_nv_count").value == 2
    assert fresh.radio(key="featvis_nv_mode").value == "neuron"
    assert fresh.multiselect(key=INV).value == ["blocks.2", "blocks.7"]
    assert fresh.selectbox(key=FACET_CLASS).value == 130
    assert fresh.slider(key="featvis_mf_facets").value == 2
    assert not fresh.warning and "does not fit" not in _notices(fresh)


def test_feature_visualization_bad_link_values_and_its_report() -> None:
    at = _page(FEATVIS, neuron_layer="x", inversion_layers="blocks.2,nope", facet_class="1000",
               neuron_channel="-1", classes="1,2,3,4,5,6,7,8,9")  # fmt: skip
    for param in ("neuron_layer", "inversion_layers", "facet_class", "neuron_channel", "classes"):
        assert f"The link's {param} “" in _notices(at), _notices(at)
    assert at.number_input(key="featvis_nv_channel").value == 0
    assert len(at.multiselect(key=INV).value) == 3  # the default layers
    assert len(at.multiselect(key="featvis_cv_classes").value) == 3

    at.slider(key="featvis_dd_octaves").set_value(1)
    at.slider(key="featvis_dd_steps").set_value(1)
    at.select_slider(key="featvis_dd_size").set_value(128)
    at.button(key="featvis_dd_start").click().run()
    assert not at.exception
    _assert_report(at, titles=("Input", "DeepDream: the start", "DeepDream · "))


ADVERSARIAL = "pages/5_Adversarial_examples.py"


def test_adversarial_controls_round_trip_and_the_report() -> None:
    at = _page(ADVERSARIAL)
    at.slider(key="adversarial_steps").set_value(3).run()  # PGD only: set it before FGSM
    at.radio(key="adversarial_method").set_value("fgsm")
    at.selectbox(key="adversarial_target").set_value(130)
    at.slider(key="adversarial_eps").set_value(6).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    flat = _flat(at)
    assert flat["attack"] == "fgsm" and flat["target_class"] == "130", flat
    assert flat["eps"] == "6" and flat["steps"] == "3" and "targeted" not in flat, flat

    fresh = _page(ADVERSARIAL, **flat, targeted="0")
    assert fresh.radio(key="adversarial_method").value == "fgsm"
    assert fresh.selectbox(key="adversarial_target").value == 130
    assert fresh.slider(key="adversarial_eps").value == 6
    assert fresh.slider(key="adversarial_steps").value == 3
    assert fresh.toggle(key="adversarial_targeted").value is False
    assert not fresh.warning and "does not fit" not in _notices(fresh)

    fresh.toggle(key="adversarial_targeted").set_value(True)
    fresh.button(key="adversarial_start").click().run()
    assert not fresh.exception
    _assert_report(fresh, titles=("Original", "Adversarial", "Perturbation"))
    assert "success" in fresh.session_state[LAST_REPORT].scores


def test_adversarial_bad_link_values_fall_back_with_a_notice() -> None:
    at = _page(ADVERSARIAL, attack="cw", target_class="1000", eps="0", targeted="maybe")
    for param in ("attack", "target_class", "eps", "targeted"):
        assert f"The link's {param} “" in _notices(at), _notices(at)
    assert at.radio(key="adversarial_method").value == "pgd"
    assert at.slider(key="adversarial_eps").value == 4
    assert at.toggle(key="adversarial_targeted").value is True


STYLE = "pages/6_Texture_and_style.py"
TEXTURE_KEY = "texture_style_efficientnet_lite0_style"


def test_texture_and_style_controls_round_trip_and_the_report() -> None:
    at = _page(STYLE)
    from vizui.style_view import style_options

    textures = [k for k in style_options() if k != "upload"]
    other_texture = next(t for t in textures if t != at.selectbox(key=TEXTURE_KEY).value)
    at.selectbox(key=TEXTURE_KEY).set_value(other_texture)
    at.select_slider(key="texture_style_size").set_value(128)
    at.selectbox(key="gatys_style_style").set_value(other_texture)
    at.select_slider(key="gatys_style_sw_efficientnet_lite0").set_value(30.0)
    at.number_input(key="gatys_style_cw_efficientnet_lite0").set_value(2.5)
    at.slider(key="gatys_style_steps_efficientnet_lite0").set_value(40)
    styles = at.selectbox(key="fast_style_style").options
    at.selectbox(key="fast_style_style").set_value(styles[1]).run()
    at.slider(key="fast_style_blend").set_value(0.25).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    flat = _flat(at)
    expected = {
        "texture": other_texture, "texture_size": "128", "style": other_texture,
        "style_weight": "30.0", "content_weight": "2.5", "style_steps": "40",
        "fast_style": styles[1], "blend": "0.25",
    }  # fmt: skip
    assert {k: flat.get(k) for k in expected} == expected, flat
    _assert_report(at, titles=("Input", "Fast style"))

    fresh = _page(STYLE, **flat)
    assert fresh.selectbox(key=TEXTURE_KEY).value == other_texture
    assert fresh.select_slider(key="texture_style_size").value == 128
    assert fresh.selectbox(key="gatys_style_style").value == other_texture
    assert fresh.select_slider(key="gatys_style_sw_efficientnet_lite0").value == 30.0
    assert fresh.number_input(key="gatys_style_cw_efficientnet_lite0").value == 2.5
    assert fresh.slider(key="gatys_style_steps_efficientnet_lite0").value == 40
    assert fresh.selectbox(key="fast_style_style").value == styles[1]
    assert fresh.slider(key="fast_style_blend").value == 0.25
    assert not fresh.warning and "does not fit" not in _notices(fresh)


def test_texture_and_style_bad_link_values_fall_back_with_a_notice() -> None:
    at = _page(STYLE, texture="upload", style_weight="7", style_steps="15", blend="2",
               fast_style="cubism")  # fmt: skip
    for param in ("texture", "style_weight", "style_steps", "blend", "fast_style"):
        assert f"The link's {param} “" in _notices(at), _notices(at)
    assert at.slider(key="fast_style_blend").value == 0.0
    assert at.selectbox(key=TEXTURE_KEY).value != "upload"


def test_every_page_has_the_copy_link_box_and_home_and_tour_have_reports() -> None:
    from vizui.frame import existing_pages

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["image"] = "coffee"
    at.run()
    assert not at.exception
    _assert_report_home = at.session_state[LAST_REPORT]
    assert _assert_report_home.page == "What the model sees" and _assert_report_home.tables
    for page in existing_pages():
        if page.path != "app.py":
            at.switch_page(page.path).run()
        assert not at.exception, (page.path, [e.value for e in at.exception])
        labels = [e.label for e in at.expander]
        assert "Copy link to this view" in labels, (page.path, labels)
        # Outside a browser the box lists the parameters (a browser shows the full URL).
        captions = " ".join(c.value for c in at.caption)
        assert "image=coffee" in captions, (page.path, captions)
        if page.path.endswith("Lecture_tour.py"):
            _assert_report(at, titles=("First-layer filters", "Grad-CAM", "FGSM: adversarial"))


def test_the_link_parsers_refuse_what_the_widgets_cannot_show() -> None:
    from vizui.view_link import flag, flag_text, float_in, int_in, list_of, list_text, one_of

    assert int_in(range(4, 65, 4))("8") == 8 and int_in(range(4, 65, 4))("6") is None
    assert int_in(range(3))("x") is None and int_in(range(3))("-1") is None
    weight = float_in(0.0, 10.0)
    assert weight("2.5") == 2.5 and weight("nan") is None and weight("inf") is None
    assert weight("11") is None and weight("") is None
    assert flag("1") is True and flag("false") is False and flag("maybe") is None
    assert flag_text(True) == "1" and flag_text(False) == "0"
    layers = list_of(["a.1", "b.2", "c.3"], most=2)
    assert layers("b.2,a.1") == ["b.2", "a.1"]
    assert layers("a.1,a.1") is None and layers("a.1,b.2,c.3") is None and layers("") is None
    assert list_text(["b.2", "a.1"]) == "b.2,a.1"
    assert one_of([0.1, 3.0])("3.0") == 3.0 and one_of([0.1, 3.0])("3") is None
