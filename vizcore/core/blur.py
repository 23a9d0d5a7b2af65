"""The one Gaussian blur: separable, reflected at the border, on ``(N, C, H, W)`` tensors.

Used by the optimization regularizers (:class:`vizcore.optvis.PixelRegularizers`), the occlusion
fill ``"blur"`` and the blurred baseline of the deletion/insertion curves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from vizcore.core.checks import check_float


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, H, W)`` with reflection at the border.

    ``sigma`` is in pixels; 0 returns ``x`` unchanged.

    Raises:
        ValueError: ``sigma`` is negative, NaN or infinite, or ``x`` is not 4-D.
    """
    sigma = check_float("The blur sigma (pixels)", sigma, minimum=0.0)
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"gaussian_blur() needs an (N, C, H, W) tensor, got {shape}.")
    if sigma == 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, min(x.shape[-2:]) - 1) if min(x.shape[-2:]) > 1 else 0
    if radius == 0:
        return x
    coords = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(padded, horizontal, groups=channels)
    return F.conv2d(out, vertical, groups=channels)
