"""Display-only widgets never recompute a model pass (issue 13 item 4), pages other than
Feature space (whose map is checked in test_pages_features.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def test_adversarial_settings_do_not_recompute_the_before_after_maps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vizui import adversarial_view

    adversarial_view.attribution_heat.clear()
    calls = []
    grad_cam = adversarial_view.grad_cam

    def counting(*args, **kwargs):
        calls.append(kwargs.get("target"))
        return grad_cam(*args, **kwargs)

    monkeypatch.setattr(adversarial_view, "grad_cam", counting)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/5_Adversarial_examples.py").run()
    at.radio(key="adversarial_method").set_value("fgsm").run()
    at.button(key="adversarial_start").click().run()
    assert not at.exception and not at.error
    assert len(calls) == 2  # Grad-CAM before and after
    # Settings for the next attack change nothing shown: no new map.
    at.slider(key="adversarial_eps").set_value(8).run()
    at.toggle(key="adversarial_targeted").set_value(False).run()
    assert not at.exception and len(calls) == 2
    assert any("settings have changed" in c.value for c in at.caption)
    # Explaining the original class in both: only the "after" map is new.
    at.radio(key="adversarial_attr_class").set_value("original").run()
    assert not at.exception and len(calls) == 3


def test_fast_style_blend_partner_at_zero_blend_does_not_restyle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vizcore.style import fast_style
    from vizui import style_view

    style_view.fast_result.clear()
    calls = []
    apply_style = fast_style.apply_style

    def counting(*args, **kwargs):
        calls.append(kwargs.get("blend_with"))
        return apply_style(*args, **kwargs)

    monkeypatch.setattr(fast_style, "apply_style", counting)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page("pages/6_Texture_and_style.py").run()
    assert not at.exception and calls == [None]
    others = at.selectbox(key="fast_style_other").options
    at.selectbox(key="fast_style_other").set_value(others[-1]).run()
    assert not at.exception and calls == [None]  # blend 0: the partner has no weight
    at.slider(key="fast_style_blend").set_value(0.5).run()
    assert not at.exception and len(calls) == 2 and calls[-1] is not None
