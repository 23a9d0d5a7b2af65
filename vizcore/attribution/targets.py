"""What every attribution method shares: targets, the map result, input checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from vizcore.core.checks import check_image_batch, check_int
from vizcore.core.devices import model_device

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Target = int | ScoreFn | None
#: Images per forward in batched methods: batch 16 is the fastest per image on the 2-core CPU
#: (perf-anchors.md section 1; batch 64 is 1.8x slower per image on Lite0).
BATCH_SIZE = 16


@dataclass(frozen=True)
class AttributionMap:
    """The result of one attribution method on one image.

    Attributes:
        method: Short method key (``"grad_cam"``, ``"occlusion"``, ...).
        target: The class index explained, or ``None`` for a callable target.
        map: ``(H, W)`` float32 at input resolution; non-negative except for occlusion (a
            probability drop, negative where hiding a patch raises the probability).
        raw: The method's own array before reduction: ``(3, H, W)`` input gradient or
            attribution, ``(h, w)`` class activation map at the layer's resolution, or the
            ``(rows, cols)`` grid of occlusion drops.
        layer: The layer a CAM method used, else ``None``.
        seconds: Wall-clock time of the call.
        stopped: ``True`` when an ``on_step`` callback stopped the run early (partial result).
        info: Method-specific numbers (e.g. ``positions`` for occlusion, ``delta`` for
            integrated gradients).
    """

    method: str
    target: int | None
    map: np.ndarray
    raw: np.ndarray
    layer: str | None
    seconds: float
    stopped: bool = False
    info: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_blank(self) -> bool:
        """``True`` when ``map`` is constant (all zero, typically): it shows nothing.

        For the CAM family this happens when ``sum_k w_k A_k`` is negative everywhere and the
        final ReLU clears it, e.g. at a layer taken before its activation (Lite0's ``head.bn``,
        mostly negative values: Score-CAM there gave an all-zero map on chelsea, issue 12), or
        at any layer for a class whose evidence is absent. ``bench/cam_layers.py`` counts it.
        """
        return self.map.size == 0 or bool(np.ptp(self.map) == 0)


# --------------------------------------------------------------------------------------------
# Targets and inputs


@dataclass(frozen=True)
class ResolvedTarget:
    """A target turned into score functions on logits ``(B, K) -> (B,)``."""

    index: int | None
    score: ScoreFn
    probability: ScoreFn


def resolve_target(logits: torch.Tensor, target: Target) -> ResolvedTarget:
    """Resolve ``target`` against the logits of the unperturbed image.

    Args:
        logits: ``(1, K)`` (or ``(B, K)``; the first row picks the top-1 class) model output.
        target: ``None`` for the top-1 class, an ``int`` class index, or a callable mapping
            logits ``(B, K)`` to scores ``(B,)``.

    Returns:
        The class index (``None`` for a callable) with a ``score`` (the logit, or the callable)
        and a ``probability`` (the softmax probability, or the callable) function.

    Raises:
        ValueError: The index is outside ``0 .. K-1`` or the target has a wrong type.
    """
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (B, classes), got {tuple(logits.shape)}.")
    num_classes = logits.shape[1]
    if target is None:
        index = int(logits[0].argmax())
    elif callable(target):
        fn = target

        def checked(out: torch.Tensor) -> torch.Tensor:
            score = fn(out)
            if not isinstance(score, torch.Tensor) or score.shape != (out.shape[0],):
                raise ValueError(
                    "A callable target must return one score per image, shape (B,); got "
                    f"{getattr(score, 'shape', type(score).__name__)}."
                )
            return score

        return ResolvedTarget(None, checked, checked)
    elif isinstance(target, bool) or not isinstance(target, int | np.integer):
        raise ValueError(
            f"target must be None (top-1), a class index or a callable, not "
            f"{type(target).__name__}."
        )
    else:
        index = int(target)
        if not 0 <= index < num_classes:
            raise ValueError(
                f"Class {index} is out of range: this model has {num_classes} classes, "
                f"numbered 0 to {num_classes - 1}."
            )

    def score(out: torch.Tensor) -> torch.Tensor:
        return out[:, index]

    def probability(out: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out.float(), dim=1)[:, index]

    return ResolvedTarget(index, score, probability)


def _check_input(x: torch.Tensor, model: nn.Module | None = None) -> torch.Tensor:
    check_image_batch(x, model=model)
    x = x.detach().float()
    return x if model is None else x.to(model_device(model))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Input-only channels_last: the convolutions propagate the layout, and the shared model's
    # weights stay as they are (converting them would mutate the shared module).
    return x.contiguous(memory_format=torch.channels_last)


def _upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32, copy=False)


def _result(
    method: str,
    resolved: ResolvedTarget,
    attribution_map: torch.Tensor,
    raw: torch.Tensor,
    *,
    layer: str | None,
    start: float,
    stopped: bool = False,
    info: Mapping[str, float] | None = None,
) -> AttributionMap:
    return AttributionMap(
        method=method,
        target=resolved.index,
        map=np.ascontiguousarray(_np(attribution_map)),
        raw=np.ascontiguousarray(_np(raw)),
        layer=layer,
        seconds=time.perf_counter() - start,
        stopped=stopped,
        info=dict(info or {}),
    )


def _check_positive(name: str, value: int) -> int:
    return check_int(name, value, minimum=1)
