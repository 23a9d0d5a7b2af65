"""Multifaceted class visualization: clustering, inits, centre bias, state, page section."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from vizcore.core.hooks import ModelState, count_hooks
from vizcore.core.progress import StepInfo
from vizcore.data.gallery import Gallery
from vizcore.optvis import multifaceted as mf
from vizcore.optvis.synthesis import (
    SynthesisSettings,
)

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("a", "b", "c", "d")
TARGET = 1
SETTINGS = SynthesisSettings(
    parameterization="fourier", size=32, steps=25, lr=0.3, jitter=1, scale=(1.0, 1.0),
    rotate=0.0, pad=0,
)  # fmt: skip


@pytest.fixture
def net(tiny_cnn: nn.Module) -> nn.Module:
    """The tiny CNN with a 10x classifier, so that its logits move visibly in a few steps."""
    with torch.no_grad():
        tiny_cnn.fc.weight.mul_(10.0)
    return tiny_cnn


@pytest.fixture
def class_gallery() -> tuple[np.ndarray, np.ndarray]:
    """Nine 24-px images in three groups; in each group the middle member sits at the centre.

    Features of group ``j`` are ``c_j + t·d_j`` for ``t`` in (−1, 0, 1), with ``d_j ⟂ c_j`` of
    equal norm for ±1, so after L2 normalization the ``t = 0`` member is nearest the group mean.
    """
    rng = np.random.default_rng(3)
    images = np.empty((9, 24, 24, 3), dtype=np.uint8)
    feats = np.zeros((9, 12), dtype=np.float32)
    colours = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]
    for j in range(3):
        for t in range(3):
            i = 3 * j + t
            images[i] = np.clip(np.array(colours[j]) + rng.integers(-30, 30, (24, 24, 3)), 0, 255)
            feats[i, 4 * j] = 10.0
            feats[i, 4 * j + 1] = (t - 1) * 1.5
    return images, feats


def _run(model: nn.Module, images: np.ndarray, feats: np.ndarray, **kwargs):
    options = {"facets": 3, "settings": SETTINGS, "categories": NAMES, "seed": 0,
               "compare_plain": False, "init": "nearest"} | kwargs  # fmt: skip
    return mf.multifaceted_class_visualization(
        model, target=TARGET, gallery_images=images, gallery_features=feats, **options
    )


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    x = mf._resize_images(images, size)  # the same resize the technique uses
    return x.permute(0, 2, 3, 1).numpy()


def test_facets_clusters_inits_and_improvement(net, class_gallery) -> None:
    images, feats = class_gallery
    state = ModelState.of(net)
    # Without the centre bias the objective is the class score itself (the bias trades some
    # score for position; the Lite0 test below checks the score still rises with it).
    result = _run(net, images, feats, compare_plain=True, center_bias=0.0)
    assert result.from_gallery and not result.stopped
    assert result.images.shape == (3, 32, 32, 3) and result.init_images.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(result.cluster_sizes, [3, 3, 3])
    # The three groups are the three clusters, and each init is the group's middle member.
    for j in range(3):
        assert len(set(result.labels[3 * j : 3 * j + 3])) == 1
    assert sorted(result.init_indices.tolist()) == [1, 4, 7]
    for j, index in enumerate(result.init_indices):
        assert result.labels[index] == j
    # The init images are those gallery images (through the exact Fourier inverse).
    expected = np.clip(_resized(images[result.init_indices], 32), 0.02, 0.98)
    np.testing.assert_allclose(result.init_images, expected, atol=1e-4)
    # Every facet's optimization raises the class score.
    assert np.all(result.scores > result.initial_scores + 1e-3), (
        result.initial_scores,
        result.scores,
    )
    assert result.plain is not None and result.plain.images.shape == (1, 32, 32, 3)
    assert result.steps_done == 2 * SETTINGS.steps
    assert count_hooks(net) == 0
    assert ModelState.of(net) == state


def test_fewer_images_than_facets(net, class_gallery) -> None:
    images, feats = class_gallery
    result = _run(net, images[:2], feats[:2], facets=4)
    assert len(result.images) == 2
    np.testing.assert_array_equal(result.cluster_sizes, [1, 1])
    assert "fewer images than the 4 facets" in result.note


def test_mean_init_averages_the_nearest_images(net, class_gallery) -> None:
    images, feats = class_gallery
    result = _run(net, images, feats, init="mean", mean_of=3, steps=1)
    for j in range(3):
        members = np.flatnonzero(result.labels == j)
        expected = np.clip(_resized(images[members], 32).mean(0), 0.02, 0.98)
        np.testing.assert_allclose(result.init_images[j], expected, atol=1e-4)


def test_deterministic_under_seed(net, class_gallery) -> None:
    images, feats = class_gallery
    a = _run(net, images, feats, steps=8)
    b = _run(net, images, feats, steps=8)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = _run(net, images, feats, steps=8, seed=1)
    assert not np.array_equal(a.images, c.images)


def test_no_gallery_images_of_the_class(net) -> None:
    empty = np.zeros((0, 24, 24, 3), np.uint8)
    result = _run(net, empty, np.zeros((0, 12), np.float32), compare_plain=True)
    assert not result.from_gallery
    assert len(result.images) == 1 and result.cluster_sizes.tolist() == [0]
    assert result.init_indices.tolist() == [-1] and result.labels.shape == (0,)
    assert "No gallery image" in result.note and "centre bias only" in result.note
    assert result.plain is not None


def test_centre_bias_concentrates_class_evidence_in_the_centre(net) -> None:
    """Property: for every seed, the centre share of class evidence grows with the bias."""
    empty = np.zeros((0, 24, 24, 3), np.uint8)
    cmap = mf.find_class_map(net)
    settings = dataclasses.replace(SETTINGS, steps=30)
    for seed in range(2):
        no_feats = np.zeros((0, 12), np.float32)
        runs = {
            beta: _run(net, empty, no_feats, center_bias=beta, seed=seed, settings=settings)
            for beta in (0.0, 5.0)
        }
        without, with_bias = (runs[b].centre_fractions[0] for b in (0.0, 5.0))
        measured = mf.centre_fraction(net, runs[5.0].images, cmap, TARGET)[0]
        assert measured == pytest.approx(with_bias)
        assert with_bias > without + 0.05, (seed, without, with_bias)


def test_class_map_matches_the_logits(tiny_cnn, tiny_input) -> None:
    cmap = mf.find_class_map(tiny_cnn)
    assert (cmap.layer, cmap.kind) == ("relu2", "linear")
    acts = {}
    handle = tiny_cnn.relu2.register_forward_hook(lambda _m, _i, o: acts.update(a=o.clone()))
    try:
        with torch.no_grad():
            logits = tiny_cnn(tiny_input)
    finally:
        handle.remove()
    evidence = cmap.evidence(acts["a"], 2)
    assert float(evidence.mean()) == pytest.approx(float(logits[0, 2]), abs=1e-5)


def test_model_without_gap_head_is_refused_with_a_fix() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 32, 32))
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="Set the centre bias to 0"):
        _run(model, empty, np.zeros((0, 2), np.float32))


def test_centre_weights() -> None:
    g = mf.centre_weights(5, 5, 0.35)
    assert g.shape == (5, 5) and float(g[2, 2]) == pytest.approx(1.0)
    assert float(g[0, 0]) < 0.01 and torch.allclose(g, g.flip(0)) and torch.allclose(g, g.T)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"facets": 0}, "facets"),
        ({"facets": 9}, "facets"),
        ({"center_bias": -1.0}, "center_bias"),
        ({"center_bias": float("nan")}, "center_bias"),
        ({"center_sigma": 0.0}, "center_sigma"),
        ({"init": "median"}, "init"),
        ({"mean_of": 0}, "mean_of"),
        ({"steps": 0}, "steps"),
    ],
)
def test_bad_parameters(net, class_gallery, kwargs, match) -> None:
    images, feats = class_gallery
    with pytest.raises(ValueError, match=match):
        _run(net, images, feats, **kwargs)


def test_bad_inputs(net, class_gallery) -> None:
    images, feats = class_gallery
    with pytest.raises(ValueError, match="one row per image"):
        _run(net, images, feats[:5])
    with pytest.raises(ValueError, match=r"\(M, H, W, 3\)"):
        _run(net, images[..., :2], feats)
    with pytest.raises(ValueError, match="outside"):
        mf.multifaceted_class_visualization(
            net, target=7, gallery_images=images, gallery_features=feats,
            settings=SETTINGS, categories=NAMES,
        )  # fmt: skip


def test_stop_and_failure_leave_the_model_unchanged(net, class_gallery) -> None:
    images, feats = class_gallery
    state = ModelState.of(net)

    def stop_at_3(info: StepInfo) -> bool:
        return info.step < 3

    result = _run(net, images, feats, compare_plain=True, on_step=stop_at_3)
    assert result.stopped and result.plain is None and result.steps_done == 3
    assert count_hooks(net) == 0 and ModelState.of(net) == state

    def fail(_info: StepInfo) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _run(net, images, feats, on_step=fail)
    assert count_hooks(net) == 0 and ModelState.of(net) == state


def test_cluster_features_orders_by_size_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    feats = rng.normal(0, 0.05, (8, 4))
    feats[:6, 0] += 5
    feats[6:, 1] += 5
    labels, centres = mf.cluster_features(feats, 2, seed=4)
    assert labels.tolist() == [0] * 6 + [1] * 2 and centres.shape[0] == 2
    again, _ = mf.cluster_features(feats, 2, seed=4)
    np.testing.assert_array_equal(labels, again)
    with pytest.raises(ValueError, match="Cannot make 3 clusters of 2"):
        mf.cluster_features(feats[:2], 3)


def test_fourier_init_round_trip() -> None:
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    _, image_fn = mf.fourier_image_from(x)
    np.testing.assert_allclose(image_fn().detach(), x.clamp(0.02, 0.98), atol=1e-5)


def test_predictions_and_members(tiny_cnn, class_gallery) -> None:
    images = class_gallery[0]
    g = Gallery("t", "upload", images, tuple("abc"[i // 3] for i in range(9)),
                tuple(str(i) for i in range(9)))  # fmt: skip
    state = ModelState.of(tiny_cnn)
    full = mf.gallery_predictions(tiny_cnn, g, input_size=16, top_k=3)
    assert full.indices.shape == (9, 3) and np.all(np.diff(full.probabilities, axis=1) <= 0)
    # Pooled relu2 features feed the linear head: the same predictions without a second pass.
    from vizcore.data.features import gallery_features

    pooled = gallery_features(tiny_cnn, g, layer="relu2", model_key="tiny", input_size=16,
                              use_cache=False).features  # fmt: skip
    fast = mf.gallery_predictions(tiny_cnn, g, input_size=16, top_k=3, features=pooled)
    np.testing.assert_array_equal(fast.indices, full.indices)
    np.testing.assert_allclose(fast.probabilities, full.probabilities, atol=1e-5)
    top1 = mf.class_members(full, int(full.indices[0, 0]), top_k=1)
    assert 0 in top1
    assert set(top1) <= set(mf.class_members(full, int(full.indices[0, 0]), top_k=3))
    with pytest.raises(ValueError, match="top_k"):
        mf.class_members(full, 0, top_k=4)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state


def test_real_models_have_class_maps(lite0, squeezenet) -> None:
    lite = mf.find_class_map(lite0)
    assert (lite.layer, lite.kind) == ("head.act", "linear")
    squeeze = mf.find_class_map(squeezenet)
    assert squeeze.kind == "channel"
    assert count_hooks(lite0) == 0 and count_hooks(squeezenet) == 0


# ----------------------------------------------------------------------------------- AppTest


@pytest.fixture
def small_cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    return tmp_path / "cache"


def test_section_renders_and_a_tiny_run_completes(small_cold_cache: Path) -> None:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240).run()
    at.switch_page("pages/4_Feature_visualization.py").run()
    assert not at.exception, [e.value for e in at.exception]
    k = "featvis_mf_efficientnet_lite0_fourier"
    at.slider(key=f"{k}_steps").set_value(2)
    at.select_slider(key=f"{k}_size").set_value(64)
    at.slider(key="featvis_mf_facets").set_value(2)
    at.radio(key="featvis_mf_topk").set_value(5)
    at.button(key="featvis_mf_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    captions = [c for image in at.image for c in image.captions]
    assert any(c.startswith("facet 1 · logit") for c in captions), captions
    assert any(c.startswith("plain · p=") for c in captions), captions
    assert any(c.startswith("start: chelsea") for c in captions), captions
    assert any("gallery image(s) of this class" in i.value for i in at.info)


def test_lite0_facets_from_chelsea_crops_raise_the_class_score(lite0) -> None:
    """End to end on the real model (few steps, small images): scores rise with the bias on."""
    from vizcore.data import images as vimages
    from vizcore.data.features import gallery_features
    from vizcore.models.registry import get_spec
    from vizcore.optvis.synthesis import synthesis_preset

    photo = vimages.load_sample("chelsea")
    side = min(photo.size)
    boxes = [(0, 0, side, side), (photo.width - side, 0, photo.width, side),
             (60, 40, 60 + side // 2, 40 + side // 2)]  # fmt: skip
    crops = np.stack([np.asarray(photo.crop(b).resize((96, 96))) for b in boxes])
    g = Gallery("c", "upload", crops, ("cat",) * 3, ("a", "b", "c"))
    feats = gallery_features(lite0, g, layer="pool", model_key="efficientnet_lite0",
                             input_size=96, use_cache=False).features  # fmt: skip
    state = ModelState.of(lite0)
    settings = dataclasses.replace(
        synthesis_preset(get_spec("efficientnet_lite0"), "fourier"), size=64
    )
    result = mf.multifaceted_class_visualization(
        lite0, target=282, gallery_images=crops, gallery_features=feats, facets=2,
        center_bias=1.0, settings=settings, steps=4, compare_plain=False,
    )  # fmt: skip
    assert len(result.images) == 2 and result.cluster_sizes.sum() == 3
    assert np.all(result.scores > result.initial_scores), (result.initial_scores, result.scores)
    assert np.all(np.isfinite(result.centre_fractions))
    assert count_hooks(lite0) == 0 and ModelState.of(lite0) == state


def test_fourier_init_round_trip_on_an_fft_unfriendly_size() -> None:
    """23 x 37 px (primes) live on a 24 x 40 spectrum grid; the crop still returns the init."""
    x = torch.rand(1, 3, 23, 37, generator=torch.Generator().manual_seed(1))
    params, image_fn = mf.fourier_image_from(x)
    assert params[0].shape == (1, 3, 24, 40 // 2 + 1, 2)
    np.testing.assert_allclose(image_fn().detach(), x.clamp(0.02, 0.98), atol=1e-5)
