"""What the app asks an opened index: a unit's top patches, and a sample of it for the map.

Everything here reads the memory-mapped index (:func:`vizcore.data.index.open_index`); nothing
runs the model and nothing scans the images again:

- :func:`unit_patches`: a channel's maximally activating images from the stored merged top-k,
  each cropped to the receptive field of the unit at the stored position of its maximum
  (Zeiler & Fergus 2014, section 4; the receptive field from
  :mod:`vizcore.inside.receptive_fields`).
- Nearest neighbours over the whole index are :meth:`ImageIndex.nearest
  <vizcore.data.index_read.ImageIndex.nearest>`: exact, in blocks of the memory-mapped features
  (plain numpy, no faiss).
- :func:`index_map`: a t-SNE (or PCA) map of a uniform random sample of at most ``cap`` images
  (van der Maaten & Hinton 2008, through :func:`vizcore.inside.embedding.fit_map`); a sample,
  because Barnes-Hut t-SNE of 5,000+ points takes minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vizcore.core.progress import OnStep
from vizcore.data.index_read import ImageIndex, TopPatch
from vizcore.inside.embedding import GalleryMap, fit_map

__all__ = [
    "DEFAULT_MAP_CAP",
    "IndexMap",
    "UnitPatches",
    "check_index_model",
    "index_map",
    "sample_features",
    "sample_ids",
    "unit_patches",
]

#: The most index images a map holds (a uniform random sample above it).
DEFAULT_MAP_CAP = 2000


@dataclass(frozen=True)
class UnitPatches:
    """One channel's maximally activating images in an index, cropped to the unit's field.

    Attributes:
        layer, channel: The unit.
        patches: The stored top images, best first (value, position, box, path).
        crops: Per patch, the receptive-field crop (uint8 RGB), from the source file's input
            view or, when the file is gone or ``from_source`` was off, from the thumbnail.
        field_size: The receptive field's ``(height, width)`` in input pixels (``None`` when it
            could not be derived: then each crop is the whole view).
        map_shape: The layer's ``(h, w)`` map.
        input_size: Side of the model's input view the boxes refer to.
        images: Images in the index.
    """

    layer: str
    channel: int
    patches: tuple[TopPatch, ...]
    crops: tuple[np.ndarray, ...]
    field_size: tuple[float, float] | None
    map_shape: tuple[int, int]
    input_size: int
    images: int


def check_index_model(index: ImageIndex, model_key: str) -> None:
    """Raise a ``ValueError`` saying so when ``index`` was built with another model."""
    built = index.manifest.get("model_key")
    if built != model_key:
        raise ValueError(
            f"The index at {str(index.path)!r} was built with model {built!r}; the app's model "
            f"is {model_key!r}. Pick that model in the sidebar, or build an index for this one "
            "(`vizcore index build FOLDER --model KEY`)."
        )


def unit_patches(
    index: ImageIndex, layer: str, channel: int, *, k: int = 12, from_source: bool = True
) -> UnitPatches:
    """The ``k`` maximally activating images of ``layer``'s ``channel``, cropped (no scan).

    Reads the merged top-k (:meth:`ImageIndex.top_patches`) and crops each image's input view
    to the receptive field of the unit where the channel's maximum is.

    Raises:
        ValueError: The layer is not indexed, the channel is out of range, or ``k < 1``.
    """
    found = index.top_patches(layer, channel, k)
    crops = tuple(index.patch(p, from_source=from_source) for p in found)
    info = index.manifest["layer_info"][layer]
    rf = info.get("receptive_field")
    size = None
    if rf is not None and None not in rf["size"]:
        size = (float(rf["size"][0]), float(rf["size"][1]))
    h, w = (int(v) for v in info["shape"][1:3])
    return UnitPatches(layer, int(channel), tuple(found), crops, size, (h, w),
                       int(index.manifest["input_size"]), len(index))  # fmt: skip


def sample_ids(count: int, *, cap: int = DEFAULT_MAP_CAP, seed: int = 0) -> np.ndarray:
    """Sorted ids of a uniform random sample of ``min(count, cap)`` of ``count`` images.

    All ids when ``count <= cap``; otherwise drawn without replacement by a local generator
    seeded with ``seed`` (the same sample for the same arguments).
    """
    for name, value, low in (("count", count, 0), ("cap", cap, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    if count <= cap:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=cap, replace=False)).astype(np.int64)


def sample_features(
    index: ImageIndex, *, cap: int = DEFAULT_MAP_CAP, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, (n, D) float32 features)`` of :func:`sample_ids` of the index, block by block."""
    ids = sample_ids(len(index), cap=cap, seed=seed)
    parts = []
    for first, block in index.feature_blocks():
        lo, hi = np.searchsorted(ids, [first, first + len(block)])
        if hi > lo:
            parts.append(np.asarray(block[ids[lo:hi] - first], dtype=np.float32))
    dim = int(index.manifest.get("feature_dim") or 0)
    feats = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return ids, feats


@dataclass(frozen=True)
class IndexMap:
    """A 2-D map of a sample of an index.

    Attributes:
        ids: ``(n,)`` the index ids of the mapped images (row ``i`` of the map is ``ids[i]``).
        gallery_map: The fitted map (:class:`vizcore.inside.embedding.GalleryMap`); place the
            current image with :func:`vizcore.inside.embedding.place_query`.
        total: Images in the index.
        cap: The sample cap used.
    """

    ids: np.ndarray
    gallery_map: GalleryMap
    total: int
    cap: int

    @property
    def sampled(self) -> bool:
        """True when the map shows a sample, not every image."""
        return len(self.ids) < self.total


def index_map(
    index: ImageIndex,
    *,
    cap: int = DEFAULT_MAP_CAP,
    method: str = "tsne",
    perplexity: float = 30.0,
    n_iter: int = 500,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> IndexMap:
    """t-SNE or PCA map of at most ``cap`` images of the index (a seeded uniform sample).

    The sample and the map's own randomness share ``seed``. See
    :func:`vizcore.inside.embedding.fit_map` for the method (PCA to 50 dims, exact k-NN
    affinities, Barnes-Hut openTSNE, PCA initialization).

    Raises:
        ValueError: Fewer than 3 images, or bad settings.
    """
    ids, feats = sample_features(index, cap=cap, seed=seed)
    fitted = fit_map(feats, method=method, perplexity=perplexity, n_iter=n_iter, seed=seed,
                     on_step=on_step)  # fmt: skip
    return IndexMap(ids, fitted, len(index), cap)
