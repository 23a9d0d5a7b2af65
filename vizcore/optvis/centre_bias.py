"""The class-evidence map and the centre-biased term of multifaceted visualization (Nguyen,
Yosinski & Clune 2016, section 2.3).

For a model with a GAP head the logit of class ``c`` is the mean over positions of a map
``M_c`` (:class:`ClassMap`); the centre bias rewards evidence inside a centred Gaussian and
penalizes positive evidence outside it. The paper's schedule (heavy blur, then mostly central
updates) is replaced by this one differentiable term; see
:func:`vizcore.optvis.multifaceted.multifaceted_class_visualization` for the measured effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.devices import to_model_device
from vizcore.core.hooks import forward_output_hooks, inference_session
from vizcore.core.layers import get_layer
from vizcore.models.discovery import facts_for
from vizcore.optvis import objectives

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


def maps_close_rel(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Whether ``a`` equals ``b`` to ``rtol`` of ``b``'s largest magnitude (at least 1)."""
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


def centre_bias_objective(
    cmap: ClassMap, target: int, weight: float, sigma: float
) -> objectives.Objective:
    """The centre-bias term: ``weight`` x (centre evidence - positive border evidence)."""

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
