"""The Ray engine of :func:`vizcore.data.index.build_index`: decode and forward on a Ray cluster.

``build_index(..., engine="ray")`` (or ``engine=RayEngine(...)``) runs the same index build with
the per-batch work on Ray (Moritz et al. 2018, "Ray: A Distributed Framework for Emerging AI
Applications"; Ray Data's streaming ``map_batches``): the build's batches (the local engine's
plan: ``batch_size`` files, never crossing a shard) become a ``ray.data.from_items`` dataset;
``map_batches`` on a pool of actors, each of which receives the model once (from the object
store), decodes a batch's files (:func:`vizcore.data.index.decode_image`; a corrupt file
becomes a row with ``ok=False``) and calls :func:`vizcore.data.index.index_batch` on its good
images, on a GPU when Ray gave the actor one (GPU actors leave decoding to separate 1-CPU Ray
tasks). The driver receives per-file columns (features, thumbnails, channel maxima and their
positions), regroups them into the plan's batches and writes the same shards, the same exact
top-k merge and the same manifest (the loop of ``build_index`` is shared; only where the
columns come from differs). Resuming, extending and stopping through ``on_step`` work as in
the local engine.

Where Ray runs: ``RayEngine.address``, else the ``RAY_ADDRESS`` environment variable (an existing
cluster, e.g. ``auto`` on one of its nodes or ``HEAD_IP:6379``), else a new local Ray instance
(``num_cpus``) started for this build and shut down after it. A Ray instance that is already
initialized in this process is used as it is (and left running).

Equality with the local engine: every forward sees the same images in the same batch as the
local engine's, so the floats are bit-identical where both run the same kernels; a different
torch thread count (the driver's default against ``cpus_per_actor``) or device can change them
in the last bits (Lite0, 2 against 1 thread: 1.2e-6 relative). On a cluster, the source folder
must be readable at the same path on every node (a shared file system), and vizcore (with the
model's package) must be installed there: actors unpickle the model.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vizcore.core.devices import model_device

__all__ = ["RayConnectionError", "RayEngine", "ray_available", "ray_batches", "require_ray"]

_PIP_HINT = "pip install 'cnn-visualization-studio[scale]' (or pip install 'ray[data]')"


def ray_available() -> bool:
    """Whether Ray (with Ray Data) can be imported."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


def require_ray() -> Any:
    """Import and return the ``ray`` module.

    Raises:
        RuntimeError: Ray is not installed; the message says how to install it.
    """
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(f"The Ray engine needs Ray with Ray Data: {_PIP_HINT}.") from exc
    return ray


class RayConnectionError(ConnectionError):
    """The Ray cluster named by ``RayEngine.address`` or ``RAY_ADDRESS`` could not be reached."""


@dataclass(frozen=True)
class RayEngine:
    """Where and how :func:`~vizcore.data.index.build_index` runs on Ray.

    Attributes:
        address: A Ray cluster to connect to; ``None`` reads ``RAY_ADDRESS``, and without it a
            local Ray instance is started (and shut down after the build).
        num_cpus: CPUs of a local instance (``None``: Ray's default, every core).
        actors: Model actors (``None``: one per GPU when the cluster has GPUs, else the CPUs
            minus one, at least one, so decoding keeps a core).
        cpus_per_actor: CPUs (and torch threads) each actor reserves.
        gpus_per_actor: GPUs each actor reserves (``None``: 1 when the cluster has GPUs, else 0).
    """

    address: str | None = None
    num_cpus: int | None = None
    actors: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_cpus", "actors"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):  # fmt: skip
                raise ValueError(f"{name} must be None or an integer of at least 1, got {value!r}.")
        if not self.cpus_per_actor > 0:
            raise ValueError(f"cpus_per_actor must be positive, got {self.cpus_per_actor!r}.")
        if self.gpus_per_actor is not None and not self.gpus_per_actor >= 0:
            raise ValueError(f"gpus_per_actor must be None or >= 0, got {self.gpus_per_actor!r}.")


def _connect(ray: Any, engine: RayEngine) -> bool:
    """Initialize Ray unless it already is; ``True`` when this call started it."""
    if ray.is_initialized():
        return False
    address = engine.address or os.environ.get("RAY_ADDRESS") or None
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:  # "local": a new instance, even where `ray start` runs one already
        ray.init(address="local", num_cpus=engine.num_cpus, **common)
        return True
    try:
        ray.init(address=address, **common)
    except ConnectionError as exc:
        raise RayConnectionError(
            f"Could not connect to the Ray cluster at {address!r} ({exc}). Check the address "
            "(--ray-address or RAY_ADDRESS); a cluster with token authentication also needs "
            "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)."
        ) from exc
    return True


def _pool(ray: Any, engine: RayEngine) -> tuple[int, float, float]:
    """``(actors, cpus, gpus)`` per actor for the connected cluster."""
    resources = ray.cluster_resources()
    gpus_total = float(resources.get("GPU", 0.0))
    gpus = engine.gpus_per_actor if engine.gpus_per_actor is not None else (
        1.0 if gpus_total >= 1 else 0.0)  # fmt: skip
    if engine.actors is not None:
        actors = engine.actors
    elif gpus > 0:
        actors = max(1, int(gpus_total // gpus))
    else:  # CPU actors decode their own files: every CPU can hold one
        actors = max(1, int(float(resources.get("CPU", 1.0)) // engine.cpus_per_actor))
    return actors, engine.cpus_per_actor, gpus


def _decode(batch: dict[str, np.ndarray], *, root: str, view: Any, width: int) -> dict:
    """Ray Data step: per plan batch, its files as uint8 input views and thumbnails.

    One output row per plan batch, padded to ``width`` files (``ok`` marks the decoded ones;
    a corrupt file has ``ok=False`` and its reason in the JSON list ``reasons``).
    """
    from vizcore.data.index import _Files

    size, t, m = view.input_size, view.thumb_size, len(batch["paths"])
    pixels = np.zeros((m, width, size, size, 3), np.uint8)
    thumbs = np.zeros((m, width, t, t, 3), np.uint8)
    ok = np.zeros((m, width), bool)
    reasons = np.empty(m, dtype=object)
    for j, names in enumerate(batch["paths"]):
        files = _Files(Path(root), json.loads(str(names)), view)
        why = []
        for i in range(len(files)):
            _, pixel, thumb, reason = files[i]
            why.append(reason)
            if pixel is not None:
                pixels[j, i], thumbs[j, i], ok[j, i] = pixel, thumb, True
        reasons[j] = json.dumps(why)
    return {"start": np.asarray(batch["start"], np.int64),
            "count": np.asarray(batch["count"], np.int64),
            "ok": ok, "reasons": reasons, "pixels": pixels, "thumbs": thumbs}  # fmt: skip


class _IndexActor:
    """Ray Data actor: holds the model (received once) and runs ``index_batch`` per plan batch.

    Takes decoded plan batches (:func:`_decode`'s rows), or undecoded ones (``paths``) which it
    decodes itself (CPU actors: no separate decode tasks competing for the same cores). Returns
    one row per file.
    """

    def __init__(self, model: nn.Module, *, layers: Sequence[str], embedding_layer: str,
                 exact: bool, threads: int, root: str, view: Any, width: int) -> None:  # fmt: skip
        import ray
        import torch

        torch.set_num_threads(threads)
        # A GPU only when Ray gave this actor one (it then exposes only that one as cuda:0);
        # a CPU actor on a GPU node stays on the CPU.
        if ray.get_gpu_ids() and torch.cuda.is_available():
            model = model.to("cuda")
        self.model = model.eval().requires_grad_(False)
        self.layers, self.embedding_layer, self.exact = list(layers), embedding_layer, exact
        self.decode = {"root": root, "view": view, "width": width}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "pixels" not in batch:
            batch = _decode(batch, **self.decode)
        parts = [self._one(batch, j) for j in range(len(batch["start"]))]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _one(self, batch: dict[str, np.ndarray], j: int) -> dict[str, np.ndarray]:
        from vizcore.data.index import index_batch

        n = int(batch["count"][j])
        ok = np.asarray(batch["ok"][j][:n], bool)
        pixels = batch["pixels"][j][:n]
        # The same images in one forward as the local engine's batch; an all-corrupt batch
        # still runs one blank image, for the column shapes.
        good = pixels[ok] if ok.any() else np.zeros_like(pixels[:1])
        cols = index_batch(self.model, good, layers=self.layers,
                           embedding_layer=self.embedding_layer, exact=self.exact)  # fmt: skip
        out = {"row": int(batch["start"][j]) + np.arange(n, dtype=np.int64), "ok": ok,
               "reason": np.array(json.loads(str(batch["reasons"][j])), dtype=object),
               "thumbs": batch["thumbs"][j][:n]}  # fmt: skip
        for k, key in enumerate(_keys(self.layers)):
            full = np.zeros((n, *cols[key].shape[1:]), cols[key].dtype)
            if ok.any():
                full[ok] = cols[key]
            out[f"c{k}"] = full  # Ray column names: plain
        for k, name in enumerate(self.layers):
            out[f"shape{k}"] = np.tile(cols[f"shape:{name}"], (n, 1))
        return out


def _keys(layers: Sequence[str]) -> list[str]:
    return ["features", *(f"{p}:{n}" for n in layers for p in ("max", "argmax"))]


def _dataset(ray: Any, root: Path, paths: Sequence[str], plan: Sequence[tuple[int, list[int],
             bool]], view: Any, *, model: nn.Module, layers: Sequence[str], embedding_layer: str,
             exact: bool, engine: RayEngine) -> Any:  # fmt: skip
    actors, cpus, gpus = _pool(ray, engine)
    if model_device(model).type != "cpu":
        model = copy.deepcopy(model).cpu()  # actors may have no GPU (or another one)
    items = [{"start": rows[0], "count": len(rows),
              "paths": json.dumps([paths[r] for r in rows])} for _, rows, _ in plan]  # fmt: skip
    width = max(len(rows) for _, rows, _ in plan)
    decode = {"root": os.fspath(root), "view": view, "width": width}
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 10_000)))
    if gpus > 0:  # decode in CPU tasks, so that the GPU actors only run forwards
        ds = ds.map_batches(_decode, batch_size=1, num_cpus=1, fn_kwargs=decode)
    actor = {"model": model, "layers": list(layers), "embedding_layer": embedding_layer,
             "exact": exact, "threads": max(1, int(cpus)), **decode}  # fmt: skip
    return ds.map_batches(_IndexActor, batch_size=1, num_cpus=cpus, num_gpus=gpus,
                          compute=ray.data.ActorPoolStrategy(size=actors),
                          fn_constructor_kwargs=actor)  # fmt: skip


def _assemble(rows: list[int], got: dict[int, dict], layers: Sequence[str]) -> dict:
    """One batch of the build loop (the local ``_collate``'s keys, plus ``cols``)."""
    recs = [got.pop(r) for r in rows]
    good = [r for r in recs if r["ok"]]
    batch = {"rows": rows, "ok": [bool(r["ok"]) for r in recs],
             "reasons": [str(r["reason"]) for r in recs],
             "pixels": None, "thumbs": None, "cols": None}  # fmt: skip
    if good:
        cols = {key: np.stack([r[f"c{k}"] for r in good]) for k, key in enumerate(_keys(layers))}
        for k, name in enumerate(layers):
            cols[f"shape:{name}"] = good[0][f"shape{k}"]
        batch["thumbs"] = np.stack([r["thumbs"] for r in good])
        batch["cols"] = cols
    return batch


def ray_batches(
    root: Path,
    paths: Sequence[str],
    plan: Sequence[tuple[int, list[int], bool]],
    view: Any,
    *,
    model: nn.Module,
    layers: Sequence[str],
    embedding_layer: str,
    exact: bool,
    engine: RayEngine,
) -> Iterator[dict]:
    """The build loop's batches, computed on Ray, in the order of ``plan``.

    Args:
        root: The source folder (readable at this path by every Ray worker).
        paths: The files to index, relative to ``root``; a plan row is an index into it.
        plan: ``(shard, rows, last_of_shard)`` batches of the build (``index._batches``).
        view: The ``index._View`` (input size, crop, resample, thumbnail size).
        model: The model (copied to the actors through the object store; left unchanged).
        layers, embedding_layer, exact: As :func:`vizcore.data.index.index_batch` takes them.
        engine: Where Ray runs.

    Yields:
        Per plan batch, a dict with ``rows``, ``ok``, ``reasons``, ``thumbs`` (of the good rows
        or ``None``) and ``cols`` (:func:`~vizcore.data.index.index_batch`'s columns, or
        ``None`` when every file of the batch was corrupt). Closing the generator stops the
        Ray job (and shuts down a Ray instance it started).

    Raises:
        RayConnectionError: The cluster at the address cannot be reached.
    """
    if not plan:  # nothing new to index: no Ray needed
        return
    ray = require_ray()
    started = _connect(ray, engine)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True  # bounds the driver's buffer
    ctx.enable_progress_bars = False  # the library reports progress through on_step
    try:
        ds = _dataset(ray, root, paths, plan, view, model=model, layers=layers,
                      embedding_layer=embedding_layer, exact=exact, engine=engine)  # fmt: skip
        got: dict[int, dict] = {}
        todo = iter(plan)
        pending = next(todo, None)
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            names = list(block)
            for i, row in enumerate(block["row"]):
                got[int(row)] = {name: block[name][i] for name in names}
            while pending is not None and all(r in got for r in pending[1]):
                yield _assemble(pending[1], got, layers)
                pending = next(todo, None)
        if pending is not None:
            raise RuntimeError(f"Ray returned no result for rows {pending[1]} (of {len(paths)}).")
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = saved
        if started:
            ray.shutdown()
