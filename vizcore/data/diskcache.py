"""The on-disk cache folder shared by galleries and feature caches: atomic writes, bounded size.

The folder is ``$VIZCORE_CACHE_DIR`` when set, else ``~/.cache/vizcore``. Every file is written to a
temporary name in the same folder and renamed into place with :func:`os.replace`, so a reader (or a
second Streamlit session) never sees a half-written file, and an error leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

CACHE_ENV = "VIZCORE_CACHE_DIR"
_TMP_PREFIX = ".tmp-"


def cache_root() -> Path:
    """The cache folder (not created here)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vizcore"


def cache_subdir(name: str) -> Path:
    """``cache_root() / name``, created if missing."""
    path = cache_root() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` to a temporary name, then rename it to ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def touch(path: Path) -> None:
    """Mark ``path`` as recently used (eviction removes the least recently used files first)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _entries(folder: Path, pattern: str) -> Iterator[tuple[float, int, Path]]:
    for path in folder.glob(pattern):
        if path.name.startswith(_TMP_PREFIX) or not path.is_file():
            continue
        try:
            stat = path.stat()
        except OSError:
            continue
        yield stat.st_mtime, stat.st_size, path


def evict_oldest(
    folder: Path, max_bytes: int, *, pattern: str = "*", keep: Path | None = None
) -> int:
    """Delete the least recently used files in ``folder`` until it holds at most ``max_bytes``.

    Args:
        folder: The folder to bound.
        max_bytes: The size bound.
        pattern: Glob of the files that count.
        keep: A file never deleted (the one just written).

    Returns:
        Number of files deleted.
    """
    entries = sorted(_entries(folder, pattern))
    total = sum(size for _, size, _ in entries)
    removed = 0
    for _, size, path in entries:
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            total -= size
            removed += 1
    return removed


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    """Total size of the matching files in ``folder``."""
    return sum(size for _, size, _ in _entries(folder, pattern))
