"""Timing helpers shared by the benchmark scripts."""

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


def interleaved(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Minimum wall time of each function, measured alternately, in seconds.

    Every function is called once to warm up, then ``rounds`` times in a rotating order
    (``a b c``, ``b c a``, ``c a b``, ...), so a host that slows down or speeds up during the run
    affects a method and the limit it is compared with alike. On a shared machine this is what
    makes a ratio quotable: measuring the limit first and the method minutes later gave
    Grad-CAM at 1.19x, 1.24x and 1.63x of the same limit on the same code.
    """
    for fn in fns:
        fn()  # warm-up (oneDNN primitive creation, allocator growth)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            start = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]
