"""``python -m vizcore_cli``: the ``vizcore`` command line."""

from vizcore_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
