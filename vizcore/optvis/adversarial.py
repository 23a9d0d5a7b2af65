"""Adversarial examples: FGSM and projected gradient descent (PGD) in the L∞ ball.

Images are RGB in [0, 1] and epsilons are in pixel units (``4/255`` changes no 8-bit pixel value
by more than 4). When the input is an 8-bit image (every photo the app loads is) and the
epsilon and step size are multiples of 1/255, every iterate stays on the 1/255 grid, so the
adversarial image survives a PNG round-trip unchanged.

Every step reports the current adversarial image as ``StepInfo.frame`` (uint8, exact on the grid),
so a caller whose run was interrupted can still show the attack so far with :func:`evaluate`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.checks import check_class_index, check_float, check_image_batch, check_int
from vizcore.core.devices import LossLog, model_device
from vizcore.core.hooks import inference_session
from vizcore.core.progress import OnStep, RunResult, StepInfo, report, waiting
from vizcore.models.predict import Prediction

_GRID = 255.0

#: The ``target`` value that asks for the class the model finds least likely on the clean image
#: (Kurakin et al. 2017's "iterative least-likely class method").
LEAST_LIKELY = "least_likely"


@dataclass(frozen=True)
class AdversarialResult(RunResult):
    """An adversarial example and what the model says before and after.

    Attributes:
        original: The input image, ``(H, W, 3)`` float32 in [0, 1].
        adversarial: The adversarial image, same shape, in [0, 1].
        perturbation: ``adversarial − original`` (signed, within ±epsilon).
        epsilon: The L∞ budget in pixel units.
        method: ``"fgsm"`` or ``"pgd"``.
        target: The target class (targeted attack) or ``None`` (untargeted). For
            ``target="least_likely"`` it is the class chosen (see ``least_likely``).
        source: The class the untargeted attack moves away from (the clean prediction).
        before: Top-5 on the original.
        after: Top-5 on the adversarial image.
        success: Targeted: the top-1 is the target. Untargeted: the top-1 is no longer ``source``.
        linf: The largest absolute change of any pixel value.
        on_grid: Whether the adversarial image lies on the 1/255 grid.
        losses: Cross-entropy (to the target, or from the source) after each step.
        stopped: Whether the run was stopped early.
        seconds: Wall-clock time.
        steps_done: Steps actually taken.
        probs_before: Softmax probabilities of every class on the original, ``(classes,)``.
        probs_after: The same on the adversarial image.
        least_likely: Whether ``target`` is the clean image's least likely class, chosen by
            the attack.
    """

    original: np.ndarray
    adversarial: np.ndarray
    perturbation: np.ndarray
    epsilon: float
    method: str
    target: int | None
    source: int
    before: Prediction
    after: Prediction
    success: bool
    linf: float
    on_grid: bool
    losses: np.ndarray
    probs_before: np.ndarray
    probs_after: np.ndarray
    least_likely: bool = False

    def standing(self, index: int, *, adversarial: bool = True) -> tuple[int, float]:
        """``(rank, probability)`` of class ``index`` on the adversarial image (or the original).

        The rank is 1-based (1 = the top-1) among all classes, so a target that stayed out of the
        top-5 can still be shown with where it ended up.

        Raises:
            ValueError: ``index`` is not one of the model's classes.
        """
        probs = self.probs_after if adversarial else self.probs_before
        index = check_class_index(index, len(probs), name="The class")
        return 1 + int(np.sum(probs > probs[index])), float(probs[index])

    @property
    def magnified_perturbation(self) -> np.ndarray:
        """The perturbation mapped to [0, 1] with 0 at grey and ±epsilon at the extremes."""
        scale = max(self.epsilon, 1e-12)
        return np.clip(0.5 + 0.5 * self.perturbation / scale, 0.0, 1.0).astype(np.float32)


def _multiple_of_grid(value: float) -> bool:
    scaled = value * _GRID
    return abs(scaled - round(scaled)) < 1e-4


def _snap(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * _GRID) / _GRID


def _validate(
    model: nn.Module,
    x: torch.Tensor,
    epsilon: float,
    target: int | str | None,
    num_classes: int,
) -> tuple[float, int | str | None]:
    check_image_batch(x, model=model)
    epsilon = check_float(
        "epsilon (the L∞ budget in pixel units, e.g. 4/255)",
        epsilon,
        minimum=0.0,
        maximum=1.0,
        min_inclusive=False,
    )
    if isinstance(target, str):
        if target != LEAST_LIKELY:
            raise ValueError(
                f"target must be a class index, {LEAST_LIKELY!r} or None, got {target!r}."
            )
    elif target is not None:
        target = check_class_index(target, num_classes)
    return epsilon, target


def _loss_and_grad(
    model: nn.Module, x: torch.Tensor, label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    xg = x.detach().clone().requires_grad_(True)
    logits = model(xg)
    loss = F.cross_entropy(logits.float(), torch.tensor([label], device=logits.device))
    (grad,) = torch.autograd.grad(loss, xg)
    return loss.detach(), grad


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | Literal["least_likely"] | None = None,
    epsilon: float = 4 / 255,
    step_size: float = 1 / 255,
    steps: int = 10,
    random_start: bool = False,
    categories: Sequence[str] | None = None,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> AdversarialResult:
    """Projected gradient descent in the L∞ ball (Madry et al. 2018; Kurakin et al. 2017).

    Untargeted: ``x ← Π(x + α·sign(∇ CE(f(x), y)))`` with ``y`` the clean prediction;
    targeted: ``x ← Π(x − α·sign(∇ CE(f(x), t)))``. ``Π`` clips to ``[x0 − ε, x0 + ε] ∩ [0, 1]``.

    Deviations: with ``random_start=False`` (the default here) it is Kurakin et al.'s basic
    iterative method; the input is snapped to the 1/255 grid first (a no-op for 8-bit images)
    and, when ε and α are multiples of 1/255, so is every iterate.

    Args:
        model: A classifier taking RGB in [0, 1].
        x: One image ``(1, 3, H, W)`` in [0, 1].
        target: Class to reach (targeted), ``"least_likely"`` for the class the model finds
            least likely on the clean image (Kurakin et al. 2017), or ``None`` to move away from
            the clean prediction (often to a similar class: tiger cat to Egyptian cat).
        epsilon: L∞ budget in pixel units (e.g. 1/255 to 16/255).
        step_size: α, in pixel units.
        steps: Number of iterations.
        random_start: Start from a uniform random point of the ball (Madry et al.).
        categories: Class names for the predictions (ImageNet by default).
        seed: Seed of the local generator (random start).
        on_step: Progress callback; returning ``False`` stops early. Each step's
            ``StepInfo.frame`` is the current adversarial image (uint8).
    """
    return _attack(
        model,
        x,
        method="pgd",
        target=target,
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        random_start=random_start,
        categories=categories,
        seed=seed,
        on_step=on_step,
    )


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | Literal["least_likely"] | None = None,
    epsilon: float = 4 / 255,
    categories: Sequence[str] | None = None,
    on_step: OnStep | None = None,
) -> AdversarialResult:
    """Fast gradient sign method (Goodfellow, Shlens & Szegedy 2015).

    Untargeted: ``x' = clip(x + ε·sign(∇ CE(f(x), y)))``; targeted (Kurakin et al. 2017's
    one-step target class method): ``x' = clip(x − ε·sign(∇ CE(f(x), t)))``, clipped to [0, 1].

    Args:
        model: A classifier taking RGB in [0, 1].
        x: One image ``(1, 3, H, W)`` in [0, 1].
        target: Class to reach, ``"least_likely"`` (the clean image's least likely class), or
            ``None`` to move away from the clean prediction.
        epsilon: L∞ budget in pixel units.
        categories: Class names for the predictions (ImageNet by default).
        on_step: Progress callback (one step; its ``frame`` is the adversarial image).
    """
    return _attack(
        model,
        x,
        method="fgsm",
        target=target,
        epsilon=epsilon,
        step_size=epsilon,
        steps=1,
        random_start=False,
        categories=categories,
        seed=0,
        on_step=on_step,
    )


def _attack(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str,
    target: int | str | None,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool,
    categories: Sequence[str] | None,
    seed: int,
    on_step: OnStep | None,
) -> AdversarialResult:
    start = time.perf_counter()
    num_classes = len(categories) if categories is not None else 1000
    epsilon, target = _validate(model, x, epsilon, target, num_classes)
    if method != "fgsm":  # FGSM's one step is epsilon itself
        steps = check_int("steps", steps, minimum=1)
        step_size = check_float(
            "The step size", step_size, minimum=0.0, maximum=1.0, min_inclusive=False
        )
        seed = check_int("seed", seed)
    device = model_device(model)
    x0 = _snap(x.detach().float().to(device).clamp(0, 1))
    probs_before = _probabilities(model, x0, categories)
    source = int(np.argmax(probs_before))
    least_likely = target == LEAST_LIKELY
    if least_likely:
        target = int(np.argmin(probs_before))
    on_grid = _multiple_of_grid(epsilon) and _multiple_of_grid(step_size)
    low, high = (x0 - epsilon).clamp(0, 1), (x0 + epsilon).clamp(0, 1)
    adv = x0.clone()
    if random_start:
        generator = torch.Generator().manual_seed(int(seed))
        if on_grid:
            k = round(epsilon * _GRID)
            noise = torch.randint(-k, k + 1, x0.shape, generator=generator, device="cpu") / _GRID
        else:
            noise = (torch.rand(x0.shape, generator=generator, device="cpu") * 2 - 1) * epsilon
        noise = noise.to(device)  # drawn on the CPU: the same start on every device
        adv = torch.minimum(torch.maximum(x0 + noise, low), high)
    label = source if target is None else int(target)
    sign = 1.0 if target is None else -1.0
    losses = LossLog(device)  # CPU: every step read; GPU: every few steps (no sync per step)
    stopped = False
    for step in range(1, steps + 1):
        # One turn per step (forward and backward), so other sessions are not blocked.
        with inference_session(model, on_wait=waiting(on_step, step - 1, steps)):
            loss, grad = _loss_and_grad(model, adv, label)
        loss_value = losses.add(loss, step=step, total=steps)
        adv = adv + sign * step_size * grad.sign()
        adv = torch.minimum(torch.maximum(adv, low), high)
        if on_grid:
            adv = _snap(adv)
        # The frame (the attack so far, kept when Stop interrupts) is one small copy per step.
        info = StepInfo(
            step=step, total=steps, loss=loss_value, frame=_uint8(adv), message=f"step {step}"
        )
        if not report(on_step, info):
            stopped = step < steps
            break
    return _result(
        model, x0, adv, probs_before, method=method, epsilon=epsilon, target=target,
        least_likely=least_likely, on_grid=on_grid, categories=categories, losses=losses,
        stopped=stopped, seconds=time.perf_counter() - start,
    )  # fmt: skip


def _uint8(adv: torch.Tensor) -> np.ndarray:
    """The batch-1 image as uint8 ``(H, W, 3)`` (exact for an image on the 1/255 grid)."""
    return (adv[0].permute(1, 2, 0).clamp(0, 1) * _GRID + 0.5).to(torch.uint8).cpu().numpy()


def _probabilities(
    model: nn.Module, x: torch.Tensor, categories: Sequence[str] | None
) -> np.ndarray:
    """Softmax over every class for one image, ``(classes,)`` float32."""
    with inference_session(model), torch.inference_mode():
        probs = torch.softmax(model(x).float(), dim=1)[0].cpu().numpy().astype(np.float32)
    if categories is not None and len(categories) != len(probs):
        raise ValueError(f"{len(categories)} class names for a model with {len(probs)} outputs.")
    return probs


def _top(probs: np.ndarray, k: int, categories: Sequence[str] | None) -> Prediction:
    names = categories
    if names is None:
        from vizcore.models.registry import imagenet_categories

        n = len(probs)
        names = imagenet_categories() if n == 1000 else [f"class {i}" for i in range(n)]
    order = np.argsort(-probs, kind="stable")[:k]
    return Prediction(
        indices=order,
        probabilities=probs[order].astype(np.float32),
        labels=tuple(names[int(i)] for i in order),
    )


def _result(
    model: nn.Module,
    x0: torch.Tensor,
    adv: torch.Tensor,
    probs_before: np.ndarray,
    *,
    method: str,
    epsilon: float,
    target: int | None,
    least_likely: bool,
    on_grid: bool,
    categories: Sequence[str] | None,
    losses: Sequence[float] | LossLog,
    stopped: bool,
    seconds: float,
) -> AdversarialResult:
    num_classes = len(probs_before)
    top_k = min(5, num_classes)
    probs_after = _probabilities(model, adv, categories)
    source = int(np.argmax(probs_before))
    top1 = int(np.argmax(probs_after))
    success = top1 == target if target is not None else top1 != source
    perturbation = (adv - x0)[0].permute(1, 2, 0).cpu().numpy()
    return AdversarialResult(
        original=x0[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        adversarial=adv[0].permute(1, 2, 0).cpu().numpy().astype(np.float32),
        perturbation=perturbation.astype(np.float32),
        epsilon=float(epsilon),
        method=method,
        target=None if target is None else int(target),
        source=source,
        before=_top(probs_before, top_k, categories),
        after=_top(probs_after, top_k, categories),
        success=bool(success),
        linf=float(np.abs(perturbation).max()),
        on_grid=bool(on_grid),
        losses=losses.array() if isinstance(losses, LossLog) else np.asarray(losses, np.float32),
        stopped=stopped,
        seconds=float(seconds),
        steps_done=len(losses),
        probs_before=probs_before,
        probs_after=probs_after,
        least_likely=bool(least_likely),
    )


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    adversarial: torch.Tensor | np.ndarray,
    *,
    epsilon: float,
    method: Literal["fgsm", "pgd"] = "pgd",
    target: int | Literal["least_likely"] | None = None,
    categories: Sequence[str] | None = None,
    losses: Sequence[float] = (),
    stopped: bool = True,
    seconds: float = 0.0,
) -> AdversarialResult:
    """The result of an attack that reached ``adversarial``, e.g. the last frame of a stopped run.

    The image is projected into the ε-ball around ``x`` (snapped to the grid like the attack) and
    both images are classified again, so the verdict, the top-5 and the target's rank are those
    of the image shown. For a run stopped from its ``on_step`` callback, pass the last
    ``StepInfo.frame`` and the losses seen: the result equals what the attack would have
    returned had the callback returned ``False`` at that step.

    Args:
        model: The attacked classifier.
        x: The original image ``(1, 3, H, W)`` in [0, 1].
        adversarial: The adversarial image, as a tensor like ``x`` or a uint8 / float ``(H, W, 3)``
            array (uint8 is read as levels / 255).
        epsilon: The attack's L∞ budget in pixel units.
        method: ``"fgsm"`` or ``"pgd"``.
        target: The class the attack aimed at, ``"least_likely"`` (chosen on ``x`` as the attack
            chooses it) or ``None`` (untargeted).
        categories: Class names (ImageNet by default).
        losses: The losses of the steps taken (their count is ``steps_done``).
        stopped: Whether the attack was stopped before its last step.
        seconds: Wall-clock time of the attack.

    Raises:
        ValueError: Bad image, epsilon, method or target, or ``adversarial`` of another size.
    """
    if method not in ("fgsm", "pgd"):
        raise ValueError(f"method must be 'fgsm' or 'pgd', got {method!r}.")
    num_classes = len(categories) if categories is not None else 1000
    epsilon, target = _validate(model, x, epsilon, target, num_classes)
    device = model_device(model)
    x0 = _snap(x.detach().float().to(device).clamp(0, 1))
    if isinstance(adversarial, np.ndarray):
        array = np.asarray(adversarial)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"adversarial must be an (H, W, 3) image, got shape {array.shape}.")
        scale = _GRID if array.dtype == np.uint8 else 1.0
        adv = torch.from_numpy(array.astype(np.float32) / scale).permute(2, 0, 1)[None]
    else:
        adv = adversarial.detach().float()
    check_image_batch(adv, model=model)
    adv = adv.to(device)
    if tuple(adv.shape) != tuple(x0.shape):
        raise ValueError(
            f"adversarial has shape {tuple(adv.shape)}; the original has {tuple(x0.shape)}."
        )
    low, high = (x0 - epsilon).clamp(0, 1), (x0 + epsilon).clamp(0, 1)
    adv = torch.minimum(torch.maximum(adv, low), high)
    on_grid = _multiple_of_grid(epsilon) and bool(torch.equal(adv, _snap(adv)))
    probs_before = _probabilities(model, x0, categories)
    least_likely = target == LEAST_LIKELY
    if least_likely:
        target = int(np.argmin(probs_before))
    return _result(
        model, x0, adv, probs_before, method=method, epsilon=epsilon, target=target,
        least_likely=least_likely, on_grid=on_grid, categories=categories,
        losses=[float(v) for v in losses], stopped=stopped, seconds=seconds,
    )  # fmt: skip
