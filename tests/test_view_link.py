"""Links that reopen a view: ?model=…&image=… are adopted, checked, and kept up to date."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    return at


def test_a_link_opens_its_model_and_image() -> None:
    at = _app(model="squeezenet1_1", image="coffee")
    assert at.selectbox(key="frame_model").value == "squeezenet1_1"
    assert at.selectbox(key="frame_image").value == "coffee"
    assert not at.sidebar.info
    # Later choices go back to the URL, so a copied link is always the current view.
    at.selectbox(key="frame_image").set_value("chelsea").run()
    assert at.query_params["image"] in ("chelsea", ["chelsea"])
    assert at.query_params["model"] in ("squeezenet1_1", ["squeezenet1_1"])


def test_bad_links_fall_back_to_defaults_with_a_notice() -> None:
    at = _app(model="no_such_net", image="upload:holiday.png")
    assert at.selectbox(key="frame_model").value == "efficientnet_lite0"
    assert at.selectbox(key="frame_image").value == "chelsea"
    notices = " ".join(info.value for info in at.sidebar.info)
    assert "The link's model could not be used" in notices
    assert "The link's image could not be used" in notices
    at.run()  # shown once, not on every rerun
    assert not [i for i in at.sidebar.info if "could not be used" in i.value]


def test_an_unavailable_model_in_a_link_falls_back() -> None:
    at = _app(model="resnet50")  # torchvision weights are not in this machine's cache
    if at.selectbox(key="frame_model").value == "resnet50":
        return  # the weights are there after all: nothing to fall back from
    assert any("is not available here" in i.value for i in at.sidebar.info)


def _attribution(**params: str) -> AppTest:
    at = _app(**params)
    at.switch_page("pages/3_Attribution.py").run()
    assert not at.exception
    return at


def test_the_attribution_page_writes_its_view_and_a_link_restores_it() -> None:
    from vizui import attribution_view as view

    at = _attribution()
    for label, on in (("Occlusion", False), ("Deconvnet", False), ("Score-CAM", True)):
        at.checkbox(key=view.method_key(label)).set_value(on)
    at.radio(key="attribution_target_choice").set_value(-1).run()
    at.selectbox(key="attribution_target_search").set_value(1).run()  # goldfish
    layer_key = "attribution_layer_efficientnet_lite0"
    other_layer = at.selectbox(key=layer_key).options[3]
    at.selectbox(key=layer_key).set_value(other_layer).run()
    at.slider(key="attribution_window").set_value(48).run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    params = {k: at.query_params[k] for k in at.query_params}
    flat = {k: v[0] if isinstance(v, list) else v for k, v in params.items()}
    assert flat["target"] == "1" and flat["layer"] == other_layer and flat["window"] == "48"
    assert "score_cam" in flat["methods"] and "occlusion" not in flat["methods"]

    fresh = _attribution(**flat)  # a new session opened from the link
    assert fresh.selectbox(key="attribution_target_search").value == 1
    assert fresh.selectbox(key=layer_key).value == other_layer
    assert fresh.slider(key="attribution_window").value == 48
    assert fresh.checkbox(key=view.method_key("Score-CAM")).value
    assert not fresh.checkbox(key=view.method_key("Occlusion")).value
    assert not fresh.warning, [w.value for w in fresh.warning]


def test_bad_page_parameters_fall_back_with_a_notice() -> None:
    from vizui import attribution_view as view

    at = _attribution(layer="no.such.layer", target="5000", methods="grad_cam,nope", window="7")
    assert at.selectbox(key="attribution_layer_efficientnet_lite0").value == "head.act"
    assert at.slider(key="attribution_window").value == 32
    assert at.checkbox(key=view.method_key("Occlusion")).value  # the defaults
    notices = " ".join(i.value for i in at.info)
    for param in ("layer", "target", "methods", "window"):
        assert f"The link's {param} “" in notices, notices


def test_feature_visualization_classes_and_dream_layer_travel_in_the_link() -> None:
    at = _app()
    at.switch_page("pages/4_Feature_visualization.py").run()
    at.multiselect(key="featvis_cv_classes").set_value([1, 130]).run()
    layers = at.selectbox(key="featvis_dd_layer").options
    at.selectbox(key="featvis_dd_layer").set_value(layers[0]).run()
    assert not at.exception and not at.warning
    flat = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert flat["classes"] == "1,130" and flat["dream_layer"] == layers[0], flat

    fresh = _app(**flat)
    fresh.switch_page("pages/4_Feature_visualization.py").run()
    assert fresh.multiselect(key="featvis_cv_classes").value == [1, 130]
    assert fresh.selectbox(key="featvis_dd_layer").value == layers[0]
    assert not fresh.warning
