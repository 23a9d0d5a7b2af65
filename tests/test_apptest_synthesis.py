"""The feature visualization and adversarial pages under AppTest (steps kept tiny by widgets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FEATVIS = "pages/4_Feature_visualization.py"
ADVERSARIAL = "pages/5_Adversarial_examples.py"
LITE = "efficientnet_lite0"


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]
    assert not at.error, [err.value for err in at.error]


@pytest.fixture
def featvis() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(FEATVIS).run()
    assert_ok(at)
    return at


def test_class_visualization_runs_and_keeps_its_result(featvis: AppTest) -> None:
    at = featvis
    k = f"featvis_cv_{LITE}_fourier"
    at.multiselect(key="featvis_cv_classes").set_value([1])
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.button(key="featvis_cv_start").click().run()
    assert_ok(at)
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("goldfish · p=") for c in captions), captions
    assert any("2 steps in" in c.value for c in at.caption)
    # A display-only rerun keeps the result without recomputing.
    at.slider(key=f"{k}_steps").set_value(3).run()
    assert_ok(at)
    assert any("settings have changed" in c.value for c in at.caption)


def test_pixel_parameterization_shows_the_regularizer_sliders(featvis: AppTest) -> None:
    at = featvis
    at.radio(key="featvis_cv_param").set_value("pixel").run()
    assert_ok(at)
    k = f"featvis_cv_{LITE}_pixel"
    for name in ("decay", "sigma", "every", "normclip", "contribclip"):
        assert at.slider(key=f"{k}_{name}") is not None
    at.multiselect(key="featvis_cv_classes").set_value([130])
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.slider(key=f"{k}_normclip").set_value(20)
    at.button(key="featvis_cv_start").click().run()
    assert_ok(at)
    assert any("2 steps in" in c.value for c in at.caption)


def test_neuron_inversion_and_deepdream_run(featvis: AppTest) -> None:
    at = featvis
    k = f"featvis_nv_{LITE}_fourier"
    at.number_input(key="featvis_nv_count").set_value(1)
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.button(key="featvis_nv_start").click().run()
    assert_ok(at)

    at.multiselect(key="featvis_inv_layers_efficientnet_lite0").set_value(["blocks.2", "blocks.7"])
    at.slider(key="featvis_inv_steps_efficientnet_lite0").set_value(2)
    at.select_slider(key="featvis_inv_size").set_value(96)
    at.button(key="featvis_inv_start").click().run()
    assert_ok(at)
    assert any("error = " in c.value for c in at.caption)

    at.slider(key="featvis_dd_octaves").set_value(1)
    at.slider(key="featvis_dd_steps").set_value(2)
    at.select_slider(key="featvis_dd_size").set_value(128)
    at.button(key="featvis_dd_start").click().run()
    assert_ok(at)
    assert at.selectbox(key="featvis_dd_layer").options[0] == "blocks.2"
    assert len(at.get("download_button")) >= 6  # PNG + GIF for each finished run


def test_adversarial_page_attacks(tmp_path) -> None:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(ADVERSARIAL).run()
    assert_ok(at)
    assert at.info  # nothing run yet
    at.slider(key="adversarial_steps").set_value(3)
    at.button(key="adversarial_start").click().run()
    assert not at.exception, [exc.value for exc in at.exception]
    verdicts = [m.value for m in (*at.success, *at.warning)]
    assert any("toward **goldfish**" in v for v in verdicts), verdicts
    assert len(at.dataframe) == 2  # top-5 before and after
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("Grad-CAM before") for c in captions), captions
    assert any(c.startswith("Grad-CAM after") for c in captions), captions
    at.selectbox(key="adversarial_attr_method").set_value("Saliency (gradient)").run()
    assert not at.exception, [exc.value for exc in at.exception]
    at.radio(key="adversarial_method").set_value("fgsm").run()
    at.toggle(key="adversarial_targeted").set_value(False).run()
    at.button(key="adversarial_start").click().run()
    assert not at.exception, [exc.value for exc in at.exception]
    verdicts = [m.value for m in (*at.success, *at.warning)]
    assert any(v.startswith("FGSM untargeted") for v in verdicts), verdicts


def test_inversion_layers_follow_a_model_switch(featvis: AppTest) -> None:
    at = featvis
    lite_layers = at.multiselect(key=f"featvis_inv_layers_{LITE}").value
    assert lite_layers and all(name.startswith("blocks") for name in lite_layers)
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    assert_ok(at)
    assert at.multiselect(key="featvis_inv_layers_squeezenet1_1").value
