"""AppTest for the Filters & activations and Feature space pages (empty cache, small gallery)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def small_cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    return tmp_path / "cache"


def _app(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_filters_page(small_cold_cache: Path) -> None:
    at = _app("pages/1_Filters_and_activations.py")
    markdown = " ".join(m.value for m in at.markdown)
    assert "stem.conv" in markdown and "32 filters × 3 channels × 3×3" in markdown
    assert "channels of" in markdown  # activation maps of the default layer
    assert not at.error
    # Display-only changes re-render without errors.
    at.radio(key="filters_maps_sort").set_value("max").run()
    at.slider(key="filters_maps_threshold").set_value(50).run()
    at.selectbox(key="filters_kernel_layer").set_value("blocks.1.depthwise.conv").run()
    assert not at.exception
    assert any("depthwise" in i.value for i in at.info)
    # Maximally activating patches: scan the (cold-cache) gallery, then patches appear.
    assert any("has not been scanned" in i.value for i in at.info)
    _button(at, "filters_patch_scan").click().run()
    assert not at.exception and not at.error
    markdown = " ".join(m.value for m in at.markdown)
    assert "receptive field" in markdown
    captions = [c.value for c in at.caption if " · " in c.value]
    assert len(captions) == 12
    assert (small_cold_cache / "features").is_dir()


def _zip_with_classes() -> bytes:
    buffer = io.BytesIO()
    colours = {"reds": [(220, 20, 20), (200, 40, 30), (250, 0, 10)],
               "blues": [(20, 20, 220), (30, 40, 200), (0, 10, 250)]}  # fmt: skip
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, values in colours.items():
            for i, colour in enumerate(values):
                img = io.BytesIO()
                Image.new("RGB", (40, 30), colour).save(img, format="PNG")
                archive.writestr(f"set/{label}/{i}.png", img.getvalue())
        archive.writestr("set/readme.txt", "not an image")
    return buffer.getvalue()


def _figure(at: AppTest) -> dict:
    chart = at.get("plotly_chart")[0]
    return json.loads(chart.proto.spec)


def test_feature_space_page_and_zip_gallery(small_cold_cache: Path) -> None:
    at = _app("pages/2_Feature_space.py")
    assert not at.get("plotly_chart")  # cold cache: nothing until the user extracts
    _button(at, "fspace_extract").click().run()
    assert not at.exception and not at.error
    markdown = " ".join(m.value for m in at.markdown)
    assert "Feature space" in markdown and "Pixel space" in markdown
    names = {trace.get("name") for trace in _figure(at)["data"]}
    assert "Chelsea the cat" in names and "Current image" in names
    # PCA is a display switch away.
    at.radio(key="fspace_method").set_value("pca").run()
    assert not at.exception
    assert any("PCA: the two axes explain" in c.value for c in at.caption)

    # Upload a zip of labelled folders -> a new gallery coloured by those labels.
    at.file_uploader(key="fspace_upload").set_value(
        ("set.zip", _zip_with_classes(), "application/zip")
    ).run()
    _button(at, "fspace_build").click().run()
    assert not at.exception and not at.error
    assert any("labels: reds, blues" in s.value for s in at.success)
    _button(at, "fspace_extract").click().run()
    assert not at.exception and not at.error
    names = {trace.get("name") for trace in _figure(at)["data"]}
    assert {"reds", "blues"} <= names and "Chelsea the cat" not in names


def test_feature_space_bad_zip_shows_error(small_cold_cache: Path) -> None:
    at = _app("pages/2_Feature_space.py")
    at.file_uploader(key="fspace_upload").set_value(
        ("bad.zip", b"PK\x03\x04 definitely not a zip", "application/zip")
    ).run()
    _button(at, "fspace_build").click().run()
    assert not at.exception
    assert any("not a valid zip" in e.value for e in at.error)
    assert not (small_cold_cache / "galleries").exists() or not any(
        p.name.startswith("upload") for p in (small_cold_cache / "galleries").iterdir()
    )


def test_feature_space_clears_the_extract_box_and_clamps_perplexity(
    small_cold_cache: Path,
) -> None:
    from vizcore.inside.embedding import max_perplexity

    at = _app("pages/2_Feature_space.py")
    notice = next(i.value for i in at.info if "not cached yet" in i.value)
    size = int(re.search(r"Features of the (\d+) gallery images", notice).group(1))
    _button(at, "fspace_extract").click().run()
    assert not at.exception and not at.error
    # Same run as the extraction: the notice and its buttons are gone, the results are there.
    assert not any("not cached yet" in i.value for i in at.info), [i.value for i in at.info]
    assert not [b for b in at.button if b.key in ("fspace_extract", "fspace_stop")]
    assert at.get("plotly_chart")

    sliders = [s for s in at.slider if s.key and s.key.startswith("fspace_perplexity")]
    assert len(sliders) == 1
    slider = sliders[0]
    used = next(c.value for c in at.caption if "t-SNE (openTSNE" in c.value)
    # The slider shows the perplexity really used, and offers nothing t-SNE cannot use.
    assert f"perplexity {slider.value:.0f}," in used, (slider.value, used)
    assert slider.max <= max_perplexity(size) < slider.max + 1, (slider.max, size)


def _gallery_points(at: AppTest) -> dict[str, list]:
    return {trace["name"]: [trace["x"], trace["y"]] for trace in _figure(at)["data"]
            if trace.get("name") not in ("Current image", "Selected")}  # fmt: skip


def _star(at: AppTest) -> list:
    star = next(t for t in _figure(at)["data"] if t.get("name") == "Current image")
    return [star["x"], star["y"]]


def test_feature_space_new_image_moves_only_the_star(
    small_cold_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vizcore.inside import embedding
    from vizui import inside_view

    inside_view.gallery_map.clear()
    inside_view.query_point.clear()
    inside_view.pixel_vectors.clear()
    calls = {"fit": 0, "place": 0}
    pixels = []
    fit, place, pixel_vectors = embedding.fit_map, embedding.place_query, embedding.pixel_vectors

    def counting_fit(*args, **kwargs):
        calls["fit"] += 1
        return fit(*args, **kwargs)

    def counting_place(*args, **kwargs):
        calls["place"] += 1
        return place(*args, **kwargs)

    monkeypatch.setattr(embedding, "fit_map", counting_fit)
    monkeypatch.setattr(embedding, "place_query", counting_place)
    monkeypatch.setattr(embedding, "pixel_vectors", lambda *a, **k: pixels.append(1)
                        or pixel_vectors(*a, **k))  # fmt: skip
    at = _app("pages/2_Feature_space.py")
    _button(at, "fspace_extract").click().run()
    assert not at.exception and not at.error
    assert calls == {"fit": 1, "place": 1}
    points, star = _gallery_points(at), _star(at)
    assert "Chelsea the cat" in points

    at.sidebar.selectbox(key="frame_image").set_value("coffee").run()
    assert not at.exception and not at.error
    assert calls == {"fit": 1, "place": 2}  # the gallery map is not refitted
    assert _gallery_points(at) == points  # identical gallery coordinates
    assert _star(at) != star
    assert any("fitted in" in c.value and "once per gallery" in c.value for c in at.caption)

    # Display-only widgets (neighbour count, distance) neither refit nor re-place.
    at.slider(key="fspace_k").set_value(3).run()
    at.radio(key="fspace_metric").set_value("cosine").run()
    assert not at.exception and calls == {"fit": 1, "place": 2}
    assert len(pixels) == 1  # the gallery's pixel vectors, once per gallery
    # Back to the first image: both the map and its star come from the caches.
    at.sidebar.selectbox(key="frame_image").set_value("chelsea").run()
    assert calls == {"fit": 1, "place": 2} and _star(at) == star
    # PCA and back: one PCA fit, and the t-SNE map is still cached.
    at.radio(key="fspace_method").set_value("pca").run()
    at.radio(key="fspace_method").set_value("tsne").run()
    assert not at.exception and calls["fit"] == 2 and _gallery_points(at) == points
