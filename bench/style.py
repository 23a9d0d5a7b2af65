"""Benchmark texture and style: optimization steps, fast-style inference, training throughput.

Run: ``python bench/style.py [--quick] [--threads N]``. Prints ratios measured in this one run.
Every timing is given as wall-clock seconds and as CPU seconds of this process
(``time.process_time``). On a shared machine the wall clock measures the neighbours; the CPU
seconds with ``--threads 1`` do not, and equal the wall time of an idle single core (two idle cores
take about 0.5-0.7 of it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vizcore.core.hooks import inference_session
from vizcore.data.images import load_sample, to_tensor01
from vizcore.models.registry import get_spec, load_model
from vizcore.style import fast_style
from vizcore.style import gatys as style
from vizcore.style.patterns import marble


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of ``repeats`` calls after one warm-up."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def forward_backward(model: torch.nn.Module, size: int, repeats: int) -> tuple[float, float]:
    """One forward+backward to the input at ``size`` px (what one optimization step must do)."""
    x = torch.rand(1, 3, size, size)

    def run() -> None:
        with inference_session(model):
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(model(xi).sum(), xi)
            del g

    return _median_time(run, repeats)


def style_steps(key: str, size: int, steps: int, optimizer: str) -> tuple[float, float]:
    """(wall, CPU) seconds per Gatys step."""
    model, spec = load_model(key), get_spec(key)
    cpu = time.process_time()
    content = style.resize_long_side(to_tensor01(load_sample("chelsea")), size)
    result = style.style_transfer(
        model,
        content,
        style=to_tensor01(marble(size)),
        style_layers=spec.preset("style"),
        content_layer=spec.preset("content")[0],
        optimizer=optimizer,
        lr=1.0 if optimizer == "lbfgs" else 0.02,
        steps=steps,
    )
    return result.seconds / result.steps_done, (time.process_time() - cpu) / result.steps_done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeats, steps = (2, 5) if args.quick else (5, 20)
    torch.set_num_threads(args.threads)
    # The first optimizer construction imports torch._dynamo (seconds): keep it out of the timings.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    print("\n## Gatys optimization step vs one forward+backward (256 px, chelsea + marble)")
    for key in ("efficientnet_lite0", "squeezenet1_1"):
        fb_wall, fb_cpu = forward_backward(load_model(key), 256, repeats)
        for opt in ("adam", "lbfgs"):
            wall, cpu = style_steps(key, 256, steps, opt)
            print(
                f"{key:20s} {opt:5s}: step {wall:.3f} s wall / {cpu:.3f} s CPU; forward+backward "
                f"{fb_wall:.3f} / {fb_cpu:.3f}; ratio (CPU) {cpu / fb_cpu:.2f}; "
                f"200 steps ≈ {200 * cpu:.0f} CPU s"
            )

    print("\n## Fast-style inference (batch 1, inference mode)")
    preset = fast_style.load_preset()
    nets = {
        f"shipped preset (width {preset.net.width})": preset.net,
        "width 32 (Johnson's size, untrained)": fast_style.TransformNet(3, width=32).eval(),
    }
    for label, net in nets.items():
        for side in (256, 512, 1024):
            x = torch.rand(1, 3, side, side)

            def run(net=net, x=x) -> None:
                with torch.inference_mode():
                    net(x, 0)

            wall, cpu = _median_time(run, max(1, repeats // (2 if side == 1024 else 1)))
            print(f"{label:40s} {side:5d} px: {wall:.3f} s wall, {cpu:.3f} s CPU")

    print("\n## Training throughput (SqueezeNet loss network, 128 px crops, batch 2)")
    from vizcore.style.train import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        n = 6 if args.quick else 20
        config = TrainConfig(styles=("marble",), size=128, batch=2, steps=n)
        start, cpu = time.perf_counter(), time.process_time()
        summary = train(config, Path(tmp) / "bench.pt", log_every=n, checkpoint_every=n)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"{n} steps x batch 2 in {summary['seconds']:.1f} s of training "
            f"({wall:.1f} s wall, {cpu:.1f} CPU s with setup): "
            f"{n * 2 / summary['seconds']:.2f} images/s wall, {n * 2 / cpu:.2f} images per CPU s"
        )


if __name__ == "__main__":
    main()
