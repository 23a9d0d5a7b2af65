"""AppTest for the Texture & style page: renders, runs texture synthesis, Gatys and fast style."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/6_Texture_and_style.py"


def _page(model: str = "squeezenet1_1") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.session_state["vz_model"] = model
    at.run()
    at.switch_page(PAGE).run()
    return at


def test_page_renders_with_fast_style_and_blend() -> None:
    at = _page()
    assert not at.exception, at.exception
    assert [t.label for t in at.tabs] == [
        "Texture synthesis",
        "Style transfer (Gatys)",
        "Fast style (feed-forward)",
    ]
    fast_caption = [m.value for m in at.markdown if "conditional instance" in m.value]
    assert fast_caption, "the fast-style tab explains its network"
    blend = at.slider(key="fast_style_blend")
    blend.set_value(0.5).run()
    assert not at.exception, at.exception
    assert not at.error


def test_texture_and_gatys_runs_show_results_and_times() -> None:
    at = _page()
    at.select_slider(key="texture_style_size").set_value(128)
    at.slider(key="texture_style_steps_squeezenet1_1").set_value(20)
    at.button(key="texture_style_go").click().run()
    assert not at.exception, at.exception
    result = at.session_state["texture_style_result"]
    assert result["gram"].steps_done == 20
    assert result["gram"].style_loss_end < result["gram"].style_loss_start
    assert result["quilt"].image.shape == (128, 128, 3)

    at.select_slider(key="gatys_style_size").set_value(128)
    at.slider(key="gatys_style_steps_squeezenet1_1").set_value(10)
    at.button(key="gatys_style_go").click().run()
    assert not at.exception, at.exception
    assert at.session_state["gatys_style_results"]
    assert not at.error


def test_missing_layers_is_an_error_message_not_a_traceback() -> None:
    at = _page()
    at.multiselect(key="texture_style_layers_squeezenet1_1").set_value([])
    at.button(key="texture_style_go").click().run()
    assert not at.exception
    assert any("at least one Gram layer" in e.value for e in at.error)


def test_switching_the_model_gives_that_models_presets() -> None:
    """Widgets whose defaults are measured per model are keyed per model: after a switch in the
    sidebar they show the new model's presets, not an emptied choice of the old model's layers."""
    at = _page("efficientnet_lite0")
    assert at.selectbox(key="texture_style_efficientnet_lite0_style").value == "marble"
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="texture_style_layers_squeezenet1_1").value == [
        "fire2",
        "fire3",
        "fire5",
    ]
    assert at.number_input(key="texture_style_tv_squeezenet1_1").value == 0.1
    assert at.selectbox(key="texture_style_squeezenet1_1_style").value == "gravel"
    assert at.multiselect(key="gatys_style_layers_squeezenet1_1").value
