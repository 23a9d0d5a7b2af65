"""The Lecture tour page: the lecture's order, a formula and a live result per step, links."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore import lessons
from vizui import tour

ROOT = Path(__file__).resolve().parent.parent

LECTURE_ORDER = (
    "first_layer_filters", "neighbours", "feature_map", "activations", "max_patches",
    "occlusion", "saliency", "guided_backprop", "grad_cam", "class_visualization",
    "feature_inversion", "deepdream", "texture_synthesis", "style_transfer", "fgsm",
)  # fmt: skip


def test_steps_follow_the_lecture_and_link_to_existing_pages() -> None:
    assert tuple(step.key for step in tour.STEPS) == LECTURE_ORDER
    for step in tour.STEPS:
        assert (ROOT / step.page).is_file(), step.page
        assert step.key in lessons.LESSONS
        assert step.slow == bool(step.cost), step.key


def test_tour_renders_fast_steps_at_once_and_runs_a_slow_one_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cold feature cache: the gallery steps offer extraction first, whatever ran before.
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/7_Lecture_tour.py").run()
    assert not at.exception
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    titles = [lessons.lesson(key).title for key in LECTURE_ORDER]
    assert headings == [f"#### {i}. {t}" for i, t in enumerate(titles, 1)]
    assert len(at.latex) == len(LECTURE_ORDER)
    links = [e for e in at.get("page_link") if "Open the full page" in e.proto.label]
    assert len(links) == len(LECTURE_ORDER)
    captions = " ".join(c.value for c in at.caption)
    assert "`stem.conv`: 32 filters" in captions  # filters: at once
    assert "FGSM, ε = 4/255: top-1 “tiger cat”" in captions  # the attack: at once
    tiles = [c for image in at.image for c in image.captions]
    assert any(c.startswith("Grad-CAM for “tiger cat”") for c in tiles), tiles
    assert {b.key for b in at.button if b.label == "Extract gallery features"} == {
        "tour_neighbours_feats_extract",
        "tour_tsne_feats_extract",
    }
    run_keys = {b.key for b in at.button if b.label == "Run this step"}
    slow = {step.key for step in tour.STEPS if step.slow and step.key != "feature_map"}
    assert run_keys == {f"tour_{key}_run" for key in slow}
    assert not any("DeepDream ·" in c for c in tiles)

    at.button(key="tour_deepdream_run").click().run()
    assert not at.exception
    tiles = [c for image in at.image for c in image.captions]
    assert any(c.startswith("DeepDream · `") for c in tiles), tiles
    at.run()  # kept for this model and image: no button, same result
    assert "tour_deepdream_run" not in {b.key for b in at.button}
