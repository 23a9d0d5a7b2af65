"""The "Exact fp32" toggle shared by the pages whose batched forwards may run in bf16.

The value goes to vizcore as ``exact=`` (:mod:`vizcore.core.precision`) and into every cache key of
what it changes.
"""

from __future__ import annotations

import streamlit as st

from vizcore.core import precision


def exact_toggle(key: str, *, device: str = "cpu", container: object | None = None) -> bool:
    """Draw the toggle and return ``exact`` (``True`` = float32 for everything).

    Where bf16 is not fast on ``device`` (or ``VIZCORE_EXACT=1``) the toggle is shown on and
    disabled, with the reason: everything runs in float32 there anyway.
    """
    where = container if container is not None else st
    fast = precision.use_bf16(exact=False, device=device)
    if not fast:
        reason = (
            "VIZCORE_EXACT=1 is set"
            if precision.env_exact()
            else f"bf16 is not fast on this {device.upper()} (no AMX / AVX-512 BF16)"
        )
        where.toggle(  # type: ignore[attr-defined]
            "Exact fp32",
            value=True,
            disabled=True,
            key=f"{key}_exact_fixed",
            help=f"Everything runs in float32: {reason}.",
        )
        return True
    return bool(
        where.toggle(  # type: ignore[attr-defined]
            "Exact fp32",
            value=False,
            key=f"{key}_exact",
            help="Off: the batched forwards (occlusion, Score-CAM, deletion/insertion, gallery "
            "features) run in bf16, about 2x faster on this CPU; maps correlate >= 0.99 with "
            "float32 on the bundled samples. On: float32 everywhere.",
        )
    )
