"""Reading a dataset index (:mod:`vizcore.data.index`): :func:`open_index` and :class:`ImageIndex`.

Features and thumbnails stay memory-mapped; the merged top-k lists are small and loaded whole.
Both names are importable from :mod:`vizcore.data.index` too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vizcore.data.index import FORMAT, VERSION, TopPatch, _check_int
from vizcore.data.index_steps import decode_image, merge_top_k
from vizcore.data.index_store import _MANIFEST, _TOP, _load_top, _read_shards, _Shard

__all__ = ["ImageIndex", "TopPatch", "open_index"]


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
