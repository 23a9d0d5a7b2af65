"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by
Inverting Them"): find an image whose activations at chosen layers match those of a target image.

One call of :func:`vizcore.optvis.optimize` with a feature-matching objective, a total-variation
prior and the preset measured in ``shared/research/synthesis-feasibility.md``
(:func:`inversion_preset`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vizcore.core.checks import check_image_batch, check_int
from vizcore.core.devices import model_device
from vizcore.core.hooks import inference_session
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep, RunResult
from vizcore.optvis import objectives, runner, transforms
from vizcore.optvis import param as image_param

if TYPE_CHECKING:
    from vizcore.models.registry import ModelSpec

# ------------------------------------------------------------------------- feature inversion


@dataclass(frozen=True)
class InversionSettings:
    """Feature inversion settings.

    Attributes:
        steps: Adam steps per layer (cosine-decayed learning rate).
        lr: Adam's learning rate on the pixels.
        jitter: Random roll in pixels each step (the target is taken from the equally shifted
            photo).
        tv_weights: TV weight per layer; missing layers get one from the layer's depth.
        relu6_passthrough: Gradients through ReLU6 above 6 (sharper deep Lite0 inversions).
    """

    steps: int = 200
    lr: float = 0.05
    jitter: int = 2
    tv_weights: tuple[tuple[str, float], ...] = ()
    relu6_passthrough: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lr > 0 or self.jitter < 0:
            raise ValueError("steps must be >= 1, lr > 0 and jitter >= 0.")
        for layer, weight in self.tv_weights:
            if weight < 0:
                raise ValueError(f"The TV weight of {layer!r} must be >= 0, got {weight}.")


def inversion_preset(spec: ModelSpec) -> tuple[tuple[str, ...], InversionSettings]:
    """Default layers (shallow to deep) and settings for the model of ``spec``.

    Layers: the spec's ``inversion`` preset (derived for any model). Settings: the generic ones
    with the spec's hand-tuned ``inversion`` overrides. The total-variation weights must grow
    with depth; the bundled nets' weights were set per layer (their ratios are the research
    file's, the scale calibrated by eye for :func:`vizcore.optvis.total_variation`); layers
    without a weight get :func:`depth_tv_weight`.
    """
    overrides = dict(spec.tuned("inversion"))
    settings = dataclasses.replace(InversionSettings(), **overrides)
    return spec.preset("inversion"), settings


def depth_tv_weight(model: nn.Module, layer: str) -> float:
    """A TV weight that grows with the layer's depth: 5 at the input to 200 at the output.

    Interpolated geometrically over the layer's position among the model's named modules, which
    matches the measured weights of the bundled nets to within a factor of about two.
    """
    names = [name for name, _ in model.named_modules() if name]
    get_layer(model, layer)
    depth = names.index(layer) / max(1, len(names) - 1)
    return float(5.0 * 40.0**depth)


@dataclass(frozen=True)
class InversionResult(RunResult):
    """Reconstructions of one photo from several layers' features.

    Attributes:
        original: The photo, ``(H, W, 3)`` float32 in [0, 1].
        images: One reconstruction per layer, ``(L, H, W, 3)``.
        layers: The layers, in the order of ``images``.
        tv_weights: The TV weight used for each layer.
        relative_errors: ``‖φ(I) − φ(I0)‖² / ‖φ(I0)‖²`` per layer on the final, unshifted image.
        losses: Minimized loss per step (mean over layers).
        frames: uint8 snapshots (all layers side by side).
        stopped, seconds, steps_done: As in :class:`SynthesisResult`.
    """

    original: np.ndarray
    images: np.ndarray
    layers: tuple[str, ...]
    tv_weights: tuple[float, ...]
    relative_errors: np.ndarray
    losses: np.ndarray
    frames: tuple[np.ndarray, ...]


def _stacked_feature_match(layers: list[str]) -> objectives.Objective:
    def fn(acts: objectives.Acts, _logits: torch.Tensor | None) -> torch.Tensor:
        values = []
        for i, layer in enumerate(layers):
            act = acts[layer][i : i + 1]
            goal = acts[objectives.reference_key(layer)]
            diff = (act - goal).pow(2).sum()
            values.append(-diff / goal.pow(2).sum().clamp_min(1e-12))
        return torch.stack(values)

    return objectives.Objective(
        fn, layers=set(layers), needs_reference=True, name=f"match({', '.join(layers)})"
    )


def feature_inversion(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | Sequence[str],
    settings: InversionSettings | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> InversionResult:
    """Reconstruct the photo from one or several layers' features.

    Mahendran & Vedaldi 2015, "Understanding Deep Image Representations by Inverting Them":
    ``I* = argmin_I ‖φ(I) − φ(I0)‖² / ‖φ(I0)‖² + λ_TV·TV(I)``, from grey plus noise. One
    reconstruction per layer, all optimized together as one batch.

    Deviations: the TV term is the mean squared neighbour difference (the paper's β = 2) with a
    weight that grows with depth (measured per layer for the bundled nets, else
    :func:`depth_tv_weight`); no α-norm prior; Adam with a cosine-decayed rate; the image is
    jittered each step and the target features come from the equally shifted photo.

    Args:
        model: A classifier taking RGB in [0, 1].
        x: The photo, ``(1, 3, H, W)`` in [0, 1].
        layer: One layer name or several (shallow to deep reads best).
        settings: Steps, learning rate, jitter, TV weights (:func:`inversion_preset`).
        seed: Seed of the local random generator (initial noise and jitter).
        on_step: Progress callback; returning ``False`` stops early.
    """
    check_image_batch(x, model=model)
    seed = check_int("seed", seed)
    layers = [layer] if isinstance(layer, str) else list(layer)
    if not layers:
        raise ValueError("Choose at least one layer to invert.")
    if len(set(layers)) != len(layers):
        raise ValueError("Each layer can be inverted once per run; remove the duplicates.")
    settings = settings or InversionSettings()
    known = dict(settings.tv_weights)
    weights = [known.get(name) for name in layers]
    weights = [
        w if w is not None else depth_tv_weight(model, n)
        for w, n in zip(weights, layers, strict=True)
    ]
    device = model_device(model)
    photo = x.detach().float().to(device)
    generator = torch.Generator().manual_seed(int(seed))
    shape = (len(layers), 3, *photo.shape[-2:])
    param = image_param.pixel_image(
        shape, init="noise", generator=generator, noise=0.05, device=device
    )
    result = runner.optimize(
        model,
        _stacked_feature_match(layers),
        param=param,
        steps=settings.steps,
        lr=settings.lr,
        optimizer="adam",
        transforms=transforms.jitter(settings.jitter) if settings.jitter else None,
        tv_weight=torch.tensor(weights, device="cpu"),
        relu6_passthrough=settings.relu6_passthrough,
        reference=photo,
        schedule="cosine",
        seed=seed,
        frame_every=max(1, settings.steps // 30),
        on_step=on_step,
    )
    errors = _relative_errors(model, photo, result.image, layers)
    return InversionResult(
        original=photo[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        images=result.image,
        layers=tuple(layers),
        tv_weights=tuple(float(w) for w in weights),
        relative_errors=errors,
        losses=result.losses,
        frames=result.frames,
        **result.run_fields(),
    )


def _relative_errors(
    model: nn.Module, photo: torch.Tensor, images: np.ndarray, layers: list[str]
) -> np.ndarray:
    from vizcore.core.hooks import capture_activations

    batch = torch.cat([photo, torch.from_numpy(images).permute(0, 3, 1, 2).to(photo.device)])
    with (
        inference_session(model),
        torch.inference_mode(),
        capture_activations(model, layers, detach=True) as acts,
    ):
        model(batch)
        errors = []
        for i, layer in enumerate(layers):
            goal, act = acts[layer][0], acts[layer][i + 1]
            errors.append((act - goal).pow(2).sum() / goal.pow(2).sum().clamp_min(1e-12))
    return torch.stack(errors).cpu().numpy().astype(np.float32)
