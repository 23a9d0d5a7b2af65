"""Every technique on a device (a GPU) and on a reference device (the CPU), results compared.

Run from the repository root::

    python bench/device_check.py                    # the best device vs the CPU, both models
    python bench/device_check.py --quick            # fewer steps, EfficientNet-Lite0 only
    python bench/device_check.py --device cpu --quick   # the plumbing, CPU against itself

Each method runs on the same inputs (the bundled ``chelsea`` photo, the built-in gallery) with
the model loaded once per device (``load_model(key, device=...)``). On a GPU the device side runs
twice and the second run is timed (the first pays CUDA's lazy start and cuDNN's algorithm
search); the reference side, and a CPU device side, run once. The exit status is 1 when any
comparison fails, 2 when the asked device is not present (no silent fallback here).

What is compared, and the tolerances (float32 on both sides; TF32 is switched off for the
comparison unless ``--tf32``, because cuDNN convolutions use TF32 by default on Ampere and
later and differ from the CPU by about 1e-3 relative):

* attribution maps (CAM family, saliency, guided backprop, deconvnet, IG, SmoothGrad,
  occlusion, Score-CAM): Pearson correlation of the maps >= 0.99, the largest difference
  <= 5 % of the reference map's largest magnitude, and the same explained (top-1) class;
* the prediction: the same top-1, probabilities within 1e-3;
* deletion / insertion curves: every point within 0.02, the same target;
* gallery features (the t-SNE / PCA input) and channel maxima: correlation >= 0.999, largest
  difference <= 1 % of the largest value;
* optimizations (class and neuron visualization, inversion, DeepDream, PGD/FGSM, texture,
  Gatys, multifaceted): the final loss within 5 % (relative) *or* the final images correlated
  >= 0.95 (float differences grow over many steps; both numbers are printed); PGD/FGSM also
  the same attacked top-1;
* fast style: mean absolute difference of the uint8 images <= 2 levels.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vizcore import attribution
from vizcore.attribution import faithfulness
from vizcore.core import devices
from vizcore.data.features import gallery_channel_maxima, gallery_features
from vizcore.data.gallery import builtin_gallery
from vizcore.data.images import load_sample
from vizcore.models.predict import predict
from vizcore.models.registry import get_spec, load_model, preprocess
from vizcore.optvis import adversarial, dream, inversion, multifaceted, synthesis
from vizcore.style import fast_style
from vizcore.style import gatys as style

MAP_CORR, MAP_REL = 0.99, 0.05
FEAT_CORR, FEAT_REL = 0.999, 0.01
CURVE_ABS = 0.02
LOSS_REL, IMAGE_CORR = 0.05, 0.95
STYLE_LEVELS = 2.0


@dataclass(frozen=True)
class Verdict:
    """One comparison: what was measured, its value, the bound, and whether it holds."""

    metric: str
    value: float
    bound: str
    ok: bool


@dataclass(frozen=True)
class Check:
    """A method to run on both devices and how to compare the two results."""

    name: str
    run: Callable[[torch.nn.Module, torch.Tensor], object]
    compare: Callable[[object, object], list[Verdict]]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays (1 for two equal constant arrays)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def rel_max(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def compare_map(a: object, b: object) -> list[Verdict]:
    c, r = corr(a.map, b.map), rel_max(a.map, b.map)
    same = a.target == b.target
    return [
        Verdict("map corr", c, f">= {MAP_CORR}", c >= MAP_CORR),
        Verdict("map max diff / max", r, f"<= {MAP_REL}", r <= MAP_REL),
        Verdict("same class", float(same), "== 1", bool(same)),
    ]


def compare_prediction(a: object, b: object) -> list[Verdict]:
    d = float(np.abs(a.probabilities - b.probabilities).max())
    same = int(a.indices[0]) == int(b.indices[0])
    return [
        Verdict("same top-1", float(same), "== 1", same),
        Verdict("prob max diff", d, "<= 0.001", d <= 1e-3),
    ]


def compare_curves(a: object, b: object) -> list[Verdict]:
    d = float(max(np.abs(a.deletion - b.deletion).max(), np.abs(a.insertion - b.insertion).max()))
    return [
        Verdict("curve max diff", d, f"<= {CURVE_ABS}", d <= CURVE_ABS),
        Verdict("same class", float(a.target == b.target), "== 1", a.target == b.target),
    ]


def compare_arrays(get: Callable[[object], np.ndarray]) -> Callable[[object, object], list]:
    def compare(a: object, b: object) -> list[Verdict]:
        c, r = corr(get(a), get(b)), rel_max(get(a), get(b))
        return [
            Verdict("corr", c, f">= {FEAT_CORR}", c >= FEAT_CORR),
            Verdict("max diff / max", r, f"<= {FEAT_REL}", r <= FEAT_REL),
        ]

    return compare


def compare_optimization(
    loss: Callable[[object], float], image: Callable[[object], np.ndarray]
) -> Callable[[object, object], list[Verdict]]:
    def compare(a: object, b: object) -> list[Verdict]:
        la, lb = loss(a), loss(b)
        rel = abs(la - lb) / max(abs(lb), 1e-12)
        c = corr(image(a), image(b))
        ok = rel <= LOSS_REL or c >= IMAGE_CORR
        return [
            Verdict("final loss rel diff", rel, f"<= {LOSS_REL} or", ok),
            Verdict("image corr", c, f">= {IMAGE_CORR}", ok),
        ]

    return compare


def compare_attack(a: object, b: object) -> list[Verdict]:
    verdicts = compare_optimization(
        lambda r: float(r.losses[-1]) if len(r.losses) else 0.0, lambda r: r.perturbation
    )(a, b)
    same = int(a.after.indices[0]) == int(b.after.indices[0])
    return [*verdicts, Verdict("same attacked top-1", float(same), "== 1", same)]


def compare_style(a: object, b: object) -> list[Verdict]:
    d = float(np.abs(a.image.astype(np.float64) - b.image.astype(np.float64)).mean())
    return [Verdict("mean |diff| (levels)", d, f"<= {STYLE_LEVELS}", d <= STYLE_LEVELS)]


def checks(key: str, quick: bool, gallery: object) -> list[Check]:
    """The methods for the model ``key``; ``quick`` uses fewer steps and positions."""
    spec = get_spec(key)
    cam = spec.preset("cam")[0] if spec.preset("cam") else None
    size = spec.preprocessing.input_size
    steps = 16 if quick else 48
    a = attribution
    out: list[Check] = [
        Check("predict", lambda m, x: predict(m, x), compare_prediction),
        Check("saliency", lambda m, x: a.saliency(m, x), compare_map),
        Check("guided backprop", lambda m, x: a.guided_backprop(m, x), compare_map),
        Check("deconvnet", lambda m, x: a.deconvnet(m, x), compare_map),
        Check(
            "integrated gradients",
            lambda m, x: a.integrated_gradients(m, x, steps=16 if quick else 50),
            compare_map,
        ),
        Check(
            "smoothgrad", lambda m, x: a.smoothgrad(m, x, samples=4 if quick else 16), compare_map
        ),
        Check(
            "occlusion",
            lambda m, x: a.occlusion(m, x, window=32, stride=16 if quick else 8),
            compare_map,
        ),
    ]
    if cam is not None:
        out += [
            Check("grad-cam", lambda m, x: a.grad_cam(m, x, layer=cam), compare_map),
            Check("grad-cam++", lambda m, x: a.grad_cam_plus_plus(m, x, layer=cam), compare_map),
            Check("cam", lambda m, x: a.cam(m, x, layer=cam), compare_map),
            Check("guided grad-cam", lambda m, x: a.guided_grad_cam(m, x, layer=cam), compare_map),
            Check("score-cam", lambda m, x: a.score_cam(m, x, layer=cam), compare_map),
        ]
    out.append(
        Check(
            "deletion/insertion",
            lambda m, x: faithfulness.deletion_insertion(
                m, x, a.saliency(m, x), steps=8 if quick else 20
            ),
            compare_curves,
        )
    )
    embed = spec.preset("embedding")[0] if spec.preset("embedding") else None
    if embed is not None:
        out.append(
            Check(
                "gallery features",
                lambda m, x: gallery_features(
                    m, gallery, layer=embed, model_key=key, input_size=size, use_cache=False
                ),
                compare_arrays(lambda r: r.features),
            )
        )
    acts = spec.preset("activations")
    if acts:
        out.append(
            Check(
                "channel maxima",
                lambda m, x: gallery_channel_maxima(
                    m, gallery, layer=acts[-1], model_key=key, input_size=size, use_cache=False
                ),
                compare_arrays(lambda r: r.maxima),
            )
        )
    synth = dataclasses.replace(
        synthesis.synthesis_preset(spec, "fourier"), steps=steps, size=min(size, 160)
    )
    image_of = compare_optimization(lambda r: float(r.losses[-1]), lambda r: r.images)
    out.append(
        Check(
            "class visualization",
            lambda m, x: synthesis.class_visualization(m, target=[1, 281], settings=synth),
            image_of,
        )
    )
    if acts:
        out.append(
            Check(
                "neuron visualization",
                lambda m, x: synthesis.neuron_visualization(
                    m, layer=acts[-1], channel=[0, 1], settings=synth
                ),
                image_of,
            )
        )
    layers, inv = inversion.inversion_preset(spec)
    if layers:
        inv = dataclasses.replace(inv, steps=steps)
        out.append(
            Check(
                "feature inversion",
                lambda m, x: inversion.feature_inversion(
                    m, x, layer=list(layers[:2]), settings=inv
                ),
                image_of,
            )
        )
    dream_layers = spec.preset("deepdream")
    if dream_layers:
        dream_settings = dream.DreamSettings(
            octaves=2 if quick else 3, steps_per_octave=4 if quick else 8, max_size=224
        )
        out.append(
            Check(
                "deepdream",
                lambda m, x: dream.deep_dream(m, x, layer=dream_layers[0], settings=dream_settings),
                compare_optimization(lambda r: float(r.losses[-1]), lambda r: r.image),
            )
        )
    out += [
        Check("fgsm", lambda m, x: adversarial.fgsm(m, x, epsilon=2 / 255), compare_attack),
        Check(
            "pgd",
            lambda m, x: adversarial.pgd(m, x, epsilon=2 / 255, steps=5 if quick else 10),
            compare_attack,
        ),
    ]
    style_layers, content = spec.preset("style"), spec.preset("content")
    if style_layers:
        texture = load_sample("brick") if "brick" in _sample_names() else None

        def texture_run(m: torch.nn.Module, x: torch.Tensor) -> object:
            sample = preprocess(texture, spec) if texture is not None else x
            return style.texture_synthesis(
                m, sample, layers=list(style_layers), size=(128, 128), steps=steps // 2, seed=0
            )

        style_image = style.resize_long_side(
            preprocess(load_sample("astronaut"), spec), 128
        )  # any second photo

        def gatys(m: torch.nn.Module, x: torch.Tensor) -> object:
            content_x = style.resize_long_side(x, 128)
            return style.style_transfer(
                m,
                content_x,
                style=style_image,
                style_layers=list(style_layers),
                content_layer=content[0],
                optimizer="adam",
                lr=0.02,
                steps=steps,
            )

        loss_image = compare_optimization(
            lambda r: float(r.losses[-1]), lambda r: r.image.astype(np.float32)
        )
        out.append(Check("texture (Gatys)", texture_run, loss_image))
        if content:
            out.append(Check("style transfer (Gatys)", gatys, loss_image))
    if not quick:
        feats = None

        def facets(m: torch.nn.Module, x: torch.Tensor) -> object:
            nonlocal feats
            if feats is None:
                feats = gallery_features(
                    m,
                    gallery,
                    layer=embed or acts[-1],
                    model_key=key,
                    input_size=size,
                    use_cache=False,
                ).features
            return multifaceted.multifaceted_class_visualization(
                m,
                target=281,
                gallery_images=gallery.images,
                gallery_features=feats,
                facets=2,
                settings=synth,
                compare_plain=False,
                mean_of=3,
            )

        out.append(
            Check(
                "multifaceted",
                facets,
                compare_optimization(lambda r: float(r.scores.mean()), lambda r: r.images),
            )
        )
    return out


def _sample_names() -> set[str]:
    from vizcore.data.images import list_samples

    return {s.name for s in list_samples()}


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float]:
    devices.synchronize(device)
    start = time.perf_counter()
    result = fn()
    devices.synchronize(device)
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="device to check (default: the best)")
    parser.add_argument("--reference", default="cpu", help="device to compare with (cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, Lite0 only (~1 min)")
    parser.add_argument("--models", nargs="*", default=None, help="model keys")
    parser.add_argument("--only", nargs="*", default=None, help="method names to run")
    parser.add_argument("--tf32", action="store_true", help="leave TF32 as PyTorch sets it")
    args = parser.parse_args(argv)
    try:
        asked = devices.resolve_device(args.device)
        reference = devices.resolve_device(args.reference)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    for choice in (asked, reference):
        if choice.fallback:
            print(f"Not available: {choice.fallback}", file=sys.stderr)
            return 2
    dev, ref = asked.device, reference.device
    if not args.tf32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    keys = args.models or (
        ["efficientnet_lite0"] if args.quick else ["efficientnet_lite0", "squeezenet1_1"]
    )
    gallery = builtin_gallery(per_photo=1 if args.quick else 3, seed=0)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    print(
        f"device {dev} ({name}) vs reference {ref}; torch {torch.__version__}; "
        f"{'quick' if args.quick else 'full'}; gallery {len(gallery)} images; "
        f"TF32 {'as PyTorch sets it' if args.tf32 else 'off'}"
    )
    began = time.perf_counter()
    rows: list[tuple[str, str, float, float, list[Verdict]]] = []
    failed = 0
    for key in keys:
        spec = get_spec(key)
        model_dev, model_ref = load_model(key, device=dev), load_model(key, device=ref)
        x = preprocess(load_sample("chelsea"), spec)
        for check in checks(key, args.quick, gallery):
            if args.only and check.name not in args.only:
                continue
            try:
                if dev.type != "cpu":  # warm-up: lazy CUDA start, cuDNN algorithm search
                    check.run(model_dev, x)
                got, t_dev = _timed(lambda c=check, m=model_dev, i=x: c.run(m, i), dev)
                want, t_ref = _timed(lambda c=check, m=model_ref, i=x: c.run(m, i), ref)
                verdicts = check.compare(got, want)
            except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported
                verdicts = [Verdict(f"error: {type(exc).__name__}: {exc}"[:90], 0.0, "", False)]
                t_dev = t_ref = float("nan")
            failed += not all(v.ok for v in verdicts)
            rows.append((key, check.name, t_ref, t_dev, verdicts))
            _print_row(rows[-1])
        if key == keys[0]:
            style_preset = _fast_style(dev, ref)
            failed += not all(v.ok for v in style_preset[4])
            rows.append(style_preset)
            _print_row(rows[-1])
    total = time.perf_counter() - began
    print(f"\n{len(rows)} checks, {failed} failed, {total:.0f} s in all.")
    return 1 if failed else 0


def _fast_style(dev: torch.device, ref: torch.device) -> tuple:
    """The shipped fast-style preset on both devices (it holds no classifier)."""
    x = preprocess(load_sample("chelsea"), get_spec("efficientnet_lite0"))
    preset_dev = fast_style.load_preset(device=dev)
    preset_ref = fast_style.load_preset(device=ref)
    styles = preset_dev.styles
    try:
        if dev.type != "cpu":
            fast_style.apply_style(preset_dev, x, style=styles[0])  # warm-up
        got, t_dev = _timed(lambda: fast_style.apply_style(preset_dev, x, style=styles[0]), dev)
        want, t_ref = _timed(lambda: fast_style.apply_style(preset_ref, x, style=styles[0]), ref)
        verdicts = compare_style(got, want)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        verdicts = [Verdict(f"error: {type(exc).__name__}: {exc}"[:90], 0.0, "", False)]
        t_dev = t_ref = float("nan")
    return ("fast_style preset", "fast style", t_ref, t_dev, verdicts)


def _print_row(row: tuple) -> None:
    model, method, t_ref, t_dev, verdicts = row
    speed = t_ref / t_dev if t_dev and t_dev == t_dev and t_dev > 0 else float("nan")
    status = "ok" if all(v.ok for v in verdicts) else "FAIL"
    detail = "; ".join(f"{v.metric} {v.value:.4g} ({v.bound})" for v in verdicts)
    print(
        f"{status:4} {model[:22]:22} {method[:22]:22} ref {t_ref:7.3f} s  dev {t_dev:7.3f} s  "
        f"x{speed:6.1f}  {detail}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
