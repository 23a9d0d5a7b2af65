"""Gallery feature extraction with an on-disk cache keyed by model, layer and gallery content.

Features of a whole gallery for one (model, layer) are computed once, in batches of 16 (the
per-image sweet spot on a 2-core CPU, see ``shared/research/perf-anchors.md``), with progress
through ``on_step``, then stored under ``<cache>/features``. A second call with the same model key,
layer and gallery digest reads the file and runs no forward pass; a changed gallery has another
digest, hence another file. The folder is bounded (least recently used files are evicted) and every
write is atomic, so a crash or a Stop never leaves a half-written entry.

Two kinds of entries:

* :func:`gallery_features`: one vector per image; conv outputs ``(C, h, w)`` are global-average
  pooled to ``C`` (what the network's own head does), others are flattened.
* :func:`gallery_channel_maxima`: per image and channel, the maximum of the channel map and where it
  is. That is all that maximally activating patches need, for every channel at once, in
  ``N x C`` numbers instead of ``N x C x h x w``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias
from torch import nn

from vizcore.core.devices import model_device
from vizcore.core.hooks import capture_activations, forward_until, inference_session
from vizcore.core.layers import get_layer
from vizcore.core.precision import Precision, fast_forward, precision_of
from vizcore.core.progress import OnStep, StepInfo, report, waiting
from vizcore.data import diskcache
from vizcore.data.gallery import Gallery

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_CACHE_BYTES",
    "ChannelMaxima",
    "GalleryFeatures",
    "gallery_batches",
    "gallery_channel_maxima",
    "gallery_features",
    "lookup_channel_maxima",
    "lookup_features",
]

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_CACHE_BYTES = 512 * 1024 * 1024
_VERSION = 1
_WRITE_LOCK = threading.Lock()


@dataclass(frozen=True)
class GalleryFeatures:
    """One feature vector per gallery image.

    Attributes:
        features: ``(N, D)`` float32 (``N`` < gallery size only when ``stopped``).
        layer: The layer the features come from.
        model_key: The model's registry key.
        gallery_digest: Content digest of the gallery.
        pooled: Whether spatial maps were global-average pooled.
        from_cache: True when read from disk (no forward pass ran).
        stopped: True when ``on_step`` stopped the extraction (nothing was cached).
        seconds: Wall time of the call.
    """

    features: np.ndarray
    layer: str
    model_key: str
    gallery_digest: str
    pooled: bool
    from_cache: bool = False
    stopped: bool = False
    seconds: float = 0.0


@dataclass(frozen=True)
class ChannelMaxima:
    """Per image and channel: the channel map's maximum and its position.

    Attributes:
        maxima: ``(N, C)`` float32 maximum of each channel map.
        argmax: ``(N, C)`` int32 flat index of the maximum in the ``map_shape`` map.
        map_shape: ``(h, w)`` of the layer's maps.
        input_size: Side of the model input the gallery images were resized to.
        layer, model_key, gallery_digest, from_cache, stopped, seconds: as in
            :class:`GalleryFeatures`.
    """

    maxima: np.ndarray
    argmax: np.ndarray
    map_shape: tuple[int, int]
    input_size: int
    layer: str
    model_key: str
    gallery_digest: str
    from_cache: bool = False
    stopped: bool = False
    seconds: float = 0.0


def gallery_batches(
    gallery: Gallery,
    input_size: int,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    indices: list[int] | None = None,
    channels_last: bool = True,
    device: torch.device | str | None = None,
) -> Iterator[torch.Tensor]:
    """Yield ``(B, 3, S, S)`` float inputs in [0, 1], resized (antialiased bilinear) to ``S``.

    ``device``: where the batches are made (the model's device; ``None``: the CPU). The uint8
    pixels are copied there first, so the conversion and the resize run on that device too.
    """
    order = list(range(len(gallery))) if indices is None else indices
    for start in range(0, len(order), batch_size):
        chunk = gallery.images[order[start : start + batch_size]]
        pixels = torch.from_numpy(np.ascontiguousarray(chunk))
        if device is not None:
            pixels = pixels.to(device)
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-1] != input_size:
            x = F.interpolate(
                x, size=(input_size, input_size), mode="bilinear", antialias=True,
                align_corners=False,
            ).clamp_(0.0, 1.0)  # fmt: skip
        layout = torch.channels_last if channels_last else torch.contiguous_format
        yield x.contiguous(memory_format=layout)


def _cache_path(
    kind: str,
    model_key: str,
    layer: str,
    gallery: Gallery,
    input_size: int,
    precision: Precision = "fp32",
) -> Path:
    parts: list[object] = [kind, model_key, layer, gallery.digest, input_size, _VERSION]
    if precision != "fp32":  # float32 entries keep their earlier keys
        parts.append(precision)
    key = json.dumps(parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model_key}-{layer}")[:80]
    return diskcache.cache_root() / "features" / f"{kind}-{safe}-{digest}.npz"


def _load(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as exc:
        logger.warning("Ignoring unreadable feature cache file %s: %s", path, exc)
        return None
    diskcache.touch(path)
    return arrays


def _store(path: Path, arrays: dict[str, np.ndarray], max_bytes: int) -> None:
    def write(handle: io.BufferedIOBase) -> None:
        np.savez(handle, **arrays)

    with _WRITE_LOCK:
        diskcache.atomic_write(path, write)
        diskcache.evict_oldest(path.parent, max_bytes, pattern="*.npz", keep=path)


def _run(
    model: nn.Module,
    gallery: Gallery,
    *,
    layer: str,
    input_size: int,
    batch_size: int,
    on_step: OnStep | None,
    reduce: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
    channels_last: bool,
    what: str,
    exact: bool = True,
) -> tuple[list[tuple[torch.Tensor, ...]], tuple[int, ...], bool]:
    """Run the gallery through the model up to ``layer``; ``reduce`` each batch's activation."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    if len(gallery) == 0:
        raise ValueError("The gallery is empty.")
    outputs: list[tuple[torch.Tensor, ...]] = []
    shape: tuple[int, ...] = ()
    done = 0
    stopped = False
    get_layer(model, layer)  # a bad name fails before any image is loaded
    with torch.inference_mode():
        for x in gallery_batches(gallery, input_size, batch_size=batch_size,
                                 channels_last=channels_last,
                                 device=model_device(model)):  # fmt: skip
            # One turn per batch, hooks inside it: other sessions wait at most one batch.
            with (
                inference_session(model, on_wait=waiting(on_step, done, len(gallery))),
                capture_activations(model, [layer], detach=True, stop_early=True) as acts,
                fast_forward(exact=exact, device=model_device(model)),
            ):
                forward_until(model, x)
            act = acts[layer]
            shape = tuple(act.shape[1:])
            outputs.append(reduce(act))
            done += len(x)
            info = StepInfo(done, len(gallery), message=f"{what}: {done}/{len(gallery)} images")
            if not report(on_step, info):
                stopped = done < len(gallery)
                break
    return outputs, shape, stopped


def gallery_features(
    model: nn.Module,
    gallery: Gallery,
    *,
    layer: str,
    model_key: str,
    input_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    channels_last: bool = True,
    use_cache: bool = True,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    on_step: OnStep | None = None,
    exact: bool = False,
) -> GalleryFeatures:
    """Features of every gallery image at ``layer``, from the disk cache when possible.

    Formula: ``f_i = mean_{h,w} A_layer(x_i)[:, h, w]`` for a conv map (global average pooling,
    as the network's own head), else ``f_i = flatten(A_layer(x_i))``.

    Args:
        model: The model (left unchanged).
        gallery: The images; each is resized to ``input_size`` (antialiased bilinear).
        layer: Dotted layer name.
        model_key: Registry key of ``model`` (part of the cache key: two models must not share it).
        input_size: Side of the model input.
        batch_size: Images per forward pass (16 is fastest per image on a 2-core CPU).
        channels_last: Feed the input in channels-last memory layout (measured in
            ``bench/features.py``).
        use_cache: Read and write the disk cache.
        max_cache_bytes: Bound of the feature cache folder; oldest entries are evicted.
        on_step: Progress callback; returning ``False`` stops (the partial result is not cached).
        exact: ``True`` runs in float32; ``False`` runs the forwards under bf16 autocast where
            bf16 is fast here (:mod:`vizcore.core.precision`; the pooling is float32 either way).
            bf16 features are cached apart from float32 ones.
    """
    t0 = time.perf_counter()
    precision = precision_of(exact=exact, device=model_device(model))
    path = _cache_path("feat", model_key, layer, gallery, input_size, precision)
    if use_cache and (hit := _load(path)) is not None and "features" in hit:
        return GalleryFeatures(hit["features"], layer, model_key, gallery.digest,
                               bool(hit["pooled"]), from_cache=True,
                               seconds=time.perf_counter() - t0)  # fmt: skip

    def reduce(act: torch.Tensor) -> tuple[torch.Tensor, ...]:
        act = act.float()
        return (act.mean(dim=(2, 3)) if act.ndim == 4 else act.flatten(1),)

    outputs, shape, stopped = _run(
        model, gallery, layer=layer, input_size=input_size, batch_size=batch_size,
        on_step=on_step, reduce=reduce, channels_last=channels_last, what="Extracting features",
        exact=precision == "fp32",
    )  # fmt: skip
    features = torch.cat([o[0] for o in outputs]).cpu().numpy().astype(np.float32, copy=False)
    pooled = len(shape) == 3
    if use_cache and not stopped:
        _store(path, {"features": features, "pooled": np.array(pooled)}, max_cache_bytes)
    features.setflags(write=False)
    return GalleryFeatures(features, layer, model_key, gallery.digest, pooled, stopped=stopped,
                           seconds=time.perf_counter() - t0)  # fmt: skip


def gallery_channel_maxima(
    model: nn.Module,
    gallery: Gallery,
    *,
    layer: str,
    model_key: str,
    input_size: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    channels_last: bool = True,
    use_cache: bool = True,
    max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    on_step: OnStep | None = None,
) -> ChannelMaxima:
    """Per image and channel, the max of ``layer``'s channel map and its position (disk cached).

    Raises:
        ValueError: ``layer`` does not output spatial maps ``(C, h, w)``.
    """
    t0 = time.perf_counter()
    path = _cache_path("max", model_key, layer, gallery, input_size)
    if use_cache and (hit := _load(path)) is not None and "maxima" in hit:
        h, w = (int(v) for v in hit["map_shape"])
        return ChannelMaxima(hit["maxima"], hit["argmax"], (h, w), input_size, layer, model_key,
                             gallery.digest, from_cache=True,
                             seconds=time.perf_counter() - t0)  # fmt: skip

    def reduce(act: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if act.ndim != 4:
            raise ValueError(
                f"Layer {layer!r} outputs shape {tuple(act.shape[1:])}, not channel maps; "
                "pick a convolutional layer or block."
            )
        values, where = act.float().flatten(2).max(dim=2)
        return values, where.to(torch.int32)

    outputs, shape, stopped = _run(
        model, gallery, layer=layer, input_size=input_size, batch_size=batch_size,
        on_step=on_step, reduce=reduce, channels_last=channels_last,
        what="Finding maximal activations",
    )  # fmt: skip
    maxima = torch.cat([o[0] for o in outputs]).cpu().numpy()
    argmax = torch.cat([o[1] for o in outputs]).cpu().numpy()
    map_shape = (int(shape[1]), int(shape[2]))
    if use_cache and not stopped:
        arrays = {"maxima": maxima, "argmax": argmax, "map_shape": np.array(map_shape)}
        _store(path, arrays, max_cache_bytes)
    return ChannelMaxima(maxima, argmax, map_shape, input_size, layer, model_key, gallery.digest,
                         stopped=stopped, seconds=time.perf_counter() - t0)  # fmt: skip


def lookup_features(
    gallery: Gallery,
    *,
    layer: str,
    model_key: str,
    input_size: int,
    precision: Precision = "fp32",
) -> GalleryFeatures | None:
    """The cached features of ``gallery`` at ``layer``, or ``None`` (never runs the model).

    ``precision`` is what :func:`gallery_features` used
    (:func:`vizcore.core.precision.precision_of`).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}.")
    hit = _load(_cache_path("feat", model_key, layer, gallery, input_size, precision))
    if hit is None or "features" not in hit:
        return None
    return GalleryFeatures(hit["features"], layer, model_key, gallery.digest, bool(hit["pooled"]),
                           from_cache=True)  # fmt: skip


def lookup_channel_maxima(
    gallery: Gallery, *, layer: str, model_key: str, input_size: int
) -> ChannelMaxima | None:
    """The cached channel maxima of ``gallery`` at ``layer``, or ``None`` (never runs the model)."""
    hit = _load(_cache_path("max", model_key, layer, gallery, input_size))
    if hit is None or "maxima" not in hit:
        return None
    h, w = (int(v) for v in hit["map_shape"])
    return ChannelMaxima(hit["maxima"], hit["argmax"], (h, w), input_size, layer, model_key,
                         gallery.digest, from_cache=True)  # fmt: skip
