"""The ``vizcore`` command line: predictions, attribution maps over images or folders, the
fast-style trainer and dataset indexes. A package beside the library: ``vizcore`` itself never
prints.

Usage::

    vizcore predict --model efficientnet_lite0 IMAGES...
    vizcore attribute --method grad-cam [--model KEY] [--target N] [--layer L] \\
        IMAGES_OR_FOLDERS... --out DIR
    vizcore visualize-class --model squeezenet1_1 --class 130 [--class 281] --out DIR
    vizcore train-style --styles marble mosaic --out my_styles.pt ...
    vizcore index build FOLDER --model KEY --layers L1,L2 --out INDEX [--engine ray]
    vizcore index tsne INDEX [--sample N | --all] [--perplexity P] [--seed S]

``python -m vizcore`` and ``python -m vizcore_cli`` are the same program. A model is a registry
key (``--model``) or your own file (``--source torchvision|timm|export --weights FILE [--arch
NAME] [--classes FILE]``, read safely by :func:`vizcore.models.sources.load_user_model`).

Exit status: 0 when every image worked, 1 when a file or the model could not be used (one line
per bad file on stderr, the other files are still processed), 2 for a usage error.

Modules: :mod:`~vizcore_cli.common` (errors, model options, inputs), :mod:`~vizcore_cli.attribute`
(``predict``, ``attribute``), :mod:`~vizcore_cli.visualize` (``visualize-class``),
:mod:`~vizcore_cli.style` (``train-style``),
:mod:`~vizcore_cli.index` (``index build``), :mod:`~vizcore_cli.index_tsne` (``index tsne``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from vizcore_cli import attribute, index, style, visualize
from vizcore_cli.attribute import ATTRIBUTION_METHODS
from vizcore_cli.common import IMAGE_SUFFIXES, PROG, InputError, UsageError, err

__all__ = ["ATTRIBUTION_METHODS", "IMAGE_SUFFIXES", "build_parser", "main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "predict": attribute.predict,
    "attribute": attribute.attribute,
    "visualize-class": visualize.visualize_class,
    "train-style": style.train_style,
    "index": index.index,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``vizcore`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="CNN visualization from the shell: top-5 predictions, attribution maps, "
        "class visualizations, the fast-style trainer and dataset indexes. Runs offline on "
        "the bundled models.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    attribute.add_parsers(sub)
    visualize.add_parser(sub)
    style.add_parser(sub)
    index.add_parser(sub)
    return parser


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
    except UsageError as exc:
        err(f"{args.command}: error: {exc}")
        return 2
    except InputError as exc:
        err(str(exc))
        return 1
    except SystemExit as exc:  # the trainer's own fatal messages
        if isinstance(exc.code, str):
            err(exc.code)
            return 1
        return int(exc.code or 0)
    except KeyboardInterrupt:
        err("interrupted.")
        return 130
    return code
