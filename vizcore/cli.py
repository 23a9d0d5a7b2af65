"""The ``vizcore`` command line: predictions, attribution maps over images or folders, the
fast-style trainer and dataset indexes.

Usage::

    vizcore predict --model efficientnet_lite0 IMAGES...
    vizcore attribute --method grad-cam [--model KEY] [--target N] [--layer L] \\
        IMAGES_OR_FOLDERS... --out DIR
    vizcore train-style --styles marble mosaic --out my_styles.pt ...
    vizcore index build FOLDER --model KEY --layers L1,L2 --out INDEX [--engine ray]
    vizcore index tsne INDEX [--sample N | --all] [--perplexity P] [--seed S]

``python -m vizcore`` is the same program. A model is a registry key (``--model``) or your own
file (``--source torchvision|timm|export --weights FILE [--arch NAME] [--classes FILE]``, read
safely by :func:`vizcore.models.sources.load_user_model`).

Exit status: 0 when every image worked, 1 when a file or the model could not be used (one line
per bad file on stderr, the other files are still processed), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["ATTRIBUTION_METHODS", "IMAGE_SUFFIXES", "build_parser", "main"]

PROG = "vizcore"
#: File suffixes taken from a folder (files named on the command line are always tried).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def _method_id(key: str) -> str:
    """``grad_cam_plus_plus`` -> ``grad-cam++``: the command-line spelling of a method key."""
    return key.replace("_plus_plus", "++").replace("_", "-")


def _attribution_methods() -> dict[str, str]:
    from vizcore import attribution

    return {_method_id(key): key for key in attribution.METHODS}


#: Command-line method id (``grad-cam++``) -> the library's id (``grad_cam_plus_plus``).
ATTRIBUTION_METHODS: dict[str, str] = _attribution_methods()


class _UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


class _InputError(Exception):
    """One input that cannot be used (exit status 1, one line on stderr)."""


@dataclass
class _Loaded:
    """The model to run, its spec, and what keeps a user model alive."""

    spec: object
    model: nn.Module
    owner: object = None


def _err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Parser


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from vizcore.models import registry

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        default=None,
        choices=list(registry.MODELS),
        metavar="KEY",
        help=f"a registry model: {', '.join(registry.MODELS)} (default: {registry.DEFAULT_MODEL})",
    )
    g.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="cpu, cuda, cuda:N, mps or auto (default: $VIZCORE_DEVICE, else the best available)",
    )
    g.add_argument(
        "--source",
        choices=("torchvision", "timm", "export"),
        default=None,
        help="your own model instead of --model: an architecture + weights, or a .pt2 archive",
    )
    g.add_argument("--arch", default=None, help="torchvision or timm architecture name")
    g.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="state_dict (.pt/.pth/.bin/.safetensors) or torch.export archive (.pt2)",
    )
    g.add_argument(
        "--classes",
        type=Path,
        default=None,
        metavar="FILE",
        help="class names, one per line (or a JSON list/mapping)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``vizcore`` argument parser with its three subcommands."""
    from vizcore.style import train as train_fast_style

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CNN visualization from the shell: top-5 predictions, attribution maps, "
        "and the fast-style trainer. Runs offline on the bundled models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pred = sub.add_parser(
        "predict",
        help="print the top classes of each image",
        description="Print the model's top classes (index, probability, name) for each image.",
    )
    _add_model_options(pred)
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
    _add_model_options(attr)
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

    style = sub.add_parser(
        "train-style",
        help="train a fast-style preset",
        description=train_fast_style.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_fast_style.add_arguments(style)
    _add_index_parser(sub)
    return parser


def _add_index_parser(sub: argparse._SubParsersAction) -> None:
    from vizcore.data import index

    idx = sub.add_parser(
        "index",
        help="build a dataset index (features, thumbnails, per-channel top images)",
        description="Dataset indexes: see `vizcore index build --help` and "
        "`vizcore index tsne --help`.",
    )
    isub = idx.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = isub.add_parser(
        "build",
        help="index a folder of images (resumes or extends an existing index)",
        description="Index a folder of images (recursive) in one pass: per image the embedding "
        "features and a thumbnail, per channel of each --layers layer the top-k images and "
        "where the maximum is. Written in shards; run it again to resume after an interruption "
        "or to add new images. Corrupt files are listed and skipped.",
    )
    _add_model_options(build)
    build.add_argument("--layers", required=True, help="comma-separated layer names")
    build.add_argument("--out", type=Path, required=True, metavar="INDEX", help="index folder")
    build.add_argument(
        "--shard-size", type=int, default=index.DEFAULT_SHARD_SIZE, help="files per shard"
    )
    build.add_argument(
        "--top-k", type=int, default=index.DEFAULT_TOP_K, help="images kept per channel"
    )
    build.add_argument(
        "--batch-size", type=int, default=index.DEFAULT_BATCH_SIZE, help="images per forward"
    )
    build.add_argument("--workers", type=int, default=2, help="decode worker processes")
    build.add_argument(
        "--thumb-size", type=int, default=index.DEFAULT_THUMB_SIZE, help="thumbnail side (px)"
    )
    build.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: DataLoader decode workers and the model here (default); ray: decode and "
        "forwards on Ray actors (the cluster at --ray-address or RAY_ADDRESS, else a local Ray "
        "instance); needs pip install '.[scale]'",
    )
    build.add_argument(
        "--ray-address", default=None, help="Ray cluster to connect to (default: RAY_ADDRESS)"
    )
    build.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray instance")
    build.add_argument(
        "--ray-actors", type=int, default=None, help="model actors (default: one per GPU or CPU)"
    )
    build.add_argument("folder", type=Path, metavar="FOLDER")
    _add_tsne_parser(isub)


def _add_tsne_parser(isub: argparse._SubParsersAction) -> None:
    from vizcore.data import index_tsne

    tsne = isub.add_parser(
        "tsne",
        help="precompute a t-SNE map of an index (stored next to it, shown by the app)",
        description="A 2-D t-SNE map of every image of an index (or a seeded sample), from its "
        f"stored features: PCA to 50 dims, then openTSNE (Barnes-Hut up to "
        f"{index_tsne.FFT_ABOVE:,} points, FFT gradient above). Written atomically into "
        f"INDEX/{index_tsne.MAP_FOLDER.as_posix()}/; the Feature space page shows it.",
    )
    tsne.add_argument("index", type=Path, metavar="INDEX", help="an index folder")
    tsne.add_argument(
        "--layer", default=None, help="feature layer (default and only choice: the embedding layer)"
    )
    size = tsne.add_mutually_exclusive_group()
    size.add_argument("--sample", type=int, default=None, metavar="N", help="map N random images")
    size.add_argument("--all", action="store_true", help="map every image (the default)")
    tsne.add_argument("--perplexity", type=float, default=30.0, help="perplexity (default: 30)")
    tsne.add_argument("--iterations", type=int, default=500, help="steps after exaggeration")
    tsne.add_argument("--seed", type=int, default=0, help="seed of the sample and the map")
    tsne.add_argument("--jobs", type=int, default=2, help="openTSNE threads (default: 2)")


# --------------------------------------------------------------------------------------------
# Inputs and models


def _expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; folders as their image files (by suffix, sorted, not recursive)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def _load_model(args: argparse.Namespace) -> _Loaded:
    from vizcore.models import registry, sources

    user_options = [f"--{n}" for n in ("arch", "weights", "classes") if getattr(args, n)]
    from vizcore.core.devices import as_device

    try:
        device = as_device(args.device)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.source is None:
        if user_options:
            raise _UsageError(f"{', '.join(user_options)} need --source (your own model).")
        key = args.model or registry.DEFAULT_MODEL
        try:
            model = registry.load_model(key, device=device)
        except RuntimeError as exc:
            raise _InputError(str(exc)) from None
        return _Loaded(registry.get_spec(key), model)
    if args.model is not None:
        raise _UsageError("give either --model or --source, not both.")
    if args.source in ("torchvision", "timm") and not args.arch:
        raise _UsageError(f"--source {args.source} needs --arch.")
    if args.source == "export" and args.weights is None:
        raise _UsageError("--source export needs --weights FILE.pt2.")
    names = None
    if args.classes is not None:
        try:
            names = sources.parse_class_names(args.classes.read_bytes(), filename=args.classes.name)
        except (OSError, ValueError) as exc:
            raise _InputError(f"{args.classes}: {exc}") from None
    try:
        user = sources.load_user_model(
            args.source,
            arch=args.arch,
            weights=None if args.weights is None else os.fspath(args.weights),
            class_names=names,
            device=device,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise _InputError(f"{args.weights or args.arch}: {exc}") from None
    return _Loaded(user.spec, user.model, owner=user)


def _input(path: Path, spec: object) -> tuple[object, torch.Tensor]:
    from vizcore.data import images
    from vizcore.models.registry import preprocess

    try:
        image = images.load_image(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise _InputError(f"{path}: {exc}") from None
    return image, preprocess(image, spec)


# --------------------------------------------------------------------------------------------
# Commands


def _predict(args: argparse.Namespace) -> int:
    from vizcore.models.predict import predict

    if args.top < 1:
        raise _UsageError(f"--top must be at least 1, got {args.top}.")
    loaded = _load_model(args)
    categories = loaded.spec.categories()
    top = min(args.top, len(categories))
    failed = 0
    for path in _expand(args.images):
        try:
            _, x = _input(path, loaded.spec)
            result = predict(loaded.model, x, top_k=top, categories=categories)
        except _InputError as exc:
            _err(str(exc))
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


def _check_attribute_options(args: argparse.Namespace, loaded: _Loaded, method: str) -> str | None:
    from vizcore import attribution

    num_classes = len(loaded.spec.categories())
    if args.target is not None and not 0 <= args.target < num_classes:
        raise _UsageError(f"--target {args.target} is out of range 0..{num_classes - 1}.")
    uses_layer = attribution.METHODS[method].uses_layer
    if args.layer is not None and not uses_layer:
        raise _UsageError(f"--layer applies only to the CAM methods, not {args.method}.")
    layer = args.layer or _default_layer(loaded.spec, method)
    if uses_layer:
        names = {name for name, _ in loaded.model.named_modules() if name}
        if layer is None:
            raise _UsageError(f"{args.method} needs --layer: this model has no CAM preset.")
        if layer not in names:
            raise _UsageError(f"no layer {layer!r} in this model (names as in named_modules()).")
    return layer


def _unique_stem(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name)
    return name


def _step_printer(prefix: str):
    """An ``on_step`` callback that rewrites one progress line on a terminal."""
    if not sys.stderr.isatty():
        return None

    def on_step(info: object) -> None:
        step, total = getattr(info, "step", 0), getattr(info, "total", 0)
        print(f"\r{prefix} {step}/{total}", end="", file=sys.stderr, flush=True)

    return on_step


def _attribute(args: argparse.Namespace) -> int:
    from vizcore import attribution
    from vizcore.core import render

    method = ATTRIBUTION_METHODS[args.method]
    info = attribution.METHODS[method]
    loaded = _load_model(args)
    layer = _check_attribute_options(args, loaded, method)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _InputError(f"{args.out}: {exc}") from None
    paths = list(_expand(args.images))
    if not paths:
        raise _InputError("no image files found in " + ", ".join(map(str, args.images)) + ".")
    failed, used = 0, set()
    for i, path in enumerate(paths, start=1):
        prefix = f"[{i}/{len(paths)}] {path}"
        kwargs: dict[str, object] = {"target": args.target}
        if info.uses_layer:
            kwargs["layer"] = layer
        if info.slow:
            kwargs["on_step"] = _step_printer(prefix)
        try:
            _, x = _input(path, loaded.spec)
            result = info.fn(loaded.model, x, **kwargs)
        except (_InputError, ValueError) as exc:
            if kwargs.get("on_step") is not None:
                print(file=sys.stderr)
            _err(str(exc) if isinstance(exc, _InputError) else f"{path}: {exc}")
            failed += 1
            continue
        stem = _unique_stem(f"{path.stem}_{args.method}", used)
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
            model=np.str_(loaded.spec.key),
        )
        end = "\r" if kwargs.get("on_step") is not None else ""
        print(
            f"{end}{prefix}: target {result.target}, {result.seconds:.2f} s -> {stem}_*",
            file=sys.stderr,
            flush=True,
        )
    return 1 if failed else 0


def _train_style(args: argparse.Namespace) -> int:
    from vizcore.style import train as train_fast_style

    return train_fast_style.run(args)


def _index(args: argparse.Namespace) -> int:
    if args.index_command == "tsne":
        return _index_tsne(args)
    return _index_build(args)


def _progress_line(what: str):
    """An ``on_step`` that rewrites one line on a terminal, else prints one every 10 s."""
    import time

    tty = sys.stderr.isatty()
    last = [0.0]

    def on_step(info: object) -> None:
        now = time.perf_counter()
        if info.waited is not None or (not tty and now - last[0] < 10 and info.step < info.total):
            return
        last[0] = now
        line = f"{what} {info.step}/{info.total}"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    return on_step


def _index_tsne(args: argparse.Namespace) -> int:
    from vizcore.data import index_read, index_tsne

    try:
        idx = index_read.open_index(args.index)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    n = len(idx) if args.sample is None else min(args.sample, len(idx))
    gradient = "FFT" if n > index_tsne.FFT_ABOVE else "Barnes-Hut"
    print(f"t-SNE of {n} of {len(idx)} images ({gradient} gradient)", file=sys.stderr)
    try:
        result = index_tsne.index_tsne(
            idx, layer=args.layer, sample=args.sample, perplexity=args.perplexity,
            n_iter=args.iterations, seed=args.seed, n_jobs=args.jobs,
            on_step=_progress_line("t-SNE iteration"),
        )  # fmt: skip
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    except RuntimeError as exc:  # openTSNE missing and too many points for the fallback
        raise _InputError(str(exc)) from None
    if sys.stderr.isatty():
        print(file=sys.stderr)
    p = result.params
    print(f"{result.path}: {len(result.ids)} points, {p['library']}, gradient {p['gradient']}, "
          f"perplexity {p['perplexity']:g}, seed {p['seed']}, {p['seconds']:.1f} s")  # fmt: skip
    return 0


def _index_build(args: argparse.Namespace) -> int:
    import time

    from vizcore.data import index

    layers = [name.strip() for name in args.layers.split(",") if name.strip()]
    if not layers:
        raise _UsageError("--layers needs at least one layer name.")
    if not args.folder.is_dir():
        raise _UsageError(f"{args.folder} is not a folder.")
    engine: object = "local"
    if args.engine == "ray":
        from vizcore.data.index_ray import RayEngine, require_ray

        try:
            require_ray()  # before the model loads: say at once that Ray is missing
            engine = RayEngine(address=args.ray_address, num_cpus=args.ray_cpus,
                               actors=args.ray_actors)  # fmt: skip
        except (ValueError, RuntimeError) as exc:
            raise _UsageError(str(exc)) from None
    loaded = _load_model(args)
    embedding = loaded.spec.preset("embedding")
    if not embedding:
        raise _UsageError(f"model {loaded.spec.key} has no embedding preset layer.")
    tty = sys.stderr.isatty()
    last = [0.0]
    t0 = time.perf_counter()

    def on_step(info: object) -> None:
        now = time.perf_counter()
        if info.waited is not None or (not tty and now - last[0] < 10 and info.step < info.total):
            return
        last[0] = now
        rate = info.step / max(now - t0, 1e-9)
        line = f"indexing {info.step}/{info.total} images, {rate:.1f} images/s"
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    try:
        summary = index.build_index(
            args.folder,
            model=loaded.model,
            model_key=loaded.spec.key,
            layers=layers,
            out=args.out,
            shard_size=args.shard_size,
            top_k=args.top_k,
            batch_size=args.batch_size,
            num_workers=args.workers,
            thumb_size=args.thumb_size,
            embedding_layer=embedding[0],
            preprocessing=loaded.spec.preprocessing,
            on_step=on_step,
            engine=engine,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    except ConnectionError as exc:  # --engine ray: the cluster is not reachable
        raise _InputError(str(exc)) from None
    if tty:
        print(file=sys.stderr)
    for path, reason in summary.skipped:
        _err(f"{args.folder / path}: {reason}")
    print(
        f"{summary.path}: {summary.images} images "
        f"({summary.added} new, {summary.shards_kept} shards kept, {summary.shards_written} "
        f"written), skipped {len(summary.skipped)}, {summary.seconds:.1f} s, "
        f"{summary.images_per_second:.1f} images/s"
    )
    return 1 if summary.skipped else 0


_COMMANDS = {
    "predict": _predict,
    "attribute": _attribute,
    "train-style": _train_style,
    "index": _index,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 bad inputs, 2 usage).

    Args:
        argv: The arguments (without the program name); default ``sys.argv[1:]``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        code = _COMMANDS[args.command](args)
    except _UsageError as exc:
        _err(f"{args.command}: error: {exc}")
        return 2
    except _InputError as exc:
        _err(str(exc))
        return 1
    except SystemExit as exc:  # the trainer's own fatal messages
        if isinstance(exc.code, str):
            _err(exc.code)
            return 1
        return int(exc.code or 0)
    except KeyboardInterrupt:
        _err("interrupted.")
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
