"""Benchmark: ``vizcore index tsne`` (issue 17 item 3) on a synthetic index, one run per size.

Run: ``python bench/index_tsne.py [--n 5000 12000] [--dim 1280] [--jobs 2]`` from the repo root.

The t-SNE reads only the stored features, so the index here is written directly (shards of
features through :func:`vizcore.data.index.write_shard`, no images, no model): ``--dim``-dim
non-negative features (Lite0's pooled ``head.act`` is 1280-dim) drawn from 20 Gaussian clusters.
Then the command line itself (``vizcore index tsne INDEX``) runs once per size and its wall time,
the gradient used and the machine's load before and after are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

import vizcore_cli as cli  # noqa: E402
from vizcore.data import index as vindex  # noqa: E402
from vizcore.data import index_tsne  # noqa: E402


def synthetic_index(out: Path, n: int, dim: int, *, shard: int = 1000) -> Path:
    """An index of ``n`` feature vectors only (blank thumbnails, no layers)."""
    rng = np.random.default_rng(0)
    centres = rng.gamma(1.0, 1.0, size=(20, dim)).astype(np.float32)
    labels = rng.integers(0, 20, size=n)
    feats = np.maximum(centres[labels] + rng.normal(0, 0.6, size=(n, dim)), 0).astype(np.float32)
    for number, first in enumerate(range(0, n, shard)):
        rows = feats[first : first + shard]
        vindex.write_shard(out, number, first_id=first,
                           paths=[f"img{i:07d}.png" for i in range(first, first + len(rows))],
                           skipped=[], features=rows, thumbs=np.zeros((len(rows), 8, 8, 3),
                           np.uint8), tops=[])  # fmt: skip
    manifest = {"format": vindex.FORMAT, "version": vindex.VERSION, "model_key": "synthetic",
                "layers": [], "embedding_layer": "features", "input_size": 224,
                "crop_fraction": 1.0, "resample": 3, "thumb_size": 8, "top_k": 1, "exact": False,
                "source": os.fspath(out), "layer_info": {}, "images": n,
                "shards": -(-n // shard), "complete": True, "skipped": [],
                "feature_dim": dim}  # fmt: skip
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[5000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, jobs {args.jobs}, dim {args.dim}, "
          f"FFT above {index_tsne.FFT_ABOVE}")  # fmt: skip
    for n in args.n:
        out = OUT / f"tsne-synthetic-{n}-{args.dim}"
        if not (out / "manifest.json").is_file():
            synthetic_index(out, n, args.dim)
        before = os.getloadavg()
        t0 = time.perf_counter()
        code = cli.main(["index", "tsne", os.fspath(out), "--jobs", str(args.jobs)])
        wall = time.perf_counter() - t0
        stored = index_tsne.read_tsne(vindex.open_index(out))
        p = stored.params
        print(f"n {n}: exit {code}, wall {wall:.1f} s (t-SNE incl. PCA {p['seconds']:.1f} s), "
              f"gradient {p['gradient']}, neighbours {p['neighbors']}, load before "
              f"{before[0]:.2f}, after {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
