"""Reports: self-contained HTML (images inline, nothing external) and a zip of PNGs + params."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest
from PIL import Image

from vizcore.core.report import Figure, Report, Table, to_html, to_zip


def _report() -> Report:
    rng = np.random.default_rng(0)
    return Report(
        page="Attribution",
        model="EfficientNet-Lite0",
        image="Chelsea <the cat>",
        params={"layer": "head.act", "window": 32},
        scores={"Grad-CAM deletion AUC": 0.123},
        figures=(
            Figure("Grad-CAM", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), "12 ms"),
            Figure("Grad-CAM", rng.integers(0, 255, (20, 20), dtype=np.uint8)),
        ),
        tables=(Table("Top-5", ("class", "p"), (("tiger cat", 0.39), ("tabby", 0.2))),),
        link="http://localhost:8501/Attribution?model=efficientnet_lite0",
    )


def test_html_embeds_every_figure_and_escapes_text() -> None:
    page = to_html(_report())
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "Chelsea &lt;the cat&gt;" in page and "<the cat>" not in page
    assert "head.act" in page and "0.123" in page and "tiger cat" in page
    # The only URL is the reopen link (an anchor, never loaded).
    assert re.findall(r"https?://", page) == ["http://", "http://"]  # href and its text
    assert "<link" not in page and "<script" not in page


def test_zip_holds_full_resolution_pngs_params_and_the_html() -> None:
    archive = zipfile.ZipFile(io.BytesIO(to_zip(_report())))
    names = archive.namelist()
    assert names == ["01_grad_cam.png", "02_grad_cam.png", "params.json", "report.html"]
    first = Image.open(io.BytesIO(archive.read("01_grad_cam.png")))
    assert first.size == (60, 40)
    meta = json.loads(archive.read("params.json"))
    assert meta["params"] == {"layer": "head.act", "window": 32}
    first_meta = {"file": "01_grad_cam.png", "title": "Grad-CAM", "caption": "12 ms"}
    assert meta["figures"][0] == first_meta
    assert meta["tables"][0]["rows"][0] == ["tiger cat", 0.39]


def test_float_figures_are_refused() -> None:
    bad = Report("p", "m", "i", figures=(Figure("x", np.zeros((4, 4, 3), np.float32)),))
    with pytest.raises(ValueError, match="uint8"):
        to_html(bad)
