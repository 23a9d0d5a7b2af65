"""What every ``vizcore`` subcommand shares: errors and their exit status, the model options,
loading the model, and reading the input images."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "IMAGE_SUFFIXES",
    "PROG",
    "InputError",
    "Loaded",
    "UsageError",
    "add_model_options",
    "err",
    "expand",
    "load_input",
    "load_model",
]

PROG = "vizcore"
#: File suffixes taken from a folder (files named on the command line are always tried).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


class UsageError(Exception):
    """A usage error found after parsing (exit status 2)."""


class InputError(Exception):
    """One input that cannot be used (exit status 1, one line on stderr)."""


@dataclass
class Loaded:
    """The model to run, its spec, and what keeps a user model alive."""

    spec: object
    model: nn.Module
    owner: object = None


def err(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The ``model`` option group: a registry key, or your own model file, and the device."""
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


def expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; folders as their image files (by suffix, sorted, not recursive)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            yield path


def load_model(args: argparse.Namespace) -> Loaded:
    """The model the model options name (a registry key by default).

    Raises:
        UsageError: Options that do not go together, or a bad ``--device``.
        InputError: A model or class-name file that cannot be read.
    """
    from vizcore.core.devices import as_device
    from vizcore.models import registry

    user_options = [f"--{n}" for n in ("arch", "weights", "classes") if getattr(args, n)]
    try:
        device = as_device(args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.source is None:
        if user_options:
            raise UsageError(f"{', '.join(user_options)} need --source (your own model).")
        key = args.model or registry.DEFAULT_MODEL
        try:
            model = registry.load_model(key, device=device)
        except RuntimeError as exc:
            raise InputError(str(exc)) from None
        return Loaded(registry.get_spec(key), model)
    return _load_user_model(args, device)


def _load_user_model(args: argparse.Namespace, device: torch.device) -> Loaded:
    """Your own model (``--source``), read by :func:`vizcore.models.sources.load_user_model`."""
    from vizcore.models import sources

    if args.model is not None:
        raise UsageError("give either --model or --source, not both.")
    if args.source in ("torchvision", "timm") and not args.arch:
        raise UsageError(f"--source {args.source} needs --arch.")
    if args.source == "export" and args.weights is None:
        raise UsageError("--source export needs --weights FILE.pt2.")
    names = None
    if args.classes is not None:
        try:
            names = sources.parse_class_names(args.classes.read_bytes(), filename=args.classes.name)
        except (OSError, ValueError) as exc:
            raise InputError(f"{args.classes}: {exc}") from None
    try:
        user = sources.load_user_model(
            args.source,
            arch=args.arch,
            weights=None if args.weights is None else os.fspath(args.weights),
            class_names=names,
            device=device,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{args.weights or args.arch}: {exc}") from None
    return Loaded(user.spec, user.model, owner=user)


def load_input(path: Path, spec: object) -> tuple[object, torch.Tensor]:
    """The image at ``path`` and the model's input batch for it.

    Raises:
        InputError: The file is not an image that can be read.
    """
    from vizcore.data import images
    from vizcore.models.registry import preprocess

    try:
        image = images.load_image(os.fspath(path))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from None
    return image, preprocess(image, spec)


def progress_line(line: Callable[[Any, float], str]) -> Callable[[Any], None]:
    """An ``on_step`` callback for long jobs: ``line(info, seconds_so_far)`` rewritten in place
    on a terminal, else printed as its own line at most every 10 s (and at the end)."""
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()
    last = [0.0]

    def on_step(info: Any) -> None:
        now = time.perf_counter()
        if info.waited is not None or (not tty and now - last[0] < 10 and info.step < info.total):
            return
        last[0] = now
        text = line(info, now - t0)
        print(("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True)

    return on_step
