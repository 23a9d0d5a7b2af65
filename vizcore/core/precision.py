"""Precision of forward-only batched work: bf16 autocast where it is fast, else exact fp32.

The batched, forward-only methods (occlusion, Score-CAM's masked forwards, deletion/insertion
curves, gallery feature extraction, and the randomization check when it runs one of those)
may run their many forwards under ``torch.autocast(device_type, dtype=torch.bfloat16)``. Each
takes a keyword ``exact: bool``: ``True`` always runs in float32; ``False`` allows bf16, which
is then used only where it is fast here (:func:`bf16_fast`):

* CPU: the processor has AMX tiles or AVX-512 BF16 and torch has oneDNN. Without them torch
  emulates bf16 and is much *slower* than fp32 (measured on an AVX2-only AMD EPYC: a Lite0
  batch-16 forward took 156 s under bf16 autocast against 4.6 s in fp32, NOTES.md);
* CUDA: ``torch.cuda.is_bf16_supported`` without emulation (compute capability 8.0 or newer);
* MPS and anything else: float32 (autocast bf16 on MPS is not measured here).

Outputs leave the context as float32 (:func:`forward_float`), so softmax, the channel softmax
of Score-CAM, averages and the map's normalization always run in float32.

Environment: ``VIZCORE_EXACT=1`` forces float32 everywhere (whatever ``exact`` says);
``VIZCORE_BF16=force`` uses bf16 whenever ``exact`` is ``False``, even where it is slow (for
benches and numerics checks on machines without bf16 hardware).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vizcore.core.devices import model_device

#: Environment variable: ``1`` (or ``true``/``yes``/``on``) forces exact float32 everywhere.
ENV_EXACT = "VIZCORE_EXACT"
#: Environment variable: ``force`` uses bf16 where ``exact=False`` even if it is slow here.
ENV_BF16 = "VIZCORE_BF16"

Precision = Literal["fp32", "bf16"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def env_exact() -> bool:
    """``True`` when ``VIZCORE_EXACT`` asks for float32 everywhere."""
    return os.environ.get(ENV_EXACT, "").strip().lower() in _TRUE


def env_force_bf16() -> bool:
    """``True`` when ``VIZCORE_BF16=force`` asks for bf16 even where it is slow."""
    return os.environ.get(ENV_BF16, "").strip().lower() == "force"


def _cpuinfo_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@functools.cache
def cpu_bf16_fast() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX or AVX-512 BF16, with oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    found = [getattr(torch.cpu, name, None) for name in probes]
    if all(callable(fn) for fn in found):
        try:
            return any(bool(fn()) for fn in found)  # type: ignore[misc]
        except RuntimeError:
            pass
    return any(flag in _cpuinfo_flags() for flag in _CPU_FLAGS)


@functools.cache
def _cuda_bf16_fast(index: int) -> bool:
    if not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability(index)
    return major >= 8


def bf16_fast(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast is faster than float32 on ``device`` (see the module docstring).

    Raises:
        ValueError: ``device`` is not a device name torch knows.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"Unknown device {device!r}: {exc}") from exc
    if dev.type == "cpu":
        return cpu_bf16_fast()
    if dev.type == "cuda":
        return _cuda_bf16_fast(dev.index if dev.index is not None else 0)
    return False


def check_exact(exact: bool) -> bool:
    """``exact`` itself, or a ValueError when it is not a bool."""
    if not isinstance(exact, bool):
        raise ValueError(f"exact must be True (float32) or False (bf16 where fast), not {exact!r}.")
    return exact


def use_bf16(*, exact: bool, device: torch.device | str = "cpu") -> bool:
    """Whether forward-only batched work runs in bf16: not ``exact``, not ``VIZCORE_EXACT``,
    and bf16 fast on ``device`` (or ``VIZCORE_BF16=force``; never on a device without bf16
    autocast, such as MPS).

    Raises:
        ValueError: ``exact`` is not a bool.
    """
    if check_exact(exact) or env_exact():
        return False
    dev = torch.device(device)
    if env_force_bf16() and dev.type in ("cpu", "cuda"):
        return True
    return bf16_fast(dev)


def precision_of(*, exact: bool, device: torch.device | str = "cpu") -> Precision:
    """``"bf16"`` or ``"fp32"``: what :func:`fast_forward` would run (for cache keys)."""
    return "bf16" if use_bf16(exact=exact, device=device) else "fp32"


@contextmanager
def fast_forward(*, exact: bool, device: torch.device | str = "cpu") -> Iterator[bool]:
    """Context for forward-only batched work: bf16 autocast where allowed, else a no-op.

    Yields whether bf16 is on. Use it only around forwards that no gradient flows through,
    and convert the outputs to float32 before any reduction (:func:`forward_float` does both).

    Raises:
        ValueError: ``exact`` is not a bool.
    """
    if not use_bf16(exact=exact, device=device):
        yield False
        return
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        yield True


def forward_float(model: nn.Module, x: torch.Tensor, *, exact: bool) -> torch.Tensor:
    """``model(x)`` under :func:`fast_forward` on the model's device, returned as float32.

    With ``exact=True`` (or where bf16 is not fast) this is exactly ``model(x)``.
    """
    with fast_forward(exact=exact, device=model_device(model)) as bf16:
        out: Any = model(x)
    return out.float() if bf16 else out
