"""The feature space: nearest neighbours and 2-D maps (PCA, t-SNE) of a gallery's features.

* Nearest neighbours in last-layer feature space versus raw pixel space (Krizhevsky et al. 2012,
  Fig. 4; CS231n "Visualizing and Understanding"): pixel neighbours match colour and layout,
  feature neighbours match content.
* PCA and t-SNE (van der Maaten & Hinton, "Visualizing Data using t-SNE", JMLR 2008) of the
  gallery's features, with the current image placed into the same map.

t-SNE is openTSNE's (Poličar et al. 2024) with the Barnes-Hut gradient, after PCA to 50
dimensions: on 2 CPU cores this beats openTSNE's FFT mode 3-4x below 10k points with the same
trustworthiness (``bench/features.py``). The current image is placed with openTSNE's
``TSNEEmbedding.transform`` (the gallery map stays fixed; the new point is optimized against it),
not by re-embedding, so the map does not move when the current image changes.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.cache import layer_activations
from vizcore.core.progress import OnStep, StepInfo, report
from vizcore.data.gallery import Gallery

__all__ = [
    "MAP_METHODS",
    "METRICS",
    "FeatureMap",
    "GalleryMap",
    "NeighbourComparison",
    "Neighbours",
    "embed_points",
    "feature_map",
    "fit_map",
    "max_perplexity",
    "nearest",
    "neighbours",
    "pca",
    "pixel_vectors",
    "place_query",
    "query_features",
]

METRICS = ("l2", "cosine")
MAP_METHODS = ("pca", "tsne")
PIXEL_SIDE = 32
PCA_DIMS = 50


@dataclass(frozen=True)
class Neighbours:
    """The ``k`` nearest gallery items of a query.

    Attributes:
        indices: ``(k,)`` gallery indices, nearest first.
        distances: ``(k,)`` L2 distances, or cosine distances ``1 - cos``.
        metric: ``"l2"`` or ``"cosine"``.
        space: ``"feature"`` or ``"pixel"``.
    """

    indices: np.ndarray
    distances: np.ndarray
    metric: str
    space: str


@dataclass(frozen=True)
class NeighbourComparison:
    """Neighbours of one image in feature space and in pixel space, side by side."""

    feature: Neighbours
    pixel: Neighbours
    layer: str


@dataclass(frozen=True)
class FeatureMap:
    """A 2-D map of a gallery's features, with the current image placed in it.

    Attributes:
        coords: ``(N, 2)`` float32 positions of the gallery images.
        query: ``(2,)`` position of the current image, or ``None``.
        method: ``"pca"`` or ``"tsne"``.
        explained: Fraction of variance explained by each of the two PCA axes (PCA only).
        params: The settings actually used (perplexity may be lowered for small galleries).
        placement: How the current image was placed.
        seconds: Wall time (fitting the map plus placing the current image).
        stopped: ``on_step`` stopped the optimization early.
        placement_seconds: The part of ``seconds`` spent placing the current image.
    """

    coords: np.ndarray
    query: np.ndarray | None
    method: str
    explained: tuple[float, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    placement: str = ""
    seconds: float = 0.0
    stopped: bool = False
    placement_seconds: float = 0.0


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}.")


def nearest(
    query: np.ndarray,
    points: np.ndarray,
    *,
    k: int = 8,
    metric: str = "l2",
    exclude: int | None = None,
    space: str = "feature",
) -> Neighbours:
    """Exact ``k`` nearest neighbours of ``query`` ``(D,)`` among ``points`` ``(N, D)``.

    Formula: L2 ``||q - p||``; cosine ``1 - q.p / (|q| |p|)``. Ties break by index.

    Args:
        exclude: A gallery index to leave out (the query itself when it is a gallery image).
    """
    _check_metric(metric)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != q.shape[0]:
        raise ValueError(f"query has {q.shape[0]} dims but points have shape {p.shape}.")
    if k < 1:
        raise ValueError("k must be at least 1.")
    if metric == "l2":
        dist = np.sqrt(np.maximum(((p - q) ** 2).sum(axis=1), 0.0))
    else:
        qn = q / max(np.linalg.norm(q), 1e-12)
        pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
        dist = 1.0 - pn @ qn
    if exclude is not None:
        dist = dist.copy()
        dist[exclude] = np.inf
    available = len(dist) - (1 if exclude is not None else 0)
    order = np.lexsort((np.arange(len(dist)), dist))[: min(k, available)]
    return Neighbours(order.astype(np.int64), dist[order].astype(np.float32), metric, space)


def pixel_vectors(images_uint8: np.ndarray, side: int = PIXEL_SIDE) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 images as ``(N, 3 side²)`` float32 vectors in [0, 1] (area resize)."""
    x = torch.from_numpy(np.array(images_uint8)).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(side, side), mode="area")
    return x.flatten(1).numpy()


def query_features(
    model: nn.Module, x: torch.Tensor, *, layer: str, cache_key: Hashable | None = None
) -> np.ndarray:
    """Features of the current image at ``layer``, pooled exactly like the gallery's: ``(D,)``."""
    act = layer_activations(model, x, layers=[layer], cache_key=cache_key)[layer]
    a = np.asarray(act[0], dtype=np.float32)
    return a.mean(axis=(1, 2)) if a.ndim == 3 else a.reshape(-1)


def neighbours(
    model: nn.Module,
    x: torch.Tensor,
    *,
    gallery: Gallery,
    gallery_features: np.ndarray,
    layer: str,
    k: int = 8,
    metric: str = "l2",
    cache_key: Hashable | None = None,
    gallery_pixels: np.ndarray | None = None,
) -> NeighbourComparison:
    """Nearest gallery images to ``x`` in ``layer``'s feature space and in raw pixel space.

    Pixel space: both images downsampled to 32x32 RGB in [0, 1] (area average) and compared with
    the same metric. Feature space: global-average-pooled ``layer`` features (the gallery's must
    come from the same layer, see :func:`vizcore.data.features.gallery_features`).

    Args:
        gallery_pixels: The gallery's :func:`pixel_vectors`, when the caller keeps them (they
            depend on the gallery only; computing them takes about a second per 300 images).
    """
    if len(gallery_features) != len(gallery):
        raise ValueError("gallery_features must have one row per gallery image.")
    if gallery_pixels is None:
        gallery_pixels = pixel_vectors(gallery.images)
    elif gallery_pixels.shape != (len(gallery), 3 * PIXEL_SIDE * PIXEL_SIDE):
        raise ValueError(
            f"gallery_pixels must have shape ({len(gallery)}, {3 * PIXEL_SIDE * PIXEL_SIDE}) "
            f"(pixel_vectors of the gallery), not {gallery_pixels.shape}."
        )
    q = query_features(model, x, layer=layer, cache_key=cache_key)
    feature = nearest(q, gallery_features, k=k, metric=metric, space="feature")
    q_pix = F.interpolate(x.detach().float().cpu(), size=(PIXEL_SIDE, PIXEL_SIDE), mode="area")
    pixel = nearest(q_pix.flatten().numpy(), gallery_pixels, k=k, metric=metric, space="pixel")
    return NeighbourComparison(feature, pixel, layer)


def pca(
    features: np.ndarray, n_components: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA by SVD of the centred data; component signs fixed (largest loading positive).

    Returns:
        ``(projected (N, n), components (n, D), mean (D,), explained_variance_ratio (n,))``.
    """
    del seed  # exact SVD: deterministic without a seed
    data = np.asarray(features, dtype=np.float64)
    n = int(min(n_components, data.shape[0], data.shape[1]))
    mean = data.mean(axis=0)
    centred = data - mean
    if data.shape[0] < data.shape[1]:  # Gram trick: eigen-decompose the smaller N x N matrix
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        cov = centred.T @ centred
        evals, evecs = np.linalg.eigh(cov)
        idx = np.argsort(evals)[::-1]
        s = np.sqrt(np.maximum(evals[idx], 0.0))
        vt = evecs[:, idx].T
    vt = vt[:n]
    signs = np.sign(vt[np.arange(n), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    total = float((s**2).sum()) or 1.0
    explained = (s[:n] ** 2) / total
    return (centred @ vt.T).astype(np.float32), vt, mean, explained


def max_perplexity(n_points: int) -> float:
    """The largest t-SNE perplexity :func:`embed_points` uses for ``n_points`` points.

    Perplexity is lowered to ``(N - 1) / 3`` for small galleries (each point needs about three
    times the perplexity in neighbours), and never below 1.

    Raises:
        ValueError: If ``n_points`` is not an integer of at least 1.
    """
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, not {n_points!r}.")
    return float(max((int(n_points) - 1) / 3.0, 1.0))


@dataclass(frozen=True, eq=False)
class GalleryMap:
    """A fitted 2-D map of a gallery's features, ready to place new points on (never changed).

    Fitted once per (features, method, parameters) by :func:`fit_map`, independently of any
    current image; :func:`place_query` puts a query onto it without moving the gallery points.
    The arrays are read-only and :func:`place_query` never writes into the fitted state, so one
    map can be shared by several threads or sessions (e.g. a bounded ``st.cache_resource``).

    Attributes:
        coords: ``(N, 2)`` float32 positions of the gallery images (read-only). t-SNE maps are
            centred on their bounding box, the frame openTSNE's ``transform`` places points in.
        method: ``"pca"`` or ``"tsne"``.
        explained: Fraction of variance explained by each of the two PCA axes (PCA only).
        params: The settings actually used (perplexity may be lowered for small galleries).
        seconds: Wall time of the fit.
        stopped: ``on_step`` stopped the optimization early (no query can then be placed).
        dims: Feature dimension ``D`` a query must have.
        nbytes: Approximate memory held (arrays, affinities, neighbour index), for byte-bounded
            caches.
    """

    coords: np.ndarray
    method: str
    explained: tuple[float, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: bool = False
    dims: int = 0
    nbytes: int = 0
    _mean: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _components: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    _tsne: _FittedTSNE | None = field(default=None, repr=False)

    def with_query(self, query: np.ndarray | None, *, seconds: float = 0.0) -> FeatureMap:
        """This map as a :class:`FeatureMap` with a placed query ``(2,)`` (or none).

        Args:
            seconds: Time spent placing the query, added to the fit's.
        """
        placement = (
            "projected onto the same two principal axes"
            if self.method == "pca"
            else "placed by openTSNE's transform (optimized against the fixed gallery map, "
            "not re-embedded)"
        )
        q = None if query is None else np.asarray(query, dtype=np.float32).reshape(2)
        return FeatureMap(self.coords, q, self.method, self.explained, dict(self.params),
                          placement, self.seconds + seconds, stopped=self.stopped,
                          placement_seconds=seconds)  # fmt: skip


@dataclass(frozen=True, eq=False)
class _FittedTSNE:
    """What openTSNE needs to place points: centred float64 positions, affinities, optimizer
    settings. A fresh ``TSNEEmbedding`` is built from a copy for every placement, because
    ``TSNEEmbedding.transform`` re-centres the embedding it is called on *in place*."""

    positions: np.ndarray
    affinities: object
    gradient_params: dict[str, object]
    random_state: int
    query_perplexity: float


def _readonly(array: np.ndarray, dtype: type) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def _affinity_nbytes(affinities: object) -> int:
    total = 0
    matrix = getattr(affinities, "P", None)
    for name in ("data", "indices", "indptr"):
        part = getattr(matrix, name, None)
        total += int(getattr(part, "nbytes", 0))
    index = getattr(getattr(affinities, "knn_index", None), "index", None)
    fit_x = getattr(index, "_fit_X", None)
    total += 2 * int(getattr(fit_x, "nbytes", 0))  # the data and sklearn's tree over it
    return total


def _check_map_args(method: str, data: np.ndarray, perplexity: float, n_iter: int,
                    early_exaggeration_iter: int) -> None:  # fmt: skip
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {', '.join(MAP_METHODS)}, not {method!r}.")
    if data.ndim != 2 or len(data) < 3:
        raise ValueError("A map needs at least 3 feature vectors (N, D).")
    if method == "tsne":
        if not 2.0 <= perplexity <= 100.0:
            raise ValueError("perplexity must be between 2 and 100.")
        if n_iter < 50 or early_exaggeration_iter < 0:
            raise ValueError("n_iter must be at least 50 and early_exaggeration_iter non-negative.")


def fit_map(
    features: np.ndarray,
    *,
    method: str = "tsne",
    perplexity: float = 30.0,
    n_iter: int = 500,
    early_exaggeration_iter: int = 250,
    learning_rate: float | str = "auto",
    pca_dims: int = PCA_DIMS,
    seed: int = 0,
    n_jobs: int = 2,
    on_step: OnStep | None = None,
) -> GalleryMap:
    """Fit a 2-D map of a gallery's ``features`` ``(N, D)`` by PCA or t-SNE (no query).

    PCA: the two leading principal axes of the centred features. t-SNE: PCA to ``pca_dims``
    dimensions, exact k-NN affinities (deterministic), openTSNE with
    ``negative_gradient_method="bh"`` and PCA initialization; ``seed`` fixes every random
    choice. ``perplexity`` is lowered to ``(N - 1) / 3`` for small galleries (reported in
    ``params``). The result depends only on the features and these settings, so an app can cache
    it apart from the current image and place each new image with :func:`place_query`.

    Raises:
        ValueError: For an unknown method, fewer than 3 points, or out-of-range settings.
    """
    data = np.asarray(features, dtype=np.float32)
    _check_map_args(method, data, perplexity, n_iter, early_exaggeration_iter)
    t0 = time.perf_counter()
    if method == "pca":
        proj, comps, mean, explained = pca(data, 2)
        nbytes = proj.nbytes + comps.nbytes + mean.nbytes
        return GalleryMap(_readonly(proj, np.float32), "pca",
                          tuple(float(e) for e in explained), {}, time.perf_counter() - t0,
                          dims=int(data.shape[1]), nbytes=int(nbytes),
                          _mean=_readonly(mean, np.float64),
                          _components=_readonly(comps, np.float64))  # fmt: skip
    import openTSNE

    used_perplexity = float(min(perplexity, max_perplexity(len(data))))
    proj, comps, mean, _ = pca(data, pca_dims)
    total = early_exaggeration_iter + n_iter
    progress = {"done": 0, "stopped": False}

    def callback(iteration: int, error: float, _embedding: object) -> bool:
        progress["done"] += 25
        info = StepInfo(min(progress["done"], total), total, loss=float(error),
                        message=f"t-SNE iteration {progress['done']}/{total}")  # fmt: skip
        if not report(on_step, info):
            progress["stopped"] = True
            return True
        return False

    tsne = openTSNE.TSNE(
        n_components=2,
        perplexity=used_perplexity,
        n_iter=n_iter,
        early_exaggeration_iter=early_exaggeration_iter,
        learning_rate=learning_rate,
        negative_gradient_method="bh",
        neighbors="exact" if len(data) <= 10_000 else "auto",
        initialization="pca",
        random_state=seed,
        n_jobs=n_jobs,
        callbacks=callback if on_step is not None else None,
        callbacks_every_iters=25,
        verbose=False,
    )
    embedding = tsne.fit(proj)
    positions = np.array(embedding, dtype=np.float64)
    # openTSNE's transform centres the map on its bounding box before placing points: use that
    # frame for the gallery too, so the placed star and the gallery points agree.
    positions -= (positions.max(axis=0) + positions.min(axis=0)) / 2
    positions.setflags(write=False)
    fitted = _FittedTSNE(positions, embedding.affinities, dict(embedding.gradient_descent_params),
                         seed, min(5.0, used_perplexity))  # fmt: skip
    params = {
        "perplexity": used_perplexity,
        "n_iter": n_iter,
        "early_exaggeration_iter": early_exaggeration_iter,
        "pca_dims": int(proj.shape[1]),
        "seed": seed,
        "gradient": "Barnes-Hut",
    }
    nbytes = (
        2 * positions.nbytes + comps.nbytes + mean.nbytes + _affinity_nbytes(embedding.affinities)
    )
    return GalleryMap(_readonly(positions, np.float32), "tsne", (), params,
                      time.perf_counter() - t0, stopped=bool(progress["stopped"]),
                      dims=int(data.shape[1]), nbytes=int(nbytes),
                      _mean=_readonly(mean, np.float64), _components=_readonly(comps, np.float64),
                      _tsne=fitted)  # fmt: skip


def place_query(gallery_map: GalleryMap, query: np.ndarray) -> np.ndarray:
    """Position ``(2,)`` of a new feature vector ``query`` ``(D,)`` on a fitted map.

    PCA: projected onto the map's two principal axes. t-SNE: projected onto the same PCA
    dimensions, then placed by openTSNE's ``TSNEEmbedding.transform`` (median of its nearest
    gallery points, then optimized against the fixed gallery positions with perplexity
    ``min(5, perplexity)``); about 0.05-1 s. The gallery map is not moved or changed.

    Raises:
        ValueError: If ``query`` does not have the map's dimension, or the fit was stopped.
    """
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    if q.shape[0] != gallery_map.dims:
        raise ValueError(
            f"query has {q.shape[0]} dims but the map was fitted on {gallery_map.dims}-dim "
            "features (use the same layer)."
        )
    projected = (q - gallery_map._mean) @ gallery_map._components.T
    if gallery_map.method == "pca":
        return projected.astype(np.float32)
    fitted = gallery_map._tsne
    if gallery_map.stopped or fitted is None:
        raise ValueError("This t-SNE map was stopped before it finished: fit it again.")
    import openTSNE

    params = dict(fitted.gradient_params)
    own = {k: params.pop(k) for k in ("dof", "n_interpolation_points", "min_num_intervals",
                                      "ints_in_interval", "negative_gradient_method")
           if k in params}  # fmt: skip
    # One thread: a single point gains nothing from openTSNE's threads, and on a loaded 2-core
    # machine n_jobs=2 made this placement ~18x slower (4.7 s against 0.26 s, NOTES.md).
    params["n_jobs"] = 1
    # A fresh embedding over a copy: transform re-centres (writes into) the array it is called on.
    reference = openTSNE.TSNEEmbedding(
        np.array(fitted.positions), fitted.affinities, random_state=fitted.random_state,
        **own, **params,
    )  # fmt: skip
    placed = reference.transform(
        projected.astype(np.float32)[None, :], perplexity=fitted.query_perplexity
    )
    return np.asarray(placed, dtype=np.float32)[0]


def embed_points(
    features: np.ndarray,
    *,
    method: str = "tsne",
    query: np.ndarray | None = None,
    perplexity: float = 30.0,
    n_iter: int = 500,
    early_exaggeration_iter: int = 250,
    learning_rate: float | str = "auto",
    pca_dims: int = PCA_DIMS,
    seed: int = 0,
    n_jobs: int = 2,
    on_step: OnStep | None = None,
) -> FeatureMap:
    """2-D map of ``features`` ``(N, D)`` by PCA or t-SNE, with an optional ``query`` ``(D,)``.

    :func:`fit_map` then :func:`place_query` (see there); an app that changes the query often
    should cache the :class:`GalleryMap` and call :func:`place_query` alone.
    """
    gallery_map = fit_map(
        features, method=method, perplexity=perplexity, n_iter=n_iter,
        early_exaggeration_iter=early_exaggeration_iter, learning_rate=learning_rate,
        pca_dims=pca_dims, seed=seed, n_jobs=n_jobs, on_step=on_step,
    )  # fmt: skip
    if query is None or gallery_map.stopped:
        return gallery_map.with_query(None)
    t0 = time.perf_counter()
    q = place_query(gallery_map, query)
    return gallery_map.with_query(q, seconds=time.perf_counter() - t0)


def feature_map(
    model: nn.Module,
    x: torch.Tensor | None,
    *,
    gallery_features: np.ndarray,
    layer: str,
    method: str = "tsne",
    perplexity: float = 30.0,
    n_iter: int = 500,
    seed: int = 0,
    cache_key: Hashable | None = None,
    on_step: OnStep | None = None,
) -> FeatureMap:
    """PCA or t-SNE map of a gallery's ``layer`` features with the current image ``x`` placed in.

    See :func:`embed_points` for the method; this adds the current image's features.
    """
    query = None if x is None else query_features(model, x, layer=layer, cache_key=cache_key)
    return embed_points(gallery_features, method=method, query=query, perplexity=perplexity,
                        n_iter=n_iter, seed=seed, on_step=on_step)  # fmt: skip
