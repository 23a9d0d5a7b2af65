"""Which classes one channel feeds: the "output" column of a Microscope-style unit page.

Two measures, both per class ``j`` for one channel ``c`` of a layer ``A``:

- ``"weights"`` (only for a layer that feeds a GAP classifier head directly, the
  :class:`~vizcore.models.discovery.GapHead`'s ``feature_layers``): the head computes
  ``logit_j = sum_c W[j, c] * mean_{x,y} A_c(x, y) + b_j``, so the channel's effect on class
  ``j`` is the weight ``W[j, c]``, independent of the image (CAM's weights, Zhou et al. 2016).
  For a 1x1-convolution head followed by a ReLU (SqueezeNet) the ReLU is ignored: the weight is
  the effect while the class map is positive.
- ``"gradient"`` (any layer): on the current image, the derivative of every logit with respect
  to a uniform shift ``delta`` of the channel's map, ``d logit_j / d delta`` at ``delta = 0``
  with ``A'_c = A_c + delta`` at every position, i.e. ``sum_{x,y} d logit_j / d A_c(x, y)``
  (the gradient with respect to the channel mean, up to the map size). Computed for all classes
  in one forward pass with forward-mode automatic differentiation (a dual number). For a layer
  that feeds a linear GAP head it equals ``W[:, c]`` exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.autograd.forward_ad as fwad
from torch import nn

from vizcore.core.hooks import forward_output_hooks, inference_session
from vizcore.core.layers import get_layer
from vizcore.models.discovery import GapHead

__all__ = [
    "CLASS_METHODS",
    "ChannelClasses",
    "channel_classes",
    "pre_activation_layer",
    "weights_apply",
]

CLASS_METHODS = ("weights", "gradient")
_RECTIFIERS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)


@dataclass(frozen=True)
class ChannelClasses:
    """The classes a channel raises most (and lowers most).

    Attributes:
        layer, channel: The unit.
        method: ``"weights"`` or ``"gradient"`` (module docstring).
        scores: ``(K,)`` float32, the measure for every class.
        top: Class indices with the largest scores, largest first.
        bottom: Class indices with the smallest (most negative) scores, smallest first.
        names: Names of ``top`` (when class names were given, else ``()``).
    """

    layer: str
    channel: int
    method: str
    scores: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    names: tuple[str, ...] = ()


def weights_apply(head: GapHead | None, layer: str) -> bool:
    """True when ``layer`` feeds the classifier head directly (the weights measure applies)."""
    return head is not None and layer in head.feature_layers


def pre_activation_layer(model: nn.Module, layer: str) -> str | None:
    """The convolution or batch norm that feeds a rectifier ``layer``, else ``None``.

    A channel that is negative on the starting image gets no gradient through a ReLU / ReLU6,
    so activation maximization from grey stalls at 0 (Lucid's "redirected ReLU" works around
    it; not implemented here). Maximizing the pre-activation instead is a proxy that climbs
    (a rectifier is monotone, so the argmax of the two agree where the channel is positive).
    Found by definition order: the rectifier's previous sibling module, when it is a
    ``Conv2d`` or ``BatchNorm2d`` (true for sequential conv-bn-act blocks; a heuristic for a
    custom ``forward``).
    """
    if not isinstance(get_layer(model, layer), _RECTIFIERS):
        return None
    parent_name, _, own = layer.rpartition(".")
    parent = get_layer(model, parent_name) if parent_name else model
    previous: tuple[str, nn.Module] | None = None
    for name, child in parent.named_children():
        if name == own:
            break
        previous = (name, child)
    if previous is None or not isinstance(previous[1], nn.Conv2d | nn.BatchNorm2d):
        return None
    return f"{parent_name}.{previous[0]}" if parent_name else previous[0]


def _weight_scores(model: nn.Module, head: GapHead, layer: str, channel: int) -> np.ndarray:
    weight = get_layer(model, head.classifier).weight.detach()
    if weight.ndim == 4:  # a 1x1 conv head: (K, C, 1, 1)
        weight = weight[:, :, 0, 0]
    if not 0 <= channel < weight.shape[1]:
        raise ValueError(f"channel must be in 0..{weight.shape[1] - 1}, got {channel}.")
    return weight[:, channel].float().cpu().numpy()


def _gradient_scores(model: nn.Module, x: torch.Tensor, layer: str, channel: int) -> np.ndarray:
    module = get_layer(model, layer)
    shift: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            raise ValueError(f"Layer {layer!r} does not output channels.")
        if not 0 <= channel < output.shape[1]:
            raise ValueError(f"channel must be in 0..{output.shape[1] - 1}, got {channel}.")
        mask = torch.zeros(output.shape[1], device=output.device, dtype=output.dtype)
        mask[channel] = 1.0
        mask = mask.view(1, -1, *([1] * (output.ndim - 2)))
        return output + shift["delta"].to(output.dtype) * mask

    with inference_session(model), forward_output_hooks([module], hook), fwad.dual_level():
        device = next(model.parameters()).device
        shift["delta"] = fwad.make_dual(torch.zeros((), device=device),
                                        torch.ones((), device=device))  # fmt: skip
        logits = model(x.to(device))
        tangent = fwad.unpack_dual(logits).tangent
    if tangent is None:  # the layer's output does not reach the logits
        return np.zeros(logits.shape[-1], np.float32)
    return tangent[0].detach().float().cpu().numpy()


def channel_classes(
    model: nn.Module,
    x: torch.Tensor | None = None,
    *,
    layer: str,
    channel: int,
    method: str = "gradient",
    head: GapHead | None = None,
    top: int = 5,
    categories: Sequence[str] | None = None,
) -> ChannelClasses:
    """The classes whose logits one channel feeds most (see the module docstring).

    Args:
        model: The classifier (left unchanged: one locked turn, state restored).
        x: ``(1, 3, H, W)`` the current image (``"gradient"`` only).
        layer: Dotted layer name.
        channel: Channel index.
        method: ``"weights"`` (the head's weights; needs ``head`` with ``layer`` among its
            ``feature_layers``) or ``"gradient"`` (forward-mode derivative on ``x``).
        head: The model's GAP head (``ModelSpec.facts().head``), for ``"weights"``.
        top: How many classes to list at each end.
        categories: Class names, to fill ``names``.

    Raises:
        ValueError: An unknown method or layer, a channel out of range, ``"weights"`` for a
            layer that does not feed the head, or ``"gradient"`` without an image.
    """
    if method not in CLASS_METHODS:
        raise ValueError(f"method must be one of {', '.join(CLASS_METHODS)}, not {method!r}.")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}.")
    if isinstance(channel, bool) or not isinstance(channel, int | np.integer) or channel < 0:
        raise ValueError(f"channel must be a non-negative integer, got {channel!r}.")
    get_layer(model, layer)  # a clear error for a bad name
    if method == "weights":
        if head is None or not weights_apply(head, layer):
            feeds = ", ".join(head.feature_layers) if head is not None else "none (no GAP head)"
            raise ValueError(
                f"The weights measure applies only to the layer feeding the classifier "
                f"({feeds}), not {layer!r}; use method='gradient'."
            )
        scores = _weight_scores(model, head, layer, int(channel))
    else:
        if x is None or x.ndim != 4 or x.shape[0] != 1:
            raise ValueError("The gradient measure needs the current image as a (1, 3, H, W) x.")
        scores = _gradient_scores(model, x, layer, int(channel))
    order = np.lexsort((np.arange(len(scores)), -scores))
    best = order[:top]
    worst = np.lexsort((np.arange(len(scores)), scores))[:top]
    names = tuple(categories[int(i)] for i in best) if categories is not None else ()
    return ChannelClasses(layer, int(channel), method, scores.astype(np.float32), best, worst,
                          names)  # fmt: skip
