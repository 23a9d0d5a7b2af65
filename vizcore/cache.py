"""Bounded in-memory cache of layer activations keyed by (model, image, layer).

Moving a display slider (a channel index, a threshold, a colormap) must not recompute the forward
pass. :func:`layer_activations` answers from the cache when it can and otherwise runs *one*
forward pass that stops as soon as all missing layers have run.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np
import torch
from torch import nn

from vizcore.hooks import capture_activations, forward_until, inference_session

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


class ActivationCache:
    """A thread-safe LRU of numpy arrays, bounded by total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        """The array stored under ``key`` (marked most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store a read-only copy of ``value``; evict least recently used entries past the bound."""
        if value.flags.writeable:
            value = np.array(value, copy=True)
            value.setflags(write=False)
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._bytes


DEFAULT_CACHE = ActivationCache()


def layer_activations(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layers: Sequence[str],
    cache_key: Hashable | None = None,
    cache: ActivationCache = DEFAULT_CACHE,
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for input ``x`` as read-only float32 numpy arrays.

    Args:
        model: The model (left unchanged).
        x: Input batch in [0, 1].
        layers: Dotted layer names (validated).
        cache_key: Identifies (model, image) — e.g. ``(model_key, image_digest, input_size)``. When
            given, results are cached under ``(cache_key, layer)``; when ``None`` nothing is cached.
        cache: The cache to use.
    """
    result: dict[str, np.ndarray] = {}
    missing = []
    for name in layers:
        hit = cache.get((cache_key, name)) if cache_key is not None else None
        if hit is None:
            missing.append(name)
        else:
            result[name] = hit
    if missing:
        with (
            inference_session(model),
            torch.inference_mode(),
            capture_activations(model, missing, detach=True, stop_early=True) as acts,
        ):
            forward_until(model, x)
            for name in missing:
                array = acts[name].float().cpu().numpy().copy()
                array.setflags(write=False)
                if cache_key is not None:
                    cache.put((cache_key, name), array)
                result[name] = array
    return {name: result[name] for name in layers}
