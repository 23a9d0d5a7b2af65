"""What each method costs, in model passes and seconds measured on this machine."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vizcore.attribution.cams import cam, grad_cam, grad_cam_plus_plus, guided_grad_cam
from vizcore.attribution.gradients import (
    GradientMethod,
    deconvnet,
    guided_backprop,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from vizcore.attribution.perturbation import (
    Fill,
    occlusion,
    occlusion_grid,
    occlusion_progressive,
    occlusion_schedule,
    score_cam,
)
from vizcore.attribution.targets import BATCH_SIZE, Target, _channels_last, _check_positive
from vizcore.core.checks import check_int
from vizcore.core.hooks import (
    inference_session,
)
from vizcore.core.layers import get_layer
from vizcore.models.discovery import facts_for

# --------------------------------------------------------------------------------------------
# Costs: the model passes each method makes, and measured seconds per pass


@dataclass(frozen=True)
class PassTimes:
    """Measured seconds per image of each kind of model pass, for one model and input size.

    Attributes:
        forward: One batch-1 forward.
        batched_forward: Per image of a ``BATCH_SIZE`` forward (channels_last input).
        backward: One batch-1 forward + backward to the input.
        batched_backward: Per image of a batched forward + backward (estimated, see
            :func:`measure_pass_times`).
    """

    forward: float
    batched_forward: float
    backward: float
    batched_backward: float

    def __post_init__(self) -> None:
        for name in ("forward", "batched_forward", "backward", "batched_backward"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PassTimes.{name} must be finite seconds >= 0, got {value!r}.")


@dataclass(frozen=True)
class Cost:
    """The model passes one call of a method makes, counted in images.

    ``seconds(times)`` turns it into an estimate; work other than model passes (hooks, masks,
    the map itself) is not counted, so the estimate is a lower bound that a measured run
    corrects (the page's time left does).
    """

    forwards: int = 0
    batched_forwards: int = 0
    backwards: int = 0
    batched_backwards: int = 0

    def __add__(self, other: Cost) -> Cost:
        if not isinstance(other, Cost):
            return NotImplemented
        return Cost(
            self.forwards + other.forwards,
            self.batched_forwards + other.batched_forwards,
            self.backwards + other.backwards,
            self.batched_backwards + other.batched_backwards,
        )

    def __mul__(self, n: int) -> Cost:
        if not isinstance(n, int) or isinstance(n, bool):
            return NotImplemented
        n = check_int("A cost multiplier", n, minimum=0)
        return Cost(
            self.forwards * n,
            self.batched_forwards * n,
            self.backwards * n,
            self.batched_backwards * n,
        )

    __rmul__ = __mul__

    @property
    def passes(self) -> int:
        """Images through the model, forward or forward+backward."""
        return self.forwards + self.batched_forwards + self.backwards + self.batched_backwards

    def seconds(self, times: PassTimes) -> float:
        """Estimated seconds of model passes at ``times`` (see :func:`measure_pass_times`)."""
        return (
            self.forwards * times.forward
            + self.batched_forwards * times.batched_forward
            + self.backwards * times.backward
            + self.batched_backwards * times.batched_backward
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def measure_pass_times(
    model: nn.Module,
    *,
    size: tuple[int, int] = (224, 224),
    batch_size: int = BATCH_SIZE,
    repeats: int = 2,
) -> PassTimes:
    """Time the model's passes on random input of ``size`` (best of ``repeats``, after a warm-up).

    Measures a batch-1 forward, a ``batch_size`` forward and a batch-1 forward + backward to
    the input, on the model's device, in one turn on the model. The batched forward + backward
    is not run (it would double the cost of measuring): it is estimated as
    ``batched_forward * backward / forward``. Costs about ``(repeats + 1) * (batch_size + 4)``
    forward-equivalents; the UI measures once per model and size.

    Raises:
        ValueError: Bad ``size``, ``batch_size`` or ``repeats``.
    """
    height = _check_positive("The image height", int(size[0]))
    width = _check_positive("The image width", int(size[1]))
    batch_size = _check_positive("batch_size", batch_size)
    repeats = _check_positive("repeats", repeats)
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    one = _channels_last(torch.rand(1, 3, height, width, generator=generator).to(device))
    many = _channels_last(torch.rand(batch_size, 3, height, width, generator=generator).to(device))

    def best(run: Callable[[], Any]) -> float:
        run()  # warm-up: first calls allocate and pick kernels
        _sync(device)
        fastest = float("inf")
        for _ in range(repeats):
            begin = time.perf_counter()
            run()
            _sync(device)
            fastest = min(fastest, time.perf_counter() - begin)
        return fastest

    def backward() -> None:
        xg = one.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(xg).float().max(dim=1).values.sum(), xg)

    with inference_session(model):
        with torch.inference_mode():
            forward = best(lambda: model(one))
            batched = best(lambda: model(many)) / batch_size
        back = best(backward)
    return PassTimes(
        forward=forward,
        batched_forward=batched,
        backward=back,
        batched_backward=batched * back / forward if forward > 0 else back,
    )


def occlusion_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    target: Target = None,
    window: int = 32,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int = BATCH_SIZE,
) -> Cost:
    """:func:`occlusion`: one forward for the reference, one batched forward per position."""
    rows, cols = occlusion_grid(size, window, stride)
    return Cost(forwards=1, batched_forwards=rows * cols)


def occlusion_progressive_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    target: Target = None,
    window: int = 32,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int = BATCH_SIZE,
    first_positions: int = 64,
    levels: int | None = None,
) -> Cost:
    """:func:`occlusion_progressive`: every position once plus one reference forward per level.

    ``levels=1`` gives the cost of the first (coarse) map only, ``None`` of all levels.
    """
    schedule = occlusion_schedule(
        size, window=window, stride=stride, first_positions=first_positions
    )
    if levels is not None:
        schedule = schedule[: check_int("levels", levels, minimum=1)]
    return Cost(forwards=len(schedule), batched_forwards=sum(len(level) for level in schedule))


def saliency_cost(model: nn.Module, size: tuple[int, int], *, target: Target = None) -> Cost:
    """:func:`saliency`, :func:`guided_backprop`, :func:`deconvnet`: one forward + backward."""
    return Cost(backwards=1)


def smoothgrad_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    method: GradientMethod = saliency,
    target: Target = None,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    **options: Any,
) -> Cost:
    """:func:`smoothgrad`: one forward for the target, then ``samples`` calls of ``method``."""
    samples = _check_positive("samples", samples)
    return Cost(forwards=1) + samples * method_cost(method)(model, size, **options)


def integrated_gradients_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    target: Target = None,
    steps: int = 50,
    method: str = "gausslegendre",
    batch_size: int = BATCH_SIZE,
) -> Cost:
    """:func:`integrated_gradients`: the two ends (one batch-2 forward), ``steps`` batched
    forward + backward passes."""
    steps = _check_positive("steps", steps)
    return Cost(forwards=2, batched_backwards=steps)


def cam_cost(
    model: nn.Module, size: tuple[int, int], *, target: Target = None, layer: str = ""
) -> Cost:
    """:func:`cam`: one forward."""
    return Cost(forwards=1)


def grad_cam_cost(
    model: nn.Module, size: tuple[int, int], *, target: Target = None, layer: str = ""
) -> Cost:
    """:func:`grad_cam`, :func:`grad_cam_plus_plus`: one forward + a backward to ``layer``
    (counted as a whole backward: an upper bound for deep layers)."""
    return Cost(backwards=1)


def score_cam_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    target: Target = None,
    layer: str,
    batch_size: int = BATCH_SIZE,
) -> Cost:
    """:func:`score_cam`: one forward, then one batched forward per channel of ``layer``.

    The channel count comes from the model's probe (:func:`vizcore.models.discovery.facts_for`),
    so no forward runs here.

    Raises:
        ValueError: ``layer`` is not a module with a (N, C, ...) output in the probe.
    """
    info = facts_for(model, input_size=size).layer(layer)
    if info is None or len(info.shape) < 2:
        get_layer(model, layer)  # an unknown name gets the usual message listing valid ones
        raise ValueError(
            f"Layer {layer!r} has no (N, C, H, W) output in the model's probe forward; "
            "Score-CAM needs a feature map."
        )
    return Cost(forwards=1, batched_forwards=int(info.shape[1]))


def guided_grad_cam_cost(
    model: nn.Module, size: tuple[int, int], *, target: Target = None, layer: str = ""
) -> Cost:
    """:func:`guided_grad_cam`: guided backprop and Grad-CAM, one forward + backward each."""
    return Cost(backwards=2)


CostFunction = Callable[..., Cost]

_COSTS: dict[Callable[..., Any], CostFunction] = {
    occlusion: occlusion_cost,
    occlusion_progressive: occlusion_progressive_cost,
    saliency: saliency_cost,
    smoothgrad: smoothgrad_cost,
    deconvnet: saliency_cost,
    guided_backprop: saliency_cost,
    integrated_gradients: integrated_gradients_cost,
    cam: cam_cost,
    grad_cam: grad_cam_cost,
    grad_cam_plus_plus: grad_cam_cost,
    score_cam: score_cam_cost,
    guided_grad_cam: guided_grad_cam_cost,
}


#: Options that change how a pass runs (precision, device, progress), not how many passes:
#: :func:`method_cost` drops them, so a caller can pass a method's full options.
PASS_NEUTRAL_OPTIONS: frozenset[str] = frozenset({"target", "exact", "device", "on_step"})


def method_cost(method: Callable[..., Any]) -> CostFunction:
    """The cost function of an attribution function: ``cost(model, size, **its options)``.

    Options in :data:`PASS_NEUTRAL_OPTIONS` are accepted and ignored; any other option the
    cost function does not know raises ``TypeError`` as a call of the method would.

    Raises:
        ValueError: ``method`` is not one of this module's attribution functions.
    """
    try:
        fn = _COSTS[method]
    except (KeyError, TypeError):
        name = getattr(method, "__name__", repr(method))
        raise ValueError(
            f"No cost function for {name}; known: {', '.join(f.__name__ for f in _COSTS)}."
        ) from None

    def cost(model: nn.Module, size: tuple[int, int], **options: Any) -> Cost:
        kept = {k: v for k, v in options.items() if k not in PASS_NEUTRAL_OPTIONS}
        return fn(model, size, **kept)

    cost.__name__ = fn.__name__
    cost.__doc__ = fn.__doc__
    return cost
