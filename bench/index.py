"""Benchmark: ``vizcore.data.index.build_index`` against pure batched forwards over the same images.

Run: ``python bench/index.py [--n 5000] [--workers 2] [--layers blocks.4,blocks.10]`` from the
repo root. Target (issue 17): the build within 1.25x of the pure forwards.

1. N JPEG images are generated once under ``bench/out/index-images-N`` from the bundled photos:
   random square crops (30-100% of the short side, half of them mirrored) saved at ``--side`` px
   (default 256, quality 90), in 10 sub-folders.
2. Every image is decoded into memory (the model's input view, uint8) outside any timing.
3. Timed, in the order A B A (one run each, so a drifting load hits both sides alike):
   A = pure batched forwards of the in-memory views (Lite0, batch 16, float32, channels-last
   input, the whole network), B = ``build_index`` over the folder from scratch (decoding in
   ``--workers`` DataLoader workers, features, thumbnails, top-k, shard writes, merge).
   The ratio is B over the mean of the two A runs.

The machine is shared: the load average is printed before and after; quote the ratio, not seconds.
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
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, n: int, side: int, seed: int = 0) -> list[Path]:
    """``n`` random crops of the bundled photos as JPEG files (reused when already there)."""
    from vizcore.data import images

    done = folder / ".complete"
    if done.is_file():
        return sorted(folder.rglob("*.jpg"))
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    photos = []
    for sample in images.list_samples("photo"):
        photo = images.load_sample(sample.name)
        scale = 2 * side / min(photo.size)
        if scale < 1:
            photo = photo.resize((round(photo.width * scale), round(photo.height * scale)))
        photos.append(photo)
    paths = []
    for i in range(n):
        photo = photos[i % len(photos)]
        short = min(photo.size)
        crop_side = max(int(short * rng.uniform(0.3, 1.0)), 16)
        left = int(rng.integers(0, photo.width - crop_side + 1))
        top = int(rng.integers(0, photo.height - crop_side + 1))
        box = (left, top, left + crop_side, top + crop_side)
        crop = photo.resize((side, side), Image.Resampling.BICUBIC, box=box)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"part{i % 10}" / f"img{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=90)
        paths.append(path)
    done.write_text("ok")
    return sorted(paths)


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--layers", default="blocks.4,blocks.10")
    parser.add_argument("--model", default="efficientnet_lite0")
    args = parser.parse_args()

    from vizcore.core.devices import model_device, synchronize
    from vizcore.data import index as vindex
    from vizcore.models.registry import get_spec, load_model

    spec = get_spec(args.model)
    model = load_model(args.model)
    device = model_device(model)
    prep = spec.preprocessing
    folder = OUT / f"index-images-{args.n}-{args.side}"
    t = time.perf_counter()
    paths = make_images(folder, args.n, args.side)
    print(f"{len(paths)} images under {folder} ({time.perf_counter() - t:.1f} s to list/generate)")

    t = time.perf_counter()
    views = np.stack(
        [
            vindex.decode_image(p, input_size=prep.input_size, crop_fraction=prep.crop_fraction,
                                resample=prep.resample, thumb_size=8)[0]
            for p in paths
        ]
    )  # fmt: skip
    print(f"decoded {len(views)} views in memory ({time.perf_counter() - t:.1f} s, not timed)")

    def forward_all() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(views), args.batch_size):
                x = torch.from_numpy(views[s : s + args.batch_size]).to(device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)
                model(x.contiguous(memory_format=torch.channels_last))
        synchronize(device)
        return time.perf_counter() - start

    index_dir = OUT / "index-bench"

    def build() -> tuple[float, object]:
        shutil.rmtree(index_dir, ignore_errors=True)
        start = time.perf_counter()
        summary = vindex.build_index(
            folder, model=model, model_key=args.model, layers=args.layers.split(","),
            out=index_dir, shard_size=args.shard_size, batch_size=args.batch_size,
            num_workers=args.workers,
        )  # fmt: skip
        synchronize(device)
        return time.perf_counter() - start, summary

    with torch.inference_mode():  # warm-up: one batch each way
        model(torch.rand(args.batch_size, 3, prep.input_size, prep.input_size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"load before: {load()}")  # fmt: skip
    a1 = forward_all()
    print(f"A  pure forward: {a1:.1f} s ({len(views) / a1:.1f} images/s), load {load()}")
    b, summary = build()
    print(f"B  build_index:  {b:.1f} s ({len(views) / b:.1f} images/s), load {load()}; "
          f"{summary.images} images, {len(summary.skipped)} skipped, "
          f"{summary.shards_written} shards")  # fmt: skip
    a2 = forward_all()
    print(f"A  pure forward: {a2:.1f} s ({len(views) / a2:.1f} images/s), load {load()}")
    ratio = b / ((a1 + a2) / 2)
    print(f"ratio build / mean(pure forward) = {ratio:.2f}x (target 1.25x): "
          f"{'met' if ratio <= 1.25 else 'NOT met'}")  # fmt: skip
    size = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file())
    print(f"index size {size / 1e6:.1f} MB for {summary.images} images ({args.layers})")
    t = time.perf_counter()
    idx = vindex.open_index(index_dir)
    opened = time.perf_counter() - t
    t = time.perf_counter()
    idx.top_patches(args.layers.split(",")[-1], 0)
    top_s = time.perf_counter() - t
    t = time.perf_counter()
    idx.nearest(idx.features(0), 8)
    near_s = time.perf_counter() - t
    print(f"open_index {opened * 1e3:.0f} ms, top_patches {top_s * 1e3:.1f} ms, "
          f"nearest (exact, all {len(idx)}) {near_s * 1e3:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
