"""Feature visualization page under AppTest (issue 19 item 3): a run of another model is not
shown as stopped under the new one, a missing channel is refused at once with the layer's
channel count shown, and the multifaceted hint does not outlive the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import StopException
from streamlit.testing.v1 import AppTest

from vizcore.core import progress
from vizcore.models import registry
from vizcore.optvis import dream, synthesis

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
FEATVIS = "pages/4_Feature_visualization.py"
LITE = "efficientnet_lite0"


def assert_ok(at: AppTest) -> None:
    assert not at.exception, [exc.value for exc in at.exception]
    assert not at.error, [err.value for err in at.error]


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


@pytest.fixture
def featvis() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    at.switch_page(FEATVIS).run()
    assert_ok(at)
    return at


def _tiny_dream(at: AppTest) -> None:
    at.slider(key="featvis_dd_octaves").set_value(1)
    at.slider(key="featvis_dd_steps").set_value(3)
    at.select_slider(key="featvis_dd_size").set_value(128)


def test_deepdream_of_another_model_is_dropped_or_labelled(featvis, monkeypatch) -> None:
    at = featvis
    _tiny_dream(at)
    at.button(key="featvis_dd_start").click().run()  # a finished Lite0 dream
    assert_ok(at)

    def stop_at_step_2(on_step, info):  # Streamlit raises like this when a widget changes
        go_on = progress.report(on_step, info)
        if info.step == 2:
            raise StopException()
        return go_on

    monkeypatch.setattr(dream, "report", stop_at_step_2)
    at.button(key="featvis_dd_start").click().run()
    monkeypatch.undo()
    at.selectbox(key="frame_model").set_value("squeezenet1_1").run()  # switched mid-run
    assert_ok(at)
    warnings = [w.value for w in at.warning]
    assert not any("Stopped at step" in w for w in warnings), warnings
    assert any("interrupted by the change" in c for c in captions(at)), captions(at)
    assert any("made with another model or image" in c for c in captions(at)), captions(at)
    assert not any(c.startswith("Last frame") for im in at.image for c in im.captions)


def test_missing_channel_is_refused_at_once_and_the_count_shown(featvis) -> None:
    at = featvis
    layer = at.selectbox(key="featvis_nv_layer").value
    count = synthesis.layer_channels(registry.load_model(LITE), layer)
    assert count is not None
    assert any(f"**{layer}** has **{count}** channels" in c for c in captions(at)), captions(at)
    at.number_input(key="featvis_nv_channel").set_value(count).run()
    assert any(f"Channel {count + 2} does not exist" in w.value for w in at.warning)
    at.button(key="featvis_nv_start").click().run()
    errors = [e.value for e in at.error]
    assert any(f"has {count} channels (0 to {count - 1})" in e for e in errors), errors
    assert not at.get("progress")


@pytest.fixture
def small_cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    return tmp_path / "cache"


def test_multifaceted_hint_is_replaced_by_the_run(small_cold_cache: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=240).run()
    at.switch_page(FEATVIS).run()
    assert_ok(at)
    assert any(c.startswith("Start first classifies") for c in captions(at)), captions(at)
    k = f"featvis_mf_{LITE}_fourier"
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.slider(key="featvis_mf_facets").set_value(2)
    at.button(key="featvis_mf_start").click().run()
    assert_ok(at)
    assert not any(c.startswith("Start first classifies") for c in captions(at)), captions(at)
    assert any("gallery images are classified as" in c for c in captions(at)), captions(at)
