"""AppTest for the Texture & style page: renders, runs texture synthesis, Gatys and fast style."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from vizcore.models.registry import get_spec
from vizcore.style import gatys as style_tech

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
        "conv1",
        "fire2",
        "fire3",
        "fire5",
        "fire7",
    ]
    assert at.number_input(key="texture_style_tv_squeezenet1_1").value == 0.1
    assert at.selectbox(key="texture_style_squeezenet1_1_style").value == "gravel"
    assert at.multiselect(key="gatys_style_layers_squeezenet1_1").value


def test_fast_style_blend_one_is_labelled_and_compared_as_the_second_style() -> None:
    """Blend 1.0 is all of "Blend with": the fast image is labelled with that style and the Gatys
    comparison beside it runs (and looks up) the same style, not the first one."""
    at = _page()
    at.selectbox(key="fast_style_style").set_value("gravel").run()
    at.selectbox(key="fast_style_other").set_value("marble")
    at.slider(key="fast_style_blend").set_value(1.0).run()
    assert not at.exception, at.exception
    fast_captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("Fast style (marble)") for c in fast_captions), fast_captions
    assert at.button(key="fast_style_gatys").label == "Run Gatys with marble"
    assert any("(marble)" in i.value for i in at.info)


def test_stop_button_is_gone_when_the_run_has_finished() -> None:
    at = _page()
    at.select_slider(key="texture_style_size").set_value(128)
    at.slider(key="texture_style_steps_squeezenet1_1").set_value(20)
    at.button(key="texture_style_go").click().run()
    assert not at.exception, at.exception
    assert at.session_state["texture_style_result"]["gram"].steps_done == 20
    assert "texture_style_run_stop" not in [b.key for b in at.button]


def _stop_at_second_frame(real):
    """``real`` with its progress callback followed by Streamlit's stop at the second frame:
    what a click on Stop (or on any widget) does to a running script."""

    def run(**kwargs):
        on_step = kwargs.pop("on_step")
        frames = []

        def cb(info):
            on_step(info)
            if info.frame is not None:
                frames.append(info.step)
                if len(frames) == 2:
                    st.stop()
            return True

        return real(**kwargs, on_step=cb)

    return run


def test_stopped_gatys_run_is_labelled_downloadable_and_not_shown_under_another_model(
    monkeypatch,
) -> None:
    at = _page()
    at.select_slider(key="gatys_style_size").set_value(128)
    at.slider(key="gatys_style_steps_squeezenet1_1").set_value(30)
    at.button(key="gatys_style_go").click().run()  # a finished run first
    assert not at.exception, at.exception
    monkeypatch.setattr(
        style_tech, "style_transfer", _stop_at_second_frame(style_tech.style_transfer)
    )
    at.button(key="gatys_style_go").click().run()  # stopped at its second frame
    at.run()  # the rerun the Stop click causes
    assert not at.exception, at.exception
    stopped = [w.value for w in at.warning if "Stopped run" in w.value]
    assert stopped and "stopped at step" in stopped[0], [w.value for w in at.warning]
    assert any("Last finished run" in m.value for m in at.markdown)
    keys = {b.key for b in at.get("download_button")}
    assert "gatys_style_run_partial_png" in keys and "gatys_style_run_partial_gif" in keys, keys
    assert "gatys_style_dl_png" in keys  # the finished run keeps its own downloads

    at.selectbox(key="frame_model").set_value("efficientnet_lite0").run()
    assert not at.exception, at.exception
    assert not [w.value for w in at.warning if "stopped" in w.value.lower()]
    assert "gatys_style_run_partial_png" not in {b.key for b in at.get("download_button")}


def test_gatys_style_weight_spans_a_useful_range_and_the_loss_terms_are_shown() -> None:
    at = _page()
    weight = at.select_slider(key="gatys_style_sw_squeezenet1_1")
    assert "0.1" in weight.options and "100" in weight.options, weight.options
    assert weight.value == style_tech.style_settings(get_spec("squeezenet1_1")).style_weight
    at.select_slider(key="gatys_style_size").set_value(128)
    at.slider(key="gatys_style_steps_squeezenet1_1").set_value(10)
    weight.set_value(3.0)
    at.button(key="gatys_style_go").click().run()
    assert not at.exception, at.exception
    (result,) = at.session_state["gatys_style_results"].values()
    assert result.settings["style_weight"] == 3.0
    terms = [c.value for c in at.caption if "content loss" in c.value]
    assert terms and f"content loss {result.content_loss_end:.3f}" in terms[0], terms
    assert f"style loss {result.style_ratio:.3f}" in terms[0].lower()
