"""Class activation maps: one skeleton ``relu(sum_k w_k A_k)``, a weighting per variant."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from vizcore.attribution.gradients import guided_backprop
from vizcore.attribution.targets import (
    AttributionMap,
    ResolvedTarget,
    Target,
    _channels_last,
    _check_input,
    _result,
    _upsample,
    resolve_target,
)
from vizcore.core.hooks import (
    capture_activations,
    forward_output_hooks,
    inference_session,
)
from vizcore.core.layers import get_layer
from vizcore.models.discovery import facts_for

# --------------------------------------------------------------------------------------------
# Class activation maps: one skeleton relu(sum_k w_k A_k), per-variant weights


def cam_skeleton(
    acts: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """``relu(sum_k w_k A_k + b)`` for activations ``(C, h, w)`` and weights ``(C,)``."""
    # A broadcast multiply-sum: torch.einsum parses its equation on every call (~0.1 ms).
    return torch.relu((acts * weights.view(-1, 1, 1)).sum(dim=0) + bias)


def grad_cam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: ``w_k = mean_ij dS/dA_k(i, j)`` (global-average-pooled gradients)."""
    return grads.mean(dim=(1, 2))


def grad_cam_plus_plus_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++: ``w_k = sum_ij a_k(i,j) relu(g)``, ``a = g^2 / (2 g^2 + sum_ij A_k g^3)``.

    The closed form with exponential-free second/third derivatives (paper eq. 19), exactly
    as pytorch-grad-cam's ``GradCAMPlusPlus`` (eps 1e-6; ``a = 0`` where the gradient is 0), so
    the two can be cross-checked.
    """
    g2 = grads**2
    g3 = g2 * grads
    sum_acts = acts.sum(dim=(1, 2), keepdim=True)
    alpha = g2 / (2 * g2 + sum_acts * g3 + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp(min=0) * alpha).sum(dim=(1, 2))


def _layer_output(output: Any, layer: str) -> torch.Tensor:
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        kind = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(
            f"Layer {layer!r} outputs {kind}; CAM methods need a convolutional layer with a "
            "(N, C, h, w) output."
        )
    return output


def _layer_acts_and_grads(
    model: nn.Module, x: torch.Tensor, layer: str, target: Target
) -> tuple[torch.Tensor, torch.Tensor, ResolvedTarget]:
    """Activations ``A`` of ``layer`` and ``dS/dA`` at the cost of about one forward.

    The layers before ``layer`` run in inference mode (no autograd bookkeeping at all); the
    hook leaves inference mode for the rest of the forward and hands on a clone of ``A`` that
    is a leaf requiring grad, so the graph starts at the layer and the backward stops there.
    Parameters are frozen by the caller's inference session.

    A model that reuses a tensor from before ``layer`` in a way autograd must save or modify
    (e.g. a gate ``x * s`` with ``x`` from before the layer) cannot take an inference tensor;
    the forward is then repeated with gradients merely disabled before the layer.
    """
    needs_fallback = _NO_INFERENCE_PREFIX.setdefault(model, set())
    if layer not in needs_fallback:
        try:
            return _acts_and_grads_once(model, x, layer, target, early=torch.inference_mode)
        except RuntimeError as exc:
            if "nference tensor" not in str(exc):
                raise
            needs_fallback.add(layer)  # remembered: later calls take one forward, not two
    return _acts_and_grads_once(model, x, layer, target, early=torch.no_grad)


#: Per model, the layers whose later ops cannot take inference tensors (see above).
_NO_INFERENCE_PREFIX: weakref.WeakKeyDictionary[nn.Module, set[str]] = weakref.WeakKeyDictionary()


def _acts_and_grads_once(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    target: Target,
    *,
    early: Callable[[], Any],
) -> tuple[torch.Tensor, torch.Tensor, ResolvedTarget]:
    module = get_layer(model, layer)
    captured: list[torch.Tensor] = []
    with ExitStack() as modes:
        modes.enter_context(early())  # the layers before the hook keep no autograd state

        def hook(_m: nn.Module, _i: Any, output: Any) -> torch.Tensor:
            out = _layer_output(output, layer)
            # From here to the end of the forward: a normal autograd graph. The mode is left
            # when ``modes`` closes, after the forward (nested modes unwind in order).
            modes.enter_context(torch.inference_mode(False))
            modes.enter_context(torch.enable_grad())
            leaf = out.clone().requires_grad_(True)  # a normal tensor, also in inference mode
            captured.append(leaf)
            return leaf.clone()  # in-place ops after the layer must not touch the leaf

        with forward_output_hooks([module], hook):
            logits = model(_channels_last(x))
    _check_called_once(captured, layer)
    resolved = resolve_target(logits.detach(), target)
    with torch.enable_grad():
        score = resolved.score(logits).sum()
        if not score.requires_grad:
            raise ValueError(f"The target score does not depend on layer {layer!r}.")
        (grads,) = torch.autograd.grad(score, captured[0])
    return captured[0].detach()[0], grads[0], resolved


def _check_called_once(captured: list[torch.Tensor], layer: str) -> None:
    if not captured:
        raise ValueError(f"Layer {layer!r} did not run in the forward pass; pick another layer.")
    if len(captured) > 1:
        raise ValueError(
            f"Layer {layer!r} ran {len(captured)} times in one forward pass (a reused module); "
            "pick a layer that runs once."
        )


CamWeights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gradient_cam(
    name: str, weight_fn: CamWeights, model: nn.Module, x: torch.Tensor, target: Target, layer: str
) -> AttributionMap:
    x = _check_input(x, model)
    start = time.perf_counter()
    with inference_session(model):
        acts, grads, resolved = _layer_acts_and_grads(model, x, layer, target)
    raw = cam_skeleton(acts, weight_fn(acts, grads))
    return _result(
        name, resolved, _upsample(raw, tuple(x.shape[-2:])), raw, layer=layer, start=start
    )


def grad_cam(
    model: nn.Module, x: torch.Tensor, *, target: Target = None, layer: str
) -> AttributionMap:
    """Grad-CAM (Selvaraju et al., ICCV 2017).

    ``L = relu(sum_k w_k A_k)``, ``w_k = mean_ij dS/dA_k(i, j)``, ``S`` the target logit; the
    ``(h, w)`` map (``raw``) is bilinearly upsampled to the input (``map``).

    Cost: one forward; the backward stops at ``layer`` (no gradient to the input or weights).

    Raises:
        ValueError: Unknown layer (with close matches), a layer without a 4-D output or that
            does not run exactly once, or a bad target.
    """
    return _gradient_cam("grad_cam", grad_cam_weights, model, x, target, layer)


def grad_cam_plus_plus(
    model: nn.Module, x: torch.Tensor, *, target: Target = None, layer: str
) -> AttributionMap:
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018).

    ``L = relu(sum_k w_k A_k)``, ``w_k = sum_ij alpha_k(i,j) relu(dS/dA_k(i,j))``, with the
    closed-form ``alpha`` of :func:`grad_cam_plus_plus_weights` (pytorch-grad-cam's form).

    Deviation: ``S`` is the logit, not ``exp(logit)``: the closed form assumes the exponential,
    as every public implementation does.
    """
    return _gradient_cam("grad_cam_plus_plus", grad_cam_plus_plus_weights, model, x, target, layer)


def cam(model: nn.Module, x: torch.Tensor, *, target: Target = None, layer: str) -> AttributionMap:
    """Class activation mapping (Zhou et al., CVPR 2016).

    ``M_c = relu(sum_k w_k^c A_k)`` where ``A`` is the layer feeding the global average pool and
    ``w^c`` the linear classifier's row for class ``c``. The head is found once per model by
    :func:`vizcore.models.discovery.find_gap_head` (checked numerically on a probe, so a wrong
    layer cannot give a silent wrong map). Supported heads:

    * GAP + linear (EfficientNet-Lite0: layer ``head.act``, classifier ``fc``; ResNet);
    * ``A`` feeds a 1x1 convolution classifier followed by (ReLU +) GAP (SqueezeNet: layer
      ``fire9``, classifier ``conv10``): the class map is the classifier's output channel,
      ``relu(sum_k w_k^c A_k + b_c)`` (the bias is included);
    * ``A`` already has one channel per class and GAP of it gives the logits (SqueezeNet's
      ``relu10``): ``w^c`` is one-hot.

    Deviation: the paper drops the ReLU; it is kept here, as in every CAM variant.

    Raises:
        ValueError: The model has no such head, the layer is not the head's input (use
            Grad-CAM, which works on any convolutional layer), or the target is a callable.
    """
    x = _check_input(x, model)
    start = time.perf_counter()
    get_layer(model, layer)
    head = facts_for(model, input_size=tuple(x.shape[-2:])).head
    if head is None:
        raise ValueError(
            "CAM needs a model whose class scores are a global average over positions of a "
            "spatial map followed by a linear layer or a 1x1 convolution; this model's head is "
            "different. Use Grad-CAM, which works on any convolutional layer."
        )
    if layer not in head.feature_layers and layer not in head.class_map_layers:
        raise ValueError(
            f"CAM needs the layer that feeds the classifier through global average pooling; "
            f"for this model that is {head.feature_layer!r}, not {layer!r}. Pick it, or use "
            "Grad-CAM, which works on any convolutional layer."
        )
    with (
        inference_session(model),
        torch.inference_mode(),
        capture_activations(model, [layer], detach=True) as captured,
    ):
        logits = model(_channels_last(x)).float()
        calls = captured.calls(layer)
        acts = _layer_output(captured[layer], layer).float() if calls == 1 else None
    if acts is None:
        raise ValueError(f"Layer {layer!r} ran {calls} times in one forward pass; CAM needs one.")
    resolved = resolve_target(logits, target)
    if resolved.index is None:
        raise ValueError("CAM explains one class: give a class index (or None), not a callable.")
    c = resolved.index
    bias: torch.Tensor | float = 0.0
    if layer in head.class_map_layers:
        weights = F.one_hot(torch.tensor(c, device=acts.device), logits.shape[1]).float()
    else:
        weights, head_bias = head.class_weights(model, c)
        if head.kind == "conv1x1":
            bias = head_bias
    raw = cam_skeleton(acts[0], weights, bias)
    return _result(
        "cam", resolved, _upsample(raw, tuple(x.shape[-2:])), raw, layer=layer, start=start
    )


def guided_grad_cam(
    model: nn.Module, x: torch.Tensor, *, target: Target = None, layer: str
) -> AttributionMap:
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): guided backprop times Grad-CAM.

    ``R = GB(x) * up(L_GradCAM)`` elementwise, ``map = max_c |R_c|``; ``raw`` is the signed
    ``(3, H, W)`` product. The Grad-CAM map is upsampled bilinearly (captum's
    ``GuidedGradCam`` defaults to nearest).
    """
    start = time.perf_counter()
    gb = guided_backprop(model, x, target=target)  # first: it refuses functional-ReLU models
    fixed: Target = gb.target if gb.target is not None else target
    gc = grad_cam(model, x, target=fixed, layer=layer)
    raw = torch.from_numpy(gb.raw) * torch.from_numpy(gc.map)[None]
    resolved = ResolvedTarget(gc.target, lambda t: t, lambda t: t)
    return _result(
        "guided_grad_cam", resolved, raw.abs().amax(dim=0), raw, layer=layer, start=start
    )
