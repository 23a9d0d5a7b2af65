"""How much to trust an attribution map: deletion/insertion curves and a randomization check.

* :func:`deletion_insertion` (Petsiuk, Das & Saenko, BMVC 2018, "RISE"): remove the pixels the
  map ranks highest first and watch the class probability fall (deletion; lower AUC is better),
  or add them to a blurred image and watch it rise (insertion; higher AUC is better).
* :func:`randomization_check` (Adebayo et al., NeurIPS 2018, "Sanity checks for saliency
  maps"): re-initialize the model's top layers in cascade, on a deep copy, and measure how
  much the map changes (Spearman rank correlation to the original map). A method that
  explains the model should change a lot; guided backprop and Guided Grad-CAM barely do.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vizcore.attribution.costs import Cost, method_cost
from vizcore.attribution.perturbation import fill_image
from vizcore.attribution.targets import BATCH_SIZE, AttributionMap, Target, resolve_target
from vizcore.core.checks import check_finite_array, check_image_batch, check_int
from vizcore.core.devices import model_device
from vizcore.core.hooks import inference_session, model_lock
from vizcore.core.layers import get_layer
from vizcore.core.precision import check_exact, forward_float
from vizcore.core.progress import OnStep, StepInfo, report, waiting


@dataclass(frozen=True)
class FaithfulnessCurves:
    """Deletion and insertion curves of one map.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels removed / inserted, 0 to 1.
        deletion: Target probability after deleting the top fraction (pixels set to 0).
        insertion: Target probability after inserting the top fraction into a blurred image.
        deletion_auc: Area under the deletion curve (lower means a more faithful map).
        insertion_auc: Area under the insertion curve (higher means a more faithful map).
        target: The class index scored.
        seconds: Wall-clock time.
        stopped: ``True`` when ``on_step`` stopped the run (curves then hold NaN at the end).
    """

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: float
    insertion_auc: float
    target: int | None
    seconds: float
    stopped: bool = False


def _auc(fractions: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    return float(np.trapezoid(values[ok], fractions[ok]))


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    attribution: np.ndarray | AttributionMap,
    *,
    target: Target = None,
    steps: int = 25,
    batch_size: int = BATCH_SIZE,
    on_step: OnStep | None = None,
    exact: bool = False,
) -> FaithfulnessCurves:
    """Deletion and insertion curves and their AUC (Petsiuk et al., BMVC 2018).

    Pixels are ranked by the map, highest first (ties by position). Step ``k`` of ``steps``
    changes the top ``k / steps`` of the pixels: deletion sets them to black, insertion copies
    them from ``x`` into a blurred copy of ``x`` (Gaussian, sigma 8 px). The curves hold the
    target's softmax probability; AUC by the trapezoid rule over the fraction in [0, 1].

    Deviation: the paper changes 224 pixels per step (224 steps at 224 px); ``steps`` evenly
    spaced fractions give the same curve sampled coarser, at ``2 (steps + 1)`` batched forwards.

    Precision (:mod:`vizcore.core.precision`): with ``exact=False`` the curve forwards run under
    bf16 autocast where bf16 is fast here (the target comes from a float32 forward); ``exact=True``
    is float32 throughout.

    Raises:
        ValueError: The map's shape is not the input's ``(H, W)``, or ``steps`` < 1.
    """
    if isinstance(attribution, AttributionMap):
        if target is None and attribution.target is not None:
            target = attribution.target
        attribution = attribution.map
    check_image_batch(x, model=model)
    x = x.detach().float().to(model_device(model))
    height, width = x.shape[-2:]
    saliency = np.asarray(attribution, dtype=np.float64)
    if saliency.shape != (height, width):
        raise ValueError(
            f"The map has shape {saliency.shape}, the image {height}x{width}; pass the "
            "input-resolution map (AttributionMap.map)."
        )
    check_finite_array("The attribution map", saliency)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    check_exact(exact)
    start = time.perf_counter()
    order = np.argsort(-np.nan_to_num(saliency, nan=-np.inf).ravel(), kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    rank_t = torch.from_numpy(rank).view(1, 1, height, width).to(x.device)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * order.size).astype(np.int64)
    blurred = fill_image(x, "blur", window=32)
    jobs = [("deletion", int(n)) for n in counts] + [("insertion", int(n)) for n in counts]
    # Kept on the device and read back once at the end (not one copy per batch).
    probs_t = torch.full((len(jobs),), float("nan"), device=x.device)
    stopped = False
    with torch.inference_mode():
        with inference_session(model, on_wait=waiting(on_step, 0, len(jobs))):
            logits = model(x.contiguous(memory_format=torch.channels_last))
        resolved = resolve_target(logits, target)
        for begin in range(0, len(jobs), batch_size):
            chunk = jobs[begin : begin + batch_size]
            batch = torch.empty(
                (len(chunk), 3, height, width), memory_format=torch.channels_last, device=x.device
            )
            for j, (kind, n) in enumerate(chunk):
                changed = (rank_t < n).float()
                if kind == "deletion":
                    batch[j] = (x * (1 - changed))[0]
                else:
                    batch[j] = (blurred * (1 - changed) + x * changed)[0]
            # One turn per batch: another session's request waits at most about one batch.
            with inference_session(model, on_wait=waiting(on_step, begin, len(jobs))):
                out = forward_float(model, batch, exact=exact)
            probs_t[begin : begin + len(chunk)] = resolved.probability(out).float()
            done = begin + len(chunk)
            if not report(on_step, StepInfo(done, len(jobs), message=f"{done}/{len(jobs)} images")):
                stopped = done < len(jobs)
                break
    probs = probs_t.cpu().numpy().astype(np.float64)
    deletion, insertion = probs[: steps + 1], probs[steps + 1 :]
    return FaithfulnessCurves(
        fractions=fractions,
        deletion=deletion,
        insertion=insertion,
        deletion_auc=_auc(fractions, deletion),
        insertion_auc=_auc(fractions, insertion),
        target=resolved.index,
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )


# --------------------------------------------------------------------------------------------
# Model-parameter randomization (Adebayo et al. 2018)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (ties get their average rank)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    return average[inverse].astype(np.float64)


def _has_params(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d | nn.Linear) for m in module.modules())


def cascade_layers(model: nn.Module) -> list[str]:
    """Top-level parameterized blocks, from the logits downward (``fc``, ``head``, ...).

    Children of the model in definition order, with ``nn.ModuleList`` / ``nn.Sequential``
    children expanded one level (``blocks.15``, ``blocks.14``, ...), keeping those with
    a convolution or linear layer (what :func:`randomization_check` re-draws), reversed.
    """
    units: list[str] = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList | nn.Sequential):
            units.extend(f"{name}.{sub}" for sub, m in child.named_children() if _has_params(m))
        elif _has_params(child):
            units.append(name)
    return units[::-1]


def _reinitialize(module: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal weights and zero biases for every conv / linear layer in ``module``."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d | nn.Linear):
            with torch.no_grad():
                fan_in = sub.weight[0].numel()
                std = float(np.sqrt(2.0 / fan_in))
                if sub.weight.device == generator.device:
                    sub.weight.normal_(0.0, std, generator=generator)
                else:  # drawn where the generator lives: the same weights on every device
                    drawn = torch.empty(sub.weight.shape, device=generator.device)
                    sub.weight.copy_(drawn.normal_(0.0, std, generator=generator))
                if sub.bias is not None:
                    sub.bias.zero_()


@dataclass(frozen=True)
class RandomizationCheck:
    """Maps of one method as the top layers are re-initialized in cascade.

    Attributes:
        method: The method's key.
        layers: Layers re-initialized, cumulatively: step ``i`` has ``layers[: i + 1]`` random.
        maps: ``(steps + 1, H, W)``: the original map first, then one per step.
        correlations: ``(steps,)`` Spearman rank correlation of each step's map to the original.
        seconds: Wall-clock time.
        stopped: ``True`` when ``on_step`` stopped the run early (fewer steps).
    """

    method: str
    layers: tuple[str, ...]
    maps: np.ndarray
    correlations: np.ndarray
    seconds: float
    stopped: bool = False


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: Callable[..., AttributionMap],
    target: Target = None,
    steps: int = 4,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
    **options: Any,
) -> RandomizationCheck:
    """Cascading model-parameter randomization (Adebayo et al., NeurIPS 2018).

    On a ``copy.deepcopy`` of the model (the shared one is never changed), re-initialize the
    top ``steps`` blocks one after another from the logits downward (:func:`cascade_layers`)
    and recompute ``method``'s map after each; report Spearman's rank correlation of each map to
    the original map (1 = unchanged). The target is fixed to the original model's class.
    ``options`` go to ``method`` unchanged: ``exact=`` there chooses the precision of a batched
    forward-only method (occlusion, Score-CAM; :mod:`vizcore.core.precision`).

    Deviation: conv / linear weights are re-drawn from a Kaiming normal (local generator), biases
    zeroed, normalization layers kept (the paper re-draws all weights of a layer).

    Raises:
        ValueError: ``steps`` out of range or an unknown layer name.
    """
    start = time.perf_counter()
    check_image_batch(x, model=model)
    seed = check_int("seed", seed)
    if layers is not None:
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list of layer names, not the string {layers!r}.")
        layers = list(layers)
        if not layers:
            raise ValueError(
                "layers is empty: give at least one layer to randomize, or None for "
                "cascade_layers(model)."
            )
        for name in layers:
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"Layer names must be non-empty strings, got {name!r}; the empty name would "
                    "randomize the whole model."
                )
    with model_lock(model):
        clone = copy.deepcopy(model)
    units = list(layers) if layers is not None else cascade_layers(clone)
    for name in units:
        get_layer(clone, name)
    if not units:
        raise ValueError(
            f"{type(model).__name__} has no top-level block with a convolution or linear layer "
            "to randomize; pass layers= explicitly."
        )
    steps = check_int("steps", steps, minimum=1, maximum=len(units))
    units = units[:steps]
    original = method(clone, x, target=target, **options)
    fixed: Target = original.target if original.target is not None else target
    maps = [original.map]
    correlations: list[float] = []
    generator = torch.Generator().manual_seed(seed)
    stopped = False
    for i, name in enumerate(units):
        _reinitialize(get_layer(clone, name), generator)
        result = method(clone, x, target=fixed, **options)
        maps.append(result.map)
        correlations.append(spearman(original.map, result.map))
        message = f"randomized {i + 1}/{len(units)}: up to {name}"
        if not report(on_step, StepInfo(i + 1, len(units), message=message)):
            stopped = i + 1 < len(units)
            break
    return RandomizationCheck(
        method=original.method,
        layers=tuple(units[: len(correlations)]),
        maps=np.stack(maps).astype(np.float32),
        correlations=np.asarray(correlations, dtype=np.float64),
        seconds=time.perf_counter() - start,
        stopped=stopped,
    )


# --------------------------------------------------------------------------------------------
# Costs (see vizcore.attribution.Cost)


def deletion_insertion_cost(*, steps: int = 25, batch_size: int = BATCH_SIZE) -> Cost:
    """:func:`deletion_insertion`: one forward for the target, ``2 (steps + 1)`` batched ones.

    Raises:
        ValueError: ``steps`` < 1.
    """
    steps = check_int("steps", steps, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    return Cost(forwards=1, batched_forwards=2 * (steps + 1))


def randomization_check_cost(
    model: nn.Module,
    size: tuple[int, int],
    *,
    method: Callable[..., AttributionMap],
    steps: int = 4,
    **options: Any,
) -> Cost:
    """:func:`randomization_check`: ``method`` on the original copy and after each of ``steps``
    randomizations (``steps + 1`` calls). The model copy and re-initializations are not counted.

    Raises:
        ValueError: ``steps`` < 1, or ``method`` has no cost function.
    """
    steps = check_int("steps", steps, minimum=1)
    options.pop("target", None)
    return (steps + 1) * method_cost(method)(model, size, **options)
