"""A dataset index: one pass over a folder of images, explored later without running the model.

:func:`build_index` walks a folder (recursively), decodes the images in ``DataLoader`` workers and
runs the model once per batch on its own device. It stores, per image, the embedding features (the
model's ``"embedding"`` preset layer, global-average pooled) and a thumbnail of the model's input
view; and per channel of each chosen layer the top-k images with the position of the channel's
maximum, so the receptive-field patch can be cropped later (Zeiler & Fergus 2014; the Deep
Visualization Toolbox and OpenAI Microscope precompute the same).

On disk (``INDEX/``)::

    manifest.json                    settings, layers, shards, skipped files
    shards/shard-00000/shard.json    image ids first_id .. first_id + count - 1, paths, skipped
    shards/shard-00000/features.npy  (n, D) float32   (memory-mapped by open_index)
    shards/shard-00000/thumbs.npy    (n, t, t, 3) uint8
    shards/shard-00000/top-J.npz     layer J: (C, k') values, ids, positions of this shard
    top/top-J.npz                    layer J: the merged top-k over every shard

A shard is written into a temporary folder and renamed when complete, so an interrupted build
(killed, or stopped through ``on_step``) leaves only finished shards; running the same build again
skips them and continues (the result equals an uninterrupted build). Running it again after
adding images indexes only the new files and merges their top-k into the index. The merge is
exact: the global top-k of a channel is among the union of the per-shard top-k lists. The order is
value descending, then image id ascending, a total order, so ties are deterministic.

:func:`index_batch` is the per-batch step (decoded uint8 images in, numpy columns out).
``build_index(..., engine="ray")`` runs it on Ray actors (:mod:`vizcore.data.index_ray`) and
feeds their columns to the same loop, which writes the same shards and merge.

Not handled: a file that changes after it was indexed keeps its old entry (files are keyed by
their path relative to the folder).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vizcore.core.devices import model_device
from vizcore.core.hooks import capture_activations, forward_until, inference_session
from vizcore.core.layers import get_layer
from vizcore.core.precision import fast_forward
from vizcore.core.progress import OnStep, StepInfo, report, waiting

if TYPE_CHECKING:
    from vizcore.data.index_ray import RayEngine

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_THUMB_SIZE",
    "DEFAULT_TOP_K",
    "IMAGE_SUFFIXES",
    "ImageIndex",
    "IndexSummary",
    "TopPatch",
    "build_index",
    "decode_image",
    "index_batch",
    "list_images",
    "merge_top_k",
    "open_index",
    "shard_top_k",
    "write_shard",
]

FORMAT = "vizcore-index"
VERSION = 1
DEFAULT_SHARD_SIZE = 1000
DEFAULT_TOP_K = 16
DEFAULT_BATCH_SIZE = 16
DEFAULT_THUMB_SIZE = 64
#: File suffixes indexed from a folder (the same set as the command line's).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_SHARDS = "shards"
_TOP = "top"
_MANIFEST = "manifest.json"
_SHARD_JSON = "shard.json"
_TMP_PREFIX = ".tmp-"
# Settings that must match when an existing index is resumed or extended.
_FIXED = ("model_key", "layers", "embedding_layer", "input_size", "crop_fraction", "resample",
          "thumb_size", "top_k", "exact")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class IndexSummary:
    """What one :func:`build_index` call did.

    Attributes:
        path: The index folder.
        images: Images in the index after the call.
        added: Images indexed by this call.
        skipped: ``(path, reason)`` of the files this call could not decode (never fatal).
        shards_written: Shards this call wrote.
        shards_kept: Finished shards found and kept (a resumed or extended index).
        seconds: Wall time of the call.
        stopped: ``on_step`` stopped the build; the finished shards are kept, run again to resume.
    """

    path: Path
    images: int
    added: int
    skipped: tuple[tuple[str, str], ...]
    shards_written: int
    shards_kept: int
    seconds: float
    stopped: bool = False

    @property
    def images_per_second(self) -> float:
        """Files handled by this call (indexed or skipped) per second."""
        handled = self.added + len(self.skipped)
        return handled / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class TopPatch:
    """One maximally activating image of a channel.

    Attributes:
        image_id: Id of the image in the index.
        path: The image file, relative to the index's source folder.
        value: The channel's maximum over the image.
        row, col: Where the maximum is in the layer's ``map_shape`` map.
        box: ``(top, left, bottom, right)`` (exclusive end) of the unit's receptive field in the
            model's input view (``input_size`` pixels square), or ``None`` when the layer's
            receptive field could not be derived.
    """

    image_id: int
    path: str
    value: float
    row: int
    col: int
    box: tuple[int, int, int, int] | None


@dataclass
class _Shard:
    """A finished shard as read from its ``shard.json``."""

    number: int
    folder: Path
    first_id: int
    paths: list[str]
    skipped: list[list[str]]

    @property
    def count(self) -> int:
        return len(self.paths)


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


# --------------------------------------------------------------------------------------------
# Files


def _write_json(path: Path, data: Mapping) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, **arrays)
    os.replace(tmp, path)


def write_shard(
    out: str | os.PathLike[str],
    number: int,
    *,
    first_id: int,
    paths: Sequence[str],
    skipped: Sequence[tuple[str, str]],
    features: np.ndarray,
    thumbs: np.ndarray,
    tops: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> Path:
    """Write one finished shard atomically (a temporary folder renamed into place).

    Args:
        out: The index folder.
        number: The shard's number (its folder is ``shards/shard-NNNNN``).
        first_id: Id of the shard's first image; the others follow in order.
        paths: The indexed files (relative to the source folder), in id order.
        skipped: ``(path, reason)`` of the shard's files that could not be decoded.
        features: ``(n, D)`` float32 embedding features.
        thumbs: ``(n, t, t, 3)`` uint8 thumbnails.
        tops: Per layer (in the index's order), this shard's :func:`shard_top_k`.
    """
    shards = Path(out) / _SHARDS
    shards.mkdir(parents=True, exist_ok=True)
    final = shards / f"shard-{number:05d}"
    tmp = shards / f"{_TMP_PREFIX}shard-{number:05d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "features.npy", np.ascontiguousarray(features, dtype=np.float32))
    np.save(tmp / "thumbs.npy", np.ascontiguousarray(thumbs, dtype=np.uint8))
    for j, (values, ids, pos) in enumerate(tops):
        np.savez(tmp / f"top-{j}.npz", values=values, ids=ids, pos=pos)
    meta = {"number": number, "first_id": first_id, "paths": list(paths),
            "skipped": [list(s) for s in skipped]}  # fmt: skip
    # shard.json last: a folder without it is not a finished shard.
    _write_json(tmp / _SHARD_JSON, meta)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def _read_shards(out: Path, *, clean: bool = False) -> list[_Shard]:
    """The finished shards of an index, in order; ``clean`` removes stray temporary folders
    (only the builder may: a reader could otherwise delete a shard being written)."""
    folder = out / _SHARDS
    if not folder.is_dir():
        return []
    found: list[_Shard] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(_TMP_PREFIX):
            if clean:
                shutil.rmtree(entry, ignore_errors=True)
            continue
        meta_path = entry / _SHARD_JSON
        if not entry.name.startswith("shard-") or not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        found.append(_Shard(int(meta["number"]), entry, int(meta["first_id"]),
                            list(meta["paths"]), [list(s) for s in meta["skipped"]]))  # fmt: skip
    expected = 0
    for n, shard in enumerate(found):
        if shard.number != n or shard.first_id != expected:
            raise ValueError(
                f"The index at {str(out)!r} is inconsistent: shard {shard.folder.name} starts at "
                f"image {shard.first_id}, expected {expected}. Build a new index."
            )
        expected += shard.count
    return found


def _load_top(shard: _Shard, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(shard.folder / f"top-{j}.npz") as data:
        return data["values"], data["ids"], data["pos"]


def _merge_all(out: Path, shards: list[_Shard], layers: Sequence[str], top_k: int) -> None:
    top = out / _TOP
    top.mkdir(exist_ok=True)
    for j in range(len(layers)):
        values, ids, pos = merge_top_k([_load_top(s, j) for s in shards], k=top_k)
        _save_npz(top / f"top-{j}.npz", values=values, ids=ids, pos=pos,
                  shards=np.int64(len(shards)))  # fmt: skip


def _field_json(model: nn.Module, layer: str) -> dict | None:
    from vizcore.inside.receptive_fields import receptive_field

    try:
        rf = receptive_field(model, layer)
    except (ValueError, TypeError, RuntimeError, NotImplementedError):
        return None
    finite = lambda pair: [None if math.isinf(v) else float(v) for v in pair]  # noqa: E731
    return {"size": finite(rf.size), "jump": finite(rf.jump), "start": finite(rf.start),
            "is_global": bool(rf.is_global)}  # fmt: skip


# --------------------------------------------------------------------------------------------
# Building


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    return value


def _settings(
    model_key: str,
    embedding_layer: str | None,
    preprocessing: object | None,
) -> tuple[str, object]:
    if embedding_layer is not None and preprocessing is not None:
        return embedding_layer, preprocessing
    from vizcore.models.registry import get_spec

    spec = get_spec(model_key)
    if embedding_layer is None:
        preset = spec.preset("embedding")
        if not preset:
            raise ValueError(
                f"Model {model_key!r} has no 'embedding' preset layer; pass embedding_layer."
            )
        embedding_layer = preset[0]
    return embedding_layer, preprocessing if preprocessing is not None else spec.preprocessing


def _ray_engine(engine: str | RayEngine) -> RayEngine | None:
    """``None`` for the local engine, else the :class:`~vizcore.data.index_ray.RayEngine`."""
    if engine == "local":
        return None
    from vizcore.data import index_ray

    if engine == "ray":
        engine = index_ray.RayEngine()
    if not isinstance(engine, index_ray.RayEngine):
        raise ValueError(f"engine must be 'local', 'ray' or a RayEngine, not {engine!r}.")
    index_ray.require_ray()
    return engine


def _batches(counts: Sequence[int], batch_size: int) -> list[tuple[int, list[int], bool]]:
    """``(shard, rows, last_of_shard)`` batches that never cross a shard boundary."""
    plan, start = [], 0
    for shard, count in enumerate(counts):
        for b in range(0, count, batch_size):
            rows = list(range(start + b, start + min(b + batch_size, count)))
            plan.append((shard, rows, b + batch_size >= count))
        start += count
    return plan


def build_index(
    source: str | os.PathLike[str],
    *,
    model: nn.Module,
    model_key: str,
    layers: Sequence[str],
    out: str | os.PathLike[str],
    shard_size: int = DEFAULT_SHARD_SIZE,
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int = 2,
    thumb_size: int = DEFAULT_THUMB_SIZE,
    embedding_layer: str | None = None,
    preprocessing: object | None = None,
    exact: bool = True,
    on_step: OnStep | None = None,
    engine: str | RayEngine = "local",
) -> IndexSummary:
    """Index a folder of images (recursive); resume or extend the index at ``out`` if it exists.

    Per image: the pooled ``embedding_layer`` features and a thumbnail; per channel of each of
    ``layers``: the ``top_k`` images with the largest maximum and where it is (see the module
    docstring for the files). Files already in the index (indexed or skipped) are not read again.

    Args:
        source: The folder of images.
        model: The model (left unchanged; runs on its own device).
        model_key: The model's registry key (stored; gives the defaults below).
        layers: Layers whose channels to rank (each must output ``(C, h, w)`` maps).
        out: The index folder (created; an existing index must have the same settings).
        shard_size: Files per shard (the unit of resumption).
        top_k: Images kept per channel.
        batch_size: Images per forward pass.
        num_workers: DataLoader decode worker processes (0: decode in this process).
        thumb_size: Side of the stored thumbnails in pixels.
        embedding_layer: The feature layer (default: the spec's ``"embedding"`` preset).
        preprocessing: A :class:`~vizcore.models.registry.Preprocessing` (default: the spec's).
        exact: ``True`` runs the forwards in float32 (reproducible); ``False`` allows bf16 where
            it is fast.
        on_step: Progress after each batch (``step`` = files handled by this call); returning
            ``False`` stops after writing nothing more (finished shards are kept).
        engine: ``"local"`` (DataLoader decode workers, the model here) or ``"ray"`` / a
            :class:`vizcore.data.index_ray.RayEngine` (decode and forwards on Ray actors, the
            same files written here; ``num_workers`` is then unused).

    Returns:
        An :class:`IndexSummary`.

    Raises:
        ValueError: Bad options, unknown layers, a layer without channel maps, no images, or an
            index at ``out`` built with other settings.
        RuntimeError: ``engine="ray"`` without Ray installed.
    """
    t0 = time.perf_counter()
    ray_engine = _ray_engine(engine)
    for name, value, low in (("shard_size", shard_size, 1), ("top_k", top_k, 1),
                             ("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                             ("thumb_size", thumb_size, 1)):  # fmt: skip
        _check_int(name, value, low)
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be a non-empty list of distinct names, got {layers!r}.")
    embedding_layer, prep = _settings(model_key, embedding_layer, preprocessing)
    for name in [*layers, embedding_layer]:
        get_layer(model, name)  # LayerNotFoundError (a ValueError) lists the valid names
    root, out = Path(source), Path(out)
    files = list_images(root, exclude=out)
    settings = {
        "model_key": model_key,
        "layers": layers,
        "embedding_layer": embedding_layer,
        "input_size": int(prep.input_size),
        "crop_fraction": float(prep.crop_fraction),
        "resample": int(prep.resample),
        "thumb_size": thumb_size,
        "top_k": top_k,
        "exact": bool(exact),
    }
    if not files:
        raise ValueError(f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {str(root)!r}.")
    manifest_path = out / _MANIFEST
    manifest: dict = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{str(out)!r} is not a {FORMAT} folder; choose an empty folder.")
        differ = [k for k in _FIXED if manifest.get(k) != settings[k]]
        if differ and _read_shards(out):  # without a finished shard there is nothing to keep
            raise ValueError(
                f"The index at {str(out)!r} was built with other settings ({', '.join(differ)}: "
                + "; ".join(f"{manifest.get(k)!r} there, {settings[k]!r} now" for k in differ)
                + "). Use another --out folder or the same settings."
            )
        if differ:
            manifest = {}  # a first build that failed before its first shard: start afresh
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{str(out)!r} exists and is not an index; choose an empty folder.")
    out.mkdir(parents=True, exist_ok=True)
    shards = _read_shards(out, clean=True)
    known = {p for s in shards for p in s.paths} | {s[0] for sh in shards for s in sh.skipped}
    todo = [f for f in files if f not in known]
    layer_info: dict = dict(manifest.get("layer_info") or {})
    if not layer_info:
        layer_info = {name: {"receptive_field": _field_json(model, name)} for name in layers}
    manifest = {"format": FORMAT, "version": VERSION, **settings,
                "source": os.fspath(root.resolve()), "layer_info": layer_info}  # fmt: skip

    manifest["images"] = sum(s.count for s in shards)
    manifest["shards"] = len(shards)
    manifest["complete"] = False
    _write_json(manifest_path, manifest)  # written first: a killed build is resumable

    counts = [min(shard_size, len(todo) - s) for s in range(0, len(todo), shard_size)]
    plan = _batches(counts, batch_size)
    view = _View(settings["input_size"], settings["crop_fraction"], settings["resample"],
                 thumb_size)  # fmt: skip
    if ray_engine is not None:
        from vizcore.data.index_ray import ray_batches

        batches: Iterator[dict] = ray_batches(
            root, todo, plan, view, model=model, layers=layers, embedding_layer=embedding_layer,
            exact=exact, engine=ray_engine)  # fmt: skip
    else:
        batches = iter(DataLoader(
            _Files(root, todo, view), batch_sampler=[rows for _, rows, _ in plan],
            num_workers=num_workers, collate_fn=_collate,
            pin_memory=model_device(model).type == "cuda", persistent_workers=False))  # fmt: skip
    kept, written, added = len(shards), 0, 0
    skipped_run: list[tuple[str, str]] = []
    next_id = sum(s.count for s in shards)
    stopped, handled = False, 0
    acc: dict[str, list] = {}
    try:
        for (shard_no, _rows, last), batch in zip(plan, batches, strict=True):
            if not acc:
                acc = {"paths": [], "skipped": [], "features": [], "thumbs": [],
                       **{f"max:{n}": [] for n in layers},
                       **{f"argmax:{n}": [] for n in layers}}  # fmt: skip
            for row, ok, reason in zip(batch["rows"], batch["ok"], batch["reasons"], strict=True):
                (acc["paths"].append(todo[row]) if ok else
                 acc["skipped"].append((todo[row], reason)))  # fmt: skip
            cols = batch.get("cols")  # computed already by the Ray engine
            if cols is None and batch["pixels"] is not None:
                cols = index_batch(model, batch["pixels"], layers=layers,
                                   embedding_layer=embedding_layer, exact=exact,
                                   on_wait=waiting(on_step, handled, len(todo)))  # fmt: skip
            if cols is not None:
                for name in layers:
                    info = layer_info.setdefault(name, {})
                    shape = [int(v) for v in cols[f"shape:{name}"]]
                    if info.get("shape") not in (None, shape):
                        raise ValueError(
                            f"Layer {name!r} gave maps of shape {shape}, the index has "
                            f"{info['shape']}; an index needs a fixed input size."
                        )
                    info["shape"] = shape
                for key in ("features", *(f"{p}:{n}" for n in layers for p in ("max", "argmax"))):
                    acc[key].append(cols[key])
                acc["thumbs"].append(batch["thumbs"])
            handled += len(batch["rows"])
            if last:
                n = len(acc["paths"])
                ids = np.arange(next_id, next_id + n, dtype=np.int64)
                tops = []
                for name in layers:
                    if n:
                        maxima = np.concatenate(acc[f"max:{name}"])
                        where = np.concatenate(acc[f"argmax:{name}"])
                        tops.append(shard_top_k(maxima, where, ids, k=top_k))
                    else:  # every file of the shard was corrupt: an empty list
                        empty = np.zeros((0, 0))
                        tops.append((empty.astype(np.float32), empty.astype(np.int64),
                                     empty.astype(np.int32)))  # fmt: skip
                dim = manifest.get("feature_dim") or 0
                features = (np.concatenate(acc["features"]) if n else
                            np.zeros((0, dim), np.float32))  # fmt: skip
                thumbs = (np.concatenate(acc["thumbs"]) if n else
                          np.zeros((0, thumb_size, thumb_size, 3), np.uint8))  # fmt: skip
                if n:
                    manifest["feature_dim"] = int(features.shape[1])
                write_shard(out, kept + shard_no, first_id=next_id, paths=acc["paths"],
                            skipped=acc["skipped"], features=features, thumbs=thumbs,
                            tops=tops)  # fmt: skip
                skipped_run.extend(acc["skipped"])
                next_id += n
                added += n
                written += 1
                acc = {}
                manifest["images"], manifest["shards"] = next_id, kept + written
                _write_json(manifest_path, manifest)
            step = StepInfo(handled, len(todo),
                            message=f"Indexing: {handled}/{len(todo)} images")  # fmt: skip
            if not report(on_step, step):
                stopped = handled < len(todo)
                break
    finally:
        del batches  # shuts the decode workers down (or closes the Ray job)
    shards = _read_shards(out)
    if shards:
        _merge_all(out, shards, layers, top_k)
        if "feature_dim" not in manifest:
            manifest["feature_dim"] = _feature_dim(shards)
    manifest["images"] = sum(s.count for s in shards)
    manifest["shards"] = len(shards)
    manifest["skipped"] = [list(s) for sh in shards for s in sh.skipped]
    manifest["complete"] = not stopped
    _write_json(manifest_path, manifest)
    return IndexSummary(out, manifest["images"], added, tuple(skipped_run), written, kept,
                        time.perf_counter() - t0, stopped=stopped)  # fmt: skip


def _feature_dim(shards: list[_Shard]) -> int | None:
    for shard in shards:
        arr = np.load(shard.folder / "features.npy", mmap_mode="r")
        if arr.shape[0]:
            return int(arr.shape[1])
    return None


# --------------------------------------------------------------------------------------------
# Reading


@dataclass
class ImageIndex:
    """An index opened for reading (:func:`open_index`); features and thumbnails memory-mapped.

    Attributes:
        path: The index folder.
        manifest: The parsed ``manifest.json``.
        paths: Per image id, its file relative to ``source``.
        first_ids: Per shard, the id of its first image.
    """

    path: Path
    manifest: dict
    paths: list[str]
    first_ids: np.ndarray
    _shards: list[_Shard] = field(repr=False)
    _features: list[np.ndarray] = field(repr=False)
    _thumbs: list[np.ndarray] = field(repr=False)
    _tops: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def layers(self) -> list[str]:
        """The indexed layers."""
        return list(self.manifest["layers"])

    @property
    def source(self) -> Path:
        """The folder the images were read from."""
        return Path(self.manifest["source"])

    def _top(self, layer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if layer not in self._tops:
            raise ValueError(f"Layer {layer!r} is not indexed; indexed: {', '.join(self.layers)}.")
        return self._tops[layer]

    def channels(self, layer: str) -> int:
        """How many channels ``layer`` has."""
        return int(self._top(layer)[0].shape[0])

    def _locate(self, image_id: int) -> tuple[int, int]:
        if not 0 <= image_id < len(self):
            raise ValueError(f"image_id must be in 0..{len(self) - 1}, got {image_id}.")
        shard = int(np.searchsorted(self.first_ids, image_id, side="right")) - 1
        return shard, image_id - int(self.first_ids[shard])

    def thumbnail(self, image_id: int) -> np.ndarray:
        """The stored ``(t, t, 3)`` uint8 thumbnail of an image."""
        shard, row = self._locate(image_id)
        return np.asarray(self._thumbs[shard][row])

    def features(self, image_id: int) -> np.ndarray:
        """The stored ``(D,)`` float32 feature vector of an image."""
        shard, row = self._locate(image_id)
        return np.asarray(self._features[shard][row])

    def feature_blocks(self, block_size: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """``(first_id, (n, D) block)`` over every image, reading the memory maps block by block."""
        _check_int("block_size", block_size, 1)
        for first, feats in zip(self.first_ids, self._features, strict=True):
            for start in range(0, feats.shape[0], block_size):
                yield int(first) + start, np.asarray(feats[start : start + block_size])

    def top_patches(self, layer: str, channel: int, k: int | None = None) -> list[TopPatch]:
        """The ``k`` (default all stored) maximally activating images of one channel, best first.

        Reads the merged top-k; runs no model and scans no image.
        """
        values, ids, pos = self._top(layer)
        if not 0 <= channel < values.shape[0]:
            raise ValueError(f"channel must be in 0..{values.shape[0] - 1}, got {channel}.")
        k = values.shape[1] if k is None else _check_int("k", k, 1)
        info = self.manifest["layer_info"][layer]
        w = int(info["shape"][2])
        rf = info.get("receptive_field")
        size = int(self.manifest["input_size"])
        found = []
        for value, image_id, where in zip(values[channel, :k], ids[channel, :k],
                                          pos[channel, :k], strict=True):  # fmt: skip
            row, col = divmod(int(where), w)
            box = _box(rf, row, col, size) if rf is not None else None
            found.append(TopPatch(int(image_id), self.paths[int(image_id)], float(value),
                                  row, col, box))  # fmt: skip
        return found

    def patch(self, found: TopPatch, *, from_source: bool = True) -> np.ndarray:
        """The receptive-field crop of a :class:`TopPatch`, uint8 RGB.

        From the source file's input view when it is still there (``from_source``), else from
        the thumbnail (the box scaled to its size). The whole view when the box is unknown.
        """
        m = self.manifest
        size = int(m["input_size"])
        view: np.ndarray | None = None
        if from_source:
            try:
                view, _ = decode_image(self.source / found.path, input_size=size,
                                       crop_fraction=m["crop_fraction"], resample=m["resample"],
                                       thumb_size=size)  # fmt: skip
            except (OSError, ValueError):
                view = None
        scale = 1.0
        if view is None:
            view = self.thumbnail(found.image_id)
            scale = view.shape[0] / size
        if found.box is None:
            return view
        top, left, bottom, right = (round(v * scale) for v in found.box)
        return view[top : max(bottom, top + 1), left : max(right, left + 1)].copy()

    def nearest(
        self,
        query_features: np.ndarray,
        k: int = 8,
        *,
        metric: str = "l2",
        exclude: int | None = None,
        block_size: int = 65536,
    ):
        """Exact ``k`` nearest images of a ``(D,)`` feature vector, block by block over the maps.

        The same distances and tie-break as :func:`vizcore.inside.embedding.nearest` (L2
        ``||q - p||`` or cosine ``1 - cos``; ties by id), in blocks of ``block_size`` rows, so
        memory stays bounded for any index size.

        Returns:
            A :class:`vizcore.inside.embedding.Neighbours` with index ids as ``indices``.
        """
        from vizcore.inside.embedding import METRICS, Neighbours

        if metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}.")
        _check_int("k", k, 1)
        q = np.asarray(query_features, dtype=np.float64).reshape(-1)
        dim = self.manifest.get("feature_dim")
        if dim is not None and q.shape[0] != dim:
            raise ValueError(f"query has {q.shape[0]} dims, the index's features have {dim}.")
        qn = q / max(np.linalg.norm(q), 1e-12)
        best_d = np.zeros(0)
        best_i = np.zeros(0, dtype=np.int64)
        for first, block in self.feature_blocks(block_size):
            p = block.astype(np.float64)
            if metric == "l2":
                d = np.sqrt(np.maximum(((p - q) ** 2).sum(axis=1), 0.0))
            else:
                pn = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
                d = 1.0 - pn @ qn
            ids = np.arange(first, first + len(d), dtype=np.int64)
            if exclude is not None:
                d = np.where(ids == exclude, np.inf, d)
            d, ids = np.concatenate([best_d, d]), np.concatenate([best_i, ids])
            keep = np.lexsort((ids, d))[:k]
            best_d, best_i = d[keep], ids[keep]
        if exclude is not None:
            finite = best_i != exclude
            best_d, best_i = best_d[finite], best_i[finite]
        return Neighbours(best_i, best_d.astype(np.float32), metric, "feature")


def _box(rf: dict, row: int, col: int, input_size: int) -> tuple[int, int, int, int]:
    from vizcore.inside.receptive_fields import ReceptiveField, unit_box

    inf = lambda pair: tuple(math.inf if v is None else float(v) for v in pair)  # noqa: E731
    field_ = ReceptiveField(inf(rf["size"]), inf(rf["jump"]), inf(rf["start"]),
                            bool(rf["is_global"]))  # fmt: skip
    return unit_box(field_, row, col, input_size)


def open_index(path: str | os.PathLike[str]) -> ImageIndex:
    """Open an index folder written by :func:`build_index` (features and thumbnails memory-mapped).

    Raises:
        ValueError: ``path`` is not an index (or one of another format version).
    """
    out = Path(path)
    manifest_path = out / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{str(out)!r} is not an index (no {_MANIFEST}); build one first.")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ValueError(
            f"{str(out)!r} is not a version {VERSION} {FORMAT} folder; build it again."
        )
    shards = _read_shards(out)
    if not shards:
        raise ValueError(f"The index at {str(out)!r} has no finished shard yet.")
    layers = list(manifest["layers"])
    tops = {}
    for j, name in enumerate(layers):
        top_file = out / _TOP / f"top-{j}.npz"
        merged = None
        if top_file.is_file():
            with np.load(top_file) as data:
                if int(data["shards"]) == len(shards):
                    merged = (data["values"], data["ids"], data["pos"])
        if merged is None:  # a build stopped between a shard and the merge: merge in memory
            merged = merge_top_k([_load_top(s, j) for s in shards], k=int(manifest["top_k"]))
        tops[name] = merged
    features = [np.load(s.folder / "features.npy", mmap_mode="r") for s in shards]
    thumbs = [np.load(s.folder / "thumbs.npy", mmap_mode="r") for s in shards]
    return ImageIndex(out, manifest, [p for s in shards for p in s.paths],
                      np.array([s.first_id for s in shards], dtype=np.int64),
                      shards, features, thumbs, tops)  # fmt: skip
