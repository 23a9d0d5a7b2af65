"""``vizcore visualize-class``: class model visualization (Simonyan et al. 2014) from the shell."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from vizcore_cli.common import InputError, UsageError, add_model_options, load_model

__all__ = ["add_parser", "visualize_class"]

#: Bounds of the size and step options (the app's public mode caps steps lower).
MAX_SIZE = 512
MAX_STEPS = 5000


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``visualize-class`` subcommand."""
    vis = sub.add_parser(
        "visualize-class",
        help="optimize an image that a class's score likes (class model visualization)",
        description="Gradient ascent on a class's pre-softmax score from a grey image "
        "(Simonyan, Vedaldi & Zisserman 2014), with the model's measured preset (the app's "
        "Feature visualization defaults): the Fourier parameterization unless --pixel. Writes "
        "<class>_<index>.png per class (and class_visualization.gif of the run with --gif). "
        "Several classes run as one batch.",
    )
    add_model_options(vis)
    vis.add_argument(
        "--class", dest="class_indices", type=int, action="append", required=True, metavar="INDEX",
        help="class index (repeat for several classes)",
    )  # fmt: skip
    vis.add_argument("--steps", type=int, default=None, help="steps (default: the preset's)")
    vis.add_argument("--size", type=int, default=None, help="side in px (default: the model's)")
    vis.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    vis.add_argument("--pixel", action="store_true", help="pixel parameterization")
    vis.add_argument("--gif", action="store_true", help="also write the run as an animated GIF")
    vis.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")


def _settings(args: argparse.Namespace, spec: object) -> object:
    """The model's preset with --steps / --size on top, checked before anything runs."""
    import dataclasses

    from vizcore.optvis import synthesis

    settings = synthesis.synthesis_preset(spec, "pixel" if args.pixel else "fourier")
    if args.steps is not None:
        if not 1 <= args.steps <= MAX_STEPS:
            raise UsageError(f"--steps must be in 1..{MAX_STEPS}, got {args.steps}.")
        settings = dataclasses.replace(settings, steps=args.steps)
    if args.size is not None:
        if not 32 <= args.size <= MAX_SIZE:
            raise UsageError(f"--size must be in 32..{MAX_SIZE} px, got {args.size}.")
        settings = dataclasses.replace(settings, size=args.size)
    return settings


def _file_stem(name: str, index: int) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() + f"_{index}"


def _progress(tty: bool) -> object:
    def on_step(info: object) -> None:
        if tty and info.waited is None:
            print(f"\rstep {info.step}/{info.total}", end="", file=sys.stderr, flush=True)

    return on_step


def visualize_class(args: argparse.Namespace) -> int:
    """``vizcore visualize-class``: one PNG per class in ``--out``; a line per class on stdout."""
    from vizcore.core import render
    from vizcore.optvis import synthesis

    loaded = load_model(args)
    categories = loaded.spec.categories()
    bad = [c for c in args.class_indices if not 0 <= c < len(categories)]
    if bad:
        raise UsageError(f"--class {bad[0]} is out of range 0..{len(categories) - 1}.")
    settings = _settings(args, loaded.spec)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{args.out}: {exc}") from None
    tty = sys.stderr.isatty()
    result = synthesis.class_visualization(
        loaded.model, target=list(args.class_indices), settings=settings, categories=categories,
        seed=args.seed, on_step=_progress(tty),
    )  # fmt: skip
    if tty:
        print(file=sys.stderr)
    for i, index in enumerate(args.class_indices):
        stem = _file_stem(categories[index], index)
        image = render.to_uint8(result.images[i])
        (args.out / f"{stem}.png").write_bytes(render.png_bytes(image))
        print(f"{args.out / stem}.png: {categories[index]} ({index}), score "
              f"{float(result.scores[i]):.3g}, p {float(result.probabilities[i]):.1%}, "
              f"{result.steps_done} steps in {result.seconds:.1f} s")  # fmt: skip
    if args.gif and result.frames:  # one animation of the run (every class side by side)
        frames = [np.asarray(frame) for frame in result.frames]
        gif = args.out / "class_visualization.gif"
        gif.write_bytes(render.gif_bytes(frames, duration_ms=100))
        print(f"{gif}: {len(frames)} frames")
    return 0
