"""Which layer should the CAM family use? A localization benchmark on both bundled models.

Run from the repository root: ``python bench/cam_layers.py [--composites 48] [--score-composites
3] [--quick]``; it writes ``bench/results/cam_layers.md``.

Composites: objects cropped from the bundled sample photos (chelsea's cat, the coffee cup, the
rocket, Grace Hopper in uniform, the cameraman's tripod, the temple, the dahlia) are verified
first: each crop alone must be classified by the model as one of its accepted classes, and the
model's own top class becomes that object's target (objects that fail are listed and left out).
Each composite pastes two objects with different targets at random, non-overlapping boxes (long
side 38-52 % of the input) on a neutral gray or a low-contrast texture (brick, grass, gravel).
Everything is seeded (``--seed``); composite ``i`` uses ``numpy.random.default_rng(seed + i)``.

For every candidate layer and method (Grad-CAM, Grad-CAM++, Score-CAM from
:mod:`vizcore.attribution`), each composite is explained once per object's target:

* **hit**: pointing game, the map's peak (at input resolution) lies inside the target's box;
* **both**: the peak is in the target's box for *both* targets of a composite (it moves with the
  class);
* **same**: both targets' peaks fall in the same object's box (the map ignores the class);
* **mass**: the map's sum inside the target's box over its sum inside both boxes (0.5 = no
  preference; blank maps count 0);
* **blank**: ``AttributionMap.is_blank`` (constant, in practice all zero);
* **neg**: fraction of the layer's activation values below zero.

Score-CAM costs one forward per channel (1,280 at Lite0's head), so it runs on the first
``--score-composites`` composites only, with both targets scored from one pass over the masked
images (the same formula as :func:`vizcore.attribution.score_cam`; the first
composite is checked against the library function at one layer and the run stops if they
differ).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("VIZCORE_OFFLINE", "1")

from vizcore import attribution as attr
from vizcore.core.hooks import forward_output_hooks, inference_session
from vizcore.core.layers import get_layer
from vizcore.data.images import load_sample, to_tensor01
from vizcore.models.registry import get_spec, imagenet_categories, load_model, preprocess

Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)


@dataclass(frozen=True)
class ObjectCrop:
    name: str
    sample: str
    box: Box
    accepted: tuple[str, ...]


OBJECTS: tuple[ObjectCrop, ...] = (
    ObjectCrop("cat", "chelsea", (20, 0, 400, 300), ("tabby", "tiger cat", "Egyptian cat")),
    ObjectCrop("cup", "coffee", (60, 0, 500, 400), ("espresso", "cup", "coffee mug")),
    ObjectCrop("rocket", "rocket", (200, 40, 440, 427), ("missile", "projectile", "space shuttle")),
    ObjectCrop(
        "uniform",
        "grace_hopper",
        (0, 0, 512, 600),
        ("military uniform", "suit", "bow tie", "Windsor tie"),
    ),
    ObjectCrop("tripod", "camera", (220, 160, 420, 512), ("tripod",)),
    ObjectCrop(
        "temple", "china", (60, 20, 380, 427), ("palace", "monastery", "bell cote", "stupa")
    ),
    ObjectCrop("flower", "flower", (160, 60, 470, 400), ("daisy",)),
)

CANDIDATES: dict[str, tuple[str, ...]] = {
    "efficientnet_lite0": (
        "blocks.13",
        "blocks.14",
        "blocks.15",
        "head.conv",
        "head.bn",
        "head.act",
    ),
    "squeezenet1_1": (
        "fire7",
        "fire8",
        "fire9.squeeze_act",
        "fire9.expand1x1_act",
        "fire9.expand3x3_act",
        "fire9",
        "conv10",
        "relu10",
    ),
}
GRADIENT_METHODS: dict[str, Callable[..., attr.AttributionMap]] = {
    "Grad-CAM": attr.grad_cam,
    "Grad-CAM++": attr.grad_cam_plus_plus,
}
BACKGROUNDS = ("gray", "brick", "grass", "gravel")


@dataclass(frozen=True)
class VerifiedObject:
    crop: ObjectCrop
    image: Image.Image
    target: int
    top_name: str
    probability: float
    accepted: bool


@dataclass(frozen=True)
class Composite:
    x: torch.Tensor
    targets: tuple[int, int]
    boxes: tuple[Box, Box]
    names: tuple[str, str]
    background: str


@dataclass
class Tally:
    hits: list[bool] = field(default_factory=list)
    both: list[bool] = field(default_factory=list)
    same: list[bool] = field(default_factory=list)
    mass: list[float] = field(default_factory=list)
    blank: list[bool] = field(default_factory=list)

    def add(self, maps: tuple[np.ndarray, np.ndarray], blank: tuple[bool, bool], c: Composite):
        peaks = [_peak(m) for m in maps]
        own = [_inside(peaks[k], c.boxes[k]) for k in range(2)]
        self.hits.extend(own)
        self.both.append(all(own))
        self.same.append(any(all(_inside(p, box) for p in peaks) for box in c.boxes))
        for k in range(2):
            self.blank.append(blank[k])
            self.mass.append(0.0 if blank[k] else _mass(maps[k], c.boxes[k], c.boxes[1 - k]))


def _peak(attribution_map: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(np.argmax(attribution_map)), attribution_map.shape)
    return int(x), int(y)


def _inside(point: tuple[int, int], box: Box) -> bool:
    left, top, right, bottom = box
    return left <= point[0] < right and top <= point[1] < bottom


def _box_sum(attribution_map: np.ndarray, box: Box) -> float:
    left, top, right, bottom = box
    return float(np.clip(attribution_map[top:bottom, left:right], 0, None).sum())


def _mass(attribution_map: np.ndarray, own: Box, other: Box) -> float:
    a, b = _box_sum(attribution_map, own), _box_sum(attribution_map, other)
    return a / (a + b) if a + b > 0 else 0.0


# --------------------------------------------------------------------------------------------
# Objects and composites


def verify_objects(model: torch.nn.Module, key: str) -> list[VerifiedObject]:
    """Classify each crop alone (short side resized to the input size); its top class is its
    target."""
    spec, names = get_spec(key), imagenet_categories()
    out = []
    for crop in OBJECTS:
        image = load_sample(crop.sample).convert("RGB").crop(crop.box)
        with torch.inference_mode():
            probs = torch.softmax(model(preprocess(image, spec, crop=False)), dim=1)[0]
        top = int(probs.argmax())
        out.append(
            VerifiedObject(
                crop, image, top, names[top], float(probs[top]), names[top] in crop.accepted
            )
        )
    return out


def _background(rng: np.random.Generator, size: int) -> tuple[Image.Image, str]:
    kind = str(rng.choice(BACKGROUNDS))
    gray = int(rng.integers(110, 146))
    if kind == "gray":
        return Image.new("RGB", (size, size), (gray, gray, gray)), kind
    texture = load_sample(kind).convert("RGB")
    side = int(rng.integers(200, 320))
    left = int(rng.integers(0, texture.width - side + 1))
    top = int(rng.integers(0, texture.height - side + 1))
    patch = texture.crop((left, top, left + side, top + side)).resize((size, size))
    # Low contrast: halfway to a flat gray, so the objects stand out as they do in a photo.
    return Image.blend(patch, Image.new("RGB", (size, size), (gray, gray, gray)), 0.5), kind


def _overlap(a: Box, b: Box, margin: int = 4) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def make_composite(objects: list[VerifiedObject], size: int, seed: int) -> Composite:
    """Two objects with different targets at random, non-overlapping boxes."""
    rng = np.random.default_rng(seed)
    while True:
        i, j = rng.choice(len(objects), size=2, replace=False)
        if objects[i].target != objects[j].target:
            break
    canvas, kind = _background(rng, size)
    picked = (objects[int(i)], objects[int(j)])
    sizes = []
    for obj in picked:
        long_side = int(rng.integers(int(0.38 * size), int(0.52 * size) + 1))
        scale = long_side / max(obj.image.size)
        sizes.append(tuple(max(1, round(s * scale)) for s in obj.image.size))
    while True:  # place both again until they do not overlap
        boxes: list[Box] = []
        for w, h in sizes:
            left, top = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            boxes.append((left, top, left + w, top + h))
        if not _overlap(boxes[0], boxes[1]):
            break
    for obj, (w, h), box in zip(picked, sizes, boxes, strict=True):
        canvas.paste(obj.image.resize((w, h), Image.Resampling.BICUBIC), box[:2])
    return Composite(
        to_tensor01(canvas),
        (picked[0].target, picked[1].target),
        (boxes[0], boxes[1]),
        (picked[0].crop.name, picked[1].crop.name),
        kind,
    )


# --------------------------------------------------------------------------------------------
# Layer statistics and Score-CAM for two targets in one pass


def layer_activations(model: torch.nn.Module, x: torch.Tensor, layers: tuple[str, ...]):
    captured: dict[str, torch.Tensor] = {}
    modules = [get_layer(model, name) for name in layers]
    by_module = dict(zip(map(id, modules), layers, strict=True))

    def hook(module, _inputs, output):
        captured[by_module[id(module)]] = output.detach().float().clone()

    with inference_session(model), torch.inference_mode(), forward_output_hooks(modules, hook):
        model(x.contiguous(memory_format=torch.channels_last))
    return captured


def score_cam_two(
    model: torch.nn.Module, x: torch.Tensor, acts: torch.Tensor, targets: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Score-CAM maps for two targets from one pass over the masked images.

    The same formula as ``attribution.score_cam``: masks are the channels upsampled
    (bilinear, ``align_corners=True``) and min-max scaled, weights the softmax over channels of
    the target logit of ``x * mask``, map ``relu(sum_k w_k A_k)`` upsampled bilinearly.
    """
    channels = acts.shape[1]
    scores = torch.empty((channels, 2))
    index = torch.tensor(targets)
    with inference_session(model), torch.inference_mode():
        for start in range(0, channels, attr.BATCH_SIZE):
            chunk = acts[:, start : start + attr.BATCH_SIZE]
            masks = F.interpolate(chunk, size=x.shape[-2:], mode="bilinear", align_corners=True)[0]
            low, high = torch.aminmax(masks.flatten(1), dim=1)
            masks = (masks - low.view(-1, 1, 1)) / (high - low + 1e-8).view(-1, 1, 1)
            batch = (x * masks[:, None]).contiguous(memory_format=torch.channels_last)
            scores[start : start + chunk.shape[1]] = model(batch)[:, index].float()
    out = []
    for k in range(2):
        raw = attr.cam_skeleton(acts[0], torch.softmax(scores[:, k], dim=0))
        up = F.interpolate(raw[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)
        out.append(up[0, 0].numpy().astype(np.float32))
    return out[0], out[1]


def _is_blank(attribution_map: np.ndarray) -> bool:
    return attr.AttributionMap(
        "score_cam", None, attribution_map, attribution_map, None, 0.0
    ).is_blank


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class ModelResult:
    key: str
    objects: list[VerifiedObject]
    tallies: dict[tuple[str, str], Tally]
    negative: dict[str, list[float]]
    composites: int
    score_composites: int
    backgrounds: dict[str, int]
    seconds: float
    score_check: str


def run_model(key: str, composites: int, score_composites: int, seed: int) -> ModelResult:
    start = time.perf_counter()
    model = load_model(key)
    size = get_spec(key).preprocessing.input_size
    objects = verify_objects(model, key)
    usable = [o for o in objects if o.accepted]
    layers = CANDIDATES[key]
    tallies = {(m, layer): Tally() for m in (*GRADIENT_METHODS, "Score-CAM") for layer in layers}
    negative: dict[str, list[float]] = {layer: [] for layer in layers}
    backgrounds: dict[str, int] = dict.fromkeys(BACKGROUNDS, 0)
    score_check = ""
    for n in range(composites):
        c = make_composite(usable, size, seed + n)
        backgrounds[c.background] += 1
        acts = layer_activations(model, c.x, layers)
        for layer in layers:
            negative[layer].append(float((acts[layer] < 0).float().mean()))
            for label, fn in GRADIENT_METHODS.items():
                results = [fn(model, c.x, target=t, layer=layer) for t in c.targets]
                tallies[label, layer].add(
                    (results[0].map, results[1].map), (results[0].is_blank, results[1].is_blank), c
                )
            if n < score_composites:
                maps = score_cam_two(model, c.x, acts[layer], c.targets)
                tallies["Score-CAM", layer].add(maps, (_is_blank(maps[0]), _is_blank(maps[1])), c)
                if n == 0 and layer == layers[0]:
                    ref = attr.score_cam(model, c.x, target=c.targets[0], layer=layer).map
                    diff = float(np.abs(ref - maps[0]).max() / max(float(np.abs(ref).max()), 1e-12))
                    if diff > 1e-3:
                        raise RuntimeError(f"Score-CAM pass differs from the library: {diff:.2e}")
                    score_check = f"{layer}, composite 0: max relative difference {diff:.1e}"
        print(
            f"{key}: composite {n + 1}/{composites} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return ModelResult(
        key,
        objects,
        tallies,
        negative,
        composites,
        min(score_composites, composites),
        backgrounds,
        time.perf_counter() - start,
        score_check,
    )


def _pct(values: list[bool] | list[float]) -> str:
    return f"{100 * float(np.mean(values)):3.0f}" if values else "  -"


def report(results: list[ModelResult], args: argparse.Namespace, load: tuple, end_load: tuple):
    lines = [
        f"# bench/cam_layers.py ({'--quick' if args.quick else 'defaults'}: {args.composites} "
        f"composites, Score-CAM on {args.score_composites}, seed {args.seed}), "
        f"{time.strftime('%Y-%m-%d')}, load at start: {' '.join(f'{v:.2f}' for v in load)}",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s). Percentages over "
        "2 targets x composites (hit, mass, blank) or over composites (both, same); neg is the "
        "mean fraction of negative activation values at the layer.",
        "",
    ]
    for r in results:
        lines += [f"## {r.key} ({r.seconds:.0f} s)", "", "Objects (crop alone):", ""]
        for o in r.objects:
            verdict = "used" if o.accepted else "left out (not an accepted class)"
            lines.append(
                f"- {o.crop.name} ({o.crop.sample} {o.crop.box}): {o.top_name} "
                f"({o.target}) p={o.probability:.2f}, {verdict}"
            )
        bg = ", ".join(f"{k} {v}" for k, v in r.backgrounds.items())
        lines += [
            "",
            f"Backgrounds: {bg}. Score-CAM check against attribution.score_cam: {r.score_check}.",
            "",
            "```",
            f"{'layer':<22}{'neg%':>5} | "
            + " | ".join(f"{m:<24}" for m in (*GRADIENT_METHODS, "Score-CAM")),
            f"{'':<22}{'':>5} | " + " | ".join("hit both same mass blank" for _ in range(3)),
        ]
        for layer in CANDIDATES[r.key]:
            cells = []
            for m in (*GRADIENT_METHODS, "Score-CAM"):
                t = r.tallies[m, layer]
                cells.append(
                    f"{_pct(t.hits)} {_pct(t.both):>4} {_pct(t.same):>4} {_pct(t.mass):>4} "
                    f"{_pct(t.blank):>5}"
                )
            lines.append(f"{layer:<22}{_pct(r.negative[layer]):>5} | " + " | ".join(cells))
        lines += ["```", ""]
    lines.append(f"load at end: {' '.join(f'{v:.2f}' for v in end_load)}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--composites", type=int, default=48)
    parser.add_argument("--score-composites", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--quick", action="store_true", help="12 composites, Score-CAM on 1")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/cam_layers.md")
    args = parser.parse_args()
    if args.quick:
        args.composites, args.score_composites = 12, 1
    load = os.getloadavg()
    results = [
        run_model(key, args.composites, args.score_composites, args.seed) for key in args.models
    ]
    text = report(results, args, load, os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
