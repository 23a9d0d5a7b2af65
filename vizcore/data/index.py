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
from vizcore.data.index_store import (
    _MANIFEST,
    _feature_dim,
    _merge_all,
    _read_shards,
    _write_json,
    write_shard,
)

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
    layers = _checked_layers(layers, shard_size=shard_size, top_k=top_k, batch_size=batch_size,
                             num_workers=num_workers, thumb_size=thumb_size)  # fmt: skip
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
    manifest = _existing_manifest(out, settings)
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
    batches = _batch_stream(root, todo, plan, view, model=model, layers=layers,
                            embedding_layer=embedding_layer, exact=exact, engine=ray_engine,
                            num_workers=num_workers)  # fmt: skip
    writer = _ShardWriter(out, manifest, layers=layers, top_k=top_k, thumb_size=thumb_size,
                          kept=len(shards), next_id=sum(s.count for s in shards))  # fmt: skip
    stopped, handled = False, 0
    try:
        for (shard_no, _rows, last), batch in zip(plan, batches, strict=True):
            cols = batch.get("cols")  # computed already by the Ray engine
            if cols is None and batch["pixels"] is not None:
                cols = index_batch(model, batch["pixels"], layers=layers,
                                   embedding_layer=embedding_layer, exact=exact,
                                   on_wait=waiting(on_step, handled, len(todo)))  # fmt: skip
            writer.add(batch, cols, todo)
            handled += len(batch["rows"])
            if last:
                writer.finish_shard(shard_no)
            step = StepInfo(handled, len(todo),
                            message=f"Indexing: {handled}/{len(todo)} images")  # fmt: skip
            if not report(on_step, step):
                stopped = handled < len(todo)
                break
    finally:
        del batches  # shuts the decode workers down (or closes the Ray job)
    return _finish(out, manifest, layers=layers, top_k=top_k, writer=writer, stopped=stopped,
                   seconds=time.perf_counter() - t0)  # fmt: skip


def _checked_layers(layers: Sequence[str], **options: object) -> list[str]:
    """The options' ranges (shard_size, top_k, batch_size, thumb_size >= 1, workers >= 0)."""
    for name, value in options.items():
        _check_int(name, value, 0 if name == "num_workers" else 1)
    layers = list(layers)
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be a non-empty list of distinct names, got {layers!r}.")
    return layers


def _existing_manifest(out: Path, settings: Mapping) -> dict:
    """The manifest of the index at ``out`` if it can be resumed or extended, else ``{}``.

    Raises ValueError for a folder that is not an index or an index with other settings (one
    that failed before its first shard is started afresh).
    """
    manifest_path = out / _MANIFEST
    if not manifest_path.is_file():
        if out.exists() and any(out.iterdir()):
            raise ValueError(f"{str(out)!r} exists and is not an index; choose an empty folder.")
        return {}
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
    return {} if differ else manifest


def _batch_stream(
    root: Path,
    todo: list[str],
    plan: list[tuple[int, list[int], bool]],
    view: _View,
    *,
    model: nn.Module,
    layers: list[str],
    embedding_layer: str,
    exact: bool,
    engine: RayEngine | None,
    num_workers: int,
) -> Iterator[dict]:
    """Decoded batches in ``plan`` order: DataLoader workers here, or Ray actors (with cols)."""
    if engine is not None:
        from vizcore.data.index_ray import ray_batches

        return ray_batches(root, todo, plan, view, model=model, layers=layers,
                           embedding_layer=embedding_layer, exact=exact, engine=engine)  # fmt: skip
    return iter(DataLoader(
        _Files(root, todo, view), batch_sampler=[rows for _, rows, _ in plan],
        num_workers=num_workers, collate_fn=_collate,
        pin_memory=model_device(model).type == "cuda", persistent_workers=False))  # fmt: skip


class _ShardWriter:
    """Collects one shard's batches and writes it (with its exact top-k) when it is complete."""

    def __init__(self, out: Path, manifest: dict, *, layers: list[str], top_k: int,
                 thumb_size: int, kept: int, next_id: int) -> None:  # fmt: skip
        self.out, self.manifest, self.layers = out, manifest, layers
        self.top_k, self.thumb_size = top_k, thumb_size
        self.kept, self.next_id = kept, next_id
        self.written = self.added = 0
        self.skipped_run: list[tuple[str, str]] = []
        self.acc: dict[str, list] = {}

    def add(self, batch: dict, cols: dict | None, todo: list[str]) -> None:
        """Keep a batch's paths, skipped files, features, per-channel maxima and thumbnails."""
        if not self.acc:
            self.acc = {"paths": [], "skipped": [], "features": [], "thumbs": [],
                        **{f"max:{n}": [] for n in self.layers},
                        **{f"argmax:{n}": [] for n in self.layers}}  # fmt: skip
        acc = self.acc
        for row, ok, reason in zip(batch["rows"], batch["ok"], batch["reasons"], strict=True):
            (acc["paths"].append(todo[row]) if ok else
             acc["skipped"].append((todo[row], reason)))  # fmt: skip
        if cols is None:
            return
        self._check_shapes(cols)
        for key in ("features", *(f"{p}:{n}" for n in self.layers for p in ("max", "argmax"))):
            acc[key].append(cols[key])
        acc["thumbs"].append(batch["thumbs"])

    def _check_shapes(self, cols: dict) -> None:
        layer_info = self.manifest["layer_info"]
        for name in self.layers:
            info = layer_info.setdefault(name, {})
            shape = [int(v) for v in cols[f"shape:{name}"]]
            if info.get("shape") not in (None, shape):
                raise ValueError(
                    f"Layer {name!r} gave maps of shape {shape}, the index has "
                    f"{info['shape']}; an index needs a fixed input size."
                )
            info["shape"] = shape

    def finish_shard(self, shard_no: int) -> None:
        """Write the collected shard (``shard_no`` of this call) and update the manifest."""
        acc, n = self.acc, len(self.acc["paths"])
        ids = np.arange(self.next_id, self.next_id + n, dtype=np.int64)
        tops = []
        for name in self.layers:
            if n:
                maxima = np.concatenate(acc[f"max:{name}"])
                where = np.concatenate(acc[f"argmax:{name}"])
                tops.append(shard_top_k(maxima, where, ids, k=self.top_k))
            else:  # every file of the shard was corrupt: an empty list
                empty = np.zeros((0, 0))
                tops.append((empty.astype(np.float32), empty.astype(np.int64),
                             empty.astype(np.int32)))  # fmt: skip
        dim = self.manifest.get("feature_dim") or 0
        features = (np.concatenate(acc["features"]) if n else
                    np.zeros((0, dim), np.float32))  # fmt: skip
        thumbs = (np.concatenate(acc["thumbs"]) if n else
                  np.zeros((0, self.thumb_size, self.thumb_size, 3), np.uint8))  # fmt: skip
        if n:
            self.manifest["feature_dim"] = int(features.shape[1])
        write_shard(self.out, self.kept + shard_no, first_id=self.next_id, paths=acc["paths"],
                    skipped=acc["skipped"], features=features, thumbs=thumbs,
                    tops=tops)  # fmt: skip
        self.skipped_run.extend(acc["skipped"])
        self.next_id += n
        self.added += n
        self.written += 1
        self.acc = {}
        self.manifest["images"] = self.next_id
        self.manifest["shards"] = self.kept + self.written
        _write_json(self.out / _MANIFEST, self.manifest)


def _finish(
    out: Path,
    manifest: dict,
    *,
    layers: list[str],
    top_k: int,
    writer: _ShardWriter,
    stopped: bool,
    seconds: float,
) -> IndexSummary:
    """Merge every shard's top-k, write the final manifest, summarize this call."""
    shards = _read_shards(out)
    if shards:
        _merge_all(out, shards, layers, top_k)
        if "feature_dim" not in manifest:
            manifest["feature_dim"] = _feature_dim(shards)
    manifest["images"] = sum(s.count for s in shards)
    manifest["shards"] = len(shards)
    manifest["skipped"] = [list(s) for sh in shards for s in sh.skipped]
    manifest["complete"] = not stopped
    _write_json(out / _MANIFEST, manifest)
    return IndexSummary(out, manifest["images"], writer.added, tuple(writer.skipped_run),
                        writer.written, writer.kept, seconds, stopped=stopped)  # fmt: skip


def __getattr__(name: str) -> object:
    """The reader's names (:mod:`vizcore.data.index_read` imports this module, so they are
    imported on first use)."""
    if name in ("ImageIndex", "open_index"):
        from vizcore.data import index_read

        return getattr(index_read, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
