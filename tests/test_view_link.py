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
