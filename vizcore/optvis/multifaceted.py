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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.checks import check_class_index, check_int
from vizcore.core.devices import model_device, to_model_device
from vizcore.core.hooks import inference_session
from vizcore.core.progress import OnStep, RunResult, StepInfo, report
from vizcore.optvis import objectives
from vizcore.optvis import param as image_param
from vizcore.optvis.centre_bias import (
    ClassMap,
    centre_bias_objective,
    centre_fraction,
    centre_weights,
    find_class_map,
)
from vizcore.optvis.facets import (
    GalleryPredictions,
    class_members,
    cluster_features,
    gallery_predictions,
    reduced_features,
)
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
    cmap = _class_map_or_none(model, settings, center_bias)
    generator = torch.Generator().manual_seed(int(seed))
    starts = _facet_starts(
        gallery_images,
        gallery_features,
        facets=facets,
        init=init,
        mean_of=mean_of,
        settings=settings,
        generator=generator,
        device=model_device(model),
        seed=seed,
    )
    with torch.no_grad():
        init_images = starts.param[1]().detach().clamp(0, 1)
    initial_scores, _ = _logits(model, init_images, target)
    objective = objectives.class_logit(target)
    if center_bias > 0:
        assert cmap is not None
        objective = objective + centre_bias_objective(cmap, target, center_bias, center_sigma)
    runs = _run_facets_and_plain(
        model,
        objective,
        starts.param,
        target=target,
        settings=settings,
        names=names,
        compare_plain=compare_plain,
        seed=seed,
        on_step=on_step,
    )
    scores, probabilities = _logits(
        model, torch.from_numpy(runs.images).permute(0, 3, 1, 2), target
    )
    fractions, plain_fraction = _centre_fractions(
        model, runs.images, runs.plain, cmap, target, sigma=center_sigma, count=starts.count
    )
    return MultifacetedResult(
        target=target,
        title=names[target],
        images=runs.images,
        init_images=init_images.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
        cluster_sizes=starts.cluster_sizes,
        init_indices=starts.init_indices,
        init_counts=starts.init_counts,
        labels=starts.labels,
        scores=scores.astype(np.float32),
        initial_scores=initial_scores.astype(np.float32),
        probabilities=probabilities.astype(np.float32),
        centre_fractions=np.asarray(fractions, dtype=np.float32),
        plain=runs.plain,
        plain_centre_fraction=plain_fraction,
        from_gallery=len(gallery_images) > 0,
        facets_requested=facets,
        center_bias=float(center_bias),
        note=starts.note,
        frames=runs.frames,
        stopped=runs.stopped,
        seconds=time.perf_counter() - start,
        steps_done=runs.steps_done,
    )


def _class_map_or_none(
    model: nn.Module, settings: SynthesisSettings, center_bias: float
) -> ClassMap | None:
    """The class-evidence map; without a GAP head only a run without centre bias may go on."""
    try:
        return find_class_map(model, size=min(settings.size, 128))
    except ValueError:
        if center_bias > 0:
            raise
        return None  # without a centre bias it only measures the centre fractions


@dataclass(frozen=True)
class _FacetStarts:
    """Per facet: the gallery cluster behind it and the image parameterization it starts from."""

    count: int
    labels: np.ndarray
    cluster_sizes: np.ndarray
    init_indices: np.ndarray
    init_counts: np.ndarray
    param: image_param.Param
    note: str


def _facet_starts(
    gallery_images: np.ndarray,
    gallery_features: np.ndarray,
    *,
    facets: int,
    init: InitMode,
    mean_of: int,
    settings: SynthesisSettings,
    generator: torch.Generator,
    device: torch.device,
    seed: int,
) -> _FacetStarts:
    """Cluster the class's gallery images and build each facet's starting image (paper step 3)."""
    m = len(gallery_images)
    if m == 0:
        return _FacetStarts(
            count=1,
            labels=np.zeros(0, dtype=np.int64),
            cluster_sizes=np.zeros(1, dtype=np.int64),
            init_indices=np.full(1, -1, dtype=np.int64),
            init_counts=np.zeros(1, dtype=np.int64),
            param=settings.param(1, generator, device=device),
            note=(
                "No gallery image is predicted as this class, so there are no facets to find: "
                "one image was optimized from the default start with the centre bias only."
            ),
        )
    k = min(facets, m)
    labels, centres = cluster_features(gallery_features, k, seed=seed)
    reduced = reduced_features(gallery_features)
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
    return _FacetStarts(
        count=k,
        labels=labels,
        cluster_sizes=np.bincount(labels, minlength=k).astype(np.int64),
        init_indices=init_indices,
        init_counts=init_counts,
        param=param,
        note=note,
    )


@dataclass(frozen=True)
class _Runs:
    images: np.ndarray
    plain: SynthesisResult | None
    frames: tuple[np.ndarray, ...]
    stopped: bool
    steps_done: int


def _run_facets_and_plain(
    model: nn.Module,
    objective: objectives.Objective,
    param: image_param.Param,
    *,
    target: int,
    settings: SynthesisSettings,
    names: Sequence[str],
    compare_plain: bool,
    seed: int,
    on_step: OnStep | None,
) -> _Runs:
    """Optimize all facets as one batch, then (unless stopped) the plain visualization."""
    total = settings.steps * (2 if compare_plain else 1)

    def relay(info: StepInfo, offset: int = 0, what: str = "facets") -> bool:
        return report(on_step, StepInfo(offset + info.step, total, info.loss, info.frame,
                                        f"{what}: {info.message}", info.waited))  # fmt: skip

    result = run_with_settings(model, objective, settings, seed=seed, on_step=relay, param=param)
    stopped, steps_done = result.stopped, result.steps_done
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
    return _Runs(result.image, plain, result.frames, stopped, steps_done)


def _centre_fractions(
    model: nn.Module,
    images: np.ndarray,
    plain: SynthesisResult | None,
    cmap: ClassMap | None,
    target: int,
    *,
    sigma: float,
    count: int,
) -> tuple[np.ndarray, float]:
    """:func:`centre_fraction` of each facet and of the plain image (NaN where unmeasurable)."""
    if cmap is None:
        return np.full(count, np.nan, dtype=np.float32), float("nan")
    fractions = centre_fraction(model, images, cmap, target, sigma=sigma)
    if plain is None:
        return fractions, float("nan")
    return fractions, float(centre_fraction(model, plain.images, cmap, target, sigma=sigma)[0])


def _category_names(categories: Sequence[str] | None) -> Sequence[str]:
    if categories is not None:
        return categories
    from vizcore.models.registry import imagenet_categories

    return imagenet_categories()
