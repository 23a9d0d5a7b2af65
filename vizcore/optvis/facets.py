"""The facets of a class in a gallery (Nguyen, Yosinski & Clune 2016, steps 1-2): which gallery
images the model assigns to the class, and their clusters in feature space.

The paper clusters a class's ImageNet training images (PCA to 50 dimensions, t-SNE, k-means);
here the images are the gallery images the model predicts as the class and k-means runs on the
L2-normalized, PCA-reduced features (no t-SNE: see
:func:`vizcore.optvis.multifaceted.multifaceted_class_visualization`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from vizcore.core.devices import model_device
from vizcore.core.hooks import inference_session
from vizcore.core.progress import OnStep, StepInfo, report, waiting
from vizcore.data.gallery import Gallery
from vizcore.optvis.centre_bias import find_class_map, maps_close_rel

# --------------------------------------------------------------------------- class membership


@dataclass(frozen=True)
class GalleryPredictions:
    """The model's top-k classes for every gallery image.

    Attributes:
        indices: ``(N, k)`` int64 class indices, best first.
        probabilities: ``(N, k)`` float32 softmax probabilities of those classes.
        gallery_digest: Content digest of the gallery.
        stopped: Whether ``on_step`` stopped the pass (then ``N`` is smaller than the gallery).
    """

    indices: np.ndarray
    probabilities: np.ndarray
    gallery_digest: str
    stopped: bool = False


def gallery_predictions(
    model: nn.Module,
    gallery: Gallery,
    *,
    input_size: int,
    features: np.ndarray | None = None,
    top_k: int = 5,
    batch_size: int = 16,
    on_step: OnStep | None = None,
) -> GalleryPredictions:
    """Classify every gallery image (resized to ``input_size``) and keep its top-``k`` classes.

    When ``features`` (one row per image) are the pooled input of the model's linear classifier
    (EfficientNet-Lite0's ``pool``), the logits are computed from them, ``W·f + b``, after
    checking on the first image that this matches the model's output; otherwise every image goes
    through the model.
    """
    from vizcore.data.features import gallery_batches

    if not 1 <= top_k <= 20:
        raise ValueError(f"top_k must be between 1 and 20, got {top_k}.")
    if len(gallery) == 0:
        raise ValueError("The gallery is empty.")
    if features is not None and len(features) != len(gallery):
        raise ValueError(f"{len(features)} feature rows for {len(gallery)} gallery images.")
    logits_of = _logits_from_features(model, gallery, features, input_size)
    indices: list[torch.Tensor] = []
    probs: list[torch.Tensor] = []
    done = 0
    stopped = False

    def forward(x: torch.Tensor) -> torch.Tensor:
        # One turn per batch: another session's request waits at most about one batch.
        with inference_session(model, on_wait=waiting(on_step, done, len(gallery))):
            return model(x).float()

    with torch.inference_mode():
        batches = (
            (logits_of(slice(i, i + batch_size)) for i in range(0, len(gallery), batch_size))
            if logits_of is not None
            else (forward(x) for x in gallery_batches(gallery, input_size,
                                                      batch_size=batch_size,
                                                      device=model_device(model)))
        )  # fmt: skip
        for logits in batches:
            p = torch.softmax(logits, dim=1)
            top = p.topk(min(top_k, p.shape[1]), dim=1)
            indices.append(top.indices)
            probs.append(top.values)
            done += len(p)
            info = StepInfo(done, len(gallery), message=f"Classifying: {done}/{len(gallery)}")
            if not report(on_step, info):
                stopped = done < len(gallery)
                break
    return GalleryPredictions(
        indices=torch.cat(indices).cpu().numpy().astype(np.int64),
        probabilities=torch.cat(probs).cpu().numpy().astype(np.float32),
        gallery_digest=gallery.digest,
        stopped=stopped,
    )


def _logits_from_features(
    model: nn.Module, gallery: Gallery, features: np.ndarray | None, input_size: int
) -> Callable[[slice], torch.Tensor] | None:
    """``rows -> logits`` from the features when they feed the linear head exactly, else None."""
    from vizcore.data.features import gallery_batches

    if features is None or features.ndim != 2:
        return None
    try:
        cmap = find_class_map(model, size=min(input_size, 128))
    except ValueError:
        return None
    if cmap.kind != "linear" or cmap.weight is None or cmap.weight.shape[1] != features.shape[1]:
        return None
    weight, bias = cmap.weight, cmap.bias
    table = torch.from_numpy(np.array(features, dtype=np.float32)).to(weight.device)

    def logits_of(rows: slice) -> torch.Tensor:
        out = table[rows] @ weight.T
        return out if bias is None else out + bias

    first = next(gallery_batches(gallery, input_size, batch_size=1, device=model_device(model)))
    with inference_session(model), torch.inference_mode():
        expected = model(first).float()
    return logits_of if maps_close_rel(logits_of(slice(0, 1)), expected, rtol=1e-3) else None


def class_members(predictions: GalleryPredictions, target: int, *, top_k: int = 1) -> np.ndarray:
    """Indices of the gallery images whose top-``top_k`` predicted classes include ``target``."""
    available = predictions.indices.shape[1]
    if not 1 <= top_k <= available:
        raise ValueError(f"top_k must be between 1 and {available}, got {top_k}.")
    hit = (predictions.indices[:, :top_k] == int(target)).any(axis=1)
    return np.flatnonzero(hit)


# ------------------------------------------------------------------------------- clustering


def _kmeans_once(
    x: np.ndarray, k: int, rng: np.random.Generator, iterations: int
) -> tuple[np.ndarray, np.ndarray, float]:
    n = len(x)
    # k-means++ seeding.
    centres = [x[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = float(d2.sum())
        if total <= 0:
            centres.append(x[int(rng.integers(n))])
            continue
        centres.append(x[int(rng.choice(n, p=d2 / total))])
    c = np.asarray(centres, dtype=np.float64)
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
        new = d2.argmin(1)
        if it and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                c[j] = members.mean(0)
            else:  # an empty cluster takes the point farthest from its centre
                far = int(d2[np.arange(n), labels].argmax())
                c[j] = x[far]
                labels[far] = j
    inertia = float(((x - c[labels]) ** 2).sum())
    return labels, c, inertia


def cluster_features(
    features: np.ndarray, k: int, *, seed: int = 0, restarts: int = 8, pca_dims: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ seeding, best of ``restarts``) of L2-normalized, PCA-reduced features.

    Returns ``(labels (N,), centres (k, d))`` in the reduced space; clusters are renumbered by
    decreasing size (ties by first member), so facet 0 is the largest.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"Features must be a non-empty (N, D) array, got {x.shape}.")
    if not 1 <= k <= len(x):
        raise ValueError(f"Cannot make {k} clusters of {len(x)} images.")
    x = reduced_features(x, pca_dims)
    rng = np.random.default_rng(seed)
    best: tuple[np.ndarray, np.ndarray, float] | None = None
    for _ in range(max(1, restarts)):
        run = _kmeans_once(x, k, rng, iterations=100)
        if best is None or run[2] < best[2] - 1e-12:
            best = run
    assert best is not None
    labels, centres, _ = best
    sizes = np.bincount(labels, minlength=k)
    first = np.array([np.flatnonzero(labels == j)[0] for j in range(k)])
    order = sorted(range(k), key=lambda j: (-sizes[j], first[j]))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return remap[labels], centres[order]


def reduced_features(features: np.ndarray, pca_dims: int = 50) -> np.ndarray:
    """L2-normalized, centred features reduced by PCA to at most ``pca_dims`` dimensions."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(0)
    dims = min(pca_dims, len(x) - 1, x.shape[1])
    if dims >= 1 and len(x) > 2:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:dims].T
    return x
