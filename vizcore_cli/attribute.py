"""``vizcore predict`` (top classes per image) and ``vizcore attribute`` (attribution maps)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vizcore_cli.common import (
    InputError,
    Loaded,
    UsageError,
    add_model_options,
    err,
    expand,
    load_input,
    load_model,
)

__all__ = ["ATTRIBUTION_METHODS", "add_parsers", "attribute", "predict"]


def _method_id(key: str) -> str:
    """``grad_cam_plus_plus`` -> ``grad-cam++``: the command-line spelling of a method key."""
    return key.replace("_plus_plus", "++").replace("_", "-")


def _attribution_methods() -> dict[str, str]:
    from vizcore import attribution

    return {_method_id(key): key for key in attribution.METHODS}


#: Command-line method id (``grad-cam++``) -> the library's id (``grad_cam_plus_plus``).
ATTRIBUTION_METHODS: dict[str, str] = _attribution_methods()


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` and ``attribute`` subcommands."""
    pred = sub.add_parser(
        "predict",
        help="print the top classes of each image",
        description="Print the model's top classes (index, probability, name) for each image.",
    )
    add_model_options(pred)
    pred.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    pred.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")

    attr = sub.add_parser(
        "attribute",
        help="write attribution maps for images or folders",
        description="Write, per image, <name>_<method>_overlay.png (the map over the model's "
        "input view), <name>_<method>_map.png (the colorized map) and <name>_<method>.npz "
        "(map, raw, target, layer, seconds).",
    )
    attr.add_argument(
        "--method", required=True, choices=list(ATTRIBUTION_METHODS), help="attribution method"
    )
    add_model_options(attr)
    attr.add_argument(
        "--target", type=int, default=None, help="class index to explain (default: the top-1)"
    )
    attr.add_argument(
        "--layer",
        default=None,
        help="layer for the CAM methods (default: the model's CAM preset)",
    )
    attr.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    attr.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")


def predict(args: argparse.Namespace) -> int:
    """``vizcore predict``: the top classes of each image on stdout."""
    from vizcore.models.predict import predict as top_classes

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}.")
    loaded = load_model(args)
    categories = loaded.spec.categories()
    top = min(args.top, len(categories))
    failed = 0
    for path in expand(args.images):
        try:
            _, x = load_input(path, loaded.spec)
            result = top_classes(loaded.model, x, top_k=top, categories=categories)
        except InputError as exc:
            err(str(exc))
            failed += 1
            continue
        print(path)
        for index, prob, label in zip(
            result.indices, result.probabilities, result.labels, strict=True
        ):
            print(f"  {int(index):>5}  {float(prob):6.1%}  {label}")
        sys.stdout.flush()
    return 1 if failed else 0


def _default_layer(spec: object, method: str) -> str | None:
    from vizcore import attribution

    if not attribution.METHODS[method].uses_layer:
        return None
    if method == "cam":
        layers = spec.preset("cam_features") or spec.preset("cam")
    else:
        layers = spec.preset("cam")
    return layers[0] if layers else None


def _check_attribute_options(args: argparse.Namespace, loaded: Loaded, method: str) -> str | None:
    from vizcore import attribution

    num_classes = len(loaded.spec.categories())
    if args.target is not None and not 0 <= args.target < num_classes:
        raise UsageError(f"--target {args.target} is out of range 0..{num_classes - 1}.")
    uses_layer = attribution.METHODS[method].uses_layer
    if args.layer is not None and not uses_layer:
        raise UsageError(f"--layer applies only to the CAM methods, not {args.method}.")
    layer = args.layer or _default_layer(loaded.spec, method)
    if uses_layer:
        names = {name for name, _ in loaded.model.named_modules() if name}
        if layer is None:
            raise UsageError(f"{args.method} needs --layer: this model has no CAM preset.")
        if layer not in names:
            raise UsageError(f"no layer {layer!r} in this model (names as in named_modules()).")
    return layer


def _unique_stem(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


def _step_printer(prefix: str) -> Callable[[object], None] | None:
    """An ``on_step`` callback that rewrites one progress line on a terminal."""
    if not sys.stderr.isatty():
        return None

    def on_step(info: object) -> None:
        step, total = getattr(info, "step", 0), getattr(info, "total", 0)
        print(f"\r{prefix} {step}/{total}", end="", file=sys.stderr, flush=True)

    return on_step


def _write_result(args: argparse.Namespace, stem: str, x: object, result: object, key: str) -> None:
    """``<stem>_overlay.png``, ``<stem>_map.png`` and ``<stem>.npz`` in ``--out``."""
    from vizcore.core import render

    heat = render.normalize01(np.clip(result.map, 0, None), percentile=99.5)
    view = render.tensor_image(x.detach().numpy())
    (args.out / f"{stem}_overlay.png").write_bytes(
        render.png_bytes(render.overlay(view, heat, alpha=0.5))
    )
    (args.out / f"{stem}_map.png").write_bytes(render.png_bytes(render.colorize(heat)))
    np.savez(
        args.out / f"{stem}.npz",
        map=result.map,
        raw=result.raw,
        target=np.int64(-1 if result.target is None else result.target),
        layer=np.str_(result.layer or ""),
        seconds=np.float64(result.seconds),
        method=np.str_(args.method),
        model=np.str_(key),
    )


def attribute(args: argparse.Namespace) -> int:
    """``vizcore attribute``: the maps of each image, one progress line per image on stderr."""
    from vizcore import attribution

    method = ATTRIBUTION_METHODS[args.method]
    info = attribution.METHODS[method]
    loaded = load_model(args)
    layer = _check_attribute_options(args, loaded, method)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{args.out}: {exc}") from None
    paths = list(expand(args.images))
    if not paths:
        raise InputError("no image files found in " + ", ".join(map(str, args.images)) + ".")
    failed, used = 0, set()
    for i, path in enumerate(paths, start=1):
        prefix = f"[{i}/{len(paths)}] {path}"
        kwargs: dict[str, object] = {"target": args.target}
        if info.uses_layer:
            kwargs["layer"] = layer
        if info.slow:
            kwargs["on_step"] = _step_printer(prefix)
        try:
            _, x = load_input(path, loaded.spec)
            result = info.fn(loaded.model, x, **kwargs)
        except (InputError, ValueError) as exc:
            if kwargs.get("on_step") is not None:
                print(file=sys.stderr)
            err(str(exc) if isinstance(exc, InputError) else f"{path}: {exc}")
            failed += 1
            continue
        stem = _unique_stem(f"{path.stem}_{args.method}", used)
        _write_result(args, stem, x, result, loaded.spec.key)
        end = "\r" if kwargs.get("on_step") is not None else ""
        print(
            f"{end}{prefix}: target {result.target}, {result.seconds:.2f} s -> {stem}_*",
            file=sys.stderr,
            flush=True,
        )
    return 1 if failed else 0
