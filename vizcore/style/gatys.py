"""Texture synthesis and neural style transfer by optimizing an image (Gatys et al. 2015, 2016).

Both run on the shared runner :func:`vizcore.optvis.optimize`; the Gram statistics come from
:mod:`vizcore.style.gram` (relative errors, so the same weights work on both bundled nets).

* :func:`texture_synthesis`: start from noise, minimize ``sum_l w_l ||G_l(x) - G_l(s)||² /
  ||G_l(s)||²`` (+ TV) for a texture sample ``s`` (Gatys, Ecker & Bethge 2015).
* :func:`style_transfer`: start from the content photo ``c``, minimize ``style_weight * style(x) /
  style(c) + content_weight * ||F(x) - F(c)||² / ||F(c)||² + tv_weight * TV(x)`` (Gatys, Ecker &
  Bethge 2016). The style term is divided by its value at the photo, so both terms are 1 at a
  natural scale (the style term at the start; the content term once the photo's features are
  as far off as their own size) and equal weights balance them: the style weight's useful range
  is about 0.1 (the photo) to 30 (above, the result hardly changes) on both bundled nets
  (bench/results/style_weights.md).

Deviations: relative losses instead of the papers' ``1/(4 N² M²)`` normalization (see
:mod:`vizcore.style.gram`); the network is one of the bundled classifiers instead of VGG-19
(measured settings per model in the model's spec, ``tuning["style"]``: EfficientNet-Lite0 needs
Adam + a TV prior to look painterly, SqueezeNet gives the boldest result with L-BFGS); L-BFGS runs
one iteration per step (each step is one forward+backward, like Adam's), without a line search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from vizcore import optvis
from vizcore.core.checks import check_image_batch
from vizcore.core.devices import model_device, to_model_device
from vizcore.core.hooks import inference_session
from vizcore.core.progress import OnStep, RunResult
from vizcore.core.render import to_uint8
from vizcore.style import gram

if TYPE_CHECKING:
    from vizcore.models.registry import ModelSpec

__all__ = [
    "StyleResult",
    "StyleSettings",
    "gram_style",
    "style_transfer",
    "texture_synthesis",
]


@dataclass(frozen=True)
class StyleSettings:
    """Measured defaults for one model (``shared/research/synthesis-feasibility.md`` Q4, Q5)."""

    optimizer: optvis.OptimizerName
    lr: float
    steps: int
    tv_weight: float
    style_weight: float = 3.0  # the style term is 1 at the photo (style_transfer)
    content_weight: float = 1.0
    style_layers: tuple[str, ...] | None = None  # None: the spec's "style" preset
    note: str = ""
    sample: str | None = None  # texture presets: the bundled sample this model renders best


_DEFAULT_STYLE = StyleSettings("adam", 0.02, 200, 1.0)
_DEFAULT_TEXTURE = StyleSettings("lbfgs", 1.0, 300, 0.3)


def style_settings(spec: ModelSpec, *, texture: bool = False) -> StyleSettings:
    """The measured defaults for the model of ``spec`` (``spec.tuning["style"]`` or
    ``["texture"]`` over the generic Adam + TV / L-BFGS settings)."""
    base = _DEFAULT_TEXTURE if texture else _DEFAULT_STYLE
    overrides = dict(spec.tuned("texture" if texture else "style"))
    return dataclasses.replace(base, **overrides)


def gram_style(targets: gram.GramTargets) -> optvis.Objective:
    """An objective (to maximize) equal to minus the relative Gram style loss, per image."""

    def fn(acts: optvis.Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        return -gram.style_loss(acts, targets, reduce=False)

    return optvis.Objective(fn, layers=targets.layers, name=f"gram({', '.join(targets.layers)})")


@dataclass(frozen=True)
class StyleResult(RunResult):
    """An image made by texture synthesis or style transfer.

    Attributes:
        image: uint8 RGB ``(H, W, 3)``.
        losses: Total loss after each step.
        frames: uint8 snapshots during the run (for the GIF).
        style_loss_start: Relative Gram distance to the style/texture at the initial image.
        style_loss_end: The same at the result.
        content_loss_end: Relative content error ``||F(x) - F(c)||² / ||F(c)||²`` of the result
            (style transfer; None for texture synthesis).
        seconds: Wall-clock time of the optimization.
        steps_done: Steps taken.
        stopped: Whether ``on_step`` stopped the run.
        settings: What was used (optimizer, lr, weights, layers).
    """

    image: np.ndarray
    losses: np.ndarray
    frames: tuple[np.ndarray, ...]
    style_loss_start: float
    style_loss_end: float
    settings: dict = field(default_factory=dict)
    content_loss_end: float | None = None

    @property
    def style_ratio(self) -> float:
        """``style_loss_end / style_loss_start``: the part of the style distance left (0-1)."""
        return self.style_loss_end / max(self.style_loss_start, 1e-12)


def _check_image(x: torch.Tensor, name: str) -> None:
    check_image_batch(x, name=f"The {name}", min_side=1)
    if min(x.shape[-2:]) < 32 or max(x.shape[-2:]) > 1024:
        raise ValueError(f"The {name} must be 32-1024 pixels per side, got {tuple(x.shape[-2:])}.")


def _style_distance(model: nn.Module, image: torch.Tensor, targets: gram.GramTargets) -> float:
    with torch.no_grad():
        feats = gram.extract_features(model, image, targets.layers)
        return float(gram.style_loss(feats, targets))


def texture_synthesis(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: Sequence[str],
    weights: Sequence[float] | None = None,
    size: tuple[int, int] = (256, 256),
    optimizer: optvis.OptimizerName = "lbfgs",
    steps: int = 300,
    lr: float = 1.0,
    tv_weight: float = 0.1,
    seed: int = 0,
    frame_every: int = 10,
    on_step: OnStep | None = None,
) -> StyleResult:
    """Synthesize a texture matching the Gram matrices of the sample ``x`` (Gatys et al. 2015).

    ``min_x sum_l w_l ||G_l(x) - G_l(s)||² / ||G_l(s)||² + tv_weight * TV(x)``, from noise.

    Args:
        model: A bundled or torchvision classifier (never changed).
        x: The texture sample ``(1, 3, h, w)`` in [0, 1].
        layers: Layers whose Gram matrices to match (``ModelSpec.preset("style")``).
        weights: One weight per layer (equal by default).
        size: Output (height, width).
        optimizer: ``"lbfgs"`` (crisper per evaluation) or ``"adam"``.
        steps: Optimizer steps (one forward+backward each).
        lr: Step size (1.0 for L-BFGS, about 0.02-0.05 for Adam).
        tv_weight: Total-variation prior against high-frequency grain.
        seed: Seeds the initial noise.
        frame_every: Keep a frame every this many steps.
        on_step: Progress callback; return False to stop.
    """
    _check_image(x, "texture sample")
    height, width = size
    _check_image(torch.zeros(1, 3, height, width, device="cpu"), "output")
    device = model_device(model)
    x = x.to(device)
    generator = torch.Generator().manual_seed(int(seed))
    param = optvis.pixel_image(
        (1, 3, height, width), init="noise", generator=generator, noise=0.25, device=device
    )
    with inference_session(model):
        targets = gram.gram_targets(model, x, layers, weights=weights)
        start = _style_distance(model, param[1]().detach(), targets)
    run = _RunOptions(steps, lr, optimizer, tv_weight, seed, frame_every)
    settings = {"layers": list(targets.layers), "size": list(size)}
    return _optimize(model, gram_style(targets), param, targets, start, settings, run, on_step)


def style_transfer(
    model: nn.Module,
    x: torch.Tensor,
    *,
    style: torch.Tensor,
    style_layers: Sequence[str],
    content_layer: str,
    style_weight: float = 3.0,
    content_weight: float = 1.0,
    tv_weight: float = 1.0,
    optimizer: optvis.OptimizerName = "adam",
    steps: int = 200,
    lr: float = 0.02,
    seed: int = 0,
    frame_every: int = 10,
    on_step: OnStep | None = None,
) -> StyleResult:
    """Paint the content image ``x`` in the style of ``style`` (Gatys et al. 2016).

    ``min_I style_weight * sum_l w_l ||G_l(I) - G_l(s)||²/||G_l(s)||² + content_weight *
    ||F(I) - F(x)||²/||F(x)||² + tv_weight * TV(I)``, starting from ``I = x``.

    Args:
        model: A bundled or torchvision classifier (never changed).
        x: The content image ``(1, 3, H, W)`` in [0, 1]; the output has its size.
        style: The style image ``(1, 3, h, w)`` in [0, 1] (any size; about the output's is best).
        style_layers: Layers whose Gram matrices to match (``ModelSpec.preset("style")``).
        content_layer: Layer whose features keep the content (``ModelSpec.preset("content")``).
        style_weight: Weight of the style loss, which is normalized to 1 at the photo (so
            ``style_weight = content_weight`` balances the two; on both bundled nets about 0.1
            keeps the photo, 10 paints the style over it, and above about 30 little changes).
        content_weight: Weight of the relative content loss.
        tv_weight: Total-variation prior (1 on Lite0 gives the painterly look).
        optimizer: ``"adam"``, ``"lbfgs"`` or ``"sgd"``.
        steps: Optimizer steps.
        lr: Step size.
        seed: Seed of the run's generator.
        frame_every: Keep a frame every this many steps.
        on_step: Progress callback; return False to stop.
    """
    _check_image(x, "content image")
    _check_image(style, "style image")
    if style_weight < 0 or content_weight < 0 or style_weight + content_weight == 0:
        raise ValueError("Style and content weights must be >= 0 and not both 0.")
    x, style = to_model_device(model, x), to_model_device(model, style)
    with inference_session(model):
        targets = gram.gram_targets(model, style, style_layers)
        with torch.no_grad():
            content = gram.extract_features(model, x, (content_layer,))[content_layer]
        start = _style_distance(model, x, targets)
    # The style term is 1 at the photo: weights mean the same for any style image and net.
    objective = (style_weight / max(start, 1e-12)) * gram_style(
        targets
    ) + content_weight * optvis.feature_match(content_layer, content)
    param = optvis.pixel_image(tuple(x.shape), init=x)
    run = _RunOptions(steps, lr, optimizer, tv_weight, seed, frame_every)
    settings = {
        "style_layers": list(targets.layers),
        "content_layer": content_layer,
        "style_weight": style_weight,
        "content_weight": content_weight,
    }
    return _optimize(
        model,
        objective,
        param,
        targets,
        start,
        settings,
        run,
        on_step,
        content=(content_layer, content),
    )


@dataclass(frozen=True)
class _RunOptions:
    """The optimizer options texture synthesis and style transfer share."""

    steps: int
    lr: float
    optimizer: optvis.OptimizerName
    tv_weight: float
    seed: int
    frame_every: int


def _optimize(
    model: nn.Module,
    objective: optvis.Objective,
    param: optvis.Param,
    targets: gram.GramTargets,
    start: float,
    settings: dict,
    run: _RunOptions,
    on_step: OnStep | None,
    *,
    content: tuple[str, torch.Tensor] | None = None,
) -> StyleResult:
    """Run the optimizer (texture synthesis and style transfer alike) and package the result;
    ``settings`` gets the run's own options added."""
    result = optvis.optimize(
        model,
        objective,
        param=param,
        steps=run.steps,
        lr=run.lr,
        optimizer=run.optimizer,
        tv_weight=run.tv_weight,
        seed=run.seed,
        frame_every=run.frame_every,
        on_step=on_step,
    )
    settings = {
        **settings,
        "optimizer": run.optimizer,
        "lr": run.lr,
        "steps": run.steps,
        "tv_weight": run.tv_weight,
    }
    return _finish(model, result, targets, start, settings, content)


def _finish(
    model: nn.Module,
    result: optvis.OptimizationResult,
    targets: gram.GramTargets,
    start: float,
    settings: dict,
    content: tuple[str, torch.Tensor] | None = None,
) -> StyleResult:
    image = to_model_device(model, torch.from_numpy(result.image).permute(0, 3, 1, 2))
    content_end = None
    with inference_session(model):
        end = _style_distance(model, image, targets)
        if content is not None:
            layer, target = content
            with torch.no_grad():
                feats = gram.extract_features(model, image, (layer,))[layer]
                content_end = float(gram.content_loss(feats, target))
    return StyleResult(
        image=to_uint8(result.image[0]),
        losses=result.losses,
        frames=result.frames,
        style_loss_start=start,
        style_loss_end=end,
        **result.run_fields(),
        settings=settings,
        content_loss_end=content_end,
    )


def resize_long_side(x: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize ``(1, 3, H, W)`` so its longer side is ``long_side`` (antialiased, aspect kept)."""
    h, w = x.shape[-2:]
    scale = long_side / max(h, w)
    size = (max(32, round(h * scale)), max(32, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(
        0, 1
    )
