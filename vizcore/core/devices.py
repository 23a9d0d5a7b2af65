"""Which device vizcore runs on: CUDA when present, else Apple MPS, else the CPU.

The device is resolved once per process from ``VIZCORE_DEVICE`` (``cpu``, ``cuda``, ``cuda:N``
or ``mps``; unset or ``auto`` picks the best available). Models are loaded onto it
(:func:`vizcore.models.registry.load_model`); every technique then works on *the model's* device
(:func:`model_device`), moves its inputs there and brings only final arrays back to numpy.

A device that is asked for but not present (``VIZCORE_DEVICE=cuda`` on a machine without CUDA)
is **not an error**: the CPU is used, a :class:`RuntimeWarning` says why once, and
:attr:`DeviceChoice.fallback` keeps the same sentence for the app's sidebar. A value that is no
device at all (``VIZCORE_DEVICE=gpu``) is a :class:`ValueError`: that is a typo to fix, not a
machine to adapt to.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

#: The environment variable that overrides the automatic choice.
ENV_VAR = "VIZCORE_DEVICE"

_VALID = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class DeviceChoice:
    """The resolved device and how it was chosen.

    Attributes:
        device: The device to use.
        requested: What was asked for (``"auto"`` when nothing was).
        fallback: Why the requested device is not the one used (``None`` when it is).
    """

    device: torch.device
    requested: str
    fallback: str | None = None

    @property
    def name(self) -> str:
        """The device as a string (``"cpu"``, ``"cuda:0"``, ``"mps"``)."""
        return str(self.device)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> tuple[str, ...]:
    """Every device this machine can run on, best first: each CUDA GPU, MPS, then ``"cpu"``."""
    found: list[str] = []
    if torch.cuda.is_available():
        found.extend(f"cuda:{index}" for index in range(torch.cuda.device_count()))
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return tuple(found)


def resolve_device(value: str | None = None) -> DeviceChoice:
    """Resolve a device name (``None`` or ``"auto"``: the best available).

    Args:
        value: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or ``None``
            (surrounding space and case are ignored).

    Returns:
        The device; when the asked device is not present, the CPU with a ``fallback`` reason.

    Raises:
        ValueError: ``value`` names no device.
    """
    requested = (value or "auto").strip().lower() or "auto"
    if requested == "auto":
        return DeviceChoice(torch.device(available_devices()[0]), "auto")
    if not _VALID.match(requested):
        raise ValueError(
            f"Unknown device {value!r} (from {ENV_VAR} or the caller); use cpu, cuda, cuda:N, mps "
            "or auto."
        )
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"), requested)
    if requested == "mps":
        if _mps_available():
            return DeviceChoice(torch.device("mps"), requested)
        reason = "Apple MPS was asked for but is not available on this machine; using the CPU."
        return DeviceChoice(torch.device("cpu"), requested, reason)
    if not torch.cuda.is_available():
        reason = f"{requested} was asked for but CUDA is not available here; using the CPU."
        return DeviceChoice(torch.device("cpu"), requested, reason)
    index = int(requested.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        reason = (
            f"{requested} was asked for but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}); using cuda:0."
        )
        return DeviceChoice(torch.device("cuda:0"), requested, reason)
    return DeviceChoice(torch.device(f"cuda:{index}"), requested)


@functools.lru_cache(maxsize=1)
def default_choice() -> DeviceChoice:
    """The process's device, resolved once from ``VIZCORE_DEVICE`` (warns once on a fallback).

    Raises:
        ValueError: ``VIZCORE_DEVICE`` names no device.
    """
    choice = resolve_device(os.environ.get(ENV_VAR))
    if choice.fallback:
        warnings.warn(choice.fallback, RuntimeWarning, stacklevel=2)
    return choice


def default_device() -> torch.device:
    """The process's device (see :func:`default_choice`)."""
    return default_choice().device


def as_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` is :func:`default_device`.

    A string goes through :func:`resolve_device` (so ``"cuda"`` on a CPU-only machine is the CPU,
    with the same warning as the environment variable gives).
    """
    if device is None:
        return default_device()
    if isinstance(device, torch.device):
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return device
    choice = resolve_device(device)
    if choice.fallback:
        warnings.warn(choice.fallback, RuntimeWarning, stacklevel=2)
    return choice.device


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); the CPU for a parameterless model."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def to_model_device(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on ``model``'s device (no copy when it is there already)."""
    return x.to(model_device(model))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


#: On an accelerator, a per-step loss is read back (a device sync) only every this many steps.
READ_EVERY = 10


class LossLog:
    """Per-step losses of an iterative method, read back without a device sync per step.

    On the CPU every loss is read at once (exactly as a plain ``float(loss)``); on a GPU or MPS
    the losses stay on the device and only every :data:`READ_EVERY`-th step (and the last) is
    read, for the progress report; :meth:`array` copies them all back in one go at the end.
    """

    def __init__(self, device: torch.device, *, every: int = READ_EVERY) -> None:
        self._eager = device.type == "cpu"
        self._every = max(1, int(every))
        self._floats: list[float] = []
        self._tensors: list[torch.Tensor] = []
        self.last = float("nan")

    def add(self, loss: torch.Tensor, *, step: int, total: int) -> float:
        """Record one step's scalar loss; return the latest value read (this one when read)."""
        if self._eager:
            self.last = float(loss)
            self._floats.append(self.last)
        else:
            self._tensors.append(loss.detach().reshape(()))
            if step % self._every == 0 or step == total:
                self.last = float(self._tensors[-1])
        return self.last

    def __len__(self) -> int:
        return len(self._floats) + len(self._tensors)

    def array(self) -> np.ndarray:
        """Every recorded loss, float32."""
        if self._tensors:
            return torch.stack(self._tensors).float().cpu().numpy().astype(np.float32)
        return np.asarray(self._floats, dtype=np.float32)
