"""Gram-matrix statistics of CNN features: the one implementation behind texture synthesis,
Gatys style transfer and the training loss of the fast feed-forward style network.

Gatys, Ecker & Bethge (2015, 2016): the style of an image is the set of Gram matrices
``G_l = F_l F_lᵀ / (H_l W_l)`` of its feature maps ``F_l`` (``C_l x H_l W_l``) at several layers;
its content is the feature map of one deeper layer.

Deviation from the papers (on purpose): every loss here is *relative*,
``||G_l(x) - G_l(s)||² / ||G_l(s)||²`` for style and ``||F(x) - F(c)||² / ||F(c)||²`` for content,
instead of the papers' ``1 / (4 C² (HW)²)`` scaling. The two bundled networks' activations differ in
scale by about 100x (SqueezeNet keeps Caffe's 0-255 input scaling, EfficientNet-Lite0 uses batch
norm), so only relative errors let one set of weights work on both (measured in
``shared/research/synthesis-feasibility.md``, Q4). Total variation is the mean squared difference
of neighbouring pixels.

Functions here work on tensors and keep the autograd graph; the model must already be inside
:func:`vizcore.core.hooks.inference_session` (the techniques in :mod:`vizcore.style.gatys` and the
trainer do that).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from vizcore.core.hooks import capture_activations, forward_until

__all__ = [
    "GramTargets",
    "content_loss",
    "extract_features",
    "gram_matrix",
    "gram_targets",
    "layer_weights",
    "style_loss",
    "total_variation",
]

_EPS = 1e-12


#: Fewest map positions a Gram matrix is computed over (a 2x2 map).
MIN_GRAM_POSITIONS = 4


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix of feature maps, normalized by the number of positions.

    ``G[n, i, j] = sum_p F[n, i, p] F[n, j, p] / P`` with ``P = H * W``.

    Args:
        features: ``(N, C, H, W)`` feature maps.

    Returns:
        ``(N, C, C)`` Gram matrices (symmetric, positive semi-definite).
    """
    if features.ndim != 4:
        raise ValueError(f"gram_matrix expects (N, C, H, W) features, got {tuple(features.shape)}.")
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / float(h * w)


def extract_features(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for input ``x`` (graph kept; the forward stops at the last one).

    Args:
        model: A model inside :func:`vizcore.core.hooks.inference_session`.
        x: ``(N, 3, H, W)`` RGB in [0, 1].
        layers: Dotted layer names (validated; a wrong name raises ``LayerNotFoundError``).
    """
    unique = tuple(dict.fromkeys(layers))
    if not unique:
        raise ValueError("Choose at least one layer.")
    with capture_activations(model, unique, stop_early=True) as acts:
        forward_until(model, x)
        return {name: acts[name] for name in unique}


def layer_weights(layers: Sequence[str], weights: Sequence[float] | None) -> dict[str, float]:
    """Per-layer weights (equal when ``weights`` is None), validated to be non-negative."""
    if weights is None:
        return dict.fromkeys(layers, 1.0 / max(len(layers), 1))
    if len(weights) != len(layers):
        raise ValueError(
            f"Give one weight per style layer: {len(layers)} layers but {len(weights)} weights."
        )
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("Layer weights must be non-negative and not all zero.")
    return {layer: float(w) for layer, w in zip(layers, weights, strict=True)}


@dataclass(frozen=True)
class GramTargets:
    """The style statistics of one image: a Gram matrix per layer and the layer weights.

    Attributes:
        grams: Layer name -> ``(1, C, C)`` detached Gram matrix of the style image.
        weights: Layer name -> weight of that layer's relative error.
    """

    grams: Mapping[str, torch.Tensor]
    weights: Mapping[str, float]

    @property
    def layers(self) -> tuple[str, ...]:
        """The style layers, in order."""
        return tuple(self.grams)


def gram_targets(
    model: nn.Module,
    style: torch.Tensor,
    layers: Sequence[str],
    *,
    weights: Sequence[float] | None = None,
) -> GramTargets:
    """Gram matrices of a style image at ``layers`` (computed once, without a graph).

    Raises:
        ValueError: A layer's map is smaller than :data:`MIN_GRAM_POSITIONS` positions at this
            image size: a Gram matrix over one or two positions holds no texture statistics
            (small models or small inputs; pick an earlier layer or a larger image).
    """
    with torch.no_grad():
        feats = extract_features(model, style, layers)
    small = {
        name: tuple(f.shape[-2:]) for name, f in feats.items()
        if f.ndim == 4 and f.shape[-1] * f.shape[-2] < MIN_GRAM_POSITIONS
    }  # fmt: skip
    if small:
        listed = ", ".join(f"{n} ({h}x{w})" for n, (h, w) in small.items())
        raise ValueError(
            f"Gram statistics need a spatial map of at least {MIN_GRAM_POSITIONS} positions; at "
            f"this image size these layers are too small: {listed}. Pick earlier layers or a "
            "larger image."
        )
    grams = {name: gram_matrix(f).mean(0, keepdim=True).detach() for name, f in feats.items()}
    return GramTargets(grams=grams, weights=layer_weights(tuple(grams), weights))


def style_loss(
    features: Mapping[str, torch.Tensor], targets: GramTargets, *, reduce: bool = True
) -> torch.Tensor:
    """Weighted sum over layers of ``||G_l(x) - G_l(s)||² / ||G_l(s)||²``.

    Args:
        features: Layer name -> ``(N, C, H, W)`` features of the image being optimized.
        targets: The style image's statistics (:func:`gram_targets`).
        reduce: Average over the batch (scalar) or return one loss per image ``(N,)``.
    """
    total: torch.Tensor | float = 0.0
    for name, target in targets.grams.items():
        gram = gram_matrix(features[name])
        err = (gram - target).pow(2).sum(dim=(1, 2)) / (target.pow(2).sum() + _EPS)
        total = total + targets.weights[name] * err
    assert isinstance(total, torch.Tensor)
    return total.mean() if reduce else total


def content_loss(
    features: torch.Tensor, target: torch.Tensor, *, reduce: bool = True
) -> torch.Tensor:
    """Relative feature error ``||F(x) - F(c)||² / ||F(c)||²`` per image (mean over the batch)."""
    dims = tuple(range(1, features.ndim))
    err = (features - target).pow(2).sum(dim=dims) / (target.pow(2).sum(dim=dims) + _EPS)
    return err.mean() if reduce else err


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of vertically and horizontally neighbouring pixels (a scalar)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return dh + dw
