"""The one runner :func:`optimize`: steps, learning rate, seed, progress and frames."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from vizcore.core.checks import check_float, check_int, check_positive
from vizcore.core.devices import model_device
from vizcore.core.hooks import (
    Activations,
    capture_activations,
    forward_output_hooks,
    forward_until,
    inference_session,
)
from vizcore.core.progress import OnStep, RunResult, StepInfo, report, waiting
from vizcore.core.render import grid, to_uint8
from vizcore.optvis.objectives import Objective, reference_key
from vizcore.optvis.param import Param, PixelImage
from vizcore.optvis.regularizers import (
    PixelRegularizers,
    _relu6_hook,
    _relu6_modules,
    relu6_passthrough,
    total_variation,
)
from vizcore.optvis.transforms import Transform, compose

OptimizerName = Literal["adam", "sgd", "lbfgs", "normalized"]


@dataclass(frozen=True)
class OptimizationResult(RunResult):
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
    run = _Run(
        model,
        objective,
        param=param,
        steps=steps,
        lr=lr,
        optimizer=optimizer,
        transforms=transforms,
        regularizers=regularizers,
        tv_weight=tv_weight,
        l2_weight=l2_weight,
        relu6_passthrough=relu6_passthrough,
        reference=reference,
        schedule=schedule,
        seed=seed,
        frame_every=frame_every,
        on_step=on_step,
    )
    try:
        for step in range(1, steps + 1):
            run.take_step(step)
            if not report(on_step, run.record(step)):
                run.stopped = step < steps
                break
    finally:
        run.release_grads()
    return run.result()


def _checked_tv_weight(tv_weight: float | Sequence[float] | torch.Tensor) -> torch.Tensor:
    tv = torch.as_tensor(tv_weight, dtype=torch.float32, device="cpu").flatten()
    if not bool(torch.isfinite(tv).all()):
        raise ValueError(f"tv_weight must be finite, got {tv_weight!r}.")
    return tv


class _Run:
    """One :func:`optimize` call: its settings, its state, one method per part of a step."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        *,
        param: Param,
        steps: int,
        lr: float,
        optimizer: OptimizerName,
        transforms: Transform | Sequence[Transform] | None,
        regularizers: PixelRegularizers | None,
        tv_weight: float | Sequence[float] | torch.Tensor,
        l2_weight: float,
        relu6_passthrough: bool,
        reference: torch.Tensor | None,
        schedule: Literal["constant", "cosine"],
        seed: int,
        frame_every: int,
        on_step: OnStep | None,
    ) -> None:
        self.params, self.image_fn = param
        tv = _checked_tv_weight(tv_weight)
        seed = check_int("seed", seed)
        _validate(steps, lr, optimizer, float(tv.min()), l2_weight, frame_every, schedule)
        self.use_tv = bool((tv != 0).any())
        device = self.params[0].device if self.params else model_device(model)
        self.tv = tv.to(device)
        self.read_every_step = device.type == "cpu"
        self.pixels = self.image_fn.pixels if isinstance(self.image_fn, PixelImage) else None
        if regularizers is not None and regularizers.active and self.pixels is None:
            raise ValueError(
                "The pixel-space regularizers (L2 decay, blur, clipping) need the pixel "
                "parameterization; use tv_weight / l2_weight with the Fourier one."
            )
        if objective.needs_reference and reference is None:
            raise ValueError(f"{objective.name} compares with a reference image: pass reference=.")
        if isinstance(transforms, Sequence):
            transforms = compose(*transforms)
        self.model, self.objective, self.reference = model, objective, reference
        self.steps, self.lr, self.optimizer, self.on_step = steps, lr, optimizer, on_step
        self.transforms, self.regularizers, self.l2_weight = transforms, regularizers, l2_weight
        self.frame_every = frame_every
        self.generator = torch.Generator().manual_seed(int(seed))
        self.twin = torch.Generator()
        self.layers = sorted(objective.layers)
        self.start = time.perf_counter()
        self.losses: list[float] = []
        self.values: list[np.ndarray] = []
        self.loss_tensors: list[torch.Tensor] = []  # accelerators: read once at the end
        self.value_tensors: list[torch.Tensor] = []
        self.last_loss, self.last_value = float("nan"), float("nan")
        self.frames: list[np.ndarray] = []
        self.stopped = False
        self.step = 0
        self.relu6_modules = _relu6_modules(model) if relu6_passthrough else []
        self.opt = _make_optimizer(optimizer, self.params, lr)
        self.scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=steps)
            if schedule == "cosine" and self.opt is not None
            else None
        )
        self.fixed_reference: dict[str, torch.Tensor] | None = None
        self.ref_cache: dict[tuple, dict[str, torch.Tensor]] = {}
        self.state: dict[str, object] = {}

    @contextmanager
    def turn(self) -> Iterator[Activations]:
        """One turn on the model per forward+backward, hooks registered inside it."""
        with (
            inference_session(self.model, on_wait=waiting(self.on_step, self.step - 1, self.steps)),
            forward_output_hooks(self.relu6_modules, _relu6_hook),
            capture_activations(
                self.model, self.layers, stop_early=not self.objective.needs_logits
            ) as acts,
        ):
            yield acts

    def closure(self) -> torch.Tensor:
        # Another session's request waits at most one step (the lock is FIFO).
        with self.turn() as acts:
            return self.evaluate(acts)

    def reference_activations(self, acts: Activations) -> dict[str, torch.Tensor]:
        """The reference's activations, transformed like this step's image (twin generator)."""
        if self.reference is None:
            return {}
        if self.transforms is None and self.fixed_reference is not None:
            return self.fixed_reference
        self.twin.set_state(self.generator.get_state())
        ref = self.transforms(self.reference, self.twin) if self.transforms else self.reference
        ref_acts = _reference_activations(self.model, ref, acts, self.objective, self.ref_cache)
        if self.transforms is None:
            self.fixed_reference = ref_acts
        return ref_acts

    def evaluate(self, acts: Activations) -> torch.Tensor:
        """Forward, loss and gradients of one evaluation; keeps its loss and objective value."""
        if self.opt is not None:
            self.opt.zero_grad(set_to_none=True)
        image = self.image_fn()
        x = image
        ref_acts = self.reference_activations(acts)
        if self.transforms is not None:
            x = self.transforms(x, self.generator)
        # A channels-last input (e.g. from einsum) makes CPU batch-norm backward ~8x slower.
        x = x.contiguous()
        logits = _model_outputs(self.model, x, acts, self.objective)
        merged = {n: acts[n] for n in self.layers} | ref_acts
        value = self.objective(merged, logits if self.objective.needs_logits else None)
        if value.ndim != 1 or value.shape[0] != image.shape[0]:
            raise ValueError(
                f"The objective must give one value per image, got shape {tuple(value.shape)}."
            )
        loss = self.loss(image, value)
        total = loss.sum()
        grads = torch.autograd.grad(total, self.params)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        if self.read_every_step:
            self.state["loss"] = float(loss.detach().mean())
            self.state["value"] = value.detach().cpu().numpy()
        else:
            self.state["loss"] = loss.detach().mean()
            self.state["value"] = value.detach()
        return total.detach()

    def loss(self, image: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """``−objective + tv_weight·TV(I) + l2_weight·‖I − 0.5‖²`` per image."""
        loss = -value
        if self.use_tv:
            loss = loss + self.tv * total_variation(image)
        if self.l2_weight:
            loss = loss + self.l2_weight * (image - 0.5).pow(2).flatten(1).sum(1)
        return loss

    def take_step(self, step: int) -> None:
        """One optimizer step, then the pixel regularizers and the [0, 1] clamp."""
        self.step = step
        if self.opt is None:
            self.closure()
            _normalized_step(self.params, self.lr)
        elif self.optimizer == "lbfgs":
            self.opt.step(self.closure)
        else:
            self.closure()
            self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.pixels is not None:
            with torch.no_grad():
                new = self.pixels
                if self.regularizers is not None and self.regularizers.active:
                    new = self.regularizers.apply(self.pixels, self.pixels.grad, step)
                self.pixels.copy_(new.clamp(-0.5, 0.5))

    def record(self, step: int) -> StepInfo:
        """Keep this step's loss (read from an accelerator only on frame steps) and frame."""
        frame_step = step % self.frame_every == 0 or step == self.steps
        if self.read_every_step:
            self.losses.append(float(self.state["loss"]))  # type: ignore[arg-type]
            self.values.append(np.asarray(self.state["value"]))
            self.last_loss, self.last_value = self.losses[-1], float(self.values[-1].mean())
        else:
            self.loss_tensors.append(self.state["loss"])  # type: ignore[arg-type]
            self.value_tensors.append(self.state["value"])  # type: ignore[arg-type]
            if frame_step:
                self.last_loss = float(self.loss_tensors[-1])
                self.last_value = float(self.value_tensors[-1].float().mean())
        frame = None
        if frame_step:
            with torch.no_grad():
                frame = _frame(self.image_fn())
            self.frames.append(frame)
        return StepInfo(
            step=step,
            total=self.steps,
            loss=self.last_loss,
            frame=frame,
            message=f"step {step}/{self.steps}, objective {self.last_value:.4g}",
        )

    def release_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def result(self) -> OptimizationResult:
        """The final image, the per-step losses and objective values (one copy), the frames."""
        losses, values = self.losses, self.values
        if self.loss_tensors:
            losses = torch.stack(self.loss_tensors).float().cpu().tolist()
            values = list(torch.stack(self.value_tensors).float().cpu().numpy())
        with torch.no_grad():
            final = self.image_fn().detach().clamp(0, 1)
        if not self.frames or self.stopped:
            self.frames.append(_frame(final))
        return OptimizationResult(
            image=final.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32),
            losses=np.asarray(losses, dtype=np.float32),
            objective=(
                np.stack(values).astype(np.float32) if values else np.zeros((0, 0), np.float32)
            ),
            frames=tuple(self.frames),
            stopped=self.stopped,
            seconds=time.perf_counter() - self.start,
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
