"""Where vizcore's bundled data lives: ``vizcore/data/`` read through :mod:`importlib.resources`.

The data ships inside the package (sample images and their index in ``data/samples/``, the
fast-style preset in ``data/styles/``, the image credits in ``data/CREDITS.md``), so it is found
the same way from a source checkout, an editable install and a wheel. Installed packages are
plain folders on disk; for the rare import from a zip file the data is extracted once to a
temporary folder that lives as long as the process.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.resources
from pathlib import Path

__all__ = ["DATA_PACKAGE", "data_dir"]

DATA_PACKAGE = "vizcore"
"""The package whose ``data/`` folder holds the bundled files."""

_EXTRACTED = contextlib.ExitStack()
atexit.register(_EXTRACTED.close)


@functools.cache
def _data_root() -> Path:
    resource = importlib.resources.files(DATA_PACKAGE).joinpath("data")
    if isinstance(resource, Path):
        return resource.resolve()
    return Path(_EXTRACTED.enter_context(importlib.resources.as_file(resource)))


def data_dir(*parts: str) -> Path:
    """The folder (or file) ``vizcore/data/<parts...>`` as a real path on disk.

    Args:
        parts: Path components under ``data/``, for example ``"samples"`` or
            ``"styles", "fast_styles.pt"``. None given: the ``data/`` folder itself.

    Returns:
        The path; it is not checked to exist (readers say what is missing).

    Raises:
        ValueError: A component is empty, absolute or climbs out with ``..``.
    """
    for part in parts:
        if not isinstance(part, str) or not part or part in (".", "..") or Path(part).is_absolute():
            raise ValueError(f"Bad data path component {part!r}; give names under vizcore/data.")
        if ".." in Path(part).parts:
            raise ValueError(f"Bad data path component {part!r}; '..' is not allowed.")
    return _data_root().joinpath(*parts)
