"""How-it-works panels: every technique has a lesson, and the panels carry this run's numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore import lessons
from vizui import method_labels
from vizui.how_it_works import PANEL_PREFIX

ROOT = Path(__file__).resolve().parent.parent


def test_every_attribution_method_has_a_complete_lesson() -> None:
    for info in method_labels.METHODS.values():
        lesson = lessons.lesson(info.key)
        assert lesson.formula and len(lesson.steps) >= 3
        assert lesson.paper[1].startswith("https://")
        assert lesson.look_for and lesson.pitfalls


def test_lessons_are_complete_and_unknown_keys_are_refused() -> None:
    for key, lesson in lessons.LESSONS.items():
        assert lesson.title and lesson.formula, key
        assert 3 <= len(lesson.steps) <= 6, key
        assert lesson.paper[1].startswith("https://"), key
    with pytest.raises(ValueError, match="No lesson for 'nope'"):
        lessons.lesson("nope")


def _panels(at: AppTest) -> dict[str, object]:
    return {e.label: e for e in at.expander if e.label.startswith(PANEL_PREFIX)}


def test_attribution_page_panels_show_formula_and_live_numbers() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/3_Attribution.py").run()
    assert not at.exception
    panels = _panels(at)
    for label in ("Saliency", "Guided backprop", "CAM", "Grad-CAM", "Grad-CAM++"):
        title = lessons.lesson(method_labels.METHODS[label].key).title
        assert f"{PANEL_PREFIX} {title}" in panels, sorted(panels)
    for label, panel in panels.items():
        assert panel.latex, f"{label}: no formula"
        texts = " ".join(m.value for m in panel.markdown)
        assert "**This run:**" in texts and "Paper: [" in texts, label
    grad_cam = panels[f"{PANEL_PREFIX} Grad-CAM"]
    numbers = " ".join(m.value for m in grad_cam.markdown)
    assert "7×7" in numbers  # Lite0's last feature map: the resolution pitfall, measured
    captions = [c for image in grad_cam.image for c in image.captions]
    assert len(captions) == 6 and all(c.startswith("A^") for c in captions), captions
    share = " ".join(c.value for c in grad_cam.caption)
    assert "of the positive contributions" in share


def test_filters_page_panels_tie_the_pitfalls_to_this_model() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/1_Filters_and_activations.py").run()
    assert not at.exception
    panels = _panels(at)
    filters = panels[f"{PANEL_PREFIX} First-layer filters"]
    numbers = " ".join(m.value for m in filters.markdown)
    assert "3×3" in numbers and "(AlexNet: 121)" in numbers  # Lite0's stem: 3x3 kernels
    maps = panels[f"{PANEL_PREFIX} Activation maps"]
    assert maps.latex and "channels all zero on this image" in maps.markdown[0].value


def test_guided_backprop_panel_shows_this_runs_sanity_check() -> None:
    from vizui import attribution_view

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/3_Attribution.py").run()
    for label in method_labels.METHODS:
        at.checkbox(key=attribution_view.method_key(label)).set_value(label == "Guided backprop")
    at.toggle(key="attribution_auc").set_value(False)
    at.toggle(key="attribution_sanity").set_value(True).run()
    panel = _panels(at)[f"{PANEL_PREFIX} Guided backprop"]
    assert "sanity check ρ" not in " ".join(m.value for m in panel.markdown)
    at.button(key="attribution_run").click().run()
    assert not at.exception
    panel = _panels(at)[f"{PANEL_PREFIX} Guided backprop"]
    numbers = " ".join(m.value for m in panel.markdown)
    match = re.search(r"sanity check ρ \(top \d blocks random\) \*\*(-?\d\.\d\d)\*\*", numbers)
    assert match, numbers
    assert float(match.group(1)) >= 0.8  # the pitfall, measured: guided backprop hardly changes
    assert "barely changes when the top layers are randomized" in numbers
    randomization = _panels(at)[f"{PANEL_PREFIX} Sanity check (model randomization)"]
    assert "ρ of Guided backprop" in randomization.markdown[0].value


def test_adversarial_panel_shows_the_norm_and_probabilities_of_this_attack() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/5_Adversarial_examples.py").run()
    at.slider(key="adversarial_steps").set_value(3)
    at.button(key="adversarial_start").click().run()
    assert not at.exception
    panel = _panels(at)[f"{PANEL_PREFIX} PGD / iterative attack"]
    numbers = panel.markdown[0].value
    assert "‖x′ − x‖∞ **" in numbers and "/255**" in numbers
    assert re.search(r"p\(tiger cat\) \*\*0\.\d{3} → 0\.\d{3}\*\*", numbers), numbers
    assert re.search(r"p\(goldfish\) \*\*0\.\d{3} → 0\.\d{3}\*\*", numbers), numbers
    assert panel.latex


def test_feature_space_panels_show_this_gallerys_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")  # a small gallery: a quick extraction
    from vizui import gallery_view

    gallery_view.builtin.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/2_Feature_space.py").run()
    next(b for b in at.button if b.key == "fspace_extract").click().run()
    assert not at.exception
    panels = _panels(at)
    neighbours = panels[f"{PANEL_PREFIX} Nearest neighbours"].markdown[0].value
    assert re.search(r"images in both top-8 lists \*\*\d\*\*", neighbours), neighbours
    assert "numbers per image" in neighbours
    tsne = panels[f"{PANEL_PREFIX} t-SNE / PCA map"].markdown[0].value
    assert "perplexity **" in tsne and "iterations **250 + 500**" in tsne, tsne


def test_feature_visualization_panels_chart_the_objective_over_steps() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/4_Feature_visualization.py").run()
    at.multiselect(key="featvis_cv_classes").set_value([1])
    k = "featvis_cv_efficientnet_lite0_fourier"
    at.slider(key=f"{k}_steps").set_value(3)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.button(key="featvis_cv_start").click().run()
    at.slider(key="featvis_dd_octaves").set_value(1)
    at.slider(key="featvis_dd_steps").set_value(3)
    at.select_slider(key="featvis_dd_size").set_value(128)
    at.button(key="featvis_dd_start").click().run()
    assert not at.exception
    panels = _panels(at)
    classes = panels[f"{PANEL_PREFIX} Class visualization"]
    assert re.search(r"S_c\(goldfish\), p \*\*-?\d", classes.markdown[0].value), classes
    assert classes.get("arrow_line_chart") or classes.get("vega_lite_chart")  # over the steps
    dream = panels[f"{PANEL_PREFIX} DeepDream"].markdown[0].value
    assert "½·mean(A²) at the end **" in dream and "steps **3**" in dream, dream


def test_texture_and_style_panels_show_a_gram_matrix() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()
    at.switch_page("pages/6_Texture_and_style.py").run()
    at.select_slider(key="texture_style_size").set_value(128)
    at.slider(key="texture_style_steps_squeezenet1_1").set_value(5)
    at.button(key="texture_style_go").click().run()
    at.select_slider(key="gatys_style_size").set_value(128)
    at.slider(key="gatys_style_steps_squeezenet1_1").set_value(3)
    at.button(key="gatys_style_go").click().run()
    assert not at.exception
    panels = _panels(at)
    for title in ("Texture synthesis (Gram matrices)", "Style transfer (Gatys)"):
        panel = panels[f"{PANEL_PREFIX} {title}"]
        captions = [c for image in panel.image for c in image.captions]
        assert captions and captions[0].startswith("G at `"), captions
    gatys = panels[f"{PANEL_PREFIX} Style transfer (Gatys)"].markdown[0].value
    assert "β (style weight) **" in gatys and "style loss left **" in gatys, gatys


def test_multifaceted_panel_shows_the_facets_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/4_Feature_visualization.py").run()
    k = "featvis_mf_efficientnet_lite0_fourier"
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.slider(key="featvis_mf_facets").set_value(2)
    at.radio(key="featvis_mf_topk").set_value(5)
    at.button(key="featvis_mf_start").click().run()
    assert not at.exception
    numbers = _panels(at)[f"{PANEL_PREFIX} Multifaceted class visualization"].markdown[0].value
    assert "facets K **2**" in numbers and "S_c start → end **" in numbers, numbers


def test_quilting_and_fast_style_panels() -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/6_Texture_and_style.py").run()
    panels = _panels(at)
    fast = panels[f"{PANEL_PREFIX} Fast style transfer"].markdown[0].value
    assert "one forward pass **" in fast and "b (blend) **" in fast, fast
    at.select_slider(key="texture_style_size").set_value(128)
    at.slider(key="texture_style_steps_efficientnet_lite0").set_value(3)
    at.button(key="texture_style_go").click().run()
    assert not at.exception
    quilt = _panels(at)[f"{PANEL_PREFIX} Image quilting (non-neural)"].markdown[0].value
    assert "distinct sample pixels used **" in quilt and "patch **" in quilt, quilt
