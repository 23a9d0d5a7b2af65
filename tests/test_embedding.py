"""Nearest neighbours, PCA and t-SNE: shapes, correctness against brute force, seed determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data.gallery import Gallery
from vizcore.inside import embedding


def _blobs(n_per: int = 40, dims: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(3, dims))
    points = np.concatenate([c + rng.normal(0, 1, size=(n_per, dims)) for c in centres])
    return points.astype(np.float32), np.repeat(np.arange(3), n_per)


def test_nearest_matches_brute_force_for_both_metrics() -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 7))
    query = rng.normal(size=7)
    l2 = embedding.nearest(query, points, k=5, metric="l2")
    brute = np.argsort(np.linalg.norm(points - query, axis=1))[:5]
    np.testing.assert_array_equal(l2.indices, brute)
    cos = embedding.nearest(query, points, k=5, metric="cosine")
    sims = points @ query / (np.linalg.norm(points, axis=1) * np.linalg.norm(query))
    np.testing.assert_array_equal(cos.indices, np.argsort(-sims)[:5])
    np.testing.assert_allclose(cos.distances, 1 - np.sort(sims)[::-1][:5], rtol=1e-5)
    # Cosine ignores scale, L2 does not.
    scaled = embedding.nearest(query * 10, points, k=5, metric="cosine")
    np.testing.assert_array_equal(scaled.indices, cos.indices)
    excluded = embedding.nearest(points[3], points, k=3, exclude=3)
    assert 3 not in excluded.indices and len(excluded.indices) == 3
    with pytest.raises(ValueError, match="metric must be"):
        embedding.nearest(query, points, metric="manhattan")


def test_pca_axes_and_projection() -> None:
    points, _ = _blobs()
    result = embedding.embed_points(points, method="pca", query=points[0])
    assert result.coords.shape == (120, 2)
    assert result.explained[0] >= result.explained[1] > 0
    np.testing.assert_allclose(result.query, result.coords[0], atol=1e-3)
    wide = np.random.default_rng(0).normal(size=(10, 300))  # N < D path
    assert embedding.pca(wide, 50)[0].shape == (10, 10)


def test_tsne_shapes_determinism_and_clusters() -> None:
    points, labels = _blobs()
    a = embedding.embed_points(points, method="tsne", perplexity=15, n_iter=250, seed=3,
                               query=points[5])  # fmt: skip
    b = embedding.embed_points(points, method="tsne", perplexity=15, n_iter=250, seed=3,
                               query=points[5])  # fmt: skip
    c = embedding.embed_points(points, method="tsne", perplexity=15, n_iter=250, seed=4)
    assert a.coords.shape == (120, 2) and a.query is not None and a.query.shape == (2,)
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.allclose(a.coords, c.coords)
    # Three separated blobs stay separated: 5-NN label agreement in 2-D.
    d = np.linalg.norm(a.coords[:, None] - a.coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    agreement = (labels[np.argsort(d, axis=1)[:, :5]] == labels[:, None]).mean()
    assert agreement > 0.95
    # The placed query lands among its own blob.
    nearest_label = labels[np.argsort(np.linalg.norm(a.coords - a.query, axis=1))[:5]]
    assert (nearest_label == labels[5]).mean() >= 0.8
    assert a.params["gradient"] == "Barnes-Hut"


def test_tsne_small_gallery_lowers_perplexity_and_progress_stops() -> None:
    points, _ = _blobs(n_per=5)
    result = embedding.embed_points(points, method="tsne", perplexity=30, n_iter=100)
    assert result.params["perplexity"] == pytest.approx(14 / 3)
    seen = []

    def stop(info: object) -> bool:
        seen.append(info)
        return False

    stopped = embedding.embed_points(points, method="tsne", n_iter=100, on_step=stop)
    assert stopped.stopped and len(seen) == 1
    with pytest.raises(ValueError, match="perplexity"):
        embedding.embed_points(points, method="tsne", perplexity=500)
    with pytest.raises(ValueError, match="method"):
        embedding.embed_points(points, method="umap")


def test_neighbours_feature_and_pixel_space(tiny_cnn: nn.Module) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    g = Gallery("t", "upload", images, tuple("x" * 10), tuple(str(i) for i in range(10)))
    x = torch.from_numpy(images[4]).permute(2, 0, 1)[None].float() / 255.0
    from vizcore.data.features import gallery_features

    feats = gallery_features(tiny_cnn, g, layer="relu2", model_key="t", input_size=16,
                             use_cache=False).features  # fmt: skip
    state = ModelState.of(tiny_cnn)
    result = embedding.neighbours(tiny_cnn, x, gallery=g, gallery_features=feats, layer="relu2",
                                  k=3)  # fmt: skip
    assert result.feature.indices[0] == 4 and result.pixel.indices[0] == 4  # itself first
    assert result.feature.distances[0] < 1e-4 and result.pixel.distances[0] < 1e-6
    assert result.feature.space == "feature" and result.pixel.space == "pixel"
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state
    fmap = embedding.feature_map(tiny_cnn, x, gallery_features=feats, layer="relu2", method="pca")
    np.testing.assert_allclose(fmap.query, fmap.coords[4], atol=1e-4)


def test_max_perplexity_is_what_tsne_uses_on_small_galleries() -> None:
    from vizcore.inside.embedding import max_perplexity

    assert max_perplexity(10) == 3.0
    assert max_perplexity(151) == 50.0
    assert max_perplexity(2) == 1.0
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="n_points must be a positive integer"):
            max_perplexity(bad)  # type: ignore[arg-type]


def _median_nn_distance(coords: np.ndarray) -> float:
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    np.fill_diagonal(d, np.inf)
    return float(np.median(d.min(axis=1)))


def test_tsne_star_lands_on_its_own_gallery_point() -> None:
    # openTSNE's transform re-centres the map before placing: the gallery coordinates must be
    # in the same frame as the placed query (they were not: off by the bounding-box centre).
    points, _ = _blobs()
    result = embedding.embed_points(points, method="tsne", perplexity=15, n_iter=250, seed=3,
                                    query=points[5], n_jobs=1)  # fmt: skip
    assert np.linalg.norm(result.query - result.coords[5]) < _median_nn_distance(result.coords)


def test_fit_map_is_fitted_once_and_placing_queries_never_changes_it() -> None:
    points, labels = _blobs()
    fitted = embedding.fit_map(points, method="tsne", perplexity=15, n_iter=250, seed=3, n_jobs=1)
    assert fitted.coords.shape == (120, 2) and not fitted.coords.flags.writeable
    assert fitted.dims == 20 and fitted.nbytes > fitted.coords.nbytes
    coords = fitted.coords.copy()
    positions = fitted._tsne.positions.copy()
    affinities = fitted._tsne.affinities.P.toarray()
    a = embedding.place_query(fitted, points[5])
    b = embedding.place_query(fitted, points[100])
    again = embedding.place_query(fitted, points[5])
    np.testing.assert_array_equal(a, again)  # deterministic, and nothing moved in between
    np.testing.assert_array_equal(fitted.coords, coords)
    np.testing.assert_array_equal(fitted._tsne.positions, positions)
    np.testing.assert_array_equal(fitted._tsne.affinities.P.toarray(), affinities)
    scale = _median_nn_distance(coords)
    assert np.linalg.norm(a - coords[5]) < scale and np.linalg.norm(b - coords[100]) < scale
    assert labels[np.argsort(np.linalg.norm(coords - b, axis=1))[:5]].tolist() == [2] * 5
    # embed_points is fit + place: the same gallery coordinates and the same star.
    whole = embedding.embed_points(points, method="tsne", perplexity=15, n_iter=250, seed=3,
                                   query=points[5], n_jobs=1)  # fmt: skip
    np.testing.assert_array_equal(whole.coords, coords)
    np.testing.assert_array_equal(whole.query, a)
    shown = fitted.with_query(a)
    assert shown.coords is fitted.coords and shown.params == fitted.params
    assert "transform" in shown.placement


def test_place_query_is_safe_from_several_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    points, _ = _blobs(n_per=20)
    fitted = embedding.fit_map(points, method="tsne", perplexity=10, n_iter=100, seed=0, n_jobs=1)
    serial = [embedding.place_query(fitted, points[i]) for i in range(0, 60, 10)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        parallel = list(pool.map(lambda i: embedding.place_query(fitted, points[i]),
                                 range(0, 60, 10)))  # fmt: skip
    for s, p in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(s, p)


def test_pca_map_place_query_and_errors() -> None:
    points, _ = _blobs()
    fitted = embedding.fit_map(points, method="pca")
    np.testing.assert_allclose(embedding.place_query(fitted, points[7]), fitted.coords[7],
                               atol=1e-3)  # fmt: skip
    assert not fitted.coords.flags.writeable
    assert "principal axes" in fitted.with_query(None).placement
    with pytest.raises(ValueError, match="20-dim"):
        embedding.place_query(fitted, points[0, :5])
    stopped = embedding.fit_map(points, method="tsne", n_iter=100, n_jobs=1,
                                on_step=lambda info: False)  # fmt: skip
    assert stopped.stopped
    with pytest.raises(ValueError, match="stopped"):
        embedding.place_query(stopped, points[0])
    with pytest.raises(ValueError, match="method"):
        embedding.fit_map(points, method="umap")


def test_neighbours_with_precomputed_gallery_pixels(tiny_cnn: nn.Module) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 16, 16, 3), dtype=np.uint8)
    g = Gallery("t", "upload", images, tuple("x" * 10), tuple(str(i) for i in range(10)))
    x = torch.from_numpy(images[4]).permute(2, 0, 1)[None].float() / 255.0
    from vizcore.data.features import gallery_features

    feats = gallery_features(tiny_cnn, g, layer="relu2", model_key="t", input_size=16,
                             use_cache=False).features  # fmt: skip
    plain = embedding.neighbours(tiny_cnn, x, gallery=g, gallery_features=feats, layer="relu2")
    kept = embedding.neighbours(tiny_cnn, x, gallery=g, gallery_features=feats, layer="relu2",
                                gallery_pixels=embedding.pixel_vectors(images))  # fmt: skip
    np.testing.assert_array_equal(plain.pixel.indices, kept.pixel.indices)
    np.testing.assert_array_equal(plain.pixel.distances, kept.pixel.distances)
    with pytest.raises(ValueError, match="gallery_pixels must have shape"):
        embedding.neighbours(tiny_cnn, x, gallery=g, gallery_features=feats, layer="relu2",
                             gallery_pixels=np.zeros((3, 5), dtype=np.float32))  # fmt: skip
