"""The dataset index on disk: shards written atomically, read back, and the exact top-k merge.

A shard is written under a temporary name and renamed when complete (``shard.json`` last), so a
killed build leaves only finished shards; see :mod:`vizcore.data.index` for the file layout."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vizcore.data.index_steps import (
    merge_top_k,
)

if TYPE_CHECKING:
    pass

_SHARDS = "shards"
_TOP = "top"
_MANIFEST = "manifest.json"
_SHARD_JSON = "shard.json"
_TMP_PREFIX = ".tmp-"


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


def _feature_dim(shards: list[_Shard]) -> int | None:
    for shard in shards:
        arr = np.load(shard.folder / "features.npy", mmap_mode="r")
        if arr.shape[0]:
            return int(arr.shape[1])
    return None
