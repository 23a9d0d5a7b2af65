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

Modules: this one builds (:func:`build_index`, shard files, the merge);
:mod:`vizcore.data.index_steps` holds the per-image and per-batch steps, and
:mod:`vizcore.data.index_read` the reader (:func:`open_index`); every public name of both is
importable from here.

Not handled: a file that changes after it was indexed keeps its old entry (files are keyed by
their path relative to the folder).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from vizcore.core.devices import model_device
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep, StepInfo, report, waiting
from vizcore.data.index_steps import (
    DEFAULT_THUMB_SIZE,
    IMAGE_SUFFIXES,
    _collate,
    _Files,
    _View,
    decode_image,
    index_batch,
    list_images,
    merge_top_k,
    shard_top_k,
)

if TYPE_CHECKING:
    from vizcore.data.index_ray import RayEngine
    from vizcore.data.index_read import ImageIndex, open_index

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


def __getattr__(name: str) -> object:
    """The reader's names (:mod:`vizcore.data.index_read` imports this module, so they are
    imported on first use)."""
    if name in ("ImageIndex", "open_index"):
        from vizcore.data import index_read

        return getattr(index_read, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
