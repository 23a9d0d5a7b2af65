"""Benchmark: what the app does with an index (issue 17 item 3), on an index built in ~3 minutes.

Run: ``python bench/index_app.py [--seconds 180] [--n 5000]`` from the repo root.

1. ``--n`` JPEG crops of the bundled photos (``bench/index.py``'s ``make_images``), reused.
2. ``build_index`` (Lite0, layers ``blocks.4,blocks.10,head.act``, shards of 250) is stopped
   through ``on_step`` after ``--seconds``; the finished shards are the index (its image count is
   printed). A second run resumes it.
3. Timed on that index, each three times (min reported): ``open_index``; one channel's top 12
   patches cropped from the source files (``unit_patches``); exact nearest neighbours of one
   query over every image (``ImageIndex.nearest``, blockwise numpy); reading a 2,000-image
   sample of the features for the t-SNE map (``sample_features``) and fitting it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from bench.index import make_images  # noqa: E402


def _best(fn, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--layers", default="blocks.4,blocks.10,head.act")
    parser.add_argument("--out", default=str(OUT / "index-app"))
    parser.add_argument("--skip-build", action="store_true", help="Time an existing index.")
    args = parser.parse_args()

    import torch

    from vizcore.models.registry import load_model

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}")
    folder = OUT / f"index-images-{args.n}-256"
    make_images(folder, args.n, 256)
    model = load_model("efficientnet_lite0")
    t0 = time.perf_counter()
    if not args.skip_build:
        _build(folder, model, args, t0)
    _queries(args)


def _build(folder: Path, model: object, args: argparse.Namespace, t0: float) -> None:
    from vizcore.data import index as vindex

    def stop(_step: object) -> bool:
        return time.perf_counter() - t0 < args.seconds

    summary = vindex.build_index(folder, model=model, model_key="efficientnet_lite0",
                                 layers=args.layers.split(","), out=args.out, shard_size=250,
                                 on_step=stop)  # fmt: skip
    print(f"build: {summary.images} images in the index ({summary.added} added this run) in "
          f"{summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s, "
          f"stopped={summary.stopped}, load {os.getloadavg()}")  # fmt: skip


def _queries(args: argparse.Namespace) -> None:
    from vizcore.data import index as vindex
    from vizcore.data import index_query

    seconds, idx = _best(lambda: vindex.open_index(args.out))
    print(f"open_index: {seconds * 1000:.1f} ms ({len(idx)} images)")
    layer = args.layers.split(",")[0]
    seconds, patches = _best(lambda: index_query.unit_patches(idx, layer, 3, k=12))
    print(f"unit_patches({layer}, 3, k=12) from the source files: {seconds * 1000:.1f} ms")
    seconds, _ = _best(lambda: index_query.unit_patches(idx, layer, 3, k=12, from_source=False))
    print(f"unit_patches from the thumbnails: {seconds * 1000:.1f} ms")
    query = idx.features(7)
    for metric in ("l2", "cosine"):
        seconds, nb = _best(lambda metric=metric: idx.nearest(query, 8, metric=metric))
        print(f"nearest (exact, {metric}, all {len(idx)}): {seconds * 1000:.1f} ms")
    seconds, sample = _best(lambda: index_query.sample_features(idx, cap=2000, seed=0))
    print(f"sample_features (cap 2000): {seconds * 1000:.1f} ms, {len(sample[0])} points")
    seconds, fitted = _best(lambda: index_query.index_map(idx, cap=2000, n_iter=500), repeat=1)
    print(f"index_map t-SNE of {len(fitted.ids)} points: {seconds:.1f} s, load {os.getloadavg()}")
    del patches, nb


if __name__ == "__main__":
    main()
