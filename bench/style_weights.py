"""Gatys style transfer over a range of style weights: how far the style and content terms move.

Run: ``python bench/style_weights.py [--model KEY] [--size 256] [--weights 0.1 1 10 100 1000]``.

Chelsea + the marble pattern, each net's measured settings (optimizer, lr, steps, TV), content
weight 1. For every style weight: the style term ``style(x) / style(photo)`` (1 = the photo's own
distance to the style), the relative content error ``||F(x) - F(c)||² / ||F(c)||²`` (about 1 =
the photo's features are gone), the mean absolute pixel change from the photo (0-255) and the mean
absolute difference to the previous weight's result (0-255; near 0 = the two look alike).
``--sheet`` writes the results side by side (PNG).
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

from vizcore.data.images import load_sample, to_tensor01
from vizcore.models.registry import get_spec, load_model
from vizcore.style import gatys as style
from vizcore.style.patterns import marble


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--weights", type=float, nargs="*", default=[0.1, 1, 10, 100, 1000])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sheet", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, spec = load_model(args.model), get_spec(args.model)
    settings = style.style_settings(spec)
    content = style.resize_long_side(to_tensor01(load_sample("chelsea")), args.size)
    style_image = to_tensor01(marble(args.size))
    photo = content[0].permute(1, 2, 0).numpy() * 255
    print(
        f"{spec.label}, {args.size} px, {settings.optimizer} lr {settings.lr}, "
        f"{settings.steps} steps, TV {settings.tv_weight}, content weight 1, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| style weight | style term | content loss | change from photo | vs previous | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    images, previous = [], None
    for weight in args.weights:
        start = time.perf_counter()
        result = style.style_transfer(
            model,
            content,
            style=style_image,
            style_layers=spec.preset("style"),
            content_layer=spec.preset("content")[0],
            style_weight=weight,
            content_weight=1.0,
            tv_weight=settings.tv_weight,
            optimizer=settings.optimizer,
            lr=settings.lr,
            steps=settings.steps,
        )
        image = result.image.astype(np.float64)
        change = np.abs(image - photo).mean()
        vs_prev = "" if previous is None else f"{np.abs(image - previous).mean():.1f}"
        print(
            f"| {weight:g} | {result.style_ratio:.3f} | {result.content_loss_end:.3f} | "
            f"{change:.1f} | {vs_prev} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )
        previous = image
        images.append(result.image)
    if args.sheet is not None:
        Image.fromarray(np.concatenate(images, axis=1)).save(args.sheet)


if __name__ == "__main__":
    main()
