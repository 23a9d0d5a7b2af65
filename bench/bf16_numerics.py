"""Is bf16 faithful? fp32 vs bf16 maps and features on every bundled sample, both bundled models.

Run from the repository root: ``python bench/bf16_numerics.py [--real] [--models ...]``.

For each sample and model: occlusion (window/stride below) and Score-CAM maps with
``exact=True`` and ``exact=False``, their Pearson correlation, and whether the class explained
(the float32 top-1) is the same; deletion/insertion AUC differences; for the built-in gallery,
the cosine similarity of fp32 and bf16 features and whether each image's nearest neighbour
stays the same. bf16 is real autocast where it is fast here (or with ``--real``), else the
emulation of ``bench/_bf16_emulation.py`` (the output says which). No timing: see
``bench/attribution.py`` and ``bench/features.py`` for speed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from _bf16_emulation import emulated

from vizcore import attribution as attr
from vizcore.attribution import faithfulness
from vizcore.core import precision
from vizcore.data import features
from vizcore.data.gallery import builtin_gallery
from vizcore.data.images import list_samples, load_sample
from vizcore.models.registry import get_spec, load_model, preprocess


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["squeezenet1_1", "efficientnet_lite0"])
    parser.add_argument("--samples", nargs="*", default=None, help="sample names (default all)")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--score-cam-layer", default=None, help="default: the model's CAM layer")
    parser.add_argument("--skip", nargs="*", default=[], choices=["occlusion", "score_cam",
                        "curves", "gallery"])  # fmt: skip
    parser.add_argument("--real", action="store_true", help="real autocast even where slow")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    real = args.real or precision.bf16_fast("cpu")
    if args.real:
        os.environ[precision.ENV_BF16] = "force"
    mode = "real autocast" if real else "EMULATED (bench/_bf16_emulation.py)"
    print(f"torch {torch.__version__}, bf16 fast here: {precision.bf16_fast('cpu')}, "
          f"bf16 = {mode}, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    samples = [s.name for s in list_samples()] if args.samples is None else args.samples
    for key in args.models:
        model, spec = load_model(key), get_spec(key)
        layer = args.score_cam_layer or spec.preset("cam_features")[0]
        print(f"\n## {key}: occlusion {args.window}/{args.stride}, Score-CAM at {layer}")
        print("| sample | top-1 | occl. r | occl. same top-1 | Score-CAM r | del. AUC fp32/bf16 "
              "| ins. AUC fp32/bf16 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        worst = {"occlusion": 1.0, "score_cam": 1.0}
        for name in samples:
            x = preprocess(load_sample(name), spec)
            cells = [name]
            with torch.inference_mode():
                top = int(model(x).argmax())
            cells.append(str(top))
            ctx = contextlib.nullcontext() if real else emulated()
            if "occlusion" not in args.skip:
                kw = {"window": args.window, "stride": args.stride}
                a = attr.occlusion(model, x, exact=True, **kw)
                with ctx:
                    b = attr.occlusion(model, x, exact=False, **kw)
                r = corr(a.map, b.map)
                worst["occlusion"] = min(worst["occlusion"], r)
                cells += [f"{r:.4f}", str(a.target == b.target)]
            else:
                cells += ["-", "-"]
            ctx = contextlib.nullcontext() if real else emulated()
            if "score_cam" not in args.skip:
                a = attr.score_cam(model, x, layer=layer, exact=True)
                with ctx:
                    b = attr.score_cam(model, x, layer=layer, exact=False)
                r = corr(a.map, b.map)
                worst["score_cam"] = min(worst["score_cam"], r)
                cells.append(f"{r:.4f}")
            else:
                cells.append("-")
            if "curves" not in args.skip:
                gc = attr.grad_cam(model, x, layer=layer)
                ca = faithfulness.deletion_insertion(model, x, gc, exact=True)
                ctx = contextlib.nullcontext() if real else emulated()
                with ctx:
                    cb = faithfulness.deletion_insertion(model, x, gc, exact=False)
                cells += [f"{ca.deletion_auc:.4f}/{cb.deletion_auc:.4f}",
                          f"{ca.insertion_auc:.4f}/{cb.insertion_auc:.4f}"]  # fmt: skip
            else:
                cells += ["-", "-"]
            print("| " + " | ".join(cells) + " |", flush=True)
        print(f"worst map correlation: occlusion {worst['occlusion']:.4f}, "
              f"Score-CAM {worst['score_cam']:.4f}")  # fmt: skip
        if "gallery" not in args.skip:
            g = builtin_gallery()
            emb = spec.preset("embedding")[0]
            size = spec.preprocessing.input_size
            t0 = time.perf_counter()
            fa = features.gallery_features(model, g, layer=emb, model_key=key, input_size=size,
                                           use_cache=False, exact=True).features  # fmt: skip
            ctx = contextlib.nullcontext() if real else emulated()
            with ctx:
                fb = features.gallery_features(model, g, layer=emb, model_key=key,
                                               input_size=size, use_cache=False,
                                               exact=False).features  # fmt: skip
            cos = (fa * fb).sum(1) / (np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1))

            def nn1(f: np.ndarray) -> np.ndarray:
                sq = (f * f).sum(1)
                d = sq[:, None] + sq[None] - 2.0 * f @ f.T
                np.fill_diagonal(d, np.inf)
                return d.argmin(1)

            same = float((nn1(fa) == nn1(fb)).mean())
            print(f"gallery ({len(g)} images, {emb}): cosine fp32/bf16 min {cos.min():.5f}, "
                  f"mean {cos.mean():.5f}; same nearest neighbour {same:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    print(f"load at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
