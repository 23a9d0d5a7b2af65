"""Image synthesis speed: seconds per optimization step vs one forward+backward (the limit).

Run from the repository root: ``python bench/synthesis.py [--repeats 3] [--steps 8]``.

Each method runs at its default size (the page's presets) on the bundled models. A step of any
method needs at least one forward pass of its batch to the deepest layer it reads and one backward
pass to the image; that forward+backward, timed here on the same batch and size with the same
truncation, is the limit (for the Fourier presets, the size is the padded one the model sees).
The ratio step / limit is the overhead of the runner (transforms, parameterization,
regularizers, hooks, bookkeeping). A step's cost is measured as the difference between runs of
``--steps`` and ``3 x --steps`` steps (so the fixed cost of a run, its setup and its final
prediction, is reported apart); both runs and ``--steps`` limit passes are timed alternately
(``bench/_timing.py``), each cell the minimum over ``--repeats`` after a warm-up. Every number
comes from this one run. The machine is shared and noisy: compare the ratios, not the seconds
across runs.
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

from vizcore.core.hooks import capture_activations, forward_until, inference_session
from vizcore.data.images import load_sample, to_tensor01
from vizcore.models.registry import get_spec, load_model, preprocess
from vizcore.optvis import adversarial, dream, inversion, relu6_passthrough, synthesis

#: ``steps -> a call that runs that many steps`` of one method.
RunOf = Callable[[int], Callable[[], object]]


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
    rows: list[tuple[str, float, float, float]] = []

    def add(name: str, run: RunOf, steps: int, limit_fn: Callable[[], None]) -> None:
        """Runs of ``steps`` and ``3 * steps`` steps and ``steps`` limit passes, interleaved.

        The step cost is the difference of the two runs over ``2 * steps`` (what one more step
        costs); what is left of the short run is the fixed cost per run (setup, the first and
        last predictions, packing the result), which does not grow with the number of steps.
        """

        def limit_run() -> None:
            for _ in range(steps):
                limit_fn()

        short, long_, limit_time = interleaved([run(steps), run(3 * steps), limit_run], reps)
        step = (long_ - short) / (2 * steps)
        rows.append((name, step, limit_time / steps, short - steps * step))

    for key, model, param in (
        ("efficientnet_lite0", lite, "fourier"),
        ("squeezenet1_1", squeeze, "pixel"),
        ("squeezenet1_1", squeeze, "fourier"),
    ):
        preset = synthesis.synthesis_preset(get_spec(key), param)
        side = preset.size + 2 * preset.pad  # the padded image is what the model sees
        shape = (len(classes), 3, side, side)

        def class_run(k: int, m=model, p=preset) -> Callable[[], object]:
            s = dataclasses.replace(p, steps=k)
            return lambda: synthesis.class_visualization(m, target=classes, settings=s)

        add(f"class viz {key} {param} {len(classes)}x{preset.size}px", class_run, n,
            limit(model, shape, None, preset.relu6_passthrough))  # fmt: skip

    preset = synthesis.synthesis_preset(get_spec("efficientnet_lite0"), "fourier")
    side = preset.size + 2 * preset.pad

    def neuron_run(k: int) -> Callable[[], object]:
        s = dataclasses.replace(preset, steps=k)
        return lambda: synthesis.neuron_visualization(lite, layer="blocks.7", channel=[0, 1, 2],
                                                      settings=s)  # fmt: skip

    add(f"neuron viz lite0 blocks.7 3x{preset.size}px", neuron_run, n,
        limit(lite, (3, 3, side, side), ["blocks.7"], True))  # fmt: skip

    layers, inv = inversion.inversion_preset(get_spec("efficientnet_lite0"))
    chosen = [layers[0], layers[len(layers) // 2], layers[-1]]
    x160 = to_tensor01(photo.resize((160, 160)))

    def inversion_run(k: int) -> Callable[[], object]:
        s = dataclasses.replace(inv, steps=k)
        return lambda: inversion.feature_inversion(lite, x160, layer=chosen, settings=s)

    add("inversion lite0 3 layers 3x160px", inversion_run, n,
        limit(lite, (3, 3, 160, 160), [chosen[-1]], True))  # fmt: skip

    for size in (224, 400):
        x = to_tensor01(photo)
        height = round(photo.height * size / max(photo.size))
        width = round(photo.width * size / max(photo.size))

        def dream_run(k: int, size: int = size, x: torch.Tensor = x) -> Callable[[], object]:
            d = dream.DreamSettings(octaves=1, steps_per_octave=k, max_size=size, jitter=16)
            return lambda: dream.deep_dream(lite, x, layer="blocks.4", settings=d)

        add(f"deepdream lite0 blocks.4 {height}x{width}px", dream_run, n,
            limit(lite, (1, 3, height, width), ["blocks.4"], False))  # fmt: skip

    x224 = preprocess(photo, get_spec("efficientnet_lite0"))

    def pgd_run(k: int) -> Callable[[], object]:
        return lambda: adversarial.pgd(lite, x224, target=1, epsilon=4 / 255, steps=k)

    add("pgd lite0 1x224px", pgd_run, n, limit(lite, (1, 3, 224, 224), None, False))

    print(f"torch {torch.__version__}, {args.threads} threads; runs of {n} and {3 * n} steps and "
          f"{n} limit passes interleaved, min of {reps}")  # fmt: skip
    print(f"{'method':44s} {'s/step':>8s} {'limit s':>8s} {'ratio':>6s} {'fixed s/run':>12s}")
    for name, step, lim, fixed in rows:
        print(f"{name:44s} {step:8.3f} {lim:8.3f} {step / lim:6.2f} {fixed:12.3f}")


if __name__ == "__main__":
    main()
