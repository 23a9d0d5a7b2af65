"""Regularizers: Yosinski et al.'s pixel-space ones, total variation, ReLU6 pass-through."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.blur import gaussian_blur
from vizcore.core.checks import check_float, check_int
from vizcore.core.hooks import (
    forward_output_hooks,
)


def clip_small_norm(pixels: torch.Tensor, percentile: float) -> torch.Tensor:
    """Zero the pixels whose RGB norm is below the ``percentile``-th percentile, per image.

    Yosinski et al. 2015, "clipping pixels with small norm". ``pixels`` are centred (zero is
    grey). Returns a new tensor; ``percentile`` in [0, 100], 0 leaves everything.
    """
    return _clip_below(pixels, pixels.norm(dim=1), percentile)


def clip_small_contribution(
    pixels: torch.Tensor, grad: torch.Tensor, percentile: float
) -> torch.Tensor:
    """Zero the pixels whose contribution |Σ_rgb x·∂f/∂x| is below the percentile, per image.

    Yosinski et al. 2015, "clipping pixels with small contribution": the contribution is the
    first-order estimate of how much the objective drops when the pixel is set to zero.
    """
    return _clip_below(pixels, (pixels * grad).sum(1).abs(), percentile)


def _clip_below(pixels: torch.Tensor, score: torch.Tensor, percentile: float) -> torch.Tensor:
    percentile = check_float("The clipping percentile", percentile, minimum=0.0, maximum=100.0)
    if percentile == 0:
        return pixels
    flat = score.reshape(score.shape[0], -1)
    threshold = torch.quantile(flat, percentile / 100.0, dim=1, interpolation="linear")
    keep = (score >= threshold.view(-1, 1, 1)).to(pixels.dtype)
    return pixels * keep[:, None]


@dataclass(frozen=True)
class PixelRegularizers:
    """Yosinski et al. 2015's regularizers, applied to the pixels after each step.

    Attributes:
        l2_decay: ``x ← (1 − l2_decay)·x`` (toward grey) every step.
        blur_sigma: Gaussian blur width in pixels (0 = off).
        blur_every: Blur every this many steps.
        norm_percentile: Zero pixels whose RGB norm is below this percentile (0 = off).
        contribution_percentile: Zero pixels whose |x·grad| is below this percentile (0 = off).
    """

    l2_decay: float = 0.0
    blur_sigma: float = 0.0
    blur_every: int = 4
    norm_percentile: float = 0.0
    contribution_percentile: float = 0.0

    def __post_init__(self) -> None:
        check_float("L2 decay", self.l2_decay, minimum=0.0, maximum=1.0, max_inclusive=False)
        check_float("Blur sigma", self.blur_sigma, minimum=0.0)
        check_int("Blur interval (steps)", self.blur_every, minimum=1)
        for name in ("norm_percentile", "contribution_percentile"):
            check_float(name, getattr(self, name), minimum=0.0, maximum=100.0)

    @property
    def active(self) -> bool:
        """Whether any regularizer does something."""
        return bool(
            self.l2_decay or self.blur_sigma or self.norm_percentile or self.contribution_percentile
        )

    def apply(self, pixels: torch.Tensor, grad: torch.Tensor | None, step: int) -> torch.Tensor:
        """Return the regularized pixels after step ``step`` (1-based)."""
        out = pixels
        if self.l2_decay:
            out = out * (1.0 - self.l2_decay)
        if self.blur_sigma and step % self.blur_every == 0:
            out = gaussian_blur(out, self.blur_sigma)
        if self.norm_percentile:
            out = clip_small_norm(out, self.norm_percentile)
        if self.contribution_percentile and grad is not None:
            out = clip_small_contribution(out, grad, self.contribution_percentile)
        return out


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels, per image: ``(N,)``."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).pow(2).flatten(1).mean(1)
    dx = (image[..., :, 1:] - image[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dy + dx


# ------------------------------------------------------------------------------------ runner


@contextmanager
def relu6_passthrough(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Let gradients through every ReLU6 above 6 (forward value unchanged), inside the block.

    Each ``nn.ReLU6`` gets a removable forward hook returning
    ``relu(x) − (relu(x) − relu6(x)).detach()``: the value is ReLU6's, the gradient ReLU's. No
    module is swapped, and every hook is removed on exit.
    """
    if not enabled:
        yield
        return
    with forward_output_hooks(_relu6_modules(model), _relu6_hook):
        yield


def _relu6_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.ReLU6)]


def _relu6_hook(
    _module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    relu = F.relu(inputs[0])
    return relu - (relu - output).detach()
