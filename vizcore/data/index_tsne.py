"""A t-SNE map of a whole dataset index, computed once and stored beside it.

``vizcore index tsne INDEX`` runs :func:`index_tsne`.

:func:`index_tsne` reads the index's memory-mapped embedding features (every image, or a seeded
uniform sample), reduces them to 50 dimensions by PCA (mean and covariance accumulated block by
block, so the features are never held twice in float64), and runs openTSNE (Poličar et al.
2024; t-SNE: van der Maaten & Hinton 2008) with PCA initialization:

- up to :data:`FFT_ABOVE` points: exact k-NN affinities and the Barnes-Hut gradient
  (``negative_gradient_method="bh"``; faster than FFT at this size on two CPU cores, see
  :mod:`vizcore.inside.embedding`);
- above it: approximate k-NN affinities (Annoy) and the FFT-accelerated interpolation gradient
  (``negative_gradient_method="fft"``, Linderman et al. 2019), which is linear in the points.

The map is written atomically into ``INDEX/maps/tsne/`` (``coords.npy`` float32 ``(n, 2)``,
``ids.npy`` int64 ``(n,)``, ``map.json`` the parameters), a temporary folder renamed into place,
so a reader sees the old map or the new one, never half of one. :func:`read_tsne` opens it;
:func:`place_on_map` puts a new feature vector on it (the median position of its nearest mapped
images: openTSNE's ``transform`` starts from that point, but the stored map keeps no affinities
to optimize against, so this is where it stops).

When openTSNE is missing (it is a dependency of vizcore, so only in a broken install), samples of
at most :data:`FALLBACK_MAX` points fall back to scikit-learn's Barnes-Hut ``TSNE``; larger ones
raise a ``RuntimeError`` that says what to install.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vizcore.core.progress import OnStep, StepInfo, report
from vizcore.data.index_query import sample_ids
from vizcore.data.index_read import ImageIndex

__all__ = [
    "FALLBACK_MAX",
    "FFT_ABOVE",
    "MAP_FOLDER",
    "IndexTSNE",
    "index_tsne",
    "place_on_map",
    "read_tsne",
]

#: Above this many points the FFT gradient and approximate neighbours are used.
FFT_ABOVE = 10_000
#: The largest sample the scikit-learn fallback takes when openTSNE is missing.
FALLBACK_MAX = 5_000
#: Where the map lives inside the index folder.
MAP_FOLDER = Path("maps") / "tsne"
PCA_DIMS = 50
_FORMAT = "vizcore-index-tsne"
_VERSION = 1


@dataclass(frozen=True)
class IndexTSNE:
    """A stored (or just computed) 2-D t-SNE map of an index.

    Attributes:
        ids: ``(n,)`` int64 index ids, ascending; row ``i`` of ``coords`` is image ``ids[i]``.
        coords: ``(n, 2)`` float32 positions, centred on their bounding box.
        params: What was run: layer, perplexity, iterations, seed, gradient, neighbours,
            ``index_images`` (images in the index then), seconds, library versions.
        path: The map's folder (``None`` when it was not written).
    """

    ids: np.ndarray
    coords: np.ndarray
    params: dict
    path: Path | None = None

    @property
    def index_images(self) -> int:
        """Images the index held when the map was computed."""
        return int(self.params["index_images"])

    @property
    def sampled(self) -> bool:
        """True when the map covers a sample, not every image the index had then."""
        return len(self.ids) < self.index_images


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    return int(value)


def _checked(index: ImageIndex, layer: str | None, sample: int | None, perplexity: float,
             n_iter: int, seed: int) -> tuple[str, np.ndarray]:  # fmt: skip
    """The layer and the ids to map, or a ``ValueError`` that says what is wrong."""
    embedding = str(index.manifest["embedding_layer"])
    if layer is not None and layer != embedding:
        kind = "an indexed top-k layer" if layer in index.layers else "not in the index"
        raise ValueError(
            f"Layer {layer!r} has no per-image features in this index ({kind}): the index "
            f"stores the features of its embedding layer {embedding!r} only. Leave the layer "
            f"out or give {embedding!r}."
        )
    total = len(index)
    if sample is not None:
        _check_int("sample", sample, 3)
        if sample > total:
            raise ValueError(
                f"A sample of {sample} is more than the index's {total} images; give a smaller "
                "sample or map all of them."
            )
    if total < 3:
        raise ValueError(f"A map needs at least 3 images; the index has {total}.")
    if not 2.0 <= float(perplexity) <= 100.0:
        raise ValueError(f"perplexity must be between 2 and 100, got {perplexity!r}.")
    _check_int("n_iter", n_iter, 50)
    if sample is None:
        return embedding, np.arange(total, dtype=np.int64)
    return embedding, sample_ids(total, cap=sample, seed=seed)


def _blocks(index: ImageIndex, ids: np.ndarray) -> Iterable[np.ndarray]:
    """The features of ``ids`` (sorted), block by block over the memory maps."""
    for first, block in index.feature_blocks():
        lo, hi = np.searchsorted(ids, [first, first + len(block)])
        if hi > lo:
            yield np.asarray(block[ids[lo:hi] - first], dtype=np.float32)


def _pca(index: ImageIndex, ids: np.ndarray, dims: int) -> np.ndarray:
    """``(n, dims)`` float32 PCA projection of the features of ``ids``, in two passes.

    Mean and covariance are summed in float64 block by block; component signs are fixed as in
    :func:`vizcore.inside.embedding.pca` (largest loading positive).
    """
    n, total, outer = 0, None, None
    for block in _blocks(index, ids):
        b = block.astype(np.float64)
        total = b.sum(axis=0) if total is None else total + b.sum(axis=0)
        outer = b.T @ b if outer is None else outer + b.T @ b
        n += len(b)
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    evals, evecs = np.linalg.eigh(cov)
    keep = min(dims, cov.shape[0], n)
    vt = evecs[:, np.argsort(evals)[::-1][:keep]].T
    signs = np.sign(vt[np.arange(keep), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    return np.concatenate([((b - mean) @ vt.T).astype(np.float32) for b in _blocks(index, ids)])


def _run_opentsne(
    data: np.ndarray,
    *,
    perplexity: float,
    n_iter: int,
    exaggeration_iter: int,
    seed: int,
    n_jobs: int,
    on_step: OnStep | None,
) -> tuple[np.ndarray, dict, bool]:
    import openTSNE

    large = len(data) > FFT_ABOVE
    total = exaggeration_iter + n_iter
    state = {"done": 0, "stopped": False}

    def callback(iteration: int, error: float, _embedding: object) -> bool:
        state["done"] = min(state["done"] + 25, total)
        info = StepInfo(state["done"], total, loss=float(error),
                        message=f"t-SNE iteration {state['done']}/{total}")  # fmt: skip
        state["stopped"] = not report(on_step, info)
        return state["stopped"]

    tsne = openTSNE.TSNE(
        n_components=2, perplexity=perplexity, n_iter=n_iter,
        early_exaggeration_iter=exaggeration_iter, learning_rate="auto",
        negative_gradient_method="fft" if large else "bh",
        neighbors="annoy" if large else "exact", initialization="pca", random_state=seed,
        n_jobs=n_jobs, callbacks=callback, callbacks_every_iters=25, verbose=False,
    )  # fmt: skip
    coords = np.asarray(tsne.fit(data), dtype=np.float64)
    used = {"gradient": "fft" if large else "bh", "neighbors": "annoy" if large else "exact",
            "library": f"openTSNE {openTSNE.__version__}"}  # fmt: skip
    return coords, used, bool(state["stopped"])


def _run_sklearn(
    data: np.ndarray,
    *,
    perplexity: float,
    n_iter: int,
    exaggeration_iter: int,
    seed: int,
    n_jobs: int,
) -> tuple[np.ndarray, dict, bool]:
    if len(data) > FALLBACK_MAX:
        raise RuntimeError(
            f"openTSNE is not installed, and a t-SNE of {len(data)} points needs it (the "
            f"scikit-learn fallback takes at most {FALLBACK_MAX}): pip install "
            "'openTSNE>=1.0.2,<2', or map a sample (--sample N)."
        )
    try:
        import sklearn
        from sklearn.manifold import TSNE
    except ImportError:
        raise RuntimeError(
            "Neither openTSNE nor scikit-learn is installed: pip install 'openTSNE>=1.0.2,<2'."
        ) from None
    tsne = TSNE(n_components=2, perplexity=perplexity, max_iter=exaggeration_iter + n_iter,
                init="pca", random_state=seed, method="barnes_hut", n_jobs=n_jobs)  # fmt: skip
    coords = np.asarray(tsne.fit_transform(data), dtype=np.float64)
    return coords, {"gradient": "bh", "neighbors": "exact",
                    "library": f"scikit-learn {sklearn.__version__}"}, False  # fmt: skip


def _openTSNE_missing() -> bool:  # noqa: N802 - the package's own spelling
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return True
    return False


def index_tsne(
    index: ImageIndex,
    *,
    layer: str | None = None,
    sample: int | None = None,
    perplexity: float = 30.0,
    n_iter: int = 500,
    early_exaggeration_iter: int = 250,
    seed: int = 0,
    n_jobs: int = 2,
    write: bool = True,
    on_step: OnStep | None = None,
) -> IndexTSNE:
    """t-SNE of every image of an index (or a seeded sample), stored in ``INDEX/maps/tsne/``.

    Barnes-Hut gradient with exact neighbours up to :data:`FFT_ABOVE` points, FFT gradient with
    Annoy neighbours above (see the module docstring). The same features and arguments give the
    same map (``seed`` fixes the sample, the neighbour search and the optimization; checked with
    the same ``n_jobs``).

    Args:
        index: An opened index (:func:`vizcore.data.index.open_index`).
        layer: The feature layer; only the index's embedding layer has per-image features
            (default: that layer).
        sample: Map a uniform random sample of this many images (seeded by ``seed``); ``None``
            maps all of them.
        perplexity: t-SNE perplexity (2-100), lowered to ``(n - 1) / 3`` for tiny maps.
        n_iter, early_exaggeration_iter: Optimization steps after / during early exaggeration.
        seed: The sample's and the optimization's seed.
        n_jobs: openTSNE threads.
        write: Store the map next to the index (atomically); off for a dry run.
        on_step: Progress every 25 iterations; returning ``False`` stops, and nothing is written.

    Raises:
        ValueError: Another layer than the embedding layer, a sample larger than the index or
            under 3, fewer than 3 images, or settings out of range.
        RuntimeError: openTSNE is missing and the map is too large for the fallback.
    """
    from vizcore.inside.embedding import max_perplexity

    embedding, ids = _checked(index, layer, sample, perplexity, n_iter, seed)
    _check_int("early_exaggeration_iter", early_exaggeration_iter, 0)
    _check_int("n_jobs", n_jobs, 1)
    t0 = time.perf_counter()
    used_perplexity = float(min(perplexity, max_perplexity(len(ids))))
    data = _pca(index, ids, PCA_DIMS)
    settings = {
        "perplexity": used_perplexity,
        "n_iter": int(n_iter),
        "seed": int(seed),
        "exaggeration_iter": int(early_exaggeration_iter),
        "n_jobs": int(n_jobs),
    }
    if _openTSNE_missing():
        coords, used, stopped = _run_sklearn(data, **settings)
    else:
        coords, used, stopped = _run_opentsne(data, on_step=on_step, **settings)
    coords -= (coords.max(axis=0) + coords.min(axis=0)) / 2
    params = {
        "format": _FORMAT, "version": _VERSION, "layer": embedding, "points": len(ids),
        "index_images": len(index), "model_key": index.manifest.get("model_key"),
        "perplexity": used_perplexity, "n_iter": int(n_iter),
        "early_exaggeration_iter": int(early_exaggeration_iter), "seed": int(seed),
        "sample": sample, "pca_dims": int(data.shape[1]), **used,
        "seconds": round(time.perf_counter() - t0, 3), "stopped": stopped,
    }  # fmt: skip
    result = IndexTSNE(ids, coords.astype(np.float32), params)
    if stopped or not write:
        return result
    return IndexTSNE(ids, result.coords, params, _write_map(index.path, result))


def _write_map(index_path: Path, result: IndexTSNE) -> Path:
    """Write the map into a temporary folder and rename it to ``MAP_FOLDER`` (old one removed)."""
    final = Path(index_path) / MAP_FOLDER
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "coords.npy", np.ascontiguousarray(result.coords, dtype=np.float32))
    np.save(tmp / "ids.npy", np.ascontiguousarray(result.ids, dtype=np.int64))
    (tmp / "map.json").write_text(json.dumps(result.params, indent=1) + "\n", encoding="utf-8")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_tsne(index: ImageIndex) -> IndexTSNE | None:
    """The map stored next to ``index`` by :func:`index_tsne`, or ``None`` when there is none.

    Raises:
        ValueError: The stored map is damaged, or does not fit this index (other model or
            layer, ids beyond the index).
    """
    folder = Path(index.path) / MAP_FOLDER
    if not (folder / "map.json").is_file():
        return None
    try:
        params = json.loads((folder / "map.json").read_text(encoding="utf-8"))
        coords = np.load(folder / "coords.npy")
        ids = np.load(folder / "ids.npy")
    except (OSError, ValueError) as exc:
        raise ValueError(f"The t-SNE map in {str(folder)!r} cannot be read ({exc}); run "
                         "`vizcore index tsne` again.") from None  # fmt: skip
    fits = (params.get("format") == _FORMAT and coords.shape == (len(ids), 2)
            and params.get("layer") == index.manifest.get("embedding_layer")
            and params.get("model_key") == index.manifest.get("model_key")
            and (len(ids) == 0 or (ids.min() >= 0 and ids.max() < len(index))))  # fmt: skip
    if not fits:
        raise ValueError(f"The t-SNE map in {str(folder)!r} does not fit this index; run "
                         "`vizcore index tsne` again.")  # fmt: skip
    coords.setflags(write=False)
    ids.setflags(write=False)
    return IndexTSNE(ids.astype(np.int64, copy=False), coords.astype(np.float32, copy=False),
                     params, folder)  # fmt: skip


def place_on_map(index: ImageIndex, tsne_map: IndexTSNE, query: np.ndarray, *,
                 k: int = 10) -> np.ndarray:  # fmt: skip
    """Position ``(2,)`` of a new feature vector: the median of its ``k`` nearest mapped images.

    L2 distances to the features of the mapped images, block by block; ties by id. Not
    optimized afterwards (the stored map keeps no affinities), so it is the neighbourhood the
    image would start from, not a re-embedding.
    """
    _check_int("k", k, 1)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    best_d, best_row = np.zeros(0), np.zeros(0, dtype=np.int64)
    start = 0
    for block in _blocks(index, np.asarray(tsne_map.ids)):
        d = ((block.astype(np.float64) - q) ** 2).sum(axis=1)
        rows = np.arange(start, start + len(block), dtype=np.int64)
        start += len(block)
        d, rows = np.concatenate([best_d, d]), np.concatenate([best_row, rows])
        keep = np.lexsort((rows, d))[:k]
        best_d, best_row = d[keep], rows[keep]
    return np.median(tsne_map.coords[best_row], axis=0).astype(np.float32)
