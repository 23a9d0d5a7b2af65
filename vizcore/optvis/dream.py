"""DeepDream (Mordvintsev, Olah & Tyka 2015, "Inceptionism"): amplify what a layer already sees in
an image, by gradient ascent on the layer's L2 norm over an octave pyramid, with jitter."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.checks import check_image_batch, check_int
from vizcore.core.devices import model_device
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep, RunResult, StepInfo, report
from vizcore.optvis import objectives, runner, transforms
from vizcore.optvis import param as image_param

if TYPE_CHECKING:
    from vizcore.models.registry import ModelSpec

# ---------------------------------------------------------------------------------- DeepDream


@dataclass(frozen=True)
class DreamSettings:
    """DeepDream settings (Mordvintsev et al. 2015).

    Attributes:
        octaves: Number of scales, the smallest first.
        octave_scale: Size ratio between consecutive octaves.
        steps_per_octave: Gradient-ascent steps at each scale.
        lr: Normalized step in pixel units (``x += lr·g/mean|g|``).
        jitter: Random roll in pixels each step.
        max_size: Longest side of the dreamed image (the photo is resized to it).
        relu6_passthrough: Gradients through ReLU6 above 6.
    """

    octaves: int = 4
    octave_scale: float = 1.4
    steps_per_octave: int = 10
    lr: float = 1.5 / 255
    jitter: int = 32
    max_size: int = 400
    relu6_passthrough: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.octaves <= 8:
            raise ValueError(f"octaves must be between 1 and 8, got {self.octaves}.")
        if not 1.0 < self.octave_scale <= 2.0:
            raise ValueError(f"octave_scale must be in (1, 2], got {self.octave_scale}.")
        if self.steps_per_octave < 1 or not self.lr > 0 or self.jitter < 0:
            raise ValueError("steps_per_octave must be >= 1, lr > 0 and jitter >= 0.")
        if not 16 <= self.max_size <= 2048:
            raise ValueError(f"max_size must be between 16 and 2048, got {self.max_size}.")


@dataclass(frozen=True)
class DreamResult(RunResult):
    """A dreamed image.

    Attributes:
        original: The (resized) photo, ``(H, W, 3)`` float32 in [0, 1].
        image: The dream, same size.
        layer: The amplified layer.
        losses: Minimized loss (−0.5·mean(A²)) per step, all octaves in order.
        frames: uint8 snapshots (resized to the final size).
        stopped, seconds, steps_done: As in :class:`SynthesisResult`.
    """

    original: np.ndarray
    image: np.ndarray
    layer: str
    losses: np.ndarray
    frames: tuple[np.ndarray, ...]


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _frame_at(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if frame.shape[:2] == size:
        return frame
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.LANCZOS))


def deep_dream(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str,
    settings: DreamSettings | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> DreamResult:
    """DeepDream: amplify whatever a layer sees in the photo.

    Mordvintsev, Olah & Tyka 2015, "Inceptionism": gradient ascent on ``0.5·mean(A_l(I)²)``
    with normalized steps ``I ← I + η·g/mean|g|``, random jitter, over an octave pyramid (the
    detail added at a small scale is upsampled and carried to the next).

    Args:
        model: A classifier taking RGB in [0, 1].
        x: The photo, ``(1, 3, H, W)`` in [0, 1], any size (resized to ``settings.max_size``).
        layer: The layer to amplify (see the model's ``"deepdream"`` preset).
        settings: Octaves, steps, step size, jitter, size.
        seed: Seed of the local random generator (jitter).
        on_step: Progress callback (counts steps over all octaves); ``False`` stops early.
    """
    check_image_batch(x, model=model)
    seed = check_int("seed", seed)
    get_layer(model, layer)
    settings = settings or DreamSettings()
    height, width = x.shape[-2:]
    factor = settings.max_size / max(height, width)
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    device = model_device(model)
    base = _resize(x.detach().float().to(device), size).clamp(0, 1)
    sizes = [
        tuple(max(16, round(s / settings.octave_scale**k)) for s in size)
        for k in range(settings.octaves - 1, -1, -1)
    ]
    total = settings.octaves * settings.steps_per_octave
    objective = objectives.layer_l2(layer)
    detail = torch.zeros(1, 3, *sizes[0], device=device)
    losses: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    stopped = False
    seconds = 0.0
    image = base
    for octave, octave_size in enumerate(sizes):
        octave_base = _resize(base, octave_size)
        detail = _resize(detail, octave_size)
        start = (octave_base + detail).clamp(0, 1)
        offset = octave * settings.steps_per_octave
        forward: dict[str, bool] = {"go": True}

        def relay(
            info: StepInfo, offset: int = offset, octave: int = octave, forward: dict = forward
        ) -> bool:
            frame = None if info.frame is None else _frame_at(info.frame, size)
            go = report(
                on_step,
                StepInfo(
                    step=offset + info.step,
                    total=total,
                    loss=info.loss,
                    frame=frame,
                    message=f"octave {octave + 1}/{settings.octaves}, {info.message}",
                    waited=info.waited,
                ),
            )
            forward["go"] = go
            return go

        result = runner.optimize(
            model,
            objective,
            param=image_param.pixel_image(start.shape, init=start),
            steps=settings.steps_per_octave,
            lr=settings.lr,
            optimizer="normalized",
            transforms=transforms.jitter(min(settings.jitter, min(octave_size) // 2)),
            relu6_passthrough=settings.relu6_passthrough,
            seed=seed + octave,
            frame_every=max(1, settings.steps_per_octave // 4),
            on_step=relay,
        )
        seconds += result.seconds
        losses.append(result.losses)
        frames.extend(_frame_at(f, size) for f in result.frames)
        image = torch.from_numpy(result.image).permute(0, 3, 1, 2).to(device)  # once per octave
        detail = image - octave_base
        if result.stopped or not forward["go"]:
            stopped = True
            image = _resize(image, size)
            break
    return DreamResult(
        original=base[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        image=image[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy().astype(np.float32),
        layer=layer,
        losses=np.concatenate(losses).astype(np.float32),
        frames=tuple(frames),
        stopped=stopped,
        seconds=seconds,
        steps_done=int(sum(len(loss) for loss in losses)),
    )


def deepdream_layers(spec: ModelSpec, model: nn.Module) -> list[str]:
    """Layers offered in the DeepDream selector: the spec's preset, else its ReLU outputs."""
    from vizcore.core.layers import list_layers

    preset = list(spec.preset("deepdream"))
    if preset:
        return preset
    layers = list_layers(model, kind="activation")
    step = max(1, math.ceil(len(layers) / 8))
    return layers[::step]
