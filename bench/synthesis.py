"""Image synthesis speed: seconds per optimization step vs one forward+backward (the limit).

Run from the repository root: ``python bench/synthesis.py [--repeats 3] [--steps 8]``.

Each method runs at its default size (the page's presets) on the bundled models. A step of any
method needs at least one forward pass of its batch to the deepest layer it reads and one backward
pass to the image; that forward+backward, timed here on the same batch and size with the same
truncation, is the limit (for the Fourier presets, the size is the padded one the model sees).
The ratio step / limit is the overhead of the runner (transforms, parameterization,
regularizers, hooks, bookkeeping). Every number comes from this one run; a run of ``--steps``
steps and as many limit passes are timed alternately (``bench/_timing.py``), and each cell is the
minimum over ``--repeats`` of them after a warm-up. The machine is shared and noisy: compare the
ratios, not the seconds across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from _timing import interleaved

from vizcore.hooks import capture_activations, forward_until, inference_session
from vizcore.images import load_sample, to_tensor01
from vizcore.models.registry import get_spec, load_model, preprocess
from vizcore.optim import relu6_passthrough
from vizcore.techniques import adversarial, synthesis


def limit(
    model: torch.nn.Module, shape: tuple[int, ...], layers: list[str] | None, relu6: bool
) -> Callable[[], None]:
    """One forward (to the deepest of ``layers``, or the logits) + backward to the image."""
    x = torch.rand(shape)

    def run() -> None:
        xg = x.clone().requires_grad_(True)
        with inference_session(model), relu6_passthrough(model, relu6):
            if layers is None:
                out = model(xg)[:, 0].sum()
            else:
                with capture_activations(model, layers, stop_early=True) as acts:
                    forward_until(model, xg)
                    out = sum(acts[name].pow(2).mean() for name in layers)
            torch.autograd.grad(out, xg)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed run")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, reps = args.steps, args.repeats
    lite, squeeze = load_model("efficientnet_lite0"), load_model("squeezenet1_1")
    photo = load_sample("chelsea")
    classes = [1, 130, 953]  # goldfish, flamingo, pineapple: the page's default
    rows: list[tuple[str, float, float]] = []

    def add(name: str, per_run: Callable[[], object], steps: int, limit_fn: Callable) -> None:
        # A run of ``steps`` steps and ``steps`` limit passes, alternated (bench/_timing.py).
        def limit_run() -> None:
            for _ in range(steps):
                limit_fn()

        run_time, limit_time = interleaved([per_run, limit_run], reps)
        rows.append((name, run_time / steps, limit_time / steps))

    for key, model, param in (
        ("efficientnet_lite0", lite, "fourier"),
        ("squeezenet1_1", squeeze, "pixel"),
        ("squeezenet1_1", squeeze, "fourier"),
    ):
        settings = dataclasses.replace(synthesis.synthesis_preset(key, param), steps=n)
        side = settings.size + 2 * settings.pad  # the padded image is what the model sees
        shape = (len(classes), 3, side, side)
        add(
            f"class viz {key} {param} {len(classes)}x{settings.size}px",
            lambda m=model, s=settings: synthesis.class_visualization(m, target=classes,
                                                                      settings=s),
            n,
            limit(model, shape, None, settings.relu6_passthrough),
        )  # fmt: skip

    settings = dataclasses.replace(synthesis.synthesis_preset("efficientnet_lite0", "fourier"),
                                   steps=n)  # fmt: skip
    add(
        f"neuron viz lite0 blocks.7 3x{settings.size}px",
        lambda: synthesis.neuron_visualization(lite, layer="blocks.7", channel=[0, 1, 2],
                                               settings=settings),
        n,
        limit(lite, (3, 3, settings.size + 2 * settings.pad, settings.size + 2 * settings.pad),
              ["blocks.7"], True),
    )  # fmt: skip

    layers, inv = synthesis.inversion_preset("efficientnet_lite0")
    chosen = [layers[0], layers[len(layers) // 2], layers[-1]]
    inv_steps = 5 * n  # the shifted references' features are cached: measure the steady state
    inv = dataclasses.replace(inv, steps=inv_steps)
    x160 = to_tensor01(photo.resize((160, 160)))
    add(
        "inversion lite0 3 layers 3x160px",
        lambda: synthesis.feature_inversion(lite, x160, layer=chosen, settings=inv),
        inv_steps,
        limit(lite, (3, 3, 160, 160), [chosen[-1]], True),
    )

    for size in (224, 400):
        dream = synthesis.DreamSettings(octaves=1, steps_per_octave=n, max_size=size, jitter=16)
        x = to_tensor01(photo)
        height = round(photo.height * size / max(photo.size))
        width = round(photo.width * size / max(photo.size))
        add(
            f"deepdream lite0 blocks.4 {height}x{width}px",
            lambda d=dream, x=x: synthesis.deep_dream(lite, x, layer="blocks.4", settings=d),
            n,
            limit(lite, (1, 3, height, width), ["blocks.4"], False),
        )

    x224 = preprocess(photo, get_spec("efficientnet_lite0"))
    add(
        "pgd lite0 1x224px (incl. 2 predictions)",
        lambda: adversarial.pgd(lite, x224, target=1, epsilon=4 / 255, steps=n),
        n,
        limit(lite, (1, 3, 224, 224), None, False),
    )

    print(f"torch {torch.__version__}, {args.threads} threads, {n} steps per run, "
          f"min of {reps} runs, each interleaved with as many limit passes")  # fmt: skip
    print(f"{'method':48s} {'s/step':>8s} {'limit s':>8s} {'ratio':>6s}")
    for name, step, lim in rows:
        print(f"{name:48s} {step:8.3f} {lim:8.3f} {step / lim:6.2f}")


if __name__ == "__main__":
    main()
