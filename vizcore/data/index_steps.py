"""The per-image and per-batch steps of a dataset index (:mod:`vizcore.data.index`).

:func:`decode_image` turns a file into the model's input view and a thumbnail; :func:`index_batch`
runs one forward pass over decoded views and returns the columns an index stores;
:func:`shard_top_k` and :func:`merge_top_k` reduce them to exact per-channel top-k lists. A
distributed engine (a Ray ``map_batches`` actor holding the model) calls these directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from vizcore.core.devices import model_device
from vizcore.core.hooks import capture_activations, forward_until, inference_session
from vizcore.core.precision import fast_forward

__all__ = [
    "DEFAULT_THUMB_SIZE",
    "IMAGE_SUFFIXES",
    "decode_image",
    "index_batch",
    "list_images",
    "merge_top_k",
    "shard_top_k",
]

DEFAULT_THUMB_SIZE = 64
#: File suffixes indexed from a folder (the same set as the command line's).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


# --------------------------------------------------------------------------------------------
# Inputs


def list_images(folder: str | os.PathLike[str], *, exclude: Path | None = None) -> list[str]:
    """Image files under ``folder`` (recursive, by suffix), as sorted POSIX paths relative to it.

    ``exclude``: a folder inside ``folder`` to leave out (the index itself).
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder of images.")
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for path in root.rglob("*"):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        found.append(path.relative_to(root).as_posix())
    return sorted(found)


@dataclass(frozen=True)
class _View:
    """How a file becomes the model's input view (a :class:`~vizcore.models.registry.Preprocessing`
    reduced to plain values that pickle into DataLoader workers)."""

    input_size: int
    crop_fraction: float
    resample: int
    thumb_size: int


def decode_image(
    path: str | os.PathLike[str],
    *,
    input_size: int,
    crop_fraction: float = 1.0,
    resample: int = Image.Resampling.BICUBIC,
    thumb_size: int = DEFAULT_THUMB_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """The model's input view of an image file and its thumbnail, both uint8 RGB.

    The view is :func:`vizcore.data.images.resize_center_crop` of the decoded image, as
    :func:`vizcore.models.registry.preprocess` does; the thumbnail is that view resized (bilinear,
    antialiased) to ``thumb_size``.

    Returns:
        ``(input_size, input_size, 3)`` and ``(thumb_size, thumb_size, 3)`` uint8 arrays.

    Raises:
        vizcore.data.images.ImageLoadError: The file cannot be decoded (a ``ValueError``).
    """
    from vizcore.data.images import load_image, resize_center_crop

    image = load_image(os.fspath(path))
    view = resize_center_crop(
        image, size=input_size, crop_fraction=crop_fraction, resample=resample
    )
    thumb = view if thumb_size == input_size else view.resize(
        (thumb_size, thumb_size), Image.Resampling.BILINEAR
    )  # fmt: skip
    return np.array(view, dtype=np.uint8), np.array(thumb, dtype=np.uint8)


class _Files(Dataset):
    """Decodes the files in DataLoader workers; a corrupt file becomes a row with ``ok=False``."""

    def __init__(self, root: Path, paths: Sequence[str], view: _View) -> None:
        self.root, self.paths, self.view = root, list(paths), view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str]:
        v = self.view
        try:
            pixels, thumb = decode_image(
                self.root / self.paths[i], input_size=v.input_size,
                crop_fraction=v.crop_fraction, resample=v.resample, thumb_size=v.thumb_size,
            )  # fmt: skip
        except (OSError, ValueError) as exc:  # ImageLoadError is a ValueError
            return i, None, None, str(exc) or type(exc).__name__
        return i, pixels, thumb, ""


def _collate(rows: list[tuple[int, np.ndarray | None, np.ndarray | None, str]]) -> dict:
    good = [r for r in rows if r[1] is not None]
    return {
        "rows": [r[0] for r in rows],
        "ok": [r[1] is not None for r in rows],
        "reasons": [r[3] for r in rows],
        "pixels": torch.from_numpy(np.stack([r[1] for r in good])) if good else None,
        "thumbs": np.stack([r[2] for r in good]) if good else None,
    }


# --------------------------------------------------------------------------------------------
# The per-batch step and the per-shard reductions


def index_batch(
    model: nn.Module,
    pixels: np.ndarray | torch.Tensor,
    *,
    layers: Sequence[str],
    embedding_layer: str,
    exact: bool = True,
    channels_last: bool = True,
    on_wait: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """One forward pass over decoded images; the columns an index stores for them.

    Formula: ``features_i = mean_{h,w} A_emb(x_i)`` (flattened when the embedding layer has no
    spatial map); per layer ``L`` and channel ``c``: ``max_{h,w} A_L(x_i)[c]`` and its flat
    position ``argmax_{h,w}``.

    Args:
        model: The model (left unchanged; runs on its own device, one locked turn).
        pixels: ``(B, S, S, 3)`` uint8 RGB input views (:func:`decode_image`).
        layers: Layers whose channel maxima to keep (each must output ``(C, h, w)`` maps).
        embedding_layer: The layer whose pooled output is the image's feature vector.
        exact: ``True`` runs in float32; ``False`` allows bf16 autocast where it is fast
            (:mod:`vizcore.core.precision`).
        channels_last: Feed the input in channels-last memory layout.
        on_wait: Called with the seconds waited for another session's turn on the model.

    Returns:
        ``"features"`` ``(B, D)`` float32, and per layer ``"max:<layer>"`` ``(B, C)`` float32 and
        ``"argmax:<layer>"`` ``(B, C)`` int32, and ``"shape:<layer>"`` its ``(C, h, w)``.

    Raises:
        ValueError: A layer does not output channel maps, or ``pixels`` has the wrong shape.
    """
    if isinstance(pixels, np.ndarray) and not pixels.flags.writeable:
        pixels = pixels.copy()  # torch refuses read-only arrays
    x = torch.as_tensor(pixels)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"pixels must be (B, S, S, 3) uint8, got {tuple(x.shape)} {x.dtype}.")
    device = model_device(model)
    x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    x = x.contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format
    )
    names = list(dict.fromkeys([*layers, embedding_layer]))
    with (
        torch.inference_mode(),
        inference_session(model, on_wait=on_wait),
        capture_activations(model, names, detach=True, stop_early=True) as acts,
        fast_forward(exact=exact, device=device),
    ):
        forward_until(model, x)
    out: dict[str, np.ndarray] = {}
    emb = acts[embedding_layer].float()
    emb = emb.mean(dim=(2, 3)) if emb.ndim == 4 else emb.flatten(1)
    out["features"] = emb.cpu().numpy().astype(np.float32, copy=False)
    for name in layers:
        act = acts[name]
        if act.ndim != 4:
            raise ValueError(
                f"Layer {name!r} outputs shape {tuple(act.shape[1:])}, not channel maps; "
                "pick a convolutional layer or block."
            )
        values, where = act.float().flatten(2).max(dim=2)
        out[f"max:{name}"] = values.cpu().numpy()
        out[f"argmax:{name}"] = where.to(torch.int32).cpu().numpy()
        out[f"shape:{name}"] = np.array(act.shape[1:], dtype=np.int64)
    return out


def _order(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Per row, the column order by value descending, then id ascending (NaN last)."""
    v = np.where(np.isnan(values), -np.inf, values)
    return np.lexsort((ids, -v), axis=-1)


def shard_top_k(
    maxima: np.ndarray, argmax: np.ndarray, ids: np.ndarray, *, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel, the ``k`` images with the largest maxima (ties: smaller id first).

    Args:
        maxima: ``(n, C)`` channel maxima of ``n`` images.
        argmax: ``(n, C)`` flat positions of those maxima.
        ids: ``(n,)`` the images' ids.
        k: How many to keep (fewer when ``n < k``).

    Returns:
        ``(C, min(k, n))`` values (float32), ids (int64) and positions (int32), best first.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    ids = np.asarray(ids, dtype=np.int64)
    vt = np.ascontiguousarray(np.asarray(maxima, dtype=np.float32).T)  # (C, n)
    it = np.broadcast_to(ids, vt.shape)
    order = _order(vt, it)[:, :k]
    rows = np.arange(vt.shape[0])[:, None]
    pos = np.asarray(argmax, dtype=np.int32).T
    return vt[rows, order], it[rows, order].copy(), pos[rows, order].copy()


def merge_top_k(
    parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists ``(values, ids, positions)`` of the same channels, exactly.

    The top-k of a union of shards is among the union of their top-k lists; sorting that union
    in the same total order (value descending, id ascending) gives it.
    """
    parts = [p for p in parts if p[0].size]  # an all-corrupt shard has an empty list
    if not parts:
        empty = np.zeros((0, 0))
        return empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.int32)
    values = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    pos = np.concatenate([p[2] for p in parts], axis=1)
    order = _order(values, ids)[:, :k]
    rows = np.arange(values.shape[0])[:, None]
    return values[rows, order], ids[rows, order], pos[rows, order]
