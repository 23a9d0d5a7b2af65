"""The parts of a class activation map: its channel weights and the maps they weigh.

Every CAM variant computes ``L = relu(sum_k w_k A_k + b)`` (Zhou et al., CVPR 2016; Selvaraju et
al., ICCV 2017; Chattopadhyay et al., WACV 2018) and differs only in ``w``. To teach that sum, the
"How it works" panel shows the channels that contribute most to this image's map: their weights
``w_k``, their activation maps ``A_k`` and the share of the whole map they account for. The sum
of all ``w_k A_k`` (plus ``b``), through the ReLU, is exactly the map the method returns
(:attr:`vizcore.attribution.AttributionMap.raw`); a test checks that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vizcore.attribution import cams, targets
from vizcore.core.checks import check_int
from vizcore.core.hooks import capture_activations, inference_session
from vizcore.core.layers import get_layer
from vizcore.models.discovery import facts_for

#: The methods whose weights can be decomposed, by method id.
DECOMPOSABLE: tuple[str, ...] = ("cam", "grad_cam", "grad_cam_plus_plus")


@dataclass(frozen=True)
class CamParts:
    """The weighted sum behind one CAM map, top channels first.

    Attributes:
        method: ``"cam"``, ``"grad_cam"`` or ``"grad_cam_plus_plus"``.
        layer: The layer whose activations ``A`` are weighed.
        target: The class explained.
        weights: ``(C,)`` every channel's weight ``w_k``.
        channels: ``(k,)`` indices of the channels with the largest contribution
            ``sum_ij w_k A_k(i, j)`` (positive first, as they build the map).
        activations: ``(k, h, w)`` those channels' maps ``A_k``.
        contributions: ``(k,)`` their ``sum_ij w_k A_k(i, j)``.
        bias: The constant ``b`` added before the ReLU (SqueezeNet's 1x1-conv classifier, else 0).
        total: ``(h, w)`` ``relu(sum_k w_k A_k + b)`` over all channels: the method's map at the
            layer's resolution.
        top_share: Fraction of the positive contributions that the listed channels carry.
    """

    method: str
    layer: str
    target: int
    weights: np.ndarray
    channels: np.ndarray
    activations: np.ndarray
    contributions: np.ndarray
    bias: float
    total: np.ndarray
    top_share: float


def cam_parts(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str,
    method: str = "grad_cam",
    target: int | None = None,
    top_k: int = 6,
) -> CamParts:
    """Decompose a CAM-family map of one image into its top ``top_k`` channels.

    The weights are computed exactly as the method itself computes them
    (:func:`~vizcore.attribution.grad_cam_weights`,
    :func:`~vizcore.attribution.grad_cam_plus_plus_weights`, or the classifier row
    of the model's GAP head for CAM), so the panel's numbers are the map's own.

    Raises:
        ValueError: Unknown method, a bad ``top_k``, or what the method itself refuses (layer,
            head, target).
    """
    if method not in DECOMPOSABLE:
        raise ValueError(f"method must be one of {', '.join(DECOMPOSABLE)}, not {method!r}.")
    top_k = check_int("top_k", top_k, minimum=1, maximum=64)
    x = targets._check_input(x, model)
    if method == "cam":
        acts, weights, bias, index = _cam_weights(model, x, layer, target)
    else:
        fn = cams.grad_cam_weights if method == "grad_cam" else cams.grad_cam_plus_plus_weights
        with inference_session(model):
            acts, grads, resolved = cams._layer_acts_and_grads(model, x, layer, target)
        weights, bias, index = fn(acts, grads), 0.0, resolved.index
    if index is None:
        raise ValueError("A decomposition explains one class: give a class index or None.")
    return _parts(method, layer, int(index), acts.detach(), weights.detach(), float(bias), top_k)


def _cam_weights(
    model: nn.Module, x: torch.Tensor, layer: str, target: int | None
) -> tuple[torch.Tensor, torch.Tensor, float, int | None]:
    cams.cam(model, x, layer=layer, target=target)  # the method's own checks and messages
    head = facts_for(model, input_size=tuple(x.shape[-2:])).head
    assert head is not None  # cam() refused models without one
    get_layer(model, layer)
    with (
        inference_session(model),
        torch.inference_mode(),
        capture_activations(model, [layer], detach=True) as captured,
    ):
        logits = model(x).float()
        acts = captured[layer].float()[0]
    index = targets.resolve_target(logits, target).index
    assert index is not None
    if layer in head.class_map_layers:
        return acts, F.one_hot(torch.tensor(index), logits.shape[1]).float(), 0.0, index
    weights, head_bias = head.class_weights(model, index)
    bias = float(head_bias) if head.kind == "conv1x1" else 0.0
    return acts, weights.float().to(acts.device), bias, index


def _parts(
    method: str,
    layer: str,
    target: int,
    acts: torch.Tensor,
    weights: torch.Tensor,
    bias: float,
    top_k: int,
) -> CamParts:
    contributions = (acts * weights.view(-1, 1, 1)).sum(dim=(1, 2))
    order = torch.argsort(contributions, descending=True)[: min(top_k, len(contributions))]
    positive = contributions.clamp(min=0).sum()
    share = float(contributions[order].clamp(min=0).sum() / positive) if positive > 0 else 0.0
    total = cams.cam_skeleton(acts, weights, bias)
    return CamParts(
        method=method,
        layer=layer,
        target=target,
        weights=targets._np(weights),
        channels=order.cpu().numpy().astype(np.int64),
        activations=targets._np(acts[order]),
        contributions=targets._np(contributions[order]),
        bias=bias,
        total=targets._np(total),
        top_share=share,
    )
