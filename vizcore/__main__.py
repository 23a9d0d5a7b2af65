"""``python -m vizcore``: the :mod:`vizcore.cli` command line."""

from vizcore.cli import main

raise SystemExit(main())
