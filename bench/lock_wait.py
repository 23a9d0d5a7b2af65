"""How long a short request waits while another session runs a long job on the same model.

Run from the repository root: ``python bench/lock_wait.py [--window 16 --stride 8 --steps 20]``.

Two threads share the bundled EfficientNet-Lite0, as two Streamlit sessions share the cached
model. The *short request* is what picking a new sample photo computes (top-5 prediction and a
saliency map). It is timed alone, then started one second into each *long job* of a second
thread:

* occlusion on chelsea (``--window`` / ``--stride``; the issue's case was 8 / 4, 3,025
  positions), batches of 16;
* a class visualization (the Lite0 Fourier preset, ``--steps`` steps).

Reported: the short request's latency alone and during each job, the job's time alone and with
the short request in the middle, and the job's time per batch or step (the wait the short
request should see at most, plus its own time).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from vizcore import attribution as attr
from vizcore.data.images import load_sample
from vizcore.models.predict import predict
from vizcore.models.registry import get_spec, load_model, preprocess
from vizcore.optvis import synthesis

KEY = "efficientnet_lite0"
TARGET = 285  # Egyptian cat


def short_request(model: torch.nn.Module, x: torch.Tensor) -> None:
    """What a new sample photo costs on the Attribution page's first paint (roughly)."""
    predict(model, x, top_k=5)
    attr.saliency(model, x)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def during(long_job: Callable[[], object], short: Callable[[], object], delay: float) -> tuple:
    """Start ``long_job`` in a thread, run ``short`` after ``delay`` s; both durations."""
    box: dict[str, float] = {}

    def run_long() -> None:
        box["long"] = timed(long_job)

    thread = threading.Thread(target=run_long)
    thread.start()
    time.sleep(delay)
    latency = timed(short)
    still_running = thread.is_alive()
    thread.join()
    return latency, box["long"], still_running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--stride", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="class visualization steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (shared host)")
    parser.add_argument("--delay", type=float, default=1.0, help="s before the short request")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(KEY)
    spec = get_spec(KEY)
    x = preprocess(load_sample("chelsea"), spec)
    other = preprocess(load_sample("astronaut"), spec)
    short = lambda: short_request(model, other)  # noqa: E731
    short()  # warm-up
    alone = min(timed(short) for _ in range(3))

    rows, cols = attr.occlusion_grid(tuple(x.shape[-2:]), args.window, args.stride)
    batches = -(-rows * cols // attr.BATCH_SIZE)
    settings = replace(synthesis.synthesis_preset(KEY, "fourier"), steps=args.steps)
    jobs = {
        f"occlusion {args.window}/{args.stride} ({rows * cols} positions, {batches} batches)": (
            lambda: attr.occlusion(model, x, target=TARGET, window=args.window, stride=args.stride),
            batches + 1,
        ),
        f"class visualization ({args.steps} steps)": (
            lambda: synthesis.class_visualization(model, target=TARGET, settings=settings),
            args.steps,
        ),
    }
    print(f"torch threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    print(f"short request alone (predict + saliency): {alone:.3f} s\n")
    print("| long job | job alone (s) | per batch/step (s) | short during job (s) | "
          "extra over alone (s) | job with short (s) | short done before job |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, (job, units) in jobs.items():
        job_alone = timed(job)
        latency, job_with, before_end = during(job, short, args.delay)
        wait = f"{latency - alone:.3f}"
        print(f"| {name} | {job_alone:.2f} | {job_alone / units:.3f} | {latency:.3f} | {wait} | "
              f"{job_with:.2f} | {'yes' if before_end else 'no'} |", flush=True)  # fmt: skip
    print(f"\nload at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
