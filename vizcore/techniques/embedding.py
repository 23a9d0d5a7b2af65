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

from vizcore.cache import layer_activations
from vizcore.gallery import Gallery
from vizcore.progress import OnStep, StepInfo, report

__all__ = [
    "MAP_METHODS",
    "METRICS",
    "FeatureMap",
    "NeighbourComparison",
    "Neighbours",
    "embed_points",
    "feature_map",
    "max_perplexity",
    "nearest",
    "neighbours",
    "pca",
    "pixel_vectors",
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
        seconds: Wall time.
        stopped: ``on_step`` stopped the optimization early.
    """

    coords: np.ndarray
    query: np.ndarray | None
    method: str
    explained: tuple[float, ...] = ()
    params: dict[str, object] = field(default_factory=dict)
    placement: str = ""
    seconds: float = 0.0
    stopped: bool = False


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
) -> NeighbourComparison:
    """Nearest gallery images to ``x`` in ``layer``'s feature space and in raw pixel space.

    Pixel space: both images downsampled to 32x32 RGB in [0, 1] (area average) and compared with
    the same metric. Feature space: global-average-pooled ``layer`` features (the gallery's must
    come from the same layer, see :func:`vizcore.features.gallery_features`).
    """
    if len(gallery_features) != len(gallery):
        raise ValueError("gallery_features must have one row per gallery image.")
    q = query_features(model, x, layer=layer, cache_key=cache_key)
    feature = nearest(q, gallery_features, k=k, metric=metric, space="feature")
    q_pix = F.interpolate(x.detach().float().cpu(), size=(PIXEL_SIDE, PIXEL_SIDE), mode="area")
    pixel = nearest(q_pix.flatten().numpy(), pixel_vectors(gallery.images), k=k, metric=metric,
                    space="pixel")  # fmt: skip
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

    t-SNE: PCA to ``pca_dims`` dimensions, exact k-NN affinities (deterministic), openTSNE with
    ``negative_gradient_method="bh"`` and PCA initialization; ``seed`` fixes every random choice.
    ``perplexity`` is lowered to ``(N - 1) / 3`` for small galleries (reported in ``params``).
    """
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {', '.join(MAP_METHODS)}, not {method!r}.")
    t0 = time.perf_counter()
    data = np.asarray(features, dtype=np.float32)
    if data.ndim != 2 or len(data) < 3:
        raise ValueError("A map needs at least 3 feature vectors (N, D).")
    if method == "pca":
        proj, comps, mean, explained = pca(data, 2)
        q = None if query is None else ((np.asarray(query) - mean) @ comps.T).astype(np.float32)
        return FeatureMap(proj, q, "pca", tuple(float(e) for e in explained), {},
                          "projected onto the same two principal axes",
                          time.perf_counter() - t0)  # fmt: skip
    if not 2.0 <= perplexity <= 100.0:
        raise ValueError("perplexity must be between 2 and 100.")
    if n_iter < 50 or early_exaggeration_iter < 0:
        raise ValueError("n_iter must be at least 50 and early_exaggeration_iter non-negative.")
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
    coords = np.asarray(embedding, dtype=np.float32)
    q = None
    if query is not None and not progress["stopped"]:
        q_proj = ((np.asarray(query, dtype=np.float64) - mean) @ comps.T).astype(np.float32)
        placed = embedding.transform(q_proj[None, :], perplexity=min(5.0, used_perplexity))
        q = np.asarray(placed, dtype=np.float32)[0]
    params = {
        "perplexity": used_perplexity,
        "n_iter": n_iter,
        "early_exaggeration_iter": early_exaggeration_iter,
        "pca_dims": int(proj.shape[1]),
        "seed": seed,
        "gradient": "Barnes-Hut",
    }
    placement = (
        "placed by openTSNE's transform (optimized against the fixed gallery map, not re-embedded)"
    )
    return FeatureMap(coords, q, "tsne", (), params, placement, time.perf_counter() - t0,
                      stopped=bool(progress["stopped"]))  # fmt: skip


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
