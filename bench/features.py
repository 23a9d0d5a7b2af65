"""Benchmark: gallery feature extraction vs pure forward, and t-SNE vs scikit-learn.

Run: ``python bench/features.py [--quick]`` from the repo root. Every ratio is measured in this one
run (the machine is shared and noisy: compare ratios, not absolute seconds across runs).

1. Extraction: ``vizcore.data.features.gallery_features`` on the built-in gallery (Lite0, layer
   ``pool``, batch 16, no cache) in images/s, against the model's pure batched forward on the same
   already-preprocessed tensors (batch 16), with the input contiguous or channels-last (input only:
   the shared model is never converted).
2. t-SNE of 1000 / 2000 / 5000 real Lite0 features (many seeded crops of the bundled photos fed
   at 96 px, extracted once and cached under ``bench/out``): ``vizcore``'s openTSNE Barnes-Hut after
   PCA-50 (what the page runs) against scikit-learn's ``TSNE`` (Barnes-Hut, PCA init) on the same
   PCA-50 input; trustworthiness (k=10) on the PCA-50 input.
3. Precision: ``gallery_features`` with ``exact=True`` (float32) and ``exact=False`` (bf16
   autocast where fast, :mod:`vizcore.core.precision`), interleaved, in images/s, with the cosine
   similarity of the two feature sets and whether each image keeps its nearest neighbour.
   Skipped where bf16 is not fast on this CPU unless ``--force-bf16``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
TSNE_INPUT = 96  # input side for the t-SNE feature set (5000 images must extract in minutes)


def _timeit(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_extraction(repeats: int, n_images: int) -> None:
    from vizcore.data import features
    from vizcore.data.gallery import builtin_gallery
    from vizcore.models.registry import load_model

    model = load_model("efficientnet_lite0")
    g = builtin_gallery()
    g = g.subset(np.linspace(0, len(g) - 1, min(n_images, len(g))).astype(int).tolist())
    n = len(g)
    batches_cl = list(features.gallery_batches(g, 224, channels_last=True))
    batches = [b.contiguous() for b in batches_cl]

    def pure(bs: list[torch.Tensor]) -> None:
        with torch.inference_mode():
            for b in bs:
                model(b)

    def extract(cl: bool) -> None:
        features.gallery_features(model, g, layer="pool", model_key="efficientnet_lite0",
                                  input_size=224, use_cache=False, channels_last=cl,
                                  exact=True)  # fmt: skip

    pure(batches[:1])  # warm-up
    rows = []
    for name, fn in [
        ("pure forward b16, contiguous input", lambda: pure(batches)),
        ("pure forward b16, channels_last input", lambda: pure(batches_cl)),
        ("gallery_features, contiguous input", lambda: extract(False)),
        ("gallery_features, channels_last input", lambda: extract(True)),
    ]:
        times = _timeit(fn, repeats)
        rows.append((name, min(times), statistics.median(times)))
    best_pure = min(r[1] for r in rows[:2])
    print(f"\n## Extraction: Lite0, {n} images of the built-in gallery (128 px -> 224), batch 16")
    print("| what | min s | median s | images/s (min) | x best pure forward |")
    print("|---|---|---|---|---|")
    for name, lo, med in rows:
        print(f"| {name} | {lo:.2f} | {med:.2f} | {n / lo:.1f} | {best_pure / lo:.2f} |")


def bench_precision(rounds: int, n_images: int) -> None:
    from _timing import interleaved

    from vizcore.core import precision
    from vizcore.data import features
    from vizcore.data.gallery import builtin_gallery
    from vizcore.models.registry import load_model

    print(
        f"\n## Extraction precision: fp32 vs bf16 (bf16 fast here: {precision.bf16_fast('cpu')}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load "
        f"{os.getloadavg()[0]:.1f})"
    )
    if not precision.use_bf16(exact=False, device="cpu"):
        print(
            "skipped: exact=False runs float32 on this CPU (no AMX / AVX-512 BF16; torch would "
            "emulate bf16, 34x slower than fp32 for a Lite0 batch-16 forward when measured). "
            "--force-bf16 runs it anyway."
        )
        return
    model = load_model("efficientnet_lite0")
    g = builtin_gallery()
    g = g.subset(np.linspace(0, len(g) - 1, min(n_images, len(g))).astype(int).tolist())
    n = len(g)

    def extract(exact: bool) -> np.ndarray:
        return features.gallery_features(model, g, layer="pool", model_key="efficientnet_lite0",
                                         input_size=224, use_cache=False,
                                         exact=exact).features  # fmt: skip

    t32, t16 = interleaved([lambda: extract(True), lambda: extract(False)], rounds)
    a, b = extract(True), extract(False)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    def nearest(f: np.ndarray) -> np.ndarray:
        sq = (f * f).sum(1)
        d = sq[:, None] + sq[None] - 2.0 * f @ f.T
        np.fill_diagonal(d, np.inf)
        return d.argmin(1)

    same = float((nearest(a) == nearest(b)).mean())
    print(f"Lite0 `pool`, {n} images at 224 px, batch 16, min of {rounds} interleaved rounds")
    print("| precision | s | images/s | x fp32 throughput |")
    print("|---|---|---|---|")
    print(f"| fp32 (exact=True) | {t32:.2f} | {n / t32:.1f} | 1.00 |")
    print(f"| bf16 (exact=False) | {t16:.2f} | {n / t16:.1f} | {t32 / t16:.2f} |")
    print(f"cosine fp32/bf16: min {cos.min():.5f}, mean {cos.mean():.5f}; "
          f"same nearest neighbour: {same:.3f}")  # fmt: skip


def tsne_features(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real Lite0 features of ``n`` seeded crops at 128 px (cached under bench/out)."""
    from vizcore.data import features
    from vizcore.data.gallery import builtin_gallery
    from vizcore.models.registry import load_model

    path = OUT / f"lite0_crops{TSNE_INPUT}_{n}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["features"], data["labels"]
    per_photo = -(-n // 9)
    g = builtin_gallery(per_photo=min(per_photo, 200), size=128, seed=7, use_disk_cache=False)
    if len(g) < n:  # more crops than 200 per photo: several seeds
        extra = [builtin_gallery(per_photo=200, size=128, seed=s, use_disk_cache=False)
                 for s in range(8, 8 + n // len(g) + 1)]  # fmt: skip
        images = np.concatenate([g.images] + [e.images for e in extra])[:n]
        labels = np.array(g.labels + sum((e.labels for e in extra), ()))[:n]
    else:
        images, labels = g.images[:n], np.array(g.labels[:n])
    from vizcore.data.gallery import Gallery

    sub = Gallery("bench", "upload", images, tuple(labels), tuple(str(i) for i in range(n)))
    t0 = time.perf_counter()
    feats = features.gallery_features(load_model("efficientnet_lite0"), sub, layer="pool",
                                      model_key="efficientnet_lite0", input_size=TSNE_INPUT,
                                      use_cache=False, exact=True).features  # fmt: skip
    print(f"(extracted {n} features at {TSNE_INPUT} px in {time.perf_counter() - t0:.1f} s)")
    OUT.mkdir(parents=True, exist_ok=True)
    label_ids = np.unique(labels, return_inverse=True)[1]
    np.savez(path, features=feats, labels=label_ids)
    return feats, label_ids


def bench_tsne(sizes: list[int]) -> None:
    from sklearn.manifold import TSNE, trustworthiness

    from vizcore.inside import embedding

    biggest = max(sizes)
    all_feats, all_labels = tsne_features(biggest)
    # openTSNE's first call pays a one-off set-up cost; exclude it as the page does once per server.
    embedding.embed_points(all_feats[:200], method="tsne", n_iter=50)
    print("\n## t-SNE of Lite0 features (1280-d -> PCA-50 -> 2-D), 2 threads max")
    print("| N | method | seconds | trustworthiness (k=10) | 10-NN label agreement | "
          "sklearn s / ours s |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for n in sizes:
        feats, labels = all_feats[:n], all_labels[:n]
        pca50 = embedding.pca(feats, 50)[0]
        t0 = time.perf_counter()
        ours = embedding.embed_points(feats, method="tsne", seed=0).coords
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = TSNE(n_components=2, perplexity=30, init="pca", method="barnes_hut",
                      random_state=0, n_jobs=2).fit_transform(pca50)  # fmt: skip
        t_sk = time.perf_counter() - t0
        for name, coords, secs in [("vizcore: openTSNE BH (PCA-50 inside)", ours, t_ours),
                                   ("scikit-learn TSNE BH on PCA-50", theirs, t_sk)]:  # fmt: skip
            trust = trustworthiness(pca50, coords, n_neighbors=10)
            d = np.linalg.norm(coords[:, None] - coords[None], axis=2) if n <= 5000 else None
            if d is not None:
                np.fill_diagonal(d, np.inf)
                knn = np.argsort(d, axis=1)[:, :10]
                agree = float((labels[knn] == labels[:, None]).mean())
            else:
                agree = float("nan")
            ratio = t_sk / t_ours if "vizcore" in name else 1.0
            print(f"| {n} | {name} | {secs:.2f} | {trust:.4f} | {agree:.3f} | {ratio:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1000 points, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=324, help="images for the extraction test")
    parser.add_argument("--skip-extraction", action="store_true")
    parser.add_argument("--precision-only", action="store_true", help="only section 3")
    parser.add_argument("--force-bf16", action="store_true", help="bf16 even where it is slow")
    args = parser.parse_args()
    if args.force_bf16:
        os.environ["VIZCORE_BF16"] = "force"
    if args.precision_only:
        bench_precision(1 if args.quick else args.repeats, args.images)
        return
    torch.set_num_threads(2)
    os.environ.setdefault("VIZCORE_CACHE_DIR", str(OUT / "cache"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} (2 cores)")  # fmt: skip
    if not args.skip_extraction:
        bench_extraction(1 if args.quick else args.repeats, args.images)
        bench_precision(1 if args.quick else args.repeats, args.images)
    bench_tsne([1000] if args.quick else [1000, 2000, 5000])
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
