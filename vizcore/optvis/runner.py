"""One optimization runner for every method that makes an image with the network.

Class and neuron visualization, feature inversion, DeepDream, style transfer and texture synthesis
are all "optimize an image instead of the weights". They differ only in their parts, which live
here as small composable pieces (the design follows lucid/lucent: objectives, parameterizations,
transforms):

* an :class:`Objective` to *maximize*, built from captured activations and/or the logits
  (:func:`class_logit`, :func:`channel`, :func:`neuron`, :func:`layer_l2`, :func:`feature_match`),
  composable with ``+``, ``-`` and scalar ``*``;
* an image parameterization returning ``(params, image_fn)``: :func:`pixel_image` (plain pixels)
  or :func:`fourier_image` (1/f spectrum, decorrelated colour, sigmoid);
* transforms applied to the image before each forward pass (:func:`jitter`, :func:`random_scale`,
  :func:`random_rotate`, :func:`pad`, :func:`compose`), all drawing from the run's local generator;
* pixel-space regularizers from Yosinski et al. 2015 (:class:`PixelRegularizers`: L2 decay,
  Gaussian blur every k steps, clipping pixels with small norm or small contribution) and loss
  terms usable with any parameterization (total variation, Simonyan's L2 penalty);
* the runner :func:`optimize`, which takes one ``inference_session(model)`` turn per step (so
  another session waits at most one step), reports progress through ``on_step`` and can be
  stopped.

Images are RGB in [0, 1], ``(N, 3, H, W)``; the models normalize internally.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.checks import check_float, check_image_batch, check_int, check_positive
from vizcore.core.devices import model_device
from vizcore.core.hooks import (
    Activations,
    capture_activations,
    forward_output_hooks,
    forward_until,
    inference_session,
)
from vizcore.core.progress import OnStep, StepInfo, report, waiting
from vizcore.core.render import grid, to_uint8

Acts = Mapping[str, torch.Tensor]
ObjectiveFn = Callable[[Acts, "torch.Tensor | None"], torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
ImageFn = Callable[[], torch.Tensor]
Param = tuple[list[torch.Tensor], ImageFn]
OptimizerName = Literal["adam", "sgd", "lbfgs", "normalized"]

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


# ----------------------------------------------------------------------- parameterizations


class PixelImage:
    """``image_fn`` of :func:`pixel_image`: the image is ``0.5 + pixels`` (pixels centred on grey).

    Kept as a class so that :func:`optimize` can apply the pixel-space regularizers to
    :attr:`pixels`, which hold the image minus 0.5 ("zero" is the grey image, as the mean image
    is zero after the paper's mean subtraction).
    """

    def __init__(self, pixels: torch.Tensor) -> None:
        self.pixels = pixels

    def __call__(self) -> torch.Tensor:
        return self.pixels + 0.5


def pixel_image(
    shape: tuple[int, int, int, int],
    *,
    init: torch.Tensor | Literal["zeros", "noise"] | None = None,
    generator: torch.Generator | None = None,
    noise: float = 0.1,
    device: torch.device | str | None = None,
) -> Param:
    """Optimize the pixels directly.

    Args:
        shape: ``(N, 3, H, W)``.
        init: ``None``/``"zeros"`` for the grey ("zero") image, ``"noise"`` for grey plus uniform
            noise of amplitude ``noise``, or an image in [0, 1] of ``shape`` (e.g. a photo for
            DeepDream).
        generator: Local generator for the noise.
        noise: Noise amplitude in pixel units.
        device: Where the pixels live (the model's device); ``None``: the CPU, or ``init``'s
            device for a tensor ``init``. The noise is drawn on the generator's device and
            moved, so a CPU generator gives the same image on every device.
    """
    _check_shape(shape)
    noise = check_float("noise", noise, minimum=0.0)
    if isinstance(init, torch.Tensor):
        check_image_batch(init, name="init", batch=None, min_side=1)
        if tuple(init.shape) != tuple(shape):
            raise ValueError(f"init has shape {tuple(init.shape)}, expected {tuple(shape)}.")
        pixels = init.detach().float().clamp(0, 1) - 0.5
        if device is not None:
            pixels = pixels.to(device)
    elif init in (None, "zeros"):
        pixels = torch.zeros(shape, device=device or "cpu")
    elif init == "noise":
        drawn_on = generator.device if generator is not None else "cpu"
        noise_draw = torch.rand(shape, generator=generator, device=drawn_on)
        pixels = ((noise_draw * 2 - 1) * noise).to(device or "cpu")
    else:
        raise ValueError(f"init must be None, 'zeros', 'noise' or a tensor, got {init!r}.")
    pixels = pixels.contiguous().requires_grad_(True)
    return [pixels], PixelImage(pixels)


#: Lucid's colour correlation (square root of the ImageNet RGB covariance via its SVD).
_COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
)
_COLOR_CORRELATION = _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


def _rfft2d_freqs(height: int, width: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(height, device="cpu")[:, None]
    fx = torch.fft.rfftfreq(width, device="cpu")[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fft_size(n: int) -> int:
    """The smallest length ``>= n`` whose only prime factors are 2, 3 and 5.

    FFTs of such lengths are fast; others are not: an inverse real FFT of 3x3x259x259 (SqueezeNet's
    227 px plus padding; 259 = 7 x 37) took 11.8 ms forward+backward here, at 264 px 2.9 ms.
    """
    n = check_int("An FFT length", n, minimum=1)
    m = n
    while True:
        rest = m
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return m
        m += 1


@dataclass(frozen=True)
class FourierBasis:
    """The grid a Fourier-parameterized image lives on: an FFT-friendly size, cropped.

    Attributes:
        height, width: The image's size (the crop).
        fft_height, fft_width: The spectrum's grid, :func:`fft_size` of the image's size.
        scale: ``1 / f^decay`` per frequency, shaped ``(1, 1, fft_height, fft_width // 2 + 1, 1)``
            to multiply a real-view spectrum.
    """

    height: int
    width: int
    fft_height: int
    fft_width: int
    scale: torch.Tensor

    @classmethod
    def of(cls, height: int, width: int, decay: float = 1.0) -> FourierBasis:
        """The basis for an image of ``height`` x ``width`` with a ``1/f^decay`` spectrum."""
        fh, fw = fft_size(height), fft_size(width)
        freqs = _rfft2d_freqs(fh, fw)
        scale = 1.0 / freqs.clamp_min(1.0 / max(fh, fw)) ** decay
        return cls(height, width, fh, fw, scale[None, None, ..., None])

    def to_image(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``irfft2(scale * spectrum)`` on the FFT grid, cropped to the image (no colour, no
        sigmoid): ``spectrum`` is a real view ``(N, C, fft_height, fft_width // 2 + 1, 2)``."""
        complex_spectrum = torch.view_as_complex(self.scale.to(spectrum.device) * spectrum)
        grid = torch.fft.irfft2(complex_spectrum, s=(self.fft_height, self.fft_width), norm="ortho")
        return grid[..., : self.height, : self.width]

    def from_image(self, image: torch.Tensor) -> torch.Tensor:
        """The exact inverse of :meth:`to_image` for an ``(N, C, height, width)`` image: it is
        edge-padded to the FFT grid, so the crop gives it back (up to float error)."""
        pad = (0, self.fft_width - self.width, 0, self.fft_height - self.height)
        grid = F.pad(image, pad, mode="replicate") if any(pad) else image
        return torch.view_as_real(torch.fft.rfft2(grid, norm="ortho")) / self.scale.to(grid.device)


def fourier_image(
    shape: tuple[int, int, int, int],
    *,
    decay: float = 1.0,
    generator: torch.Generator | None = None,
    sd: float = 0.01,
    device: torch.device | str | None = None,
) -> Param:
    """Lucid's parameterization: a 1/f^decay-scaled spectrum, decorrelated colour, sigmoid.

    The image is ``sigmoid(C · irfft2(scale ⊙ spectrum) / 4)`` with ``C`` the normalized square
    root of the ImageNet colour covariance (Olah et al. 2017, "Feature Visualization"). Optimizing
    in this basis equalizes the step size across frequencies, so gradient ascent builds large
    structures instead of high-frequency noise.

    Deviation: the spectrum lives on the next FFT-friendly grid (:func:`fft_size`) and the image
    is its top-left crop (Lucid uses the image size itself; 259 px costs 4x more than 264 px).

    ``device`` is where the spectrum lives (the model's device; ``None``: the CPU); it is drawn
    on the generator's device and moved, so a CPU generator gives the same image everywhere.
    """
    _check_shape(shape)
    decay = check_float("decay", decay, minimum=0.0)
    sd = check_float("sd", sd, minimum=0.0)
    n, channels, height, width = shape
    basis = FourierBasis.of(height, width, decay)
    spectrum_shape = (n, channels, basis.fft_height, basis.fft_width // 2 + 1, 2)
    drawn_on = generator.device if generator is not None else "cpu"
    spectrum = torch.randn(spectrum_shape, generator=generator, device=drawn_on) * sd
    spectrum = spectrum.to(device or "cpu").contiguous().requires_grad_(True)
    color = _COLOR_CORRELATION.to(spectrum.device)
    basis = replace(basis, scale=basis.scale.to(spectrum.device))  # copied once, not per step

    def image_fn() -> torch.Tensor:
        image = basis.to_image(spectrum) / 4.0
        # Colour mixing as one batched matmul: 4x faster forward+backward than the einsum.
        mixed = color @ image.reshape(n, channels, height * width)
        return torch.sigmoid(mixed.view(n, channels, height, width))

    return [spectrum], image_fn


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


@dataclass(frozen=True)
class OptimizationResult:
    """What :func:`optimize` made.

    Attributes:
        image: Final images, ``(N, H, W, 3)`` float32 in [0, 1].
        losses: The minimized loss (mean over the batch) after each step.
        objective: The objective's value per item after each step, ``(steps_done, N)``.
        frames: uint8 snapshots (the batch as one grid) every ``frame_every`` steps, plus the
            final image.
        stopped: Whether the run was stopped early by ``on_step``.
        seconds: Wall-clock time of the run.
        steps_done: Steps actually taken.
    """

    image: np.ndarray
    losses: np.ndarray
    objective: np.ndarray
    frames: tuple[np.ndarray, ...]
    stopped: bool
    seconds: float
    steps_done: int


def _frame(image: torch.Tensor) -> np.ndarray:
    tiles = [to_uint8(img) for img in image.detach().cpu().numpy()]
    return tiles[0] if len(tiles) == 1 else grid(tiles, columns=min(len(tiles), 4), pad=2)


def _model_outputs(
    model: nn.Module, x: torch.Tensor, acts: Activations, objective: Objective
) -> torch.Tensor | None:
    acts.clear()
    if objective.needs_logits or not objective.layers:
        return model(x)
    return forward_until(model, x)


_REFERENCE_CACHE_SIZE = 64


def _reference_activations(
    model: nn.Module,
    ref: torch.Tensor,
    acts: Activations,
    objective: Objective,
    cache: dict[tuple, dict[str, torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """The reference's activations, computed once per distinct transformed reference.

    Jitter by a few pixels produces only a few distinct shifted references, so after a few
    steps the extra forward pass per step disappears.
    """
    if ref.device.type != "cpu":
        # The key would copy the reference to the CPU (a device sync) every step; on a GPU the
        # reference's forward pass costs less than that wait.
        with torch.no_grad():
            _model_outputs(model, ref.contiguous(), acts, objective)
        return {reference_key(n): acts[n].detach() for n in sorted(objective.layers)}
    key = (tuple(ref.shape), hash(ref.detach().cpu().numpy().tobytes()))
    hit = cache.get(key)
    if hit is not None:
        return hit
    with torch.no_grad():
        _model_outputs(model, ref.contiguous(), acts, objective)
    out = {reference_key(n): acts[n].detach() for n in sorted(objective.layers)}
    if len(cache) < _REFERENCE_CACHE_SIZE:
        cache[key] = out
    return out


def optimize(
    model: nn.Module,
    objective: Objective,
    *,
    param: Param,
    steps: int,
    lr: float,
    optimizer: OptimizerName = "adam",
    transforms: Transform | Sequence[Transform] | None = None,
    regularizers: PixelRegularizers | None = None,
    tv_weight: float | Sequence[float] | torch.Tensor = 0.0,
    l2_weight: float = 0.0,
    relu6_passthrough: bool = False,
    reference: torch.Tensor | None = None,
    schedule: Literal["constant", "cosine"] = "constant",
    seed: int = 0,
    frame_every: int = 10,
    on_step: OnStep | None = None,
) -> OptimizationResult:
    """Maximize ``objective`` over the image given by ``param``.

    Each step: draw the transforms from a local generator, run the model on the transformed
    image (capturing the objective's layers), minimize
    ``−objective + tv_weight·TV(I) + l2_weight·‖I − 0.5‖²`` (per image, summed over the batch),
    then apply the pixel regularizers and keep pixels in [0, 1].

    Args:
        model: Any classifier taking RGB in [0, 1]; never changed (``inference_session``).
        objective: What to maximize.
        param: ``(params, image_fn)`` from :func:`pixel_image` or :func:`fourier_image`.
        steps: Number of optimizer steps (each one forward+backward).
        lr: Learning rate; for ``"normalized"`` the step in pixel units (``x += lr·g/mean|g|``).
        optimizer: ``"adam"``, ``"sgd"``, ``"lbfgs"`` (one iteration, one evaluation per step)
            or ``"normalized"`` (normalized gradient ascent, Mordvintsev et al. 2015).
        transforms: A transform or list of transforms applied before each forward pass.
        regularizers: Yosinski et al.'s pixel-space regularizers (pixel parameterization only).
        tv_weight: Weight of the total-variation penalty (any parameterization); one per image
            is allowed.
        l2_weight: Simonyan's λ for ``λ‖I − 0.5‖²`` (sum over pixels, any parameterization).
        relu6_passthrough: Gradients pass through ReLU6 above 6 (forward unchanged).
        reference: An image transformed exactly like the optimized one each step; its
            activations reach the objective under :func:`reference_key` (for
            ``feature_match(layer)`` with no fixed target).
        schedule: Learning-rate schedule (``"cosine"`` decays to 0).
        seed: Seeds the local generator used by the transforms.
        frame_every: Send a frame to ``on_step`` (and keep it) every this many steps.
        on_step: Progress callback; returning ``False`` stops early.

    The run happens on the device of ``param``'s tensors (they should be on the model's
    device). On the CPU the loss is read every step, as it always was; on a GPU or MPS it is
    read only on the steps that make a frame (every ``frame_every`` steps and the last), the
    steps between report the last value read: no step waits for the device just to print a
    number. The per-step losses and objective values come back in one copy at the end.

    Returns:
        An :class:`OptimizationResult`.
    """
    params, image_fn = param
    tv = torch.as_tensor(tv_weight, dtype=torch.float32, device="cpu").flatten()
    if not bool(torch.isfinite(tv).all()):
        raise ValueError(f"tv_weight must be finite, got {tv_weight!r}.")
    seed = check_int("seed", seed)
    _validate(steps, lr, optimizer, float(tv.min()), l2_weight, frame_every, schedule)
    use_tv = bool((tv != 0).any())
    device = params[0].device if params else model_device(model)
    tv = tv.to(device)
    read_every_step = device.type == "cpu"
    pixels = image_fn.pixels if isinstance(image_fn, PixelImage) else None
    if regularizers is not None and regularizers.active and pixels is None:
        raise ValueError(
            "The pixel-space regularizers (L2 decay, blur, clipping) need the pixel "
            "parameterization; use tv_weight / l2_weight with the Fourier one."
        )
    if objective.needs_reference and reference is None:
        raise ValueError(f"{objective.name} compares with a reference image: pass reference=.")
    if isinstance(transforms, Sequence):
        transforms = compose(*transforms)
    generator = torch.Generator().manual_seed(int(seed))
    twin = torch.Generator()
    layers = sorted(objective.layers)
    start = time.perf_counter()
    losses: list[float] = []
    values: list[np.ndarray] = []
    loss_tensors: list[torch.Tensor] = []  # accelerators: read once at the end
    value_tensors: list[torch.Tensor] = []
    last_loss, last_value = float("nan"), float("nan")
    frames: list[np.ndarray] = []
    stopped = False
    step = 0
    relu6_modules = _relu6_modules(model) if relu6_passthrough else []

    @contextmanager
    def turn() -> Iterator[Activations]:
        """One turn on the model per forward+backward, hooks registered inside it."""
        with (
            inference_session(model, on_wait=waiting(on_step, step - 1, steps)),
            forward_output_hooks(relu6_modules, _relu6_hook),
            capture_activations(model, layers, stop_early=not objective.needs_logits) as acts,
        ):
            yield acts

    opt = _make_optimizer(optimizer, params, lr)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        if schedule == "cosine" and opt is not None
        else None
    )
    fixed_reference: dict[str, torch.Tensor] | None = None
    ref_cache: dict[tuple, dict[str, torch.Tensor]] = {}
    state: dict[str, object] = {}

    def closure() -> torch.Tensor:
        # Another session's request waits at most one step (the lock is FIFO).
        with turn() as acts:
            return evaluate(acts)

    def evaluate(acts: Activations) -> torch.Tensor:
        nonlocal fixed_reference
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        image = image_fn()
        x = image
        ref_acts: dict[str, torch.Tensor] = {}
        if reference is not None:
            if transforms is None and fixed_reference is not None:
                ref_acts = fixed_reference
            else:
                twin.set_state(generator.get_state())
                ref = transforms(reference, twin) if transforms else reference
                ref_acts = _reference_activations(model, ref, acts, objective, ref_cache)
                if transforms is None:
                    fixed_reference = ref_acts
        if transforms is not None:
            x = transforms(x, generator)
        # A channels-last input (e.g. from einsum) makes CPU batch-norm backward ~8x slower.
        x = x.contiguous()
        logits = _model_outputs(model, x, acts, objective)
        merged = {n: acts[n] for n in layers} | ref_acts
        value = objective(merged, logits if objective.needs_logits else None)
        if value.ndim != 1 or value.shape[0] != image.shape[0]:
            raise ValueError(
                f"The objective must give one value per image, got shape {tuple(value.shape)}."
            )
        loss = -value
        if use_tv:
            loss = loss + tv * total_variation(image)
        if l2_weight:
            loss = loss + l2_weight * (image - 0.5).pow(2).flatten(1).sum(1)
        total = loss.sum()
        grads = torch.autograd.grad(total, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if read_every_step:
            state["loss"] = float(loss.detach().mean())
            state["value"] = value.detach().cpu().numpy()
        else:
            state["loss"] = loss.detach().mean()
            state["value"] = value.detach()
        return total.detach()

    try:
        for step in range(1, steps + 1):
            if opt is None:
                closure()
                _normalized_step(params, lr)
            elif optimizer == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
            if scheduler is not None:
                scheduler.step()
            if pixels is not None:
                with torch.no_grad():
                    new = pixels
                    if regularizers is not None and regularizers.active:
                        new = regularizers.apply(pixels, pixels.grad, step)
                    pixels.copy_(new.clamp(-0.5, 0.5))
            frame_step = step % frame_every == 0 or step == steps
            if read_every_step:
                losses.append(float(state["loss"]))
                values.append(np.asarray(state["value"]))
                last_loss, last_value = losses[-1], float(values[-1].mean())
            else:
                loss_tensors.append(state["loss"])  # type: ignore[arg-type]
                value_tensors.append(state["value"])  # type: ignore[arg-type]
                if frame_step:
                    last_loss = float(loss_tensors[-1])
                    last_value = float(value_tensors[-1].float().mean())
            frame = None
            if frame_step:
                with torch.no_grad():
                    frame = _frame(image_fn())
                frames.append(frame)
            info = StepInfo(
                step=step,
                total=steps,
                loss=last_loss,
                frame=frame,
                message=f"step {step}/{steps}, objective {last_value:.4g}",
            )
            if not report(on_step, info):
                stopped = step < steps
                break
    finally:
        for p in params:
            p.grad = None
    if loss_tensors:
        losses = torch.stack(loss_tensors).float().cpu().tolist()
        values = list(torch.stack(value_tensors).float().cpu().numpy())
    with torch.no_grad():
        final = image_fn().detach().clamp(0, 1)
    if not frames or stopped:
        frames.append(_frame(final))
    return OptimizationResult(
        image=final.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
        losses=np.asarray(losses, dtype=np.float32),
        objective=np.stack(values).astype(np.float32) if values else np.zeros((0, 0), np.float32),
        frames=tuple(frames),
        stopped=stopped,
        seconds=time.perf_counter() - start,
        steps_done=len(losses),
    )


# The keyword argument ``relu6_passthrough`` of optimize() shadows the context manager's name.
relu6_passthrough_ctx = relu6_passthrough


def _make_optimizer(
    name: OptimizerName, params: list[torch.Tensor], lr: float
) -> torch.optim.Optimizer | None:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "lbfgs":
        return torch.optim.LBFGS(params, lr=lr, max_iter=1, history_size=20)
    return None


@torch.no_grad()
def _normalized_step(params: list[torch.Tensor], lr: float) -> None:
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        scale = g.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, *([1] * (g.ndim - 1)))
        p.sub_(lr * g / scale)


def _validate(
    steps: int,
    lr: float,
    optimizer: str,
    tv_weight: float,
    l2_weight: float,
    frame_every: int,
    schedule: str,
) -> None:
    check_int("steps", steps, minimum=1)
    check_positive("The step size (lr)", lr)
    if optimizer not in ("adam", "sgd", "lbfgs", "normalized"):
        raise ValueError(f"Unknown optimizer {optimizer!r}: choose adam, sgd, lbfgs or normalized.")
    check_float("tv_weight", tv_weight, minimum=0.0)
    check_float("l2_weight", l2_weight, minimum=0.0)
    check_int("frame_every", frame_every, minimum=1)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}.")
