"""``python -m vizcore``: the :mod:`vizcore.cli` command line."""

from vizcore.cli import main

if __name__ == "__main__":  # importing vizcore.__main__ (pkgutil walks) must not run it
    raise SystemExit(main())
