"""``vizcore index build``: a dataset index of a folder of images (``tsne``: :mod:`.index_tsne`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vizcore_cli import index_tsne
from vizcore_cli.common import (
    InputError,
    UsageError,
    add_model_options,
    err,
    load_model,
    progress_line,
)

__all__ = ["add_parser", "index"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``index`` subcommand and its ``build`` and ``tsne`` actions."""
    from vizcore.data import index as vindex

    idx = sub.add_parser(
        "index",
        help="build a dataset index (features, thumbnails, per-channel top images)",
        description="Dataset indexes: see `vizcore index build --help` and "
        "`vizcore index tsne --help`.",
    )
    isub = idx.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = isub.add_parser(
        "build",
        help="index a folder of images (resumes or extends an existing index)",
        description="Index a folder of images (recursive) in one pass: per image the embedding "
        "features and a thumbnail, per channel of each --layers layer the top-k images and "
        "where the maximum is. Written in shards; run it again to resume after an interruption "
        "or to add new images. Corrupt files are listed and skipped.",
    )
    add_model_options(build)
    build.add_argument("--layers", required=True, help="comma-separated layer names")
    build.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index folder")
    build.add_argument(
        "--shard-size", type=int, default=vindex.DEFAULT_SHARD_SIZE, help="files per shard"
    )
    build.add_argument(
        "--top-k", type=int, default=vindex.DEFAULT_TOP_K, help="images kept per channel"
    )
    build.add_argument(
        "--batch-size", type=int, default=vindex.DEFAULT_BATCH_SIZE, help="images per forward"
    )
    build.add_argument("--workers", type=int, default=2, help="decode worker processes")
    build.add_argument(
        "--thumb-size", type=int, default=vindex.DEFAULT_THUMB_SIZE, help="thumbnail side (px)"
    )
    build.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: DataLoader decode workers and the model here (default); ray: decode and "
        "forwards on Ray actors (the cluster at --ray-address or RAY_ADDRESS, else a local Ray "
        "instance); needs pip install '.[scale]'",
    )
    build.add_argument(
        "--ray-address", default=None, help="Ray cluster to connect to (default: RAY_ADDRESS)"
    )
    build.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    build.add_argument(
        "--ray-actors", type=int, default=None, help="model actors (default: one per GPU or CPU)"
    )
    build.add_argument("folder", type=Path, metavar="FOLDER")
    index_tsne.add_parser(isub)


def _engine(args: argparse.Namespace) -> object:
    """``"local"`` or the Ray engine, checked before the model loads (Ray missing: said at once)."""
    if args.engine != "ray":
        return "local"
    from vizcore.data.index_ray import RayEngine, require_ray

    try:
        require_ray()
        return RayEngine(address=args.ray_address, num_cpus=args.ray_cpus, actors=args.ray_actors)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None


def _indexing_line(info: object, seconds: float) -> str:
    rate = info.step / max(seconds, 1e-9)
    return f"indexing {info.step}/{info.total} images, {rate:.1f} images/s"


def index(args: argparse.Namespace) -> int:
    """``vizcore index build`` or ``vizcore index tsne``."""
    if args.index_command == "tsne":
        return index_tsne.index_tsne(args)
    return _build(args)


def _build(args: argparse.Namespace) -> int:
    """``vizcore index build``: builds, resumes or extends the index; a summary line on stdout."""
    from vizcore.data import index as vindex

    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    if not layers:
        raise UsageError("--layers needs at least one layer name.")
    if not args.folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder.")
    engine = _engine(args)
    loaded = load_model(args)
    embedding = loaded.spec.preset("embedding")
    if not embedding:
        raise UsageError(f"model {loaded.spec.key} has no embedding preset layer.")
    tty = sys.stderr.isatty()
    try:
        summary = vindex.build_index(
            args.folder,
            model=loaded.model,
            model_key=loaded.spec.key,
            layers=layers,
            out=args.out,
            shard_size=args.shard_size,
            top_k=args.top_k,
            batch_size=args.batch_size,
            num_workers=args.workers,
            thumb_size=args.thumb_size,
            embedding_layer=embedding[0],
            preprocessing=loaded.spec.preprocessing,
            on_step=progress_line(_indexing_line),
            engine=engine,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ConnectionError as exc:  # --engine ray: the cluster is not reachable
        raise InputError(str(exc)) from None
    if tty:
        print(file=sys.stderr)
    for path, reason in summary.skipped:
        err(f"{args.folder / path}: {reason}")
    print(
        f"{summary.path}: {summary.images} images "
        f"({summary.added} new, {summary.shards_kept} shards kept, {summary.shards_written} "
        f"written), skipped {len(summary.skipped)}, {summary.seconds:.1f} s, "
        f"{summary.images_per_second:.1f} images/s"
    )
    return 1 if summary.skipped else 0
