"""bf16 autocast numerics at float32 speed, for machines whose CPU has no bf16 hardware.

Where bf16 is not fast (no AMX / AVX-512 BF16) real ``torch.autocast`` bf16 is emulated by torch
and ran 34x slower than float32 here (NOTES.md), too slow to compute hundreds of maps. This
emulation rounds every float32 result of every ATen op to bf16 (a ``TorchDispatchMode``), which
is what autocast's bf16 storage does between ops (each op computes in float32 inside, as
oneDNN's bf16 kernels accumulate in float32). It reproduces the *size* of bf16's error, not its
exact values: on 3 samples, |emulated - real bf16| logits were 0.19 (Lite0) / 0.13
(SqueezeNet) at most, the same size as |fp32 - real bf16| (0.17 / 0.14), with equal top-1.

Bench-only: :func:`emulated` patches the names vizcore's techniques call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map


def _round(t: Any) -> Any:
    if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
        return t.to(torch.bfloat16).to(torch.float32)
    return t


class RoundToBf16(TorchDispatchMode):
    """Round every float32 output of every op to bf16 (kept as float32 storage)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return tree_map(_round, func(*args, **(kwargs or {})))


@contextmanager
def _fast_forward(*, exact: bool, device: Any = "cpu") -> Iterator[bool]:
    if exact:
        yield False
        return
    with RoundToBf16():
        yield True


def _forward_float(model: torch.nn.Module, x: torch.Tensor, *, exact: bool) -> torch.Tensor:
    with _fast_forward(exact=exact):
        return model(x)


def _use_bf16(*, exact: bool, device: Any = "cpu") -> bool:
    return not exact


def _precision_of(*, exact: bool, device: Any = "cpu") -> str:
    return "fp32" if exact else "bf16"


@contextmanager
def emulated() -> Iterator[None]:
    """Inside: ``exact=False`` runs the batched forwards with bf16 rounding (emulated)."""
    targets = {
        "vizcore.attribution.perturbation.forward_float": _forward_float,
        "vizcore.attribution.perturbation.use_bf16": _use_bf16,
        "vizcore.attribution.faithfulness.forward_float": _forward_float,
        "vizcore.data.features.fast_forward": _fast_forward,
        "vizcore.data.features.precision_of": _precision_of,
    }
    with ExitStack() as stack:
        for name, value in targets.items():
            stack.enter_context(mock.patch(name, value))
        yield
