"""Attribution: which input pixels made the model decide.

One function per method, captum's argument order: ``fn(model, x, *, target=None, layer=...,
...) -> AttributionMap``. ``x`` is one RGB image ``(1, 3, H, W)`` in [0, 1] (normalization lives
inside the model). Every function works on the shared model through
:func:`vizcore.core.hooks.inference_session` (lock, eval mode, frozen parameters, restored in
``finally``) and never swaps or mutates a module.

Targets (:func:`resolve_target`): ``None`` is the top-1 class, an ``int`` a class index (its
logit for gradient methods, its softmax probability for occlusion), a callable maps logits
``(B, K)`` to one score per image ``(B,)``.

Methods:

* perturbation: :func:`occlusion` (Zeiler & Fergus 2014);
* gradients to the input: :func:`saliency` (Simonyan et al. 2014), :func:`smoothgrad`
  (Smilkov et al. 2017, a wrapper), :func:`deconvnet` (Zeiler & Fergus 2014),
  :func:`guided_backprop` (Springenberg et al. 2015), :func:`integrated_gradients`
  (Sundararajan et al. 2017);
* class activation maps, one skeleton ``relu(sum_k w_k A_k)`` with per-variant weights:
  :func:`cam` (Zhou et al. 2016), :func:`grad_cam` (Selvaraju et al. 2017),
  :func:`grad_cam_plus_plus` (Chattopadhyay et al. 2018), :func:`score_cam` (Wang et al. 2020),
  and :func:`guided_grad_cam` (Selvaraju et al. 2017).

:data:`METHODS` maps the UI labels to the functions.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn
from torch.overrides import TorchFunctionMode

from vizcore.core.checks import check_float, check_image_batch, check_int, relaxed_range
from vizcore.core.devices import model_device
from vizcore.core.hooks import (
    capture_activations,
    forward_output_hooks,
    inference_session,
    modules_and_parameters,
    wait_notice,
)
from vizcore.core.layers import get_layer
from vizcore.core.precision import check_exact, forward_float, use_bf16
from vizcore.core.progress import OnStep, StepInfo, report, waiting
from vizcore.models.discovery import facts_for, functional_rectifiers, is_rectifier

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
Target = int | ScoreFn | None
Fill = Literal["zero", "gray", "mean", "blur"]

FILLS: tuple[str, ...] = ("zero", "gray", "mean", "blur")
#: Images per forward in batched methods: batch 16 is the fastest per image on the 2-core CPU
#: (perf-anchors.md section 1; batch 64 is 1.8x slower per image on Lite0).
BATCH_SIZE = 16
#: Activation modules whose backward rule guided backprop and deconvnet change.
GATED_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


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


class FunctionalActivationError(ValueError):
    """The model applies ReLU-family activations as function calls, which hooks cannot see."""


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


# --------------------------------------------------------------------------------------------
# Occlusion


def fill_image(x: torch.Tensor, fill: str, *, window: int = 32) -> torch.Tensor:
    """The image that occluded patches are replaced with.

    ``zero``: black; ``gray``: 0.5; ``mean``: the image's per-channel mean; ``blur``: the image
    blurred with a Gaussian of sigma ``window / 4`` (hides detail at the window's scale).
    """
    if fill == "zero":
        return torch.zeros_like(x)
    if fill == "gray":
        return torch.full_like(x, 0.5)
    if fill == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if fill == "blur":
        sigma = max(window / 4.0, 1.0)
        radius = min(int(3 * sigma), min(x.shape[-2:]) - 1)
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        c = x.shape[1]
        padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
        out = F.conv2d(padded, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    raise ValueError(f"Unknown fill {fill!r}; choose one of {', '.join(FILLS)}.")


def occlusion_grid(size: tuple[int, int], window: int, stride: int) -> tuple[int, int]:
    """Number of window positions ``(rows, cols)`` for an image of ``size`` (H, W).

    Positions start at multiples of ``stride``; as in captum, the last row/column of windows
    is added (clipped at the border) when ``stride`` does not divide ``size - window``.

    Raises:
        ValueError: The window is larger than the image, or window/stride are not positive.
    """
    window = _check_positive("The occlusion window", window)
    stride = _check_positive("The occlusion stride", stride)
    height, width = size
    if window > min(height, width):
        raise ValueError(
            f"The occlusion window ({window} px) is larger than the image ({height}x{width} px); "
            f"choose a window of at most {min(height, width)} px."
        )
    rows = math.ceil((height - window) / stride) + 1
    cols = math.ceil((width - window) / stride) + 1
    return rows, cols


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target = None,
    window: int = 32,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int = BATCH_SIZE,
    on_step: OnStep | None = None,
    indices: Sequence[int] | None = None,
    exact: bool = False,
) -> AttributionMap:
    """Occlusion sensitivity (Zeiler & Fergus, ECCV 2014, section 4.2).

    ``map(u) = mean over windows W covering u of [p_c(x) - p_c(x with W filled)]``, the drop
    in the target's softmax probability, averaged over overlapping windows (as captum's
    ``Occlusion``). ``raw`` is the ``(rows, cols)`` grid of drops per window position.

    Deviation: the paper slides a gray square and plots the probability itself; the drop is
    the same picture inverted. Pixels no window covers (``stride > window``) get 0.

    Batched: ``batch_size`` occluded copies per forward, input in channels_last. Reports
    progress after each batch; ``on_step`` returning ``False`` stops with a partial map.

    ``indices`` runs only those window positions (raster indices into the ``(rows, cols)``
    grid, in that order): ``raw`` is then NaN at the others and the map averages the windows
    that ran. :func:`occlusion_progressive` builds its coarse-to-fine schedule on it.

    Precision (:mod:`vizcore.core.precision`): with ``exact=False`` the occluded forwards run under
    bf16 autocast where bf16 is fast here, and so does the reference probability they are
    subtracted from; the target class comes from a float32 forward. ``exact=True`` is float32
    throughout. ``info["bf16"]`` is 1.0 when bf16 was used.

    Raises:
        ValueError: Window larger than the image, stride 0, unknown fill, bad target, an index
            outside the grid or repeated.
    """
    x = _check_input(x, model)
    check_exact(exact)
    if fill not in FILLS:
        raise ValueError(f"Unknown fill {fill!r}; choose one of {', '.join(FILLS)}.")
    batch_size = _check_positive("batch_size", batch_size)
    height, width = x.shape[-2:]
    rows, cols = occlusion_grid((height, width), window, stride)
    order = _occlusion_order(indices, rows * cols)
    positions = len(order)
    start = time.perf_counter()
    baseline = fill_image(x, fill, window=window)
    drops = torch.zeros(positions, device=x.device)
    done = 0
    stopped = False
    with torch.inference_mode():
        with inference_session(model, on_wait=waiting(on_step, 0, positions)):
            logits = model(_channels_last(x))
            bf16 = use_bf16(exact=exact, device=logits.device)
            # The reference in the precision of the occluded forwards.
            same = forward_float(model, _channels_last(x), exact=exact) if bf16 else logits
        resolved = resolve_target(logits, target)
        reference = resolved.probability(same)[0]
        while done < positions:
            n = min(batch_size, positions - done)
            batch = torch.empty(
                (n, *x.shape[1:]), memory_format=torch.channels_last, device=x.device
            )
            batch.copy_(x.expand(n, -1, -1, -1))
            for j in range(n):
                r, c = divmod(order[done + j], cols)
                ys, xs = (
                    slice(r * stride, r * stride + window),
                    slice(c * stride, c * stride + window),
                )
                batch[j, :, ys, xs] = baseline[0, :, ys, xs]
            # One turn per batch: another session's request waits at most about one batch.
            with inference_session(model, on_wait=waiting(on_step, done, positions)):
                out = forward_float(model, batch, exact=exact)
            drops[done : done + n] = reference - resolved.probability(out).float()
            done += n
            info = StepInfo(done, positions, message=f"{done}/{positions} window positions")
            if not report(on_step, info):
                stopped = done < positions
                break
    drops, reference = drops.cpu(), reference.cpu()  # the one copy back: the map adds on the CPU
    total = torch.zeros(height, width, device="cpu")
    counts = torch.zeros(height, width, device="cpu")
    for p in range(done):
        r, c = divmod(order[p], cols)
        ys, xs = slice(r * stride, r * stride + window), slice(c * stride, c * stride + window)
        total[ys, xs] += drops[p]
        counts[ys, xs] += 1
    attribution_map = total / counts.clamp(min=1)
    return _result(
        "occlusion",
        resolved,
        attribution_map,
        _occlusion_raw(drops, order, rows, cols),
        layer=None,
        start=start,
        stopped=stopped,
        info={
            "positions": positions,
            "done": done,
            "reference_probability": float(reference),
            "bf16": float(bf16),
        },
    )


def _occlusion_order(indices: Sequence[int] | None, count: int) -> list[int]:
    """Validated raster indices of the window positions to run (all of them for ``None``)."""
    if indices is None:
        return list(range(count))
    order = [check_int("A window position index", i, minimum=0, maximum=count - 1) for i in indices]
    if not order:
        raise ValueError("indices is empty: give at least one window position, or None for all.")
    if len(set(order)) != len(order):
        raise ValueError("indices repeats a window position; give each position once.")
    return order


def _occlusion_raw(drops: torch.Tensor, order: list[int], rows: int, cols: int) -> torch.Tensor:
    """The ``(rows, cols)`` grid of drops: run positions in place, NaN where none was asked."""
    if len(order) == rows * cols and order == list(range(rows * cols)):
        return drops.view(rows, cols)
    grid = torch.full((rows * cols,), float("nan"))
    grid[torch.tensor(order, dtype=torch.long)] = drops
    return grid.view(rows, cols)


def _coarse_lines(n: int, k: int) -> list[int]:
    """Every ``k``-th of ``n`` grid lines, and always the last one (the border stays covered)."""
    return sorted({*range(0, n, k), n - 1})


def occlusion_schedule(
    size: tuple[int, int], *, window: int = 32, stride: int = 8, first_positions: int = 64
) -> list[list[int]]:
    """The coarse-to-fine levels of :func:`occlusion_progressive`, as raster indices.

    Level 0 keeps every ``k``-th row and column of the ``stride`` grid (and the last ones),
    ``k`` the smallest power of 2 that leaves at most ``first_positions`` positions; level
    ``i`` adds the positions of stride ``k / 2**i * stride``; the last level completes the grid.
    Every position is in exactly one level, so the levels together are the plain occlusion's.

    Raises:
        ValueError: Bad window/stride (see :func:`occlusion_grid`) or ``first_positions`` < 1.
    """
    rows, cols = occlusion_grid(size, window, stride)
    first_positions = _check_positive("first_positions", first_positions)
    k = 1

    def count(k: int) -> int:
        return len(_coarse_lines(rows, k)) * len(_coarse_lines(cols, k))

    while count(k) > first_positions and k < max(rows, cols):
        k *= 2
    levels: list[list[int]] = []
    seen: set[int] = set()
    while k >= 1:
        keep_r, keep_c = _coarse_lines(rows, k), _coarse_lines(cols, k)
        level = [r * cols + c for r in keep_r for c in keep_c if r * cols + c not in seen]
        seen.update(level)
        if level:
            levels.append(level)
        k //= 2
    return levels


def _occlusion_aggregate(
    drops: torch.Tensor,
    size: tuple[int, int],
    *,
    window: int,
    stride: int,
    coarse: list[int] | None = None,
) -> torch.Tensor:
    """The map of the positions run so far (``drops`` ``(rows, cols)``, NaN where not run).

    The same sum as :func:`occlusion`, in the same (raster) order. With ``coarse`` (level 0's
    indices), pixels that no finished window covers take the drop of the nearest level-0 window
    centre (rows and columns apart), so a preview with ``stride > window`` has no holes.
    """
    height, width = size
    cols = drops.shape[1]
    total = torch.zeros(height, width)
    counts = torch.zeros(height, width)
    flat = drops.flatten()
    for p in torch.nonzero(~torch.isnan(flat)).flatten().tolist():
        r, c = divmod(p, cols)
        ys, xs = slice(r * stride, r * stride + window), slice(c * stride, c * stride + window)
        total[ys, xs] += flat[p]
        counts[ys, xs] += 1
    out = total / counts.clamp(min=1)
    holes = counts == 0
    if coarse is None or not bool(holes.any()):
        return out
    keep_r = sorted({p // cols for p in coarse})
    keep_c = sorted({p % cols for p in coarse})

    def nearest(lines: list[int], extent: int) -> torch.Tensor:
        centres = torch.tensor([min(i * stride + window / 2, extent) for i in lines])
        pixels = torch.arange(extent, dtype=torch.float32) + 0.5
        return (pixels[:, None] - centres[None, :]).abs().argmin(dim=1)

    grid = drops[torch.tensor(keep_r)][:, torch.tensor(keep_c)]
    filled = grid[nearest(keep_r, height)][:, nearest(keep_c, width)]
    return torch.where(holes, torch.nan_to_num(filled), out)


def occlusion_progressive(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target = None,
    window: int = 32,
    stride: int = 8,
    fill: Fill = "gray",
    batch_size: int = BATCH_SIZE,
    first_positions: int = 64,
    on_step: OnStep | None = None,
    **options: Any,
) -> Iterator[AttributionMap]:
    """:func:`occlusion`, coarse to fine: a map after each level of :func:`occlusion_schedule`.

    Yields one :class:`AttributionMap` per level. The first comes after at most
    ``first_positions`` window positions (a coarse map: every ``k``-th position of the
    ``stride`` grid); each later level adds the positions of half the previous stride, reusing
    those already run, and the last map is the plain ``occlusion(model, x, window=window,
    stride=stride, fill=fill)`` (the same positions and formula; equal up to the float rounding
    of different batch compositions, bit-equal at ``batch_size=1``). ``info["preview"]`` is
    1.0 on the maps before the last, whose pixels that no finished window covers show the
    nearest coarse window's drop (display only); ``info["done"]`` counts positions run.

    Each level is one :func:`occlusion` call (its own model turns per batch, plus one batch-1
    forward for the reference probability). ``on_step`` sees the progress over all levels;
    returning ``False`` stops: the generator then yields the map so far with ``stopped=True``
    and ends. Closing the generator (``break`` in the loop) between levels holds no lock; an
    exception from ``on_step`` propagates after the usual clean-up. Any other keyword
    ``options`` (e.g. a precision or device option of :func:`occlusion`) go to every level's
    :func:`occlusion` call.

    Raises:
        ValueError: As :func:`occlusion`, or ``first_positions`` < 1 (checked on the call, not
            at the first ``next``).
    """
    x = _check_input(x, model)
    if fill not in FILLS:
        raise ValueError(f"Unknown fill {fill!r}; choose one of {', '.join(FILLS)}.")
    batch_size = _check_positive("batch_size", batch_size)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    levels = occlusion_schedule(size, window=window, stride=stride, first_positions=first_positions)
    rows, cols = occlusion_grid(size, window, stride)
    return _occlusion_levels(
        model,
        x,
        levels,
        (rows, cols),
        target=target,
        window=window,
        stride=stride,
        fill=fill,
        batch_size=batch_size,
        on_step=on_step,
        options=options,
    )


def _occlusion_levels(
    model: nn.Module,
    x: torch.Tensor,
    levels: list[list[int]],
    grid: tuple[int, int],
    *,
    target: Target,
    window: int,
    stride: int,
    fill: Fill,
    batch_size: int,
    on_step: OnStep | None,
    options: Mapping[str, Any],
) -> Iterator[AttributionMap]:
    start = time.perf_counter()
    rows, cols = grid
    total = rows * cols
    size = (int(x.shape[-2]), int(x.shape[-1]))
    drops = torch.full((rows, cols), float("nan"))
    fixed = target
    before = 0
    for number, level in enumerate(levels):

        def overall(info: StepInfo, before: int = before) -> bool | None:
            assert on_step is not None
            done = before + info.step
            message = f"{done}/{total} window positions" if info.waited is None else info.message
            return on_step(StepInfo(done, total, message=message, waited=info.waited))

        part = occlusion(
            model,
            x,
            target=fixed,
            window=window,
            stride=stride,
            fill=fill,
            batch_size=batch_size,
            on_step=overall if on_step is not None else None,
            indices=level,
            **options,
        )
        if fixed is None and part.target is not None:
            fixed = part.target  # the same class at every level, resolved once
        ran = torch.from_numpy(~np.isnan(part.raw))
        drops[ran] = torch.from_numpy(part.raw)[ran]
        if part.stopped:  # positions after the stop hold 0 in ``raw``: not run
            undone = torch.tensor(level[int(part.info["done"]) :], dtype=torch.long)
            drops.view(-1)[undone] = float("nan")
        before += int(part.info["done"])
        complete = number == len(levels) - 1 and not part.stopped
        attribution_map = _occlusion_aggregate(
            drops, size, window=window, stride=stride, coarse=None if complete else levels[0]
        )
        yield _result(
            "occlusion",
            ResolvedTarget(part.target, lambda t: t, lambda t: t),
            attribution_map,
            drops.clone(),
            layer=None,
            start=start,
            stopped=part.stopped,
            info={
                "positions": total,
                "done": before,
                "reference_probability": part.info["reference_probability"],
                "preview": 0.0 if complete else 1.0,
                "level": number,
                "levels": len(levels),
            },
        )
        if part.stopped:
            return


# --------------------------------------------------------------------------------------------
# Gradients to the input


def _input_gradient(
    model: nn.Module, x: torch.Tensor, target: Target
) -> tuple[torch.Tensor, ResolvedTarget]:
    """``d score / d x`` for one image; the model must already be in an inference session."""
    xg = _channels_last(x).requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        resolved = resolve_target(logits.detach(), target)
        score = resolved.score(logits).sum()
        (grad,) = torch.autograd.grad(score, xg)
    return grad.contiguous(), resolved


def saliency(model: nn.Module, x: torch.Tensor, *, target: Target = None) -> AttributionMap:
    """Vanilla gradient saliency (Simonyan, Vedaldi & Zisserman, ICLR workshop 2014).

    ``map(u) = max_c |d S_target / d x_c(u)|`` with ``S`` the target's logit (pre-softmax, as
    in the paper). ``raw`` is the signed gradient ``(3, H, W)``.
    """
    x = _check_input(x, model)
    start = time.perf_counter()
    with inference_session(model):
        grad, resolved = _input_gradient(model, x, target)
    return _result(
        "saliency", resolved, grad[0].abs().amax(dim=0), grad[0], layer=None, start=start
    )


def _same_strides_view(t: torch.Tensor) -> torch.Tensor:
    """A view of ``t`` with exactly its strides.

    ``t.view_as(t)`` recomputes the stride of size-1 dimensions, which makes a batch-1
    channels_last tensor look contiguous to the next convolution: it then falls back to the
    slower NCHW kernels for the whole rest of the network (measured: guided backprop 1.26x one
    forward+backward with ``view_as``).
    """
    return t.as_strided(t.size(), t.stride(), t.storage_offset())


def _positive_part(grad: torch.Tensor) -> torch.Tensor:
    """Guided backprop's extra rule: only the positive part of the incoming gradient passes."""
    return grad.clamp(min=0)


class _DeconvGate(torch.autograd.Function):
    """Forward value of the activation; backward sends ``relu(g)`` straight to its input.

    The activation's own backward (its forward mask) is bypassed: the forward value is taken
    detached and the gradient is routed to the pre-activation tensor kept by a pre-hook.
    """

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return _same_strides_view(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad.clamp(min=0), None


_RELU_FAMILY = frozenset(
    {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "threshold", "threshold_"}
)


class _FunctionalReluCounter(TorchFunctionMode):
    """Counts ReLU-family torch calls made while no activation module is running."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.calls: dict[str, int] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        if self.depth == 0 and name in _RELU_FAMILY:
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


#: Per model: functional ReLU-family calls found on its first gated forward (checked once).
_FUNCTIONAL_CALLS: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


@contextmanager
def _relu_gates(model: nn.Module, mode: Literal["guided", "deconvnet"]) -> Iterator[None]:
    """Change the backward rule of every ReLU/ReLU6 module with removable hooks.

    On the first call for a model, the forward inside the block runs under a
    ``TorchFunctionMode`` that counts ReLU-family calls outside activation modules, and
    :class:`FunctionalActivationError` is raised after the block when there were any.
    """
    # ReLU / ReLU6 modules, and exported submodules whose graph is one rectifier op.
    modules = [m for m in modules_and_parameters(model)[0] if is_rectifier(m)]
    if not modules:
        raise FunctionalActivationError(
            f"{type(model).__name__} has no nn.ReLU or nn.ReLU6 modules, so guided backprop "
            "and deconvnet are undefined for it (its activations are functional calls or "
            "another kind). Use saliency, Grad-CAM or integrated gradients."
        )
    counter = _FunctionalReluCounter() if model not in _FUNCTIONAL_CALLS else None
    kept: dict[int, list[torch.Tensor]] = {}
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def pre_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
        if counter is not None:
            counter.depth += 1
        if mode == "guided":
            return None
        pre = inputs[0]
        kept.setdefault(id(module), []).append(pre)
        # The activation runs on a graph-free tensor: its backward is never part of the path.
        # An in-place activation gets a copy so the kept pre-activation is not overwritten.
        free = pre.detach()
        return (free.clone() if getattr(module, "inplace", False) else free, *inputs[1:])

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> Any:
        if counter is not None:
            counter.depth -= 1
        if mode == "guided":
            # A tensor hook on this forward's output (freed with its graph; the shared model
            # keeps nothing): it runs before the activation's own backward, so the gradient to
            # the pre-activation is ``mask * relu(g)``. 2 ms cheaper on Lite0 than an identity
            # autograd.Function per activation.
            if output.requires_grad:
                output.register_hook(_positive_part)
            return None
        return _DeconvGate.apply(kept[id(module)].pop(), output.detach())

    try:
        if counter is not None or mode == "deconvnet":
            for module in modules:
                handles.append(module.register_forward_pre_hook(pre_hook))
        with forward_output_hooks(modules, hook):
            if counter is None:
                yield
            else:
                with counter:
                    yield
    finally:
        for handle in handles:
            handle.remove()
        kept.clear()
    if counter is not None:
        calls = dict(counter.calls)
        # Exported graphs call aten ops, which the counter does not see: read their graphs.
        for where in functional_rectifiers(model):
            calls[where] = calls.get(where, 0) + 1
        _FUNCTIONAL_CALLS[model] = calls


def _check_functional(model: nn.Module) -> None:
    calls = _FUNCTIONAL_CALLS.get(model)
    if calls:
        found = ", ".join(f"{name} x{n}" for name, n in sorted(calls.items()))
        raise FunctionalActivationError(
            f"{type(model).__name__} applies ReLU-family activations as function calls "
            f"({found}) outside nn.ReLU/nn.ReLU6 modules (torchvision's GoogLeNet does this). "
            "Hooks cannot change their backward rule, so guided backprop / deconvnet would "
            "silently be wrong. Use saliency, Grad-CAM or integrated gradients for this model."
        )


def _gated_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, mode: Literal["guided", "deconvnet"]
) -> tuple[torch.Tensor, ResolvedTarget]:
    _check_functional(model)
    xg = _channels_last(x).requires_grad_(True)
    with torch.enable_grad():
        with _relu_gates(model, mode):
            logits = model(xg)
        _check_functional(model)
        resolved = resolve_target(logits.detach(), target)
        score = resolved.score(logits).sum()
        (grad,) = torch.autograd.grad(score, xg)
    return grad.contiguous(), resolved


def guided_backprop(model: nn.Module, x: torch.Tensor, *, target: Target = None) -> AttributionMap:
    """Guided backpropagation (Springenberg et al., ICLR workshop 2015).

    At every ReLU/ReLU6 module: ``R_in = [x_pre > 0 (and < 6)] * max(R_out, 0)``, i.e. the
    activation's own backward mask times the positive part of the incoming gradient. ``map`` is
    ``max_c |R_input|``; ``raw`` the signed ``(3, H, W)`` result.

    Deviation: none for ReLU; for ReLU6 the forward mask is ReLU6's (``0 < x < 6``). Unlike
    captum's ``GuidedBackprop`` (``nn.ReLU`` only), ReLU6 is handled, so on EfficientNet-Lite
    this differs from the plain gradient.

    Raises:
        FunctionalActivationError: The model calls ReLU as a function (hooks cannot see it).
    """
    x = _check_input(x, model)
    start = time.perf_counter()
    with inference_session(model):
        grad, resolved = _gated_gradient(model, x, target, "guided")
    return _result(
        "guided_backprop", resolved, grad[0].abs().amax(dim=0), grad[0], layer=None, start=start
    )


def deconvnet(model: nn.Module, x: torch.Tensor, *, target: Target = None) -> AttributionMap:
    """Deconvnet backward pass (Zeiler & Fergus, ECCV 2014), as a modified gradient.

    At every ReLU/ReLU6 module: ``R_in = max(R_out, 0)``, ignoring the forward mask; every other
    layer uses its transposed (gradient) rule. ``map`` is ``max_c |R_input|``.

    Deviation: max-pool switches are the gradient's (the same as the paper's switches).

    Raises:
        FunctionalActivationError: The model calls ReLU as a function (hooks cannot see it).
    """
    x = _check_input(x, model)
    start = time.perf_counter()
    with inference_session(model):
        grad, resolved = _gated_gradient(model, x, target, "deconvnet")
    return _result(
        "deconvnet", resolved, grad[0].abs().amax(dim=0), grad[0], layer=None, start=start
    )


GradientMethod = Callable[..., AttributionMap]


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: GradientMethod = saliency,
    target: Target = None,
    samples: int = 25,
    sigma: float = 0.15,
    seed: int = 0,
    on_step: OnStep | None = None,
    **options: Any,
) -> AttributionMap:
    """SmoothGrad around any attribution function (Smilkov et al., arXiv:1706.03825, 2017).

    ``map = 1/n sum_i method(x + N(0, (sigma * (max x - min x))^2)).map`` (``raw`` likewise).
    The target is resolved once on the clean image. Noise comes from a local generator seeded
    by ``seed``. Deviation: noisy images are not clipped to [0, 1] (as in the paper).

    Raises:
        ValueError: ``samples`` < 1 or ``sigma`` < 0.
    """
    x = _check_input(x, model)
    samples = _check_positive("samples", samples)
    sigma = check_float("sigma (a fraction of the input range)", sigma, minimum=0.0)
    seed = check_int("seed", seed)
    start = time.perf_counter()
    with inference_session(model, on_wait=waiting(on_step, 0, samples)), torch.inference_mode():
        resolved = resolve_target(model(x), target)
    fixed: Target = resolved.index if resolved.index is not None else target
    generator = torch.Generator().manual_seed(seed)
    scale = sigma * float(x.max() - x.min())
    total_map: np.ndarray | None = None
    total_raw: np.ndarray | None = None
    name = getattr(method, "__name__", "method")
    done = 0
    stopped = False
    for i in range(samples):
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        noisy = x + scale * noise
        # The noisy copies leave [0, 1] on purpose (not clipped); ``method`` takes its own
        # turn(s), and waits for them are reported as this run's.
        with relaxed_range(), wait_notice(waiting(on_step, i, samples)):
            result = method(model, noisy, target=fixed, **options)
        total_map = result.map if total_map is None else total_map + result.map
        total_raw = result.raw if total_raw is None else total_raw + result.raw
        done = i + 1
        if not report(on_step, StepInfo(done, samples, message=f"{done}/{samples} samples")):
            stopped = done < samples
            break
    assert total_map is not None and total_raw is not None
    return _result(
        f"smoothgrad_{name}",
        resolved,
        torch.from_numpy(total_map / done),
        torch.from_numpy(total_raw / done),
        layer=options.get("layer"),
        start=start,
        stopped=stopped,
        info={"samples": done, "sigma": sigma},
    )


def _gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target = None,
    steps: int = 50,
    method: Literal["gausslegendre", "riemann_trapezoid"] = "gausslegendre",
    batch_size: int = BATCH_SIZE,
    on_step: OnStep | None = None,
) -> AttributionMap:
    """Integrated gradients (Sundararajan, Taly & Yan, ICML 2017), black baseline.

    ``IG_i(x) = (x_i - x'_i) * int_0^1 dS(x' + a (x - x')) / dx_i da`` with ``x' = 0`` and ``S``
    the target logit, the integral by ``steps``-point Gauss-Legendre quadrature (captum's
    default) or the trapezoid rule. ``map = sum_c |IG_c|``; ``raw`` the signed ``(3, H, W)``.
    ``info["delta"]`` is the completeness error ``sum IG - (S(x) - S(x'))``.

    Deviation: the paper uses a Riemann sum; Gauss-Legendre converges faster.
    """
    x = _check_input(x, model)
    steps = _check_positive("steps", steps)
    batch_size = _check_positive("batch_size", batch_size)
    if method == "gausslegendre":
        alphas, weights = _gauss_legendre(steps)
    elif method == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("The trapezoid rule needs at least 2 steps.")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
    else:
        raise ValueError(f"Unknown method {method!r}; use 'gausslegendre' or 'riemann_trapezoid'.")
    start = time.perf_counter()
    baseline = torch.zeros_like(x)
    total = torch.zeros_like(x)
    done = 0
    stopped = False
    with inference_session(model, on_wait=waiting(on_step, 0, steps)), torch.inference_mode():
        ends = model(_channels_last(torch.cat([baseline, x])))
    resolved = resolve_target(ends[1:], target)
    while done < steps:
        n = min(batch_size, steps - done)
        a = torch.tensor(alphas[done : done + n], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        w = torch.tensor(weights[done : done + n], dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)
        path = _channels_last(baseline + a * (x - baseline)).requires_grad_(True)
        # One turn per batch (forward and backward), so other sessions are not blocked.
        with inference_session(model, on_wait=waiting(on_step, done, steps)), torch.enable_grad():
            score = resolved.score(model(path)).sum()
            (grad,) = torch.autograd.grad(score, path)
        total += (w * grad).sum(dim=0, keepdim=True)
        done += n
        if not report(on_step, StepInfo(done, steps, message=f"{done}/{steps} steps")):
            stopped = done < steps
            break
    attribution = (x - baseline) * total
    with torch.no_grad():
        delta = float(attribution.sum() - (resolved.score(ends[1:]) - resolved.score(ends[:1])))
    return _result(
        "integrated_gradients",
        resolved,
        attribution[0].abs().sum(dim=0),
        attribution[0],
        layer=None,
        start=start,
        stopped=stopped,
        info={"steps": done, "delta": delta},
    )


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


def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: Target = None,
    layer: str,
    batch_size: int = BATCH_SIZE,
    on_step: OnStep | None = None,
    exact: bool = False,
) -> AttributionMap:
    """Score-CAM (Wang et al., CVPR workshops 2020).

    ``L = relu(sum_k w_k A_k)``, ``w = softmax_k(S(x * H_k))`` where ``H_k`` is ``A_k``
    upsampled to the input and min-max scaled to [0, 1] and ``S`` the target logit.

    Deviation (shared with pytorch-grad-cam, so the two can be cross-checked): the paper's
    increase of confidence uses the softmax probability minus a baseline; here the logits of
    the masked images are softmax-normalized across channels. Masks are upsampled with
    ``align_corners=True`` like pytorch-grad-cam. Costs one forward per channel, in batches;
    progress after each batch, ``on_step`` returning ``False`` stops (partial weights).

    Precision (:mod:`vizcore.core.precision`): with ``exact=False`` the masked forwards run under
    bf16 autocast where bf16 is fast here; the activations, the target and the channel softmax
    stay float32. ``exact=True`` is float32 throughout. ``info["bf16"]`` is 1.0 when bf16 was
    used.
    """
    x = _check_input(x, model)
    check_exact(exact)
    batch_size = _check_positive("batch_size", batch_size)
    start = time.perf_counter()
    module = get_layer(model, layer)
    captured: list[torch.Tensor] = []

    def hook(_m: nn.Module, _i: Any, output: Any) -> None:
        captured.append(_layer_output(output, layer))

    stopped = False
    with torch.inference_mode():
        with (
            inference_session(model, on_wait=waiting(on_step, 0, 1)),
            forward_output_hooks([module], hook),
        ):
            logits = model(_channels_last(x))
        _check_called_once(captured, layer)
        resolved = resolve_target(logits, target)
        acts = captured[0].float()
        channels = acts.shape[1]
        scores = torch.full((channels,), float("-inf"), device=acts.device)
        done = 0
        while done < channels:
            n = min(batch_size, channels - done)
            batch = _score_cam_batch(x, acts[:, done : done + n])
            # One turn per batch: another session's request waits at most about one batch.
            with inference_session(model, on_wait=waiting(on_step, done, channels)):
                out = forward_float(model, batch, exact=exact)
            scores[done : done + n] = resolved.score(out).float()
            done += n
            if not report(on_step, StepInfo(done, channels, message=f"{done}/{channels} maps")):
                stopped = done < channels
                break
    weights = torch.softmax(scores[:done], dim=0)
    raw = cam_skeleton(acts[0, :done], weights)
    return _result(
        "score_cam",
        resolved,
        _upsample(raw, tuple(x.shape[-2:])),
        raw,
        layer=layer,
        start=start,
        stopped=stopped,
        info={
            "channels": channels,
            "done": done,
            "bf16": float(use_bf16(exact=exact, device=logits.device)),
        },
    )


def _score_cam_batch(x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """``x * H_k`` for a slice of channels ``acts`` ``(1, n, h, w)``, channels_last.

    ``H_k`` is ``A_k`` upsampled (bilinear, ``align_corners=True``) and min-max scaled to
    [0, 1]. Built one batch at a time: all masks at once would take ``C x H x W`` floats
    (256 MB for Lite0's 1280-channel head at 224 px).
    """
    masks = F.interpolate(acts, size=x.shape[-2:], mode="bilinear", align_corners=True)[0]
    low, high = torch.aminmax(masks.flatten(1), dim=1)  # one pass for both
    low, high = low.view(-1, 1, 1), high.view(-1, 1, 1)
    masks = (masks - low).div_(high - low + 1e-8)
    batch = torch.empty(
        (masks.shape[0], *x.shape[1:]), memory_format=torch.channels_last, device=x.device
    )
    return torch.mul(x, masks[:, None], out=batch)


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


# --------------------------------------------------------------------------------------------
# Registry for the UI


@dataclass(frozen=True)
class MethodInfo:
    """How the UI offers one method."""

    key: str
    fn: Callable[..., AttributionMap]
    uses_layer: bool
    slow: bool
    citation: str

    @property
    def cost(self) -> CostFunction:
        """``cost(model, size, **options) -> Cost``: the passes one call makes."""
        return method_cost(self.fn)


METHODS: Mapping[str, MethodInfo] = MappingProxyType(
    {
        "Occlusion": MethodInfo("occlusion", occlusion, False, True, "Zeiler & Fergus 2014"),
        "Saliency": MethodInfo("saliency", saliency, False, False, "Simonyan et al. 2014"),
        "SmoothGrad": MethodInfo("smoothgrad", smoothgrad, False, True, "Smilkov et al. 2017"),
        "Deconvnet": MethodInfo("deconvnet", deconvnet, False, False, "Zeiler & Fergus 2014"),
        "Guided backprop": MethodInfo(
            "guided_backprop", guided_backprop, False, False, "Springenberg et al. 2015"
        ),
        "CAM": MethodInfo("cam", cam, True, False, "Zhou et al. 2016"),
        "Grad-CAM": MethodInfo("grad_cam", grad_cam, True, False, "Selvaraju et al. 2017"),
        "Guided Grad-CAM": MethodInfo(
            "guided_grad_cam", guided_grad_cam, True, False, "Selvaraju et al. 2017"
        ),
        "Grad-CAM++": MethodInfo(
            "grad_cam_plus_plus", grad_cam_plus_plus, True, False, "Chattopadhyay et al. 2018"
        ),
        "Score-CAM": MethodInfo("score_cam", score_cam, True, True, "Wang et al. 2020"),
        "Integrated gradients": MethodInfo(
            "integrated_gradients",
            integrated_gradients,
            False,
            True,
            "Sundararajan et al. 2017",
        ),
    }
)

#: The comparison grid's default selection.
DEFAULT_METHODS: tuple[str, ...] = (
    "Occlusion",
    "Saliency",
    "Deconvnet",
    "Guided backprop",
    "CAM",
    "Grad-CAM",
    "Guided Grad-CAM",
    "Grad-CAM++",
)
