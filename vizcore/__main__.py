"""``python -m vizcore``: the ``vizcore`` command line, which lives beside the library in
:mod:`vizcore_cli` (imported only when run, so walking the package never loads it)."""

if __name__ == "__main__":  # importing vizcore.__main__ (pkgutil walks) must not run it
    from vizcore_cli import main

    raise SystemExit(main())
