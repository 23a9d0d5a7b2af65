"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best(fn: Callable[[], object], repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls of ``fn`` after one warm-up call, in seconds."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
