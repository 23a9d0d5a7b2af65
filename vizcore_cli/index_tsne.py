"""``vizcore index tsne``: a precomputed t-SNE map of an index, stored next to it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vizcore_cli.common import InputError, UsageError, progress_line

__all__ = ["add_parser", "index_tsne"]


def add_parser(isub: argparse._SubParsersAction) -> None:
    """The ``tsne`` action of ``vizcore index``."""
    from vizcore.data import index_tsne as vtsne

    tsne = isub.add_parser(
        "tsne",
        help="precompute a t-SNE map of an index (stored next to it, shown by the app)",
        description="A 2-D t-SNE map of every image of an index (or a seeded sample), from its "
        f"stored features: PCA to 50 dims, then openTSNE (Barnes-Hut up to "
        f"{vtsne.FFT_ABOVE:,} points, FFT gradient above). Written atomically into "
        f"INDEX/{vtsne.MAP_FOLDER.as_posix()}/; the Feature space page shows it.",
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


def index_tsne(args: argparse.Namespace) -> int:
    """``vizcore index tsne``: computes and stores the map; a summary line on stdout."""
    from vizcore.data import index_read
    from vizcore.data import index_tsne as vtsne

    try:
        idx = index_read.open_index(args.index)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n = len(idx) if args.sample is None else min(args.sample, len(idx))
    gradient = "FFT" if n > vtsne.FFT_ABOVE else "Barnes-Hut"
    print(f"t-SNE of {n} of {len(idx)} images ({gradient} gradient)", file=sys.stderr)
    try:
        result = vtsne.index_tsne(
            idx, layer=args.layer, sample=args.sample, perplexity=args.perplexity,
            n_iter=args.iterations, seed=args.seed, n_jobs=args.jobs,
            on_step=progress_line(lambda info, _s: f"t-SNE iteration {info.step}/{info.total}"),
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except RuntimeError as exc:  # openTSNE missing and too many points for the fallback
        raise InputError(str(exc)) from None
    if sys.stderr.isatty():
        print(file=sys.stderr)
    p = result.params
    print(f"{result.path}: {len(result.ids)} points, {p['library']}, gradient {p['gradient']}, "
          f"perplexity {p['perplexity']:g}, seed {p['seed']}, {p['seconds']:.1f} s")  # fmt: skip
    return 0
