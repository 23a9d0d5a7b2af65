"""Input checks shared by every public function of the library.

The library has one image form: a float tensor of RGB values in [0, 1], shape ``(N, 3, H, W)``
(normalization lives inside the model). :func:`check_image_batch` is the one check of that form;
every technique calls it before touching the model, so a wrong input gives a sentence that says
what was wrong and how to fix it instead of a wrong class or an error from deep inside torch.

The small numeric checkers (:func:`check_int`, :func:`check_float`, :func:`check_positive`,
:func:`check_class_index`, :func:`check_finite_array`) do the same for options: booleans are
never numbers, a float is never silently truncated to an int, NaN and infinity are refused
unless a bound allows infinity, and every message names the option.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from contextvars import ContextVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "MIN_SIDE",
    "RANGE_TOLERANCE",
    "check_class_index",
    "check_finite_array",
    "check_float",
    "check_image_batch",
    "check_int",
    "check_positive",
    "min_input_side",
    "relaxed_range",
]

MIN_SIDE = 1
"""Smallest height and width :func:`check_image_batch` accepts for a model that states no minimum.

A model states its own with a ``min_input_side`` attribute: the bundled EfficientNet-Lite0 and
SqueezeNet 1.1 say 32 px (both fail inside torch below that, measured), the torchvision models
their measured minimum (AlexNet 63 px). An empty image (a side of 0) is always refused; a model
without the attribute (the unit tests' hand-weighted 2x2 nets) may take any size it can run.
"""

RANGE_TOLERANCE = 1e-6
"""How far outside [0, 1] a value may be (rounding in a resize or a colour conversion)."""

_RELAXED_RANGE: ContextVar[bool] = ContextVar("vizcore_relaxed_range", default=False)


@contextlib.contextmanager
def relaxed_range() -> Iterator[None]:
    """Within this block :func:`check_image_batch` does not check the [0, 1] range.

    For wrappers that deliberately feed a method images outside [0, 1], such as SmoothGrad's
    unclipped noisy copies (Smilkov et al. 2017). Shape, dtype, size and finiteness are still
    checked. The flag is a context variable, so it never leaks to another thread.
    """
    token = _RELAXED_RANGE.set(True)
    try:
        yield
    finally:
        _RELAXED_RANGE.reset(token)


def min_input_side(model: nn.Module | None) -> int:
    """The smallest image side ``model`` accepts: its ``min_input_side`` attribute or
    :data:`MIN_SIDE`, whichever is larger."""
    wanted = getattr(model, "min_input_side", None) if model is not None else None
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        return max(MIN_SIDE, wanted)
    return MIN_SIDE


def check_image_batch(
    x: object,
    *,
    name: str = "The image",
    batch: int | None = 1,
    min_side: int | None = None,
    model: nn.Module | None = None,
) -> torch.Tensor:
    """Checks that ``x`` is the library's image form and returns it unchanged.

    The form: a floating-point ``torch.Tensor`` of shape ``(N, 3, H, W)`` holding finite RGB
    values in ``[0, 1]`` (up to :data:`RANGE_TOLERANCE`), ``H`` and ``W`` at least
    ``min_side``.

    Args:
        x: The value to check.
        name: How messages call it (``"The style image"``), capitalized.
        batch: The required number of images ``N``, or None for any ``N >= 1``.
        min_side: Smallest accepted height and width; None for :func:`min_input_side` of
            ``model``.
        model: The model the image is for (its ``min_input_side`` raises the minimum).

    Returns:
        ``x`` itself (not copied, not converted).

    Raises:
        ValueError: What is wrong with ``x`` and how to convert it.
    """
    want = (
        "one RGB image of shape (1, 3, H, W)"
        if batch == 1
        else (
            "a batch of RGB images of shape (N, 3, H, W)"
            if batch is None
            else f"{batch} RGB images, shape ({batch}, 3, H, W)"
        )
    )
    if isinstance(x, np.ndarray):
        raise ValueError(
            f"{name} is a numpy array {x.shape}; the library takes {want} as a torch tensor of "
            "floats in [0, 1]. For an (H, W, 3) uint8 array use "
            "torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255, or "
            "vizcore.data.images.to_tensor01(pil_image)."
        )
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch tensor ({want}, floats in [0, 1]), not "
            f"{type(x).__name__}. Use vizcore.data.images.to_tensor01(pil_image)."
        )
    shape = tuple(x.shape)
    if x.ndim != 4 or shape[1] != 3 or (batch is not None and shape[0] != batch):
        hint = ""
        if x.ndim == 3 and shape[0] == 3:
            hint = " Add the batch dimension with x[None]."
        elif x.ndim == 3 and shape[-1] == 3:
            hint = " It looks like (H, W, 3): use x.permute(2, 0, 1)[None]."
        elif x.ndim == 4 and shape[-1] == 3 and shape[1] != 3:
            hint = " It looks channels-last: use x.permute(0, 3, 1, 2)."
        raise ValueError(f"{name} must be {want}; got shape {shape}.{hint}")
    if shape[0] < 1:
        raise ValueError(f"{name} is an empty batch (shape {shape}); give at least one image.")
    if not x.is_floating_point():
        hint = "x.float() / 255" if x.dtype == torch.uint8 else "x.float()"
        raise ValueError(
            f"{name} is a {str(x.dtype).removeprefix('torch.')} tensor; the library takes float "
            f"RGB values in [0, 1]. Convert it with {hint}."
        )
    smallest = min_input_side(model) if min_side is None else min_side
    height, width = shape[-2:]
    if min(height, width) < 1:
        raise ValueError(f"{name} is empty ({width}×{height} pixels); give a non-empty image.")
    if min(height, width) < smallest:
        raise ValueError(
            f"{name} is {width}×{height} pixels; it must be at least {smallest} pixels on each "
            "side. Use a larger image."
        )
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        nan = int(torch.isnan(x).sum())
        inf = x.numel() - int(finite.sum()) - nan
        parts = [f"{n} {word}" for n, word in ((nan, "NaN"), (inf, "infinite")) if n]
        raise ValueError(
            f"{name} has {' and '.join(parts)} values; every value must be a finite number in "
            "[0, 1]. Replace them (for example torch.nan_to_num(x).clamp(0, 1)) or reload the "
            "image."
        )
    if not _RELAXED_RANGE.get():
        low, high = (float(v) for v in torch.aminmax(x.detach()))
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            if high > 1.5 and low >= -RANGE_TOLERANCE:
                fix = "it looks like 0-255 values: divide by 255 (x / 255)"
            else:
                fix = "rescale it to [0, 1], or clamp it with x.clamp(0, 1)"
            raise ValueError(
                f"{name} has values from {low:.4g} to {high:.4g}; the library takes RGB values "
                f"in [0, 1] (normalization is inside the model): {fix}."
            )
    return x


def _is_bool(value: object) -> bool:
    return isinstance(value, bool | np.bool_)


def check_int(
    name: str,
    value: object,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """Checks that ``value`` is a whole number in ``[minimum, maximum]``; returns it as ``int``.

    Python and numpy integers are accepted; booleans and floats (even ``3.0``) are not, so a
    ``1.5`` is never silently truncated.

    Raises:
        ValueError: Naming ``name``, the value and the allowed range.
    """
    kind = "a positive integer" if minimum == 1 and maximum is None else "a whole number"
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be {kind}, got {value!r} ({type(value).__name__}).")
    number = int(value)
    if minimum is not None and maximum is not None and not minimum <= number <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, got {number}.")
    if minimum == 1 and number < 1:
        raise ValueError(f"{name} must be {kind}, got {number}.")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}.")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {number}.")
    return number


def check_float(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Checks that ``value`` is a finite real number within the bounds; returns it as ``float``.

    Integers are accepted (``2`` means ``2.0``); booleans, NaN and infinity are not.

    Raises:
        ValueError: Naming ``name``, the value and the allowed range.
    """
    if _is_bool(value) or not isinstance(value, numbers.Real):
        kind = type(value).__name__
        raise ValueError(f"{name} must be a number, got {value!r} ({kind}).")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {number}.")
    low_ok = minimum is None or (number >= minimum if min_inclusive else number > minimum)
    high_ok = maximum is None or (number <= maximum if max_inclusive else number < maximum)
    if not (low_ok and high_ok):
        allowed = _range_text(minimum, maximum, min_inclusive, max_inclusive)
        raise ValueError(f"{name} must be {allowed}, got {number:g}.")
    return number


def _range_text(
    minimum: float | None, maximum: float | None, min_inclusive: bool, max_inclusive: bool
) -> str:
    if minimum is not None and maximum is not None:
        left, right = "[" if min_inclusive else "(", "]" if max_inclusive else ")"
        return f"in {left}{minimum:g}, {maximum:g}{right}"
    if minimum is not None:
        return f"{'>=' if min_inclusive else '>'} {minimum:g}"
    assert maximum is not None
    return f"{'<=' if max_inclusive else '<'} {maximum:g}"


def check_positive(name: str, value: object) -> float:
    """Checks that ``value`` is a finite number > 0; returns it as ``float``."""
    return check_float(name, value, minimum=0.0, min_inclusive=False)


def check_class_index(value: object, num_classes: int, *, name: str = "The target class") -> int:
    """Checks a class index against the number of classes; returns it as ``int``.

    Raises:
        ValueError: Not a whole number (``1.5``, ``True``), or outside ``0 .. num_classes - 1``;
            the message names the number of classes.
    """
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be a class index (a whole number from 0 to {num_classes - 1}), got "
            f"{value!r} ({type(value).__name__})."
        )
    index = int(value)
    if not 0 <= index < num_classes:
        raise ValueError(
            f"{name} {index} is outside this model's classes: it has {num_classes} classes, "
            f"numbered 0 to {num_classes - 1}."
        )
    return index


def check_finite_array(name: str, value: np.ndarray | torch.Tensor) -> None:
    """Raises ``ValueError`` when ``value`` holds NaN or infinite entries (naming how many)."""
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.dtype.kind in "fc":
        bad = int(array.size - np.isfinite(array).sum())
        if bad:
            raise ValueError(
                f"{name} has {bad} NaN or infinite values out of {array.size}; compute it again "
                "on a finite input."
            )
