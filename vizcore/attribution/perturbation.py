"""Perturbation methods: occlusion (whole, or live by levels of a schedule) and Score-CAM."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from torch import nn

from vizcore.attribution.cams import _check_called_once, _layer_output, cam_skeleton
from vizcore.attribution.targets import (
    BATCH_SIZE,
    AttributionMap,
    ResolvedTarget,
    Target,
    _channels_last,
    _check_input,
    _check_positive,
    _result,
    _upsample,
    resolve_target,
)
from vizcore.core.blur import gaussian_blur
from vizcore.core.checks import check_int
from vizcore.core.hooks import (
    forward_output_hooks,
    inference_session,
)
from vizcore.core.layers import get_layer
from vizcore.core.precision import check_exact, forward_float, use_bf16
from vizcore.core.progress import OnStep, StepInfo, report, waiting

Fill = Literal["zero", "gray", "mean", "blur"]

FILLS: tuple[str, ...] = ("zero", "gray", "mean", "blur")


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
        return gaussian_blur(x, max(window / 4.0, 1.0))
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
