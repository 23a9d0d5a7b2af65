"""Public mode (VIZCORE_PUBLIC=1): no model uploads, no dataset downloads, capped steps."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from vizui import model_upload, public

ROOT = Path(__file__).resolve().parent.parent


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(public.PUBLIC_ENV, raising=False)
    assert not public.is_public() and public.max_steps(500) == 500
    assert model_upload.uploads_allowed()
    monkeypatch.setenv(public.PUBLIC_ENV, "1")
    assert public.is_public()
    assert public.max_steps(500) == public.MAX_STEPS and public.capped(300, 500) == 200
    assert public.image_upload_mb(50) == public.IMAGE_UPLOAD_MB
    assert not model_upload.uploads_allowed()  # whatever VIZCORE_ALLOW_MODEL_UPLOAD says
    monkeypatch.setenv(public.PUBLIC_ENV, "off")
    assert not public.is_public()


def test_public_pages_cap_steps_and_offer_no_model_upload(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(public.PUBLIC_ENV, "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    assert not at.exception
    labels = [u.proto.label for u in at.sidebar.get("file_uploader")]
    assert labels == ["Upload an image"], labels  # no weights or class-names uploader
    at.switch_page("pages/4_Feature_visualization.py").run()
    steps = at.slider(key="featvis_cv_efficientnet_lite0_fourier_steps")
    assert steps.max == public.MAX_STEPS and steps.value <= public.MAX_STEPS
