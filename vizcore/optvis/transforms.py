"""Augmentations applied before each forward pass: jitter, pad, random scale, rotation, affine."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from vizcore.core.checks import check_float, check_int, check_positive

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_shape(shape: Sequence[int]) -> None:
    if (
        isinstance(shape, str)
        or not isinstance(shape, Sequence)
        or len(shape) != 4
        or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in shape)
        or shape[1] != 3
        or min(shape) < 1
    ):
        raise ValueError(f"Image shape must be (N, 3, H, W) with positive sizes, got {shape}.")


# ------------------------------------------------------------------------------- transforms


def jitter(pixels: int) -> Transform:
    """Roll the image by a random offset in [−pixels, pixels] on each axis (wrapping around)."""
    pixels = check_int("jitter (pixels)", pixels, minimum=0)

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if pixels == 0:
            return x
        dy, dx = torch.randint(
            -pixels, pixels + 1, (2,), generator=generator, device=generator.device
        ).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))

    return transform


def pad(pixels: int, *, mode: str = "reflect") -> Transform:
    """Pad by ``pixels`` on every side (so later scaling and rotation do not reach the border)."""
    pixels = check_int("pad (pixels)", pixels, minimum=0)

    def transform(x: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        if pixels == 0:
            return x
        safe_mode = mode if pixels < min(x.shape[-2:]) else "replicate"
        return F.pad(x, (pixels, pixels, pixels, pixels), mode=safe_mode)

    return transform


def _draw(shape: int | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Uniform draws on the generator's own device (the runner's is on the CPU: the transform
    parameters never wait for the GPU)."""
    return torch.rand(shape, generator=generator, device=generator.device)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid_ = F.affine_grid(theta.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid_, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_scale(low: float, high: float) -> Transform:
    """Zoom by a random factor in [low, high] about the centre (same size out)."""
    low = check_positive("The lowest scale", low)
    high = check_positive("The highest scale", high)
    if not 0 < low <= high:
        raise ValueError(f"Scale range must satisfy 0 < low <= high, got ({low}, {high}).")

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = low + (high - low) * float(_draw((), generator))
        theta = torch.tensor([[1 / s, 0.0, 0.0], [0.0, 1 / s, 0.0]], dtype=x.dtype, device=x.device)
        return _affine(x, theta[None])

    return transform


def random_rotate(degrees: float) -> Transform:
    """Rotate by a random angle in [−degrees, degrees] about the centre."""
    degrees = check_float("Rotation (degrees)", degrees, minimum=0.0)

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = math.radians(degrees * (2 * float(_draw((), generator)) - 1))
        c, s = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
        return _affine(x, theta[None])

    return transform


def random_affine(
    scale: tuple[float, float] = (1.0, 1.0), degrees: float = 0.0, translate: int = 0
) -> Transform:
    """Random zoom, rotation and shift (in pixels) in ONE resampling (cheaper than chaining).

    Draws the zoom, then the angle, then the shift from the generator.
    """
    low, high = scale
    low = check_positive("The lowest scale", low)
    high = check_positive("The highest scale", high)
    if not 0 < low <= high:
        raise ValueError(f"Scale range must satisfy 0 < low <= high, got {scale}.")
    degrees = check_float("degrees", degrees, minimum=0.0)
    translate = check_int("translate (pixels)", translate, minimum=0)

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = low + (high - low) * float(_draw((), generator))
        angle = math.radians(degrees * (2 * float(_draw((), generator)) - 1))
        height, width = x.shape[-2:]
        ty, tx = (_draw(2, generator) * 2 - 1).tolist()
        c, si = math.cos(angle) / s, math.sin(angle) / s
        theta = torch.tensor(
            [
                [c, -si, 2 * translate * tx / width],
                [si, c, 2 * translate * ty / height],
            ],
            dtype=x.dtype,
            device=x.device,
        )
        return _affine(x, theta[None])

    return transform


def compose(*transforms: Transform) -> Transform:
    """Apply transforms left to right."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in transforms:
            x = t(x, generator)
        return x

    return transform


# ----------------------------------------------------------------------------- regularizers
