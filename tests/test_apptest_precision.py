"""The "Exact fp32" toggle: disabled where bf16 is slow; where fast, part of the slow methods'
keys only (flipping it recomputes no fast map)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizcore.core import precision
from vizui import attribution_view

ROOT = Path(__file__).resolve().parent.parent


def _page(path: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(path).run()
    assert not at.exception
    return at


def test_toggle_is_fixed_on_where_bf16_is_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ENV_BF16, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: False)
    at = _page("pages/3_Attribution.py")
    fixed = at.toggle(key="attribution_exact_fixed")
    assert fixed.value is True and fixed.disabled and "not fast" in fixed.help


def test_toggle_where_fast_changes_only_the_slow_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ENV_EXACT, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: True)
    at = _page("pages/3_Attribution.py")
    toggle = at.toggle(key="attribution_exact")
    assert toggle.value is False and not toggle.disabled
    before = dict(attribution_view.COMPUTE_CALLS)
    toggle.set_value(True).run()
    assert not at.exception
    assert dict(attribution_view.COMPUTE_CALLS) == before  # fast maps come from the cache
    params = attribution_view.MethodParams("Occlusion", 285, None, 32, 8, "gray", exact=False)
    assert params.kwargs()["exact"] is False
    assert "exact" not in attribution_view.MethodParams("Grad-CAM", 1, "x", 0, 0, "").kwargs()
