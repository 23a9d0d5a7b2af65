"""Measure Gram texture-synthesis presets against their sample (issue 19: texture presets).

Run: ``python bench/texture_presets.py [--size 192] [--threads 1] [--sheet PATH]``.

For each bundled net, each candidate setting (layers, TV weight, optimizer) and each sample, one
synthesis from the same seeded noise, scored against the sample by:

* **Gram**: the relative Gram distance on one fixed *reference* layer set per net (the net's
  "style" preset, early to middle layers), so candidates with different layers are compared on
  the same yardstick (lower is closer);
* **colour**: total-variation distance of 8x8x8-bin RGB histograms, 0.5 * sum |p - q| (0 = same
  colours, 1 = no colour in common): the marble pattern's four flat colours versus a rainbow;
* **contrast**: standard deviation of the luminance, result / sample (1 = the sample's contrast;
  "low-contrast dots" are well under 1).

Image quilting (no network) is the baseline row: what a result that copies the sample scores.
Optionally writes a contact sheet (JPEG) of all results, one row per net and candidate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vizcore.core.hooks import inference_session
from vizcore.data.images import load_sample, resize_center_crop, to_tensor01
from vizcore.models.registry import get_spec, load_model
from vizcore.style import gatys as style
from vizcore.style import gram
from vizcore.style.patterns import STYLE_PATTERNS
from vizcore.style.quilting import quilt_texture

SAMPLES = ("marble", "gravel", "brick", "mosaic")

#: Candidate settings per net: name -> keyword overrides of the texture settings.
CANDIDATES: dict[str, dict[str, dict]] = {
    "efficientnet_lite0": {
        "old: blocks.2-14, tv 0.3": {
            "style_layers": ("blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.14"),
            "tv_weight": 0.3,
        },
        "stem + blocks.0-10, tv 0.3": {
            "style_layers": ("stem", "blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10"),
            "tv_weight": 0.3,
        },
        "style preset blocks.0-10, tv 0.3": {
            "style_layers": ("blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10"),
            "tv_weight": 0.3,
        },
        "stem + blocks.2-14, tv 0.3": {
            "style_layers": ("stem", "blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.14"),
            "tv_weight": 0.3,
        },
    },
    "squeezenet1_1": {
        "old: fire2,3,5, tv 0.1": {"style_layers": ("fire2", "fire3", "fire5"), "tv_weight": 0.1},
        "style preset conv1-fire7, tv 0.1": {
            "style_layers": ("conv1", "fire2", "fire3", "fire5", "fire7"),
            "tv_weight": 0.1,
        },
        "conv1 + fire2,3,5, tv 0.1": {
            "style_layers": ("conv1", "fire2", "fire3", "fire5"),
            "tv_weight": 0.1,
        },
        "style preset conv1-fire7, tv 0": {
            "style_layers": ("conv1", "fire2", "fire3", "fire5", "fire7"),
            "tv_weight": 0.0,
        },
    },
}


def sample_image(name: str, size: int) -> np.ndarray:
    """uint8 RGB ``(size, size, 3)``: a generated pattern or a bundled texture, centre-cropped."""
    if name in STYLE_PATTERNS:
        image = STYLE_PATTERNS[name](size, seed=0)
    else:
        image = resize_center_crop(load_sample(name), size=size)
    return np.array(image.convert("RGB"))


def colour_distance(a: np.ndarray, b: np.ndarray, bins: int = 8) -> float:
    """Total-variation distance of the two images' ``bins**3`` RGB histograms (0 to 1)."""

    def hist(x: np.ndarray) -> np.ndarray:
        q = (x.reshape(-1, 3).astype(np.int64) * bins) // 256
        h = np.bincount((q[:, 0] * bins + q[:, 1]) * bins + q[:, 2], minlength=bins**3)
        return h / h.sum()

    return float(0.5 * np.abs(hist(a) - hist(b)).sum())


def contrast_ratio(result: np.ndarray, sample: np.ndarray) -> float:
    """Luminance standard deviation of ``result`` over that of ``sample``."""

    def lum(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    return float(lum(result).std() / max(lum(sample).std(), 1e-9))


def gram_distance(model: torch.nn.Module, targets: gram.GramTargets, image: np.ndarray) -> float:
    """Relative Gram distance of a uint8 image to the reference targets."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with inference_session(model), torch.no_grad():
        feats = gram.extract_features(model, x, targets.layers)
        return float(gram.style_loss(feats, targets))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", nargs="*", default=list(SAMPLES))
    parser.add_argument("--models", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--first", type=int, default=None, help="only the first N candidates")
    parser.add_argument("--sheet", type=Path, default=None, help="write a JPEG contact sheet")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = args.size
    samples = {name: sample_image(name, size) for name in args.samples}
    rows: list[list[np.ndarray]] = [list(samples.values())]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {size} px, seed 0")
    print("Gram: relative distance on the net's style preset; colour: RGB histogram distance;")
    print("contrast: luminance std / sample's. Lower Gram and colour are closer; contrast ~1.\n")
    quilts = {
        name: quilt_texture(img, size=(size, size), patch=32, seed=0)
        for name, img in samples.items()
    }
    rows.append([q.image for q in quilts.values()])
    for key in args.models:
        model, spec = load_model(key), get_spec(key)
        reference = spec.preset("style")
        base = style.style_settings(spec, texture=True)
        targets = {}
        with inference_session(model):
            for name, img in samples.items():
                x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
                targets[name] = gram.gram_targets(model, x, reference)
        print(f"## {spec.label} (reference layers: {', '.join(reference)})")
        print(f"| setting | {' | '.join(args.samples)} | seconds |")
        print(f"| --- | {' | '.join('---' for _ in args.samples)} | --- |")
        cells = [
            f"{gram_distance(model, targets[n], quilts[n].image):.3f} / "
            f"{colour_distance(quilts[n].image, samples[n]):.2f} / "
            f"{contrast_ratio(quilts[n].image, samples[n]):.2f}"
            for n in args.samples
        ]
        print(f"| image quilting (baseline) | {' | '.join(cells)} | |")
        for label, overrides in list(CANDIDATES[key].items())[: args.first]:
            cells, row, seconds = [], [], 0.0
            for name, img in samples.items():
                layers = overrides.get("style_layers", base.style_layers)
                start = time.perf_counter()
                result = style.texture_synthesis(
                    model,
                    to_tensor01(Image.fromarray(img)),
                    layers=layers,
                    size=(size, size),
                    optimizer=overrides.get("optimizer", base.optimizer),
                    steps=overrides.get("steps", base.steps),
                    lr=1.0 if overrides.get("optimizer", base.optimizer) == "lbfgs" else 0.05,
                    tv_weight=overrides.get("tv_weight", base.tv_weight),
                    seed=0,
                )
                seconds += time.perf_counter() - start
                cells.append(
                    f"{gram_distance(model, targets[name], result.image):.3f} / "
                    f"{colour_distance(result.image, img):.2f} / "
                    f"{contrast_ratio(result.image, img):.2f}"
                )
                row.append(result.image)
            rows.append(row)
            print(f"| {label} | {' | '.join(cells)} | {seconds:.0f} |", flush=True)
        print()
    if args.sheet is not None:
        sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
        Image.fromarray(sheet).save(args.sheet, quality=85)
        print(f"contact sheet: {args.sheet} (rows: samples, quilting, then each net's settings)")


if __name__ == "__main__":
    main()
