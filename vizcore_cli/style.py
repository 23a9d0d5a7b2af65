"""``vizcore train-style``: the fast-style trainer of :mod:`vizcore.style.train`."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "train_style"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``train-style`` subcommand, with the trainer's own options and description."""
    from vizcore.style import train as train_fast_style

    style = sub.add_parser(
        "train-style",
        help="train a fast-style preset",
        description=train_fast_style.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_fast_style.add_arguments(style)


def train_style(args: argparse.Namespace) -> int:
    """``vizcore train-style``: runs the trainer (its fatal messages are ``SystemExit(str)``)."""
    from vizcore.style import train as train_fast_style

    return train_fast_style.run(args)
