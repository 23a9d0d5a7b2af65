"""Attribution speed on the bundled EfficientNet-Lite0: each method vs its limit and the peers.

Run from the repository root: ``python bench/attribution.py [--rounds 100] [--quick]``.

Every number comes from this one run, and each method is timed *interleaved* with its limit
(and its peer): ``limit, ours, peer`` are called in a rotating order for several rounds and the
minimum of each is kept (``bench/_timing.py``). The machine is shared and noisy; measuring the
limit first and the methods minutes later made the same code look 1.19x to 1.63x slower.

Limits are plain passes of exactly the work a method cannot avoid, on the same input layout
(channels_last) and batch sizes it uses:

* occlusion: the reference forward (batch 1) + ``ceil(positions / 16)`` batch-16 forwards;
* CAM / Grad-CAM / Grad-CAM++: one batch-1 forward (inference mode);
* saliency / deconvnet / guided backprop: one batch-1 forward + backward to the input;
* Guided Grad-CAM: one forward + backward, plus one forward;
* integrated gradients (50 steps): one batch-2 forward (the path's ends) + forward+backward at
  batches 16, 16, 16, 2;
* Score-CAM (320 channels): one forward + 20 batch-16 forwards.

The rows above run in float32 (``exact=True``). The precision section then times occlusion 32/8
and Score-CAM with ``exact=True`` and ``exact=False`` (bf16 autocast, :mod:`vizcore.core.precision`)
interleaved with the float32 batched-forward limit and the same forwards under bf16 autocast,
and gives each bf16 map's Pearson correlation to the float32 map. Where bf16 is not fast on this
CPU (no AMX / AVX-512 BF16) ``exact=False`` *is* float32, so the section says so and is skipped
unless ``--force-bf16`` (real autocast, emulated by torch: very slow there).

Peers (captum, pytorch-grad-cam) run on a deep copy of the model as loaded (parameters require
grad: pytorch-grad-cam needs that), with the same channels_last input.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from _timing import interleaved

from vizcore import attribution as attr
from vizcore.core import precision
from vizcore.data.images import load_sample
from vizcore.models.registry import get_spec, load_model, preprocess

TARGET = 285  # Egyptian cat
BATCH = attr.BATCH_SIZE


@dataclass(frozen=True)
class Row:
    method: str
    ours: float
    limit: float
    limit_what: str
    peer_name: str = ""
    peer: float | None = None


class Limits:
    """Plain forward / forward+backward passes over batches of the test image."""

    def __init__(self, model: torch.nn.Module, image: torch.Tensor) -> None:
        # Bare passes: the shared model is loaded in eval mode with frozen parameters, so the
        # limits need no inference_session (whose bookkeeping counts against our methods).
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        self.model = model
        self.image = image.contiguous(memory_format=torch.channels_last)
        self._batches: dict[int, torch.Tensor] = {}

    def batch(self, n: int) -> torch.Tensor:
        if n not in self._batches:
            copies = self.image.repeat(n, 1, 1, 1)
            self._batches[n] = copies.contiguous(memory_format=torch.channels_last)
        return self._batches[n]

    def forward(self, sizes: list[int]) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                for n in sizes:
                    self.model(self.batch(n))

        return run

    def forward_backward(self, sizes: list[int]) -> Callable[[], None]:
        def run() -> None:
            for n in sizes:
                xg = self.batch(n).clone().requires_grad_(True)
                torch.autograd.grad(self.model(xg)[:, TARGET].sum(), xg)

        return run

    @staticmethod
    def batches(total: int) -> list[int]:
        return [BATCH] * (total // BATCH) + ([total % BATCH] if total % BATCH else [])


def timed(
    rows: list[Row],
    method: str,
    ours: Callable[[], object],
    limit: Callable[[], None],
    limit_what: str,
    rounds: int,
    peers: dict[str, Callable[[], object]] | None = None,
) -> None:
    """Time ``ours``, ``limit`` and each peer interleaved; append one row per peer (or one)."""
    peers = peers or {}
    times = interleaved([ours, limit, *peers.values()], rounds)
    if not peers:
        rows.append(Row(method, times[0], times[1], limit_what))
    for (name, _), t in zip(peers.items(), times[2:], strict=True):
        rows.append(Row(method, times[0], times[1], limit_what, name, t))
    print(f"  measured {method}", file=sys.stderr, flush=True)


def quiet(fn: Callable[..., object], **kwargs: object) -> object:
    """Call ``fn`` with stderr swallowed (pytorch-grad-cam's Score-CAM draws a tqdm bar)."""
    with contextlib.redirect_stderr(io.StringIO()):
        return fn(**kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="rounds for the fast methods")
    parser.add_argument("--slow-rounds", type=int, default=5, help="rounds for the slow ones")
    parser.add_argument("--quick", action="store_true", help="skip the slow peer calls")
    parser.add_argument(
        "--precision-only", action="store_true", help="only the fp32 / bf16 precision section"
    )
    parser.add_argument(
        "--force-bf16", action="store_true", help="run bf16 even where it is not fast here"
    )
    args = parser.parse_args()
    if args.force_bf16:
        os.environ[precision.ENV_BF16] = "force"
    warnings.filterwarnings("ignore", message="Setting backward hooks", module="captum")
    torch.set_num_threads(2)
    model = load_model("efficientnet_lite0")
    x = preprocess(load_sample("chelsea"), get_spec("efficientnet_lite0"))
    limits = Limits(model, x)
    cl = limits.image
    peer = copy.deepcopy(model).requires_grad_(True)  # pytorch-grad-cam needs weight grads
    fast, slow = args.rounds, args.slow_rounds
    rows: list[Row] = []
    layer = "head.bn"
    if args.precision_only:
        precision_section(model, x, limits, slow)
        return

    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        LayerGradCam,
        Occlusion,
        Saliency,
    )
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(TARGET)]
    one_fwd = limits.forward([1])
    one_fb = limits.forward_backward([1])

    # ---- CAM family: one forward
    with (
        GradCAM(model=peer, target_layers=[peer.head.bn]) as pgc,
        GradCAMPlusPlus(model=peer, target_layers=[peer.head.bn]) as pgcpp,
    ):
        lgc = LayerGradCam(peer, peer.head.bn)
        timed(
            rows,
            "Grad-CAM (head.bn)",
            lambda: attr.grad_cam(model, x, target=TARGET, layer=layer),
            one_fwd,
            "1 forward",
            fast,
            {
                "pytorch-grad-cam": lambda: pgc(input_tensor=cl, targets=targets),
                "captum LayerGradCam": lambda: lgc.attribute(cl, target=TARGET),
            },
        )
        timed(
            rows,
            "Grad-CAM++ (head.bn)",
            lambda: attr.grad_cam_plus_plus(model, x, target=TARGET, layer=layer),
            one_fwd,
            "1 forward",
            fast,
            {"pytorch-grad-cam": lambda: pgcpp(input_tensor=cl, targets=targets)},
        )
    timed(
        rows,
        "CAM (head.act)",
        lambda: attr.cam(model, x, target=TARGET, layer="head.act"),
        one_fwd,
        "1 forward",
        fast,
    )

    # ---- gradients to the input: one forward + backward
    sal, gbp = Saliency(peer), GuidedBackprop(peer)
    timed(
        rows,
        "saliency",
        lambda: attr.saliency(model, x, target=TARGET),
        one_fb,
        "1 fwd+bwd",
        fast,
        {"captum Saliency": lambda: sal.attribute(cl.clone().requires_grad_(), target=TARGET)},
    )
    timed(
        rows,
        "guided backprop",
        lambda: attr.guided_backprop(model, x, target=TARGET),
        one_fb,
        "1 fwd+bwd",
        fast,
        {
            "captum (= plain gradient on ReLU6!)": lambda: gbp.attribute(
                cl.clone().requires_grad_(), target=TARGET
            )
        },
    )
    timed(
        rows,
        "deconvnet",
        lambda: attr.deconvnet(model, x, target=TARGET),
        one_fb,
        "1 fwd+bwd",
        fast,
    )

    def fb_and_fwd() -> None:
        one_fb()
        one_fwd()

    timed(
        rows,
        "Guided Grad-CAM",
        lambda: attr.guided_grad_cam(model, x, target=TARGET, layer=layer),
        fb_and_fwd,
        "1 fwd+bwd + 1 fwd",
        fast,
    )

    # ---- integrated gradients: 50 fwd+bwd at batch 16
    ig = IntegratedGradients(peer)
    ig_limit_fwd = limits.forward([2])
    ig_limit_fb = limits.forward_backward(Limits.batches(50))

    def ig_limit() -> None:
        ig_limit_fwd()
        ig_limit_fb()

    timed(
        rows,
        "integrated gradients (50 steps)",
        lambda: attr.integrated_gradients(model, x, target=TARGET, steps=50),
        ig_limit,
        "fwd b2 + 50 fwd+bwd in b16",
        slow,
        {
            "captum ibs=16": lambda: ig.attribute(
                cl, baselines=0.0, target=TARGET, n_steps=50, internal_batch_size=16
            )
        },
    )

    # ---- occlusion 32/8
    rows_, cols_ = attr.occlusion_grid((224, 224), 32, 8)
    positions = rows_ * cols_

    def captum_occlusion() -> None:
        occ = Occlusion(lambda inp: torch.softmax(peer(inp), dim=1))
        with torch.no_grad():
            occ.attribute(
                cl,
                sliding_window_shapes=(3, 32, 32),
                strides=(3, 8, 8),
                baselines=0.5,
                target=TARGET,
            )

    timed(
        rows,
        f"occlusion 32/8 ({positions} positions)",
        lambda: attr.occlusion(model, x, target=TARGET, window=32, stride=8, exact=True),
        limits.forward([1, *Limits.batches(positions)]),
        f"fwd b1 + {math.ceil(positions / BATCH)} fwd b16",
        slow,
        None if args.quick else {"captum ppe=1": captum_occlusion},
    )

    # ---- Score-CAM on the last block (320 channels)
    sc_layer = "blocks.15"
    with ScoreCAM(model=peer, target_layers=[peer.blocks[15]]) as psc:
        psc.batch_size = BATCH
        timed(
            rows,
            f"Score-CAM ({sc_layer}, 320 ch)",
            lambda: attr.score_cam(model, x, target=TARGET, layer=sc_layer, exact=True),
            limits.forward([1, *Limits.batches(320)]),
            "fwd b1 + 20 fwd b16",
            slow,
            None
            if args.quick
            else {"pytorch-grad-cam b16": lambda: quiet(psc, input_tensor=cl, targets=targets)},
        )

    print_table(rows, fast, slow)
    precision_section(model, x, limits, slow)


def _corr(a: object, b: object) -> float:
    import numpy as np

    return float(np.corrcoef(np.ravel(a.map), np.ravel(b.map))[0, 1])  # type: ignore[attr-defined]


def precision_section(model: torch.nn.Module, x: torch.Tensor, limits: Limits, rounds: int) -> None:
    """Occlusion 32/8 and Score-CAM in fp32 and bf16, interleaved with both limits."""
    print(
        f"\n## fp32 vs bf16 (bf16 fast here: {precision.bf16_fast('cpu')}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; load {os.getloadavg()[0]:.1f})"
    )
    if not precision.use_bf16(exact=False, device="cpu"):
        print(
            "skipped: exact=False runs float32 on this CPU (no AMX / AVX-512 BF16; torch would "
            "emulate bf16, 34x slower than fp32 for a Lite0 batch-16 forward when measured). "
            "--force-bf16 runs it anyway."
        )
        return
    rows_, cols_ = attr.occlusion_grid((224, 224), 32, 8)
    positions = rows_ * cols_
    cases = [
        (
            f"occlusion 32/8 ({positions} positions)",
            lambda exact: attr.occlusion(model, x, target=TARGET, window=32, stride=8, exact=exact),
            [1, *Limits.batches(positions)],
        ),
        (
            "Score-CAM (blocks.15, 320 ch)",
            lambda exact: attr.score_cam(model, x, target=TARGET, layer="blocks.15", exact=exact),
            [1, *Limits.batches(320)],
        ),
    ]
    fp32_limit_name = "fp32 limit"
    print(
        f"{'method':34s} {'fp32 s':>8s} {'bf16 s':>8s} {fp32_limit_name:>10s} {'bf16 lim':>8s} "
        f"{'bf16/fp32':>9s} {'bf16/fp32 limit':>15s} {'map r':>7s} same top-1"
    )
    for name, fn, sizes in cases:
        fp32_limit = limits.forward(sizes)

        def bf16_limit(plain: Callable[[], None] = fp32_limit) -> None:
            with precision.fast_forward(exact=False):
                plain()

        t32, t16, l32, l16 = interleaved(
            [lambda fn=fn: fn(True), lambda fn=fn: fn(False), fp32_limit, bf16_limit], rounds
        )
        a, b = fn(True), fn(False)
        print(
            f"{name:34s} {t32:8.3f} {t16:8.3f} {l32:10.3f} {l16:8.3f} {t16 / t32:9.2f} "
            f"{t16 / l32:15.2f} {_corr(a, b):7.4f} {a.target == b.target}",
            flush=True,
        )


def print_table(rows: list[Row], fast: int, slow: int) -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; min over {fast} "
        f"interleaved rounds (slow methods: {slow})"
    )
    header = f"{'method':34s} {'ours s':>8s} {'limit s':>8s} {'x limit':>7s}  {'limit is':26s} peer"
    print(header)
    print("-" * (len(header) + 50))
    for row in rows:
        line = (
            f"{row.method:34s} {row.ours:8.4f} {row.limit:8.4f} {row.ours / row.limit:7.2f}  "
            f"{row.limit_what:26s}"
        )
        if row.peer is not None:
            line += f" {row.peer_name}: {row.peer:.4f} s ({row.peer / row.ours:.2f}x ours)"
        print(line)


if __name__ == "__main__":
    main()
