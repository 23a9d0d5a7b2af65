"""AppTest: the Filters, Feature space and Unit pages open a dataset index (issue 17 items 3-4)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.test_index_lite0 import _crops
from vizcore.data import index as vindex
from vizui.inside_view import short_caption

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["blocks.4", "head.act"]


@pytest.fixture(scope="module")
def lite0_index(tmp_path_factory: pytest.TempPathFactory, lite0) -> Path:
    """A Lite0 index of 12 crops of the bundled photos (one corrupt file skipped)."""
    root = tmp_path_factory.mktemp("indexapp")
    _crops(root / "photos", 12)
    vindex.build_index(root / "photos", model=lite0, model_key="efficientnet_lite0",
                       layers=LAYERS, out=root / "index", shard_size=5, top_k=6,
                       num_workers=0)  # fmt: skip
    return root / "index"


@pytest.fixture(autouse=True)
def configured(lite0_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_INDEXES", str(lite0_index))
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    return lite0_index


def _app(page: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _values(column: object) -> np.ndarray:
    """A Plotly JSON column: a list, or a typed array (``{"dtype", "bdata"}``, base64)."""
    if isinstance(column, dict):
        return np.frombuffer(base64.b64decode(column["bdata"]), dtype=column["dtype"])
    return np.asarray(column, dtype=np.float64)


def _flat(at: AppTest) -> dict[str, str]:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


def test_filters_page_reads_top_patches_from_the_index(configured: Path) -> None:
    at = _app("pages/1_Filters_and_activations.py")
    at.selectbox(key="filters_index").set_value(str(configured)).run()
    assert not at.exception and not at.error
    at.selectbox(key="filters_ix_layer").set_value("head.act").run()
    at.number_input(key="filters_ix_channel").set_value(17).run()
    assert not at.exception and not at.error
    markdown = " ".join(m.value for m in at.markdown)
    assert "read from the index (no scan)" in markdown and "**12 indexed images**" in markdown
    assert not any("has not been scanned" in i.value for i in at.info)  # no gallery scan
    idx = vindex.open_index(configured)
    top = idx.top_patches("head.act", 17)
    want = [short_caption(f"{p.value:.3g} · {Path(p.path).name}") for p in top]
    assert [c.value for c in at.caption if " · " in c.value] == want  # the index's top 6
    assert len(at.get("image")) >= 6


def test_feature_space_neighbours_and_map_from_the_index(configured: Path) -> None:
    at = _app("pages/2_Feature_space.py")
    at.selectbox(key="fspace_index").set_value(str(configured)).run()
    assert not at.exception and not at.error
    markdown = " ".join(m.value for m in at.markdown)
    assert "over all 12 images" in markdown
    neighbours = [c.value for c in at.caption if " · " in c.value]
    assert len(neighbours) == 8, neighbours
    assert not at.get("plotly_chart")  # the map waits for its button
    next(b for b in at.button if b.key == "fspace_ix_map").click().run()
    assert not at.exception and not at.error
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = spec["data"][0]
    assert len(points["customdata"]) == 12 and spec["data"][-1]["name"] == "Current image"
    assert any("12 of the 12 images" in c.value for c in at.caption)


def test_feature_space_shows_the_precomputed_map_of_every_point(
    configured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vizcore.data import index_tsne

    mapped = tmp_path / "mapped"
    shutil.copytree(configured, mapped)
    stored = index_tsne.index_tsne(vindex.open_index(mapped), n_iter=50, seed=1)
    monkeypatch.setenv("VIZCORE_INDEXES", str(mapped))
    at = _app("pages/2_Feature_space.py")
    at.selectbox(key="fspace_index").set_value(str(mapped)).run()
    assert not at.exception and not at.error
    markdown = " ".join(m.value for m in at.markdown)
    assert "**All 12 points** (precomputed by `vizcore index tsne`)" in markdown
    assert not [b for b in at.button if b.key == "fspace_ix_map"]  # no sample button
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = spec["data"][0]
    assert [c[0] for c in points["customdata"]] == [str(i) for i in range(12)]
    xy = np.c_[_values(points["x"]), _values(points["y"])]
    np.testing.assert_allclose(xy, stored.coords, rtol=1e-6)
    assert spec["data"][-1]["name"] == "Current image"
    thumbs = [c for c in at.get("bidi_component") if "thumbs" in str(c.proto)]
    assert thumbs and all(f'\\"{i}\\"' in str(thumbs[0].proto) for i in range(12))
    assert any("computed once in" in c.value and "Barnes-Hut" in c.value for c in at.caption)


def test_unit_page_shows_four_views_and_its_url_reopens_it(configured: Path) -> None:
    at = _app("pages/8_Unit.py")
    at.selectbox(key="unit_index").set_value(str(configured)).run()
    assert at.selectbox(key="unit_layer").options == LAYERS
    at.selectbox(key="unit_layer").set_value("head.act").run()
    at.number_input(key="unit_channel").set_value(5).run()
    assert not at.exception and not at.error
    assert _flat(at)["unit"] == "head.act:5"
    markdown = " ".join(m.value for m in at.markdown)
    for view in ("Feature visualization", "Top dataset patches", "Activation on",
                 "Classes it feeds most"):  # fmt: skip
        assert view in markdown, view
    assert "read from the index (no scan)" in markdown
    captions = " ".join(c.value for c in at.caption)
    assert "`head.bn`, the input of the rectifier `head.act`" in captions  # not stuck at 0
    raises, lowers = at.dataframe[0].value, at.dataframe[1].value
    assert len(raises) == len(lowers) == 6 and "feeds the classifier `fc`" in " ".join(
        c.value for c in at.caption
    )
    # A fresh session from the link opens the same unit (the gallery: no index chosen there).
    fresh = _app("pages/8_Unit.py", **_flat(at))
    assert fresh.selectbox(key="unit_layer").value == "head.act"
    assert fresh.number_input(key="unit_channel").value == 5
    assert not fresh.exception and not fresh.error


def test_unit_page_without_an_index_uses_the_gallery_and_the_gradient(configured) -> None:
    at = _app("pages/8_Unit.py", unit="blocks.4:3")
    assert at.selectbox(key="unit_layer").value == "blocks.4"
    assert at.number_input(key="unit_channel").value == 3
    captions = " ".join(c.value for c in at.caption)
    assert "forward-mode autodiff" in captions and "has not been scanned" in captions
    next(b for b in at.button if b.key == "unit_scan").click().run()
    assert not at.exception and not at.error
    assert "From the built-in gallery" in " ".join(c.value for c in at.caption)
    assert len([c for c in at.caption if " · " in c.value]) == 8  # the top 8, four a row
    next(b for b in at.button if b.key == "unit_fv_start").click().run()
    assert not at.exception and not at.error
    assert "mean activation" in str([i.proto for i in at.get("image")])


def test_public_mode_offers_only_the_server_indexes(
    configured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIZCORE_PUBLIC", "1")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.session_state["vz_user_indexes"] = [str(tmp_path / "typed-in")]  # as if typed earlier
    at.run()
    at.switch_page("pages/2_Feature_space.py").run()
    assert not at.exception
    options = at.selectbox(key="fspace_index").options  # the labels
    assert len(options) == 2 and options[1] == "index: 12 images, efficientnet_lite0"
    assert not [t for t in at.text_input if t.key == "fspace_index_path"]


def test_an_index_folder_typed_in_opens(
    configured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VIZCORE_INDEXES")
    at = _app("pages/2_Feature_space.py")
    assert len(at.selectbox(key="fspace_index").options) == 1  # None only
    at.text_input(key="fspace_index_path").set_value(str(tmp_path)).run()
    next(b for b in at.button if b.key == "fspace_index_open").click().run()
    assert any("is not an index" in e.value for e in at.error)
    at.text_input(key="fspace_index_path").set_value(str(configured)).run()
    next(b for b in at.button if b.key == "fspace_index_open").click().run()
    assert not at.exception and not at.error
    assert at.selectbox(key="fspace_index").value == str(configured)
    assert "over all 12 images" in " ".join(m.value for m in at.markdown)


def test_the_chosen_index_travels_in_the_link_by_name_never_as_a_path(configured: Path) -> None:
    at = _app("pages/2_Feature_space.py")
    assert "index" not in _flat(at)
    at.selectbox(key="fspace_index").set_value(str(configured)).run()
    assert _flat(at)["index"] == configured.name  # the folder's name, not its path
    fresh = _app("pages/2_Feature_space.py", **_flat(at))
    assert fresh.selectbox(key="fspace_index").value == str(configured)
    assert "over all 12 images" in " ".join(m.value for m in fresh.markdown)
    by_position = _app("pages/8_Unit.py", index="1")
    assert by_position.selectbox(key="unit_index").value == str(configured)
    for bad in ("elsewhere", str(configured), "/etc", "2"):  # a path, even the same one: no
        stale = _app("pages/2_Feature_space.py", index=bad)
        assert stale.selectbox(key="fspace_index").value == ""
        assert any(f"The link's index “{bad}” does not fit here" in i.value for i in stale.info)
        assert "index" not in _flat(stale)
    at.selectbox(key="fspace_index").set_value("").run()
    assert "index" not in _flat(at)
