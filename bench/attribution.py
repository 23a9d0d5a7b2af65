"""Attribution speed on the bundled EfficientNet-Lite0: each method vs its limit and the peers.

Run from the repository root: ``python bench/attribution.py [--repeats 3] [--quick]``.

Every number comes from this one run (the machine is shared and noisy: compare the ratios, not
the seconds across runs). Each cell is the minimum over ``--repeats`` calls after a warm-up.
Limits, measured here first:

* occlusion: positions x best per-image forward at batch 16 (channels_last input);
* Grad-CAM / Grad-CAM++: one batch-1 forward;
* saliency / deconvnet / guided backprop: one batch-1 forward + backward to the input;
* integrated gradients: 50 x per-image forward+backward at batch 16;
* Score-CAM: channels x per-image forward at batch 16.

Peers (captum, pytorch-grad-cam) run on a deep copy of the model as loaded (parameters require
grad: pytorch-grad-cam needs that), with the same channels_last input.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from _timing import best

from vizcore.hooks import inference_session
from vizcore.images import load_sample
from vizcore.models.registry import get_spec, load_model, preprocess
from vizcore.techniques import attribution as attr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the slowest peer calls")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("efficientnet_lite0")
    x = preprocess(load_sample("chelsea"), get_spec("efficientnet_lite0"))
    cl = x.contiguous(memory_format=torch.channels_last)
    batch16 = cl.repeat(16, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    reps = args.repeats
    layer = "head.bn"

    # ---- limits
    with inference_session(model):

        def fwd1() -> None:
            with torch.inference_mode():
                model(cl)

        def fwd16() -> None:
            with torch.inference_mode():
                model(batch16)

        def fwdbwd(inp: torch.Tensor) -> Callable[[], None]:
            def run() -> None:
                xg = inp.clone().requires_grad_(True)
                torch.autograd.grad(model(xg)[:, 285].sum(), xg)

            return run

        # Limits are steady-state bests: many repeats, so a cold first batch cannot inflate them.
        t_fwd1 = best(fwd1, max(reps, 30))
        t_fwd16 = best(fwd16, max(reps, 12)) / 16
        t_fb1 = best(fwdbwd(cl), max(reps, 30))
        t_fb16 = best(fwdbwd(batch16), max(reps, 6)) / 16
    print(
        f"Limits (Lite0, 2 threads, min of {reps}+ repeats): forward b1 {t_fwd1 * 1e3:.1f} ms, "
        f"forward/img b16 CL {t_fwd16 * 1e3:.1f} ms, fwd+bwd b1 {t_fb1 * 1e3:.1f} ms, "
        f"fwd+bwd/img b16 {t_fb16 * 1e3:.1f} ms"
    )

    rows: list[tuple[str, float, float, str, float | None]] = []
    peer = copy.deepcopy(model).requires_grad_(True)  # pytorch-grad-cam needs weight grads
    target = 285

    def add(name: str, ours: float, limit: float, peer_name: str = "", peer_t: float | None = None):
        rows.append((name, ours, limit, peer_name, peer_t))

    from captum.attr import (
        GuidedBackprop,
        IntegratedGradients,
        LayerGradCam,
        Occlusion,
        Saliency,
    )
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(target)]

    # ---- occlusion 32/8
    rows_, cols_ = attr.occlusion_grid((224, 224), 32, 8)
    positions = rows_ * cols_
    occ_reps = 1 if args.quick else 2
    t = best(lambda: attr.occlusion(model, x, target=target, window=32, stride=8), occ_reps)
    peer_t = None
    if not args.quick:

        def prob(inp: torch.Tensor) -> torch.Tensor:
            return torch.softmax(peer(inp), dim=1)

        occ = Occlusion(prob)
        start = time.perf_counter()
        with torch.no_grad():
            occ.attribute(
                cl,
                sliding_window_shapes=(3, 32, 32),
                strides=(3, 8, 8),
                baselines=0.5,
                target=target,
            )
        peer_t = time.perf_counter() - start
    add(f"occlusion 32/8 ({positions} positions)", t, positions * t_fwd16, "captum ppe=1", peer_t)

    # ---- CAM family: one forward
    t = best(lambda: attr.grad_cam(model, x, target=target, layer=layer), reps + 2)
    with GradCAM(model=peer, target_layers=[peer.head.bn]) as pgc:
        p = best(lambda: pgc(input_tensor=cl, targets=targets), reps)
    add("Grad-CAM (head.bn)", t, t_fwd1, "pytorch-grad-cam", p)
    lgc = LayerGradCam(peer, peer.head.bn)
    p = best(lambda: lgc.attribute(cl, target=target), reps)
    add("Grad-CAM (head.bn)", t, t_fwd1, "captum LayerGradCam", p)
    t = best(lambda: attr.grad_cam_plus_plus(model, x, target=target, layer=layer), reps + 2)
    with GradCAMPlusPlus(model=peer, target_layers=[peer.head.bn]) as pgc:
        p = best(lambda: pgc(input_tensor=cl, targets=targets), reps)
    add("Grad-CAM++ (head.bn)", t, t_fwd1, "pytorch-grad-cam", p)
    t = best(lambda: attr.cam(model, x, target=target, layer="head.act"), reps + 2)
    add("CAM (head.act)", t, t_fwd1)

    # ---- gradients to the input: one forward + backward
    t = best(lambda: attr.saliency(model, x, target=target), reps + 2)
    sal = Saliency(peer)
    p = best(lambda: sal.attribute(cl.clone().requires_grad_(), target=target), reps)
    add("saliency", t, t_fb1, "captum Saliency", p)
    t = best(lambda: attr.guided_backprop(model, x, target=target), reps + 2)
    gbp = GuidedBackprop(peer)
    p = best(lambda: gbp.attribute(cl.clone().requires_grad_(), target=target), reps)
    add("guided backprop", t, t_fb1, "captum (= plain gradient on ReLU6!)", p)
    t = best(lambda: attr.deconvnet(model, x, target=target), reps + 2)
    add("deconvnet", t, t_fb1)
    t = best(lambda: attr.guided_grad_cam(model, x, target=target, layer=layer), reps + 2)
    add("Guided Grad-CAM", t, t_fb1 + t_fwd1)

    # ---- integrated gradients: 50 fwd+bwd at batch 16
    t = best(lambda: attr.integrated_gradients(model, x, target=target, steps=50), 1)
    ig = IntegratedGradients(peer)
    p = best(
        lambda: ig.attribute(cl, baselines=0.0, target=target, n_steps=50, internal_batch_size=16),
        1,
    )
    add("integrated gradients (50 steps)", t, 50 * t_fb16, "captum ibs=16", p)

    # ---- Score-CAM on the last block (320 channels)
    sc_layer = "blocks.15"
    t = best(lambda: attr.score_cam(model, x, target=target, layer=sc_layer), 1)
    peer_t = None
    if not args.quick:
        with ScoreCAM(model=peer, target_layers=[peer.blocks[15]]) as psc:
            psc.batch_size = 16
            start = time.perf_counter()
            psc(input_tensor=cl, targets=targets)
            peer_t = time.perf_counter() - start
    add(f"Score-CAM ({sc_layer}, 320 ch)", t, 320 * t_fwd16, "pytorch-grad-cam b16", peer_t)

    print()
    header = f"{'method':34s} {'ours s':>9s} {'limit s':>9s} {'x limit':>8s}   peer"
    print(header)
    print("-" * (len(header) + 40))
    for name, ours, limit, peer_name, peer_time in rows:
        line = f"{name:34s} {ours:9.4f} {limit:9.4f} {ours / limit:8.2f}"
        if peer_name and peer_time is not None:
            line += f"   {peer_name}: {peer_time:.4f} s ({peer_time / ours:.2f}x ours)"
        elif peer_name:
            line += f"   {peer_name}: skipped (--quick)"
        print(line)


if __name__ == "__main__":
    main()
