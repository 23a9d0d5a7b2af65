"""Objectives: composable callables ``(acts, logits) -> (N,)`` to maximize (``+``, ``-``, ``*``)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence

import torch

from vizcore.core.checks import check_int

Acts = Mapping[str, torch.Tensor]
ObjectiveFn = Callable[[Acts, "torch.Tensor | None"], torch.Tensor]

#: Prefix of the activation keys that hold a reference image's features (see ``reference=``).
REFERENCE_PREFIX = "reference:"


def reference_key(layer: str) -> str:
    """Key under which :func:`optimize` passes the reference image's activations of ``layer``."""
    return REFERENCE_PREFIX + layer


# --------------------------------------------------------------------------------- objectives


class Objective:
    """A value per batch item to maximize, computed from captured activations and logits.

    Args:
        fn: ``fn(acts, logits) -> Tensor`` of shape ``(N,)``; ``acts`` maps layer names (and
            :func:`reference_key` names) to activations; ``logits`` is ``None`` unless
            ``needs_logits``.
        layers: Layers whose activations ``fn`` reads.
        needs_logits: Whether ``fn`` reads the model output (else the forward pass may stop at
            the deepest captured layer).
        needs_reference: Whether ``fn`` reads a reference image's activations.
        name: A short description, for messages.
    """

    def __init__(
        self,
        fn: ObjectiveFn,
        *,
        layers: frozenset[str] | Sequence[str] = frozenset(),
        needs_logits: bool = False,
        needs_reference: bool = False,
        name: str = "objective",
    ) -> None:
        self.fn = fn
        self.layers = frozenset(layers)
        self.needs_logits = needs_logits
        self.needs_reference = needs_reference
        self.name = name

    def __call__(self, acts: Acts, logits: torch.Tensor | None) -> torch.Tensor:
        return self.fn(acts, logits)

    def _combine(self, other: Objective, sign: float, symbol: str) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        a, b = self, other
        return Objective(
            lambda acts, logits: a(acts, logits) + sign * b(acts, logits),
            layers=a.layers | b.layers,
            needs_logits=a.needs_logits or b.needs_logits,
            needs_reference=a.needs_reference or b.needs_reference,
            name=f"({a.name} {symbol} {b.name})",
        )

    def __add__(self, other: Objective) -> Objective:
        return self._combine(other, 1.0, "+")

    def __radd__(self, other: object) -> Objective:
        if other == 0:  # so that sum(objectives) works
            return self
        return NotImplemented

    def __sub__(self, other: Objective) -> Objective:
        return self._combine(other, -1.0, "-")

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __mul__(self, scale: float) -> Objective:
        if not isinstance(scale, (int, float)):
            return NotImplemented
        a, s = self, float(scale)
        return Objective(
            lambda acts, logits: s * a(acts, logits),
            layers=a.layers,
            needs_logits=a.needs_logits,
            needs_reference=a.needs_reference,
            name=f"{s:g}·{a.name}",
        )

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.name}, layers={sorted(self.layers)})"


def class_logit(k: int | Sequence[int]) -> Objective:
    """The pre-softmax score S_k(I) (Simonyan et al. 2014); a sequence gives one class per item."""
    if isinstance(k, str | bool | numbers.Number) or not hasattr(k, "__iter__"):
        classes = [check_int("The class index", k, minimum=0)]
    else:
        classes = [check_int("Each class index", c, minimum=0) for c in k]
    if not classes:
        raise ValueError("class_logit() needs at least one class index.")

    def fn(_acts: Acts, logits: torch.Tensor | None) -> torch.Tensor:
        assert logits is not None
        n, num_classes = logits.shape[0], logits.shape[-1]
        if any(not 0 <= c < num_classes for c in classes):
            raise ValueError(f"Class indices must be in [0, {num_classes - 1}], got {classes}.")
        if len(classes) == 1:
            return logits[:, classes[0]]
        if len(classes) != n:
            raise ValueError(f"{len(classes)} classes for a batch of {n} images: give one each.")
        index = torch.tensor(classes, device=logits.device)
        return logits.gather(1, index[:, None])[:, 0]

    return Objective(fn, needs_logits=True, name=f"logit{classes}")


def _layer_act(acts: Acts, layer: str, c: int | None = None) -> torch.Tensor:
    act = acts[layer]
    if act.ndim < 2:
        raise ValueError(f"Layer {layer!r} has output shape {tuple(act.shape)}; need (N, C, ...).")
    if c is not None and not 0 <= c < act.shape[1]:
        raise ValueError(f"Layer {layer!r} has {act.shape[1]} channels; got channel {c}.")
    return act


def channel(layer: str, c: int) -> Objective:
    """Mean activation of channel ``c`` of ``layer`` over all positions."""
    c = check_int("The channel", c, minimum=0)

    def fn(acts: Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        act = _layer_act(acts, layer, c)[:, c]
        return act.reshape(act.shape[0], -1).mean(1)

    return Objective(fn, layers={layer}, name=f"{layer}:{c}")


def neuron(layer: str, c: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: channel ``c`` of ``layer`` at position ``(y, x)`` (the centre by default)."""
    c = check_int("The channel", c, minimum=0)
    y = None if y is None else check_int("The row y", y, minimum=0)
    x = None if x is None else check_int("The column x", x, minimum=0)

    def fn(acts: Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        act = _layer_act(acts, layer, c)
        if act.ndim == 2:
            return act[:, c]
        height, width = act.shape[-2:]
        yy = height // 2 if y is None else y
        xx = width // 2 if x is None else x
        if not (0 <= yy < height and 0 <= xx < width):
            raise ValueError(f"Position ({yy}, {xx}) is outside {layer!r}'s {height}x{width} map.")
        return act[:, c, yy, xx]

    return Objective(fn, layers={layer}, name=f"{layer}:{c}@{y},{x}")


def layer_l2(layer: str) -> Objective:
    """DeepDream's objective 0.5·mean(A²) over a layer's activations (Mordvintsev et al. 2015)."""

    def fn(acts: Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        act = acts[layer]
        return 0.5 * act.reshape(act.shape[0], -1).pow(2).mean(1)

    return Objective(fn, layers={layer}, name=f"L2({layer})")


def feature_match(layer: str, target: torch.Tensor | None = None) -> Objective:
    """Negative relative feature error −‖φ(I) − φ0‖² / ‖φ0‖² (Mahendran & Vedaldi 2015).

    Args:
        layer: The layer whose features to match.
        target: The target features φ0 (broadcast over the batch). ``None`` takes them from the
            reference image passed to :func:`optimize` (transformed exactly like the optimized
            image each step, so jitter does not make the target unreachable).
    """
    fixed = None if target is None else target.detach()

    def fn(acts: Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        act = acts[layer]
        goal = acts[reference_key(layer)] if fixed is None else fixed.to(act.dtype)
        if goal.shape[1:] != act.shape[1:]:
            raise ValueError(
                f"Target features of {layer!r} have shape {tuple(goal.shape[1:])}, the image's "
                f"{tuple(act.shape[1:])}: use the same image size for both."
            )
        diff = (act - goal).reshape(act.shape[0], -1).pow(2).sum(1)
        norm = goal.reshape(goal.shape[0], -1).pow(2).sum(1).clamp_min(1e-12)
        return -diff / norm

    return Objective(fn, layers={layer}, needs_reference=target is None, name=f"match({layer})")
