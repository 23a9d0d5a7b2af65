"""Images made by the network: class and neuron visualization.

Every method here is one call of :func:`vizcore.optvis.optimize` with its own objective,
parameterization, transforms and regularizers. The settings that give recognizable results on the
bundled models were measured in ``shared/research/synthesis-feasibility.md`` and are the presets
returned by :func:`synthesis_preset`. Feature inversion lives in :mod:`vizcore.optvis.inversion`,
DeepDream in :mod:`vizcore.optvis.dream`.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from vizcore.core.checks import check_class_index, check_int
from vizcore.core.devices import model_device
from vizcore.core.hooks import inference_session
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep, RunResult
from vizcore.optvis import objectives, regularizers, runner, transforms
from vizcore.optvis import param as image_param

if TYPE_CHECKING:
    from vizcore.models.registry import ModelSpec

Parameterization = Literal["fourier", "pixel"]


@dataclass(frozen=True)
class SynthesisSettings:
    """How to optimize an image from scratch (class and neuron visualization).

    Attributes:
        parameterization: ``"fourier"`` (lucid-style 1/f spectrum, decorrelated colour) or
            ``"pixel"`` (plain pixels, with Yosinski et al.'s regularizers).
        size: Image side in pixels.
        steps: Optimizer steps.
        lr: Step size: Adam's learning rate (Fourier) or the normalized step in pixel units
            (pixel: ``x += lr·g/mean|g|``).
        l2_weight: Simonyan et al.'s λ in ``S_c(I) − λ‖I‖²`` (``I`` centred on grey).
        tv_weight: Total-variation penalty weight.
        regularizers: Pixel-space regularizers (pixel parameterization only).
        jitter: Random roll in pixels each step.
        scale: Random zoom range each step (``(1, 1)`` = off).
        rotate: Random rotation range in degrees each step.
        pad: Reflection padding before the random zoom and rotation.
        relu6_passthrough: Let gradients pass through ReLU6 above 6 (needed for EfficientNet-Lite).
        init: Start from the grey ("zero") image or from grey plus noise (pixel only).
        decay: Spectrum decay exponent of the Fourier parameterization.
    """

    parameterization: Parameterization = "fourier"
    size: int = 224
    steps: int = 200
    lr: float = 0.05
    l2_weight: float = 0.0
    tv_weight: float = 0.0
    regularizers: regularizers.PixelRegularizers = dataclasses.field(
        default_factory=regularizers.PixelRegularizers
    )
    jitter: int = 8
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = 10.0
    pad: int = 12
    relu6_passthrough: bool = False
    init: Literal["zeros", "noise"] = "zeros"
    decay: float = 1.0

    def __post_init__(self) -> None:
        if self.parameterization not in ("fourier", "pixel"):
            raise ValueError(
                f"parameterization must be 'fourier' or 'pixel', got {self.parameterization!r}."
            )
        if not 16 <= self.size <= 1024:
            raise ValueError(f"Image size must be between 16 and 1024 pixels, got {self.size}.")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}.")
        if not self.lr > 0:
            raise ValueError(f"The step size must be > 0, got {self.lr}.")
        if self.jitter < 0 or self.pad < 0 or self.rotate < 0:
            raise ValueError("jitter, pad and rotate must be >= 0.")
        if self.parameterization == "fourier" and self.regularizers.active:
            raise ValueError(
                "The pixel-space regularizers (L2 decay, blur, clipping) apply to the pixel "
                "parameterization only; switch to 'pixel' or turn them off."
            )

    def transforms(self) -> list[transforms.Transform]:
        """The per-step transforms these settings describe."""
        out: list[transforms.Transform] = []
        if self.pad:
            out.append(transforms.pad(self.pad))
        if self.jitter:
            out.append(transforms.jitter(self.jitter))
        if self.scale != (1.0, 1.0) or self.rotate:
            out.append(transforms.random_affine(self.scale, self.rotate))
        return out

    def param(
        self, batch: int, generator: torch.Generator, *, device: torch.device | None = None
    ) -> image_param.Param:
        """A fresh image parameterization for ``batch`` images on ``device`` (CPU: ``None``)."""
        shape = (batch, 3, self.size, self.size)
        if self.parameterization == "fourier":
            return image_param.fourier_image(
                shape, decay=self.decay, generator=generator, device=device
            )
        return image_param.pixel_image(shape, init=self.init, generator=generator, device=device)

    @property
    def optimizer(self) -> runner.OptimizerName:
        """Adam for the Fourier parameterization, normalized gradient ascent for pixels."""
        return "adam" if self.parameterization == "fourier" else "normalized"


#: The CS231n look: pixel space with Yosinski et al.'s regularizers (SqueezeNet, measured).
_PIXEL = SynthesisSettings(
    parameterization="pixel",
    size=227,
    steps=200,
    lr=2 / 255,
    regularizers=regularizers.PixelRegularizers(l2_decay=1e-3, blur_sigma=0.5, blur_every=4),
    jitter=16,
    scale=(1.0, 1.0),
    rotate=0.0,
    pad=0,
)
_FOURIER = SynthesisSettings(parameterization="fourier", size=224, steps=200, lr=0.05)


def default_synthesis_settings(
    parameterization: Parameterization = "fourier", *, size: int = 224
) -> SynthesisSettings:
    """The generic settings (no model-specific tuning) at ``size`` pixels."""
    base = _FOURIER if parameterization == "fourier" else _PIXEL
    return dataclasses.replace(base, size=int(size))


def synthesis_preset(spec: ModelSpec, parameterization: Parameterization) -> SynthesisSettings:
    """Settings that give a recognizable class visualization on the model of ``spec``.

    The generic settings (pixel: Yosinski et al.'s regularizers as measured on SqueezeNet;
    Fourier: lucid's defaults) at the model's input size, with the spec's hand-tuned overrides
    (``spec.tuning["synthesis.<parameterization>"]``) on top.
    """
    if parameterization not in ("fourier", "pixel"):
        raise ValueError(
            f"parameterization must be 'fourier' or 'pixel', got {parameterization!r}."
        )
    base = _FOURIER if parameterization == "fourier" else _PIXEL
    size = int(spec.preprocessing.input_size)
    overrides = dict(spec.tuned(f"synthesis.{parameterization}"))
    return dataclasses.replace(base, **{"size": size, **overrides})


@dataclass(frozen=True)
class SynthesisResult(RunResult):
    """Images optimized from scratch.

    Attributes:
        images: ``(N, H, W, 3)`` float32 in [0, 1].
        titles: One caption per image (class name or layer:channel).
        scores: The maximized value per image after the last step.
        probabilities: Softmax probability of the target class per image (class visualization
            only; NaN otherwise), measured on the final, untransformed image.
        losses: Minimized loss per step.
        frames: uint8 snapshots during the run (for an animated GIF).
        stopped: Whether the user stopped the run.
        seconds: Wall-clock time.
        steps_done: Steps actually taken.
    """

    images: np.ndarray
    titles: tuple[str, ...]
    scores: np.ndarray
    probabilities: np.ndarray
    losses: np.ndarray
    frames: tuple[np.ndarray, ...]


def run_with_settings(
    model: nn.Module,
    objective: objectives.Objective,
    settings: SynthesisSettings,
    *,
    batch: int = 1,
    seed: int = 0,
    on_step: OnStep | None = None,
    param: tuple[list[torch.Tensor], Callable[[], torch.Tensor]] | None = None,
) -> runner.OptimizationResult:
    """Run :func:`vizcore.optvis.optimize` with a :class:`SynthesisSettings` preset.

    ``param`` overrides the preset's image parameterization (e.g. an image to start from).
    """
    generator = torch.Generator().manual_seed(int(seed))
    return runner.optimize(
        model,
        objective,
        param=param
        if param is not None
        else settings.param(batch, generator, device=model_device(model)),
        steps=settings.steps,
        lr=settings.lr,
        optimizer=settings.optimizer,
        transforms=settings.transforms() or None,
        regularizers=settings.regularizers if settings.parameterization == "pixel" else None,
        tv_weight=settings.tv_weight,
        l2_weight=settings.l2_weight,
        relu6_passthrough=settings.relu6_passthrough,
        seed=seed,
        frame_every=max(1, settings.steps // 30),
        on_step=on_step,
    )


def _class_probabilities(model: nn.Module, images: np.ndarray, classes: list[int]) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(model_device(model))
    with inference_session(model), torch.inference_mode():
        probs = torch.softmax(model(x).float(), dim=1).cpu()
    return probs[torch.arange(len(classes), device="cpu"), list(classes)].numpy()


def class_visualization(
    model: nn.Module,
    x: torch.Tensor | None = None,
    *,
    target: int | Sequence[int],
    settings: SynthesisSettings | None = None,
    categories: Sequence[str] | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> SynthesisResult:
    """Class model visualization: the image that maximizes a class score.

    Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks":
    ``I* = argmax_I S_c(I) − λ‖I‖²`` (``S_c`` the pre-softmax score), by gradient ascent from the
    zero (grey) image. Several classes run as one batch.

    Deviations from the paper: besides its plain L2 penalty, the pixel parameterization offers
    Yosinski et al. 2015's regularizers (L2 decay, periodic blur, clipping of small-norm and
    small-contribution pixels, jitter) and normalized gradient steps; the Fourier
    parameterization (Olah et al. 2017) with random pad/jitter/zoom/rotation gives colourful,
    recognizable images on both bundled nets. EfficientNet-Lite needs the Fourier basis, ±25%
    zoom and gradients passed straight through ReLU6 (``settings.relu6_passthrough``).

    Args:
        model: A classifier taking RGB in [0, 1].
        x: Unused (the image starts from scratch); kept for the shared signature.
        target: Class index, or several (one image each).
        settings: Optimization settings; :func:`synthesis_preset` gives measured ones.
        categories: Class names for the titles (ImageNet by default).
        seed: Seed of the local random generator (initialization and transforms).
        on_step: Progress callback; returning ``False`` stops early.
    """
    del x
    settings = settings or _FOURIER
    names = _categories(categories)
    if isinstance(target, str | bool | numbers.Number) or not hasattr(target, "__iter__"):
        classes = [check_class_index(target, len(names), name="Class index")]
    else:
        classes = [check_class_index(t, len(names), name="Class index") for t in target]
    if not classes:
        raise ValueError("Choose at least one class.")
    seed = check_int("seed", seed)
    result = run_with_settings(
        model,
        objectives.class_logit(classes),
        settings,
        batch=len(classes),
        seed=seed,
        on_step=on_step,
    )
    return SynthesisResult(
        images=result.image,
        titles=tuple(names[c] for c in classes),
        scores=_last(result),
        probabilities=_class_probabilities(model, result.image, classes),
        losses=result.losses,
        frames=result.frames,
        **result.run_fields(),
    )


def _categories(categories: Sequence[str] | None) -> Sequence[str]:
    if categories is not None:
        return categories
    from vizcore.models.registry import imagenet_categories

    return imagenet_categories()


def _last(result: runner.OptimizationResult) -> np.ndarray:
    if result.objective.size:
        return result.objective[-1]
    return np.full(result.image.shape[0], np.nan, np.float32)


def _channel_objective(
    layer: str, channels: list[int], mode: Literal["channel", "neuron"]
) -> objectives.Objective:
    if len(channels) == 1:
        make = objectives.channel if mode == "channel" else objectives.neuron
        return make(layer, channels[0])
    parts = [objectives.channel(layer, c) if mode == "channel" else objectives.neuron(layer, c)
             for c in channels]  # fmt: skip

    def fn(acts: objectives.Acts, logits: torch.Tensor | None) -> torch.Tensor:
        values = [part(acts, logits)[i] for i, part in enumerate(parts)]
        return torch.stack(values)

    return objectives.Objective(fn, layers={layer}, name=f"{layer}:{channels}")


def layer_channels(model: nn.Module, layer: str) -> int | None:
    """How many channels ``layer`` outputs (dimension 1), from the model's probe forward pass.

    The probe (:func:`vizcore.models.discovery.facts_for`) runs once per model and is cached,
    so pages can show the count next to a channel input and refuse a channel before any work.

    Returns:
        The channel count, or ``None`` when the probe saw no ``(N, C, ...)`` tensor output for
        ``layer`` (a module that never ran or returns something else).

    Raises:
        LayerNotFoundError: No such layer (the message lists close names).
    """
    from vizcore.models.discovery import facts_for

    get_layer(model, layer)
    info = facts_for(model).layer(layer)
    if info is None or len(info.shape) < 2:
        return None
    return int(info.shape[1])


def check_channels(model: nn.Module, layer: str, channels: Sequence[int]) -> None:
    """Refuse channels that ``layer`` does not have, before an optimization starts.

    Raises:
        ValueError: A channel is ``>=`` the layer's channel count; the message gives the count.
    """
    count = layer_channels(model, layer)
    if count is None:
        return
    bad = [c for c in channels if c >= count]
    if bad:
        raise ValueError(
            f"Layer {layer!r} has {count} channels (0 to {count - 1}); "
            f"channel{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} "
            f"do{'' if len(bad) > 1 else 'es'} not exist."
        )


def neuron_visualization(
    model: nn.Module,
    x: torch.Tensor | None = None,
    *,
    layer: str,
    channel: int | Sequence[int],
    mode: Literal["channel", "neuron"] = "channel",
    settings: SynthesisSettings | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> SynthesisResult:
    """The image that most excites one channel (mean over positions) or one neuron (centre).

    Erhan et al. 2009 activation maximization, with the transformation robustness and Fourier
    parameterization of Olah et al. 2017: ``I* = argmax_I mean_{y,x} A_c(I)[y, x]`` (channel)
    or ``A_c(I)[H/2, W/2]`` (neuron). Several channels run as one batch.

    Args:
        model: A classifier taking RGB in [0, 1].
        x: Unused (the image starts from scratch).
        layer: Dotted layer name.
        channel: Channel index, or several (one image each).
        mode: ``"channel"`` (the whole feature map) or ``"neuron"`` (its centre unit).
        settings: Optimization settings (:func:`synthesis_preset`).
        seed: Seed of the local random generator.
        on_step: Progress callback; returning ``False`` stops early.

    Raises:
        ValueError: A bad layer name, a channel the layer does not have (checked before any
            work, see :func:`layer_channels`), or a bad mode or seed.
    """
    del x
    get_layer(model, layer)  # a clear error for a bad name, before any work
    settings = settings or _FOURIER
    if isinstance(channel, str | bool | numbers.Number) or not hasattr(channel, "__iter__"):
        channels = [check_int("The channel", channel, minimum=0)]
    else:
        channels = [check_int("Each channel", c, minimum=0) for c in channel]
    seed = check_int("seed", seed)
    if not channels:
        raise ValueError("Choose at least one channel.")
    if mode not in ("channel", "neuron"):
        raise ValueError(f"mode must be 'channel' or 'neuron', got {mode!r}.")
    check_channels(model, layer, channels)  # before any work, not at the first step
    objective = _channel_objective(layer, channels, mode)
    result = run_with_settings(
        model, objective, settings, batch=len(channels), seed=seed, on_step=on_step
    )
    return SynthesisResult(
        images=result.image,
        titles=tuple(f"{layer} #{c}" for c in channels),
        scores=_last(result),
        probabilities=np.full(len(channels), np.nan, np.float32),
        losses=result.losses,
        frames=result.frames,
        **result.run_fields(),
    )
