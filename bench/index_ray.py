"""Benchmark: the index build's Ray engine (a local Ray instance) against the local engine.

Run: ``python bench/index_ray.py [--n 400] [--cpus 2]`` from the repo root (needs
``pip install '.[scale]'``).

The folder is bench/index.py's (``--n`` random JPEG crops of the bundled photos at ``--side``
px, generated once). Timed in the order L R L (one run each, so a drifting load hits both sides
alike): L = ``build_index`` with the local engine (``--workers`` DataLoader decode workers, the
model in this process with torch's default threads), R = ``build_index(engine="ray")`` on a
local Ray instance of ``--cpus`` CPUs started before the timing (``ray.init`` is timed apart):
one actor per CPU, each decoding its own files and running one torch thread; R includes the
actors' start (each imports torch and receives the model). Both from scratch; the two indexes
are then compared (ids, top-k, features).

The machine is shared: the load average is printed before and after each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=100)
    parser.add_argument("--layers", default="blocks.4,blocks.10")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()

    import ray
    from index import make_images  # bench/index.py

    from vizcore.data import index as vindex
    from vizcore.models.registry import load_model

    model = load_model(args.model, device="cpu")
    folder = OUT / f"index-images-{args.n}-{args.side}"
    paths = make_images(folder, args.n, args.side)
    print(f"{len(paths)} images under {folder}")
    kw = {"model": model, "model_key": args.model, "layers": args.layers.split(","),
          "shard_size": args.shard_size, "batch_size": args.batch_size}  # fmt: skip

    def build(name: str, **extra: object) -> float:
        out = OUT / f"index-ray-bench-{name}"
        shutil.rmtree(out, ignore_errors=True)
        before = load()
        start = time.perf_counter()
        summary = vindex.build_index(folder, out=out, **kw, **extra)
        seconds = time.perf_counter() - start
        print(f"{name:6s} {seconds:6.1f} s  {summary.images / seconds:5.1f} images/s  "
              f"({summary.images} images, {summary.shards_written} shards)  "
              f"load before {before}, after {load()}")  # fmt: skip
        return seconds

    with torch.inference_mode():  # warm-up
        model(torch.rand(2, 3, 224, 224))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads here, "
          f"{os.cpu_count()} cores; load {load()}")  # fmt: skip
    t = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"ray.init(num_cpus={args.cpus}): {time.perf_counter() - t:.1f} s")
    try:
        l1 = build("local", num_workers=args.workers)
        r = build("ray", engine="ray")
        l2 = build("local2", num_workers=args.workers)
    finally:
        ray.shutdown()
    print(f"ray / mean(local) = {r / ((l1 + l2) / 2):.2f}x")

    a, b = (vindex.open_index(OUT / f"index-ray-bench-{n}") for n in ("local", "ray"))
    fa = np.concatenate([f for _, f in a.feature_blocks()])
    fb = np.concatenate([f for _, f in b.feature_blocks()])
    same_ids = all(np.array_equal(a._top(n)[1], b._top(n)[1]) for n in a.layers)
    print(f"paths equal {a.paths == b.paths}, top-k ids equal {same_ids}, "
          f"max |feature difference| {np.abs(fa - fb).max():.3g} (max |feature| "
          f"{np.abs(fa).max():.3g})")  # fmt: skip


if __name__ == "__main__":
    main()
