"""Bounded in-memory caches: layer activations keyed by (model, image, layer), and decoded
images keyed by the digest of their encoded bytes (:class:`DecodedImageCache`).

Moving a display slider (a channel index, a threshold, a colormap) must not recompute the forward
pass. :func:`layer_activations` answers from the cache when it can and otherwise runs *one*
forward pass that stops as soon as all missing layers have run.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from vizcore.core.checks import check_image_batch
from vizcore.core.devices import to_model_device
from vizcore.core.hooks import capture_activations, forward_until, inference_session

DEFAULT_MAX_BYTES = 512 * 1024 * 1024


V = TypeVar("V")


class _ByteBoundedLRU(Generic[V]):
    """A thread-safe least-recently-used map bounded by the total size of its values (bytes)
    and, optionally, by entry count; the shared core of the two caches below."""

    def __init__(self, max_bytes: int, max_entries: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _size(self, value: V) -> int:
        raise NotImplementedError

    def _lookup(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def _store(self, key: Hashable, value: V) -> None:
        size = self._size(value)
        if size > self.max_bytes:
            return  # larger than the whole budget: returned to the caller, never kept
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes or self._too_many():
                _, evicted = self._items.popitem(last=False)
                self._bytes -= self._size(evicted)

    def _too_many(self) -> bool:
        return self.max_entries is not None and len(self._items) > self.max_entries

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


class ActivationCache(_ByteBoundedLRU[np.ndarray]):
    """A thread-safe LRU of numpy arrays, bounded by total bytes."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        super().__init__(max_bytes)

    def _size(self, value: np.ndarray) -> int:
        return int(value.nbytes)

    def get(self, key: Hashable) -> np.ndarray | None:
        """The array stored under ``key`` (marked most recently used), or ``None``."""
        return self._lookup(key)

    def put(self, key: Hashable, value: np.ndarray) -> None:
        """Store a read-only copy of ``value``; evict least recently used entries past the bound."""
        if value.flags.writeable:
            value = np.array(value, copy=True)
            value.setflags(write=False)
        self._store(key, value)


DEFAULT_CACHE = ActivationCache()

DEFAULT_IMAGE_CACHE_BYTES = 256 * 1024 * 1024


def image_nbytes(image: Image.Image) -> int:
    """Bytes of an image's decoded pixels (width x height x bands; at least 1 byte a pixel)."""
    return image.width * image.height * max(1, len(image.getbands()))


class DecodedImageCache(_ByteBoundedLRU[Image.Image]):
    """A thread-safe LRU of decoded images keyed by the SHA-256 of their encoded bytes.

    Bounded by the decoded size of what it holds (``max_bytes``) and by ``max_entries``: a few
    kilobytes of PNG can decode to hundreds of megabytes (a 6000x6000 1-bit PNG of 21 KB is
    108 MB as RGB), so a bound by entry count alone lets a handful of uploads hold gigabytes
    for the life of the server. An image larger than ``max_bytes`` is decoded and returned but
    not kept. Each call returns a copy, so a caller can never change the cached image.
    """

    def __init__(self, max_bytes: int = DEFAULT_IMAGE_CACHE_BYTES, max_entries: int = 64) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}.")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}.")
        super().__init__(max_bytes, max_entries)

    def _size(self, value: Image.Image) -> int:
        return image_nbytes(value)

    def get_or_load(self, data: bytes, loader: Callable[[bytes], Image.Image]) -> Image.Image:
        """A copy of the image decoded from ``data``, decoding with ``loader`` on a miss.

        Errors from ``loader`` propagate and nothing is stored.
        """
        key = hashlib.sha256(data).hexdigest()
        cached = self._lookup(key)
        if cached is not None:
            return cached.copy()
        image = loader(data)  # outside the lock: decoding can take seconds
        self._store(key, image)
        return image.copy()


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
    check_image_batch(x, batch=None, model=model)
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
            forward_until(model, to_model_device(model, x))
            for name in missing:
                array = acts[name].float().cpu().numpy().copy()
                array.setflags(write=False)
                if cache_key is not None:
                    cache.put((cache_key, name), array)
                result[name] = array
    return {name: result[name] for name in layers}
