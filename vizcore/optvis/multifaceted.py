"""Multifaceted class visualization: one image per facet of a class, with a centre bias.

Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization: Uncovering the Different Types
of Features Learned By Each Neuron in Deep Neural Networks". A class neuron fires for several
kinds of images (a cat's face, a cat lying down, its fur up close); plain activation maximization
mixes them into one image. The paper (1) collects the training images of the class, (2) clusters
their penultimate-layer features (PCA to 50 dimensions, t-SNE to 2-D, k-means), (3) starts one
activation maximization per cluster from the mean of the 15 images closest to the cluster centre,
and (4) adds a *center-biased regularization* so that one object forms in the middle instead of
many fragments.

Here the "training images of the class" are the gallery images that the model itself assigns to
the class (:func:`gallery_predictions` then :func:`class_members`), the features come from
:mod:`vizcore.data.features` (cached on disk), and every optimization runs through the shared runner
:func:`vizcore.optvis.optimize` with the class-visualization presets of
:mod:`vizcore.optvis.synthesis`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.checks import check_class_index, check_int
from vizcore.core.devices import model_device, to_model_device
from vizcore.core.hooks import forward_output_hooks, inference_session
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep, RunResult, StepInfo, report, waiting
from vizcore.data.gallery import Gallery
from vizcore.models.discovery import facts_for
from vizcore.optvis import objectives
from vizcore.optvis import param as image_param
from vizcore.optvis.synthesis import (
    SynthesisResult,
    SynthesisSettings,
    class_visualization,
    default_synthesis_settings,
    run_with_settings,
)

__all__ = [
    "ClassMap",
    "GalleryPredictions",
    "MultifacetedResult",
    "centre_fraction",
    "centre_weights",
    "class_members",
    "cluster_features",
    "find_class_map",
    "gallery_predictions",
    "multifaceted_class_visualization",
]

InitMode = Literal["nearest", "mean"]
MAX_FACETS = 8

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
    return logits_of if _close(logits_of(slice(0, 1)), expected, rtol=1e-3) else None


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
    x = _reduced(x, pca_dims)
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


def _reduced(features: np.ndarray, pca_dims: int = 50) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    x = x - x.mean(0)
    dims = min(pca_dims, len(x) - 1, x.shape[1])
    if dims >= 1 and len(x) > 2:
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        x = x @ vt[:dims].T
    return x


# ------------------------------------------------------------------------- class-evidence map


@dataclass(frozen=True)
class ClassMap:
    """Where a model's class score comes from, position by position.

    For a global-average-pooled head the logit is the mean over positions of a *class-evidence
    map* ``M_c(y, x)`` (the map CAM draws, Zhou et al. 2016):

    * ``kind="linear"``: ``M_c = w_c · A(y, x) + b_c`` for ``A`` = ``layer``'s output feeding
      GAP and a linear classifier (EfficientNet-Lite0: ``head.act`` and ``fc``);
    * ``kind="channel"``: ``M_c = A_c(y, x)``, the class's own channel (SqueezeNet: ``relu10``).

    Attributes:
        layer: The layer whose output gives the map.
        kind: ``"linear"`` or ``"channel"``.
        weight: ``(num_classes, C)`` classifier weights (``"linear"`` only).
        bias: ``(num_classes,)`` classifier bias, or ``None``.
    """

    layer: str
    kind: Literal["linear", "channel"]
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None

    def evidence(self, act: torch.Tensor, target: int) -> torch.Tensor:
        """``M_c`` as ``(N, h, w)`` from ``layer``'s output ``act``."""
        if self.kind == "channel":
            return act[:, target]
        assert self.weight is not None
        w = self.weight[target].to(act.dtype)
        out = torch.einsum("nchw,c->nhw", act, w)
        return out if self.bias is None else out + self.bias[target].to(act.dtype)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    scale = float(b.abs().max().clamp_min(1.0))
    return bool((a - b).abs().max() <= rtol * scale)


def find_class_map(model: nn.Module, *, size: int = 64) -> ClassMap:
    """The class-evidence map of ``model``, from its GAP head
    (:func:`vizcore.models.discovery.find_gap_head`: one probe forward, hooks removed).

    A layer with one channel per class whose mean is the logits is preferred (SqueezeNet's
    ``relu10``); else the map feeding a linear classifier (EfficientNet-Lite0's ``head.act``).

    Raises:
        ValueError: The model's head is not global average pooling of a spatial map followed by
            a linear classifier (or a per-class channel), so no centre bias can be defined.
    """
    head = facts_for(model, input_size=size).head
    if head is not None and head.class_map_layers:
        return ClassMap(head.class_map_layers[0], "channel")
    if head is not None and head.kind == "linear":
        classifier = get_layer(model, head.classifier)
        weight = classifier.weight.detach().float().clone()
        bias = getattr(classifier, "bias", None)
        bias = None if not isinstance(bias, torch.Tensor) else bias.detach().float().clone()
        return ClassMap(head.feature_layer, "linear", weight.reshape(weight.shape[0], -1), bias)
    raise ValueError(
        "The centre bias needs a model whose class score is the average over positions of a "
        "spatial map (global average pooling + a linear classifier, as in EfficientNet or "
        "SqueezeNet); this model's head is different. Set the centre bias to 0."
    )


def centre_weights(
    height: int, width: int, sigma: float, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Gaussian weights ``g(y, x) = exp(−r²/2σ²)`` over a map, ``r`` in units of the half-side.

    ``r`` is 0 at the centre and 1 at the middle of each edge. Made on ``device`` (CPU: ``None``).
    """
    device = device or "cpu"
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width * 2 - 1
    r2 = ys[:, None] ** 2 + xs[None, :] ** 2
    return torch.exp(-r2 / (2 * sigma**2))


def _centre_bias_objective(
    cmap: ClassMap, target: int, weight: float, sigma: float
) -> objectives.Objective:
    def fn(acts: objectives.Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        evidence = cmap.evidence(acts[cmap.layer], target)
        g = centre_weights(*evidence.shape[-2:], sigma, device=evidence.device).to(evidence.dtype)
        border = 1.0 - g
        centre = (evidence * g).flatten(1).sum(1) / g.sum()
        outside = (F.relu(evidence) * border).flatten(1).sum(1) / border.sum().clamp_min(1e-6)
        return weight * (centre - outside)

    return objectives.Objective(
        fn, layers={cmap.layer}, needs_logits=True, name=f"{weight:g}·centre({cmap.layer})"
    )


def centre_fraction(
    model: nn.Module, images: np.ndarray, cmap: ClassMap, target: int, *, sigma: float = 0.35
) -> np.ndarray:
    """Share of positive class evidence in the centre: ``Σ g·relu(M) / Σ relu(M)`` per image.

    ``images``: ``(N, H, W, 3)`` float in [0, 1]. 1 means all of the class is in the middle; an
    even spread gives the mean of ``g`` over the map.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().contiguous()
    x = to_model_device(model, x)
    module = dict(model.named_modules())[cmap.layer]
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: tuple[torch.Tensor, ...], output: torch.Tensor):
        captured.append(output.detach().clone())
        return None

    with inference_session(model), torch.no_grad(), forward_output_hooks([module], hook):
        model(x)
    evidence = F.relu(cmap.evidence(captured[-1].float(), target))
    g = centre_weights(*evidence.shape[-2:], sigma, device=evidence.device)
    total = evidence.flatten(1).sum(1)
    inside = (evidence * g).flatten(1).sum(1)
    fraction = torch.where(total > 0, inside / total.clamp_min(1e-12), torch.zeros_like(total))
    return fraction.cpu().numpy()


# ------------------------------------------------------------------------ initial images


def fourier_image_from(init: torch.Tensor, *, decay: float = 1.0) -> image_param.Param:
    """:func:`vizcore.optvis.fourier_image` whose starting image is ``init`` (not noise).

    The parameterization is ``sigmoid(C · irfft2(s ⊙ S) / 4)``; its exact inverse is applied to
    ``init`` (clamped to [0.02, 0.98] so the sigmoid's inverse stays finite). The spectrum
    lives on ``init``'s device.
    """
    height, width = init.shape[-2:]
    # The generator only fills the spectrum that is overwritten below (no global RNG use).
    generator = torch.Generator().manual_seed(0)
    params, image_fn = image_param.fourier_image(
        tuple(init.shape), decay=decay, generator=generator, device=init.device
    )
    basis = image_param.FourierBasis.of(height, width, decay)  # the same basis as the runner
    colour_inverse = torch.linalg.inv(image_param._COLOR_CORRELATION).to(init.device)
    z = torch.logit(init.detach().float().clamp(0.02, 0.98)) * 4.0
    y = torch.einsum("ndhw,cd->nchw", z, colour_inverse)
    with torch.no_grad():
        params[0].copy_(basis.from_image(y))
    return params, image_fn


def _resize_images(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    if images.dtype == np.uint8:
        x = x / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    return x.clamp(0, 1).contiguous()


# -------------------------------------------------------------------------------- the method


@dataclass(frozen=True)
class MultifacetedResult(RunResult):
    """Facet images of one class, their starting images and the plain result.

    Attributes:
        target: The class index.
        title: The class name.
        images: One image per facet, ``(K, H, W, 3)`` float32 in [0, 1].
        init_images: Each facet's starting image, same shape (a gallery image, the mean of the
            images nearest the cluster centre, or the default start when no gallery image
            belongs to the class).
        cluster_sizes: Gallery images per facet, ``(K,)`` (all zeros without gallery images).
        init_indices: Per facet, the index into ``gallery_images`` of the image nearest the
            cluster centre (``-1`` without gallery images).
        init_counts: Per facet, how many gallery images its starting image averages (1 for
            ``init="nearest"``, up to ``mean_of`` for ``"mean"``; 0 without gallery images).
        labels: Cluster of each gallery image passed in, ``(M,)``.
        scores: The class logit of each final facet image (untransformed), ``(K,)``.
        initial_scores: The class logit of each starting image, ``(K,)``.
        probabilities: The softmax probability of the class on each final facet image.
        centre_fractions: Share of positive class evidence in the centre per facet
            (:func:`centre_fraction`); NaN when the centre bias cannot be measured.
        plain: The plain class visualization (same settings and seed, no facets, no centre
            bias), or ``None`` if not requested or stopped before it ran.
        plain_centre_fraction: :func:`centre_fraction` of the plain image (NaN if none).
        from_gallery: False when no gallery image belongs to the class (only the centre bias
            applies then: one facet from the default start).
        facets_requested: The ``facets`` argument.
        center_bias: The centre-bias weight used.
        note: A sentence for the page about what was done (e.g. fewer facets than asked).
        frames: uint8 snapshots of the facets during the run.
        stopped: Whether the user stopped the run.
        seconds: Wall-clock time of the whole call.
        steps_done: Optimizer steps taken (facets, plus the plain run).
    """

    target: int
    title: str
    images: np.ndarray
    init_images: np.ndarray
    cluster_sizes: np.ndarray
    init_indices: np.ndarray
    init_counts: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    initial_scores: np.ndarray
    probabilities: np.ndarray
    centre_fractions: np.ndarray
    plain: SynthesisResult | None
    plain_centre_fraction: float
    from_gallery: bool
    facets_requested: int
    center_bias: float
    note: str
    frames: tuple[np.ndarray, ...]


def _validate(
    facets: int,
    center_bias: float,
    center_sigma: float,
    init: str,
    mean_of: int,
    gallery_images: np.ndarray,
    gallery_features: np.ndarray,
) -> None:
    if not 1 <= facets <= MAX_FACETS:
        raise ValueError(f"facets must be between 1 and {MAX_FACETS}, got {facets}.")
    if not (math.isfinite(center_bias) and center_bias >= 0):
        raise ValueError(f"center_bias must be a finite number >= 0, got {center_bias}.")
    if not 0.05 <= center_sigma <= 2.0:
        raise ValueError(f"center_sigma must be between 0.05 and 2, got {center_sigma}.")
    if init not in ("nearest", "mean"):
        raise ValueError(f"init must be 'nearest' or 'mean', got {init!r}.")
    if mean_of < 1:
        raise ValueError(f"mean_of must be >= 1, got {mean_of}.")
    if gallery_images.ndim != 4 or gallery_images.shape[-1] != 3:
        raise ValueError(
            f"gallery_images must be (M, H, W, 3) RGB, got shape {gallery_images.shape}."
        )
    if gallery_features.ndim != 2 or len(gallery_features) != len(gallery_images):
        raise ValueError(
            f"gallery_features must be (M, D) with one row per image: {gallery_features.shape} "
            f"for {len(gallery_images)} images."
        )


def _logits(model: nn.Module, x: torch.Tensor, target: int) -> tuple[np.ndarray, np.ndarray]:
    with inference_session(model), torch.inference_mode():
        out = model(to_model_device(model, x).contiguous()).float().cpu()
    return out[:, target].numpy(), torch.softmax(out, 1)[:, target].numpy()


def multifaceted_class_visualization(
    model: nn.Module,
    x: torch.Tensor | None = None,
    *,
    target: int,
    gallery_images: np.ndarray,
    gallery_features: np.ndarray,
    facets: int = 3,
    center_bias: float = 5.0,
    center_sigma: float = 0.35,
    init: InitMode = "mean",
    mean_of: int = 15,
    settings: SynthesisSettings | None = None,
    steps: int | None = None,
    compare_plain: bool = True,
    categories: Sequence[str] | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> MultifacetedResult:
    """One class visualization per facet of the class, each started from its cluster's image.

    Nguyen, Yosinski & Clune 2016, "Multifaceted Feature Visualization". With ``φ`` the gallery
    features of the images the model assigns to class ``c``: cluster ``φ`` into ``K`` groups
    (k-means), then for each cluster ``k`` solve
    ``I_k* = argmax_I S_c(I) + β·[Σ g·M_c(I) / Σ g − Σ (1−g)·relu(M_c(I)) / Σ (1−g)]`` starting
    from the cluster's image, where ``M_c`` is the class-evidence map (:class:`ClassMap`, the
    logit is its mean) and ``g`` a centred Gaussian (:func:`centre_weights`).

    Deviations from the paper, and why:

    * The paper clusters the class's 1,300 ImageNet training images (PCA to 50 dimensions, then
      t-SNE to 2-D, then k-means, k = 10). Here the images are the gallery images the model
      predicts as ``c`` (chosen by the caller, see :func:`class_members`), usually a few dozen;
      k-means runs on the L2-normalized features reduced by PCA to at most 50 dimensions, without
      the t-SNE step (unstable and pointless on so few points). ``K = min(facets, M)``.
    * Like the paper, each facet starts by default (``init="mean"``) from the mean of the
      ``mean_of`` (15) images nearest the cluster centre. ``init="nearest"`` starts from the one
      image nearest the centre instead. Measured on Lite0 (tiger cat, built-in gallery, β = 5):
      the mean start, a blurry colour-and-layout prior, ends as class visualizations (a whole
      cat lying in the middle; logits 28 / 27 / 16), while the nearest crop stays an enhanced
      photo of that crop (logits 17 / 17 / 20) because the optimizer does not move far from a
      sharp photo in 150 steps.
    * The paper's center-biased regularization is a schedule: it first optimizes with heavy blur
      so that a blurry object forms in the middle, then sharpens it by updating mostly the central
      pixels with less blur. Here the centre bias is instead one differentiable term (weight
      ``center_bias`` = β above) in the same runner and presets as the plain visualization: it
      rewards the class evidence at the centre of the last spatial map and penalizes positive
      evidence at the borders (negative border evidence is not rewarded, so the optimizer does
      not paint "anti-class" borders). It needs a GAP head (:func:`find_class_map`). Measured on
      EfficientNet-Lite0 (tiger cat, 160 px, 150 steps): the share of class evidence in the
      centre Gaussian is about 0.21 at β = 0, 0.24 at β = 1 and 0.31 at β = 5 (the default);
      from the default start, β = 0 gives several cat fragments and β = 5-10 one cat in the
      middle.
    * The optimizer, parameterization (Fourier or pixel), transforms and ReLU6 straight-through
      are the measured class-visualization presets (:func:`synthesis_preset`), not the paper's
      Caffe settings. A Fourier run starts from the image through the exact inverse of the
      parameterization (:func:`fourier_image_from`).
    * With no gallery image of the class there are no facets: one image is optimized from the
      default start with the centre bias only, and ``from_gallery`` is False.

    Args:
        model: A classifier taking RGB in [0, 1].
        x: Unused (kept for the shared signature).
        target: The class index.
        gallery_images: ``(M, H, W, 3)`` images of the class (uint8 or float in [0, 1]); may be
            empty.
        gallery_features: ``(M, D)`` features of those images (e.g. the model's embedding layer
            from :func:`vizcore.data.features.gallery_features`).
        facets: Requested number of facets (clusters), 1 to 8.
        center_bias: Weight β of the centre-bias term (0 = off). Below about 1 it hardly
            matters: the logit's own reward for border evidence (1/(h·w) per position) then
            roughly cancels the border penalty.
        center_sigma: Width of the centre Gaussian, in units of the map's half-side.
        init: ``"mean"`` (the paper's mean of the nearest images) or ``"nearest"`` (the image
            nearest each centre).
        mean_of: Images averaged per facet for ``init="mean"`` (the paper uses 15).
        settings: Optimization settings (default: the model's Fourier preset is not known here,
            so :func:`synthesis_preset` for a generic model; pass the model's preset).
        steps: Overrides ``settings.steps``.
        compare_plain: Also run the plain class visualization (same settings and seed).
        categories: Class names (ImageNet by default).
        seed: Seed of k-means and of the runner's generator.
        on_step: Progress callback over facets and plain run; ``False`` stops early.
    """
    del x
    start = time.perf_counter()
    gallery_images = np.asarray(gallery_images)
    gallery_features = np.asarray(gallery_features)
    _validate(facets, center_bias, center_sigma, init, mean_of, gallery_images, gallery_features)
    settings = settings or default_synthesis_settings("fourier")
    if steps is not None:
        settings = dataclasses.replace(settings, steps=check_int("steps", steps, minimum=1))
    names = _category_names(categories)
    target = check_class_index(target, len(names), name="Class index")
    try:
        cmap: ClassMap | None = find_class_map(model, size=min(settings.size, 128))
    except ValueError:
        if center_bias > 0:
            raise
        cmap = None  # without a centre bias it only measures the centre fractions

    m = len(gallery_images)
    device = model_device(model)
    generator = torch.Generator().manual_seed(int(seed))
    labels = np.zeros(m, dtype=np.int64)
    if m == 0:
        k = 1
        cluster_sizes = np.zeros(1, dtype=np.int64)
        init_indices = np.full(1, -1, dtype=np.int64)
        init_counts = np.zeros(1, dtype=np.int64)
        param = settings.param(1, generator, device=device)
        note = (
            "No gallery image is predicted as this class, so there are no facets to find: one "
            "image was optimized from the default start with the centre bias only."
        )
    else:
        k = min(facets, m)
        labels, centres = cluster_features(gallery_features, k, seed=seed)
        reduced = _reduced(gallery_features)
        cluster_sizes = np.bincount(labels, minlength=k).astype(np.int64)
        init_indices = np.empty(k, dtype=np.int64)
        init_counts = np.empty(k, dtype=np.int64)
        starts = []
        resized = _resize_images(gallery_images, settings.size)
        for j in range(k):
            members = np.flatnonzero(labels == j)
            dist = ((reduced[members] - centres[j]) ** 2).sum(1)
            ranked = members[np.argsort(dist, kind="stable")]
            init_indices[j] = ranked[0]
            chosen = ranked[:1] if init == "nearest" else ranked[:mean_of]
            init_counts[j] = len(chosen)
            starts.append(resized[chosen].mean(0))
        init_batch = torch.stack(starts).to(device)
        param = (
            fourier_image_from(init_batch, decay=settings.decay)
            if settings.parameterization == "fourier"
            else image_param.pixel_image(tuple(init_batch.shape), init=init_batch)
        )
        note = f"{m} gallery image(s) of this class, {k} facet(s)"
        note += "." if k == facets else f" (fewer images than the {facets} facets asked for)."
    with torch.no_grad():
        init_images = param[1]().detach().clamp(0, 1)
    initial_scores, _ = _logits(model, init_images, target)

    objective = objectives.class_logit(target)
    if center_bias > 0:
        assert cmap is not None
        objective = objective + _centre_bias_objective(cmap, target, center_bias, center_sigma)
    total = settings.steps * (2 if compare_plain else 1)

    def relay(info: StepInfo, offset: int = 0, what: str = "facets") -> bool:
        return report(on_step, StepInfo(offset + info.step, total, info.loss, info.frame,
                                        f"{what}: {info.message}", info.waited))  # fmt: skip

    result = run_with_settings(model, objective, settings, seed=seed, on_step=relay, param=param)
    images = result.image
    x_final = torch.from_numpy(images).permute(0, 3, 1, 2)
    scores, probabilities = _logits(model, x_final, target)
    stopped = result.stopped
    steps_done = result.steps_done
    plain: SynthesisResult | None = None
    if compare_plain and not stopped:
        plain = class_visualization(
            model,
            target=target,
            settings=settings,
            categories=names,
            seed=seed,
            on_step=lambda info: relay(info, settings.steps, "plain"),
        )
        stopped = plain.stopped
        steps_done += plain.steps_done
    fractions = np.full(k, np.nan, dtype=np.float32)
    plain_fraction = float("nan")
    if cmap is not None:
        fractions = centre_fraction(model, images, cmap, target, sigma=center_sigma)
        if plain is not None:
            plain_fraction = float(
                centre_fraction(model, plain.images, cmap, target, sigma=center_sigma)[0]
            )
    return MultifacetedResult(
        target=target,
        title=names[target],
        images=images,
        init_images=init_images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
        cluster_sizes=cluster_sizes,
        init_indices=init_indices,
        init_counts=init_counts,
        labels=labels,
        scores=scores.astype(np.float32),
        initial_scores=initial_scores.astype(np.float32),
        probabilities=probabilities.astype(np.float32),
        centre_fractions=np.asarray(fractions, dtype=np.float32),
        plain=plain,
        plain_centre_fraction=plain_fraction,
        from_gallery=m > 0,
        facets_requested=facets,
        center_bias=float(center_bias),
        note=note,
        frames=result.frames,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        steps_done=steps_done,
    )


def _category_names(categories: Sequence[str] | None) -> Sequence[str]:
    if categories is not None:
        return categories
    from vizcore.models.registry import imagenet_categories

    return imagenet_categories()
