"""Public mode: one switch for a share link many strangers open (``VIZCORE_PUBLIC=1``).

On a public server the app turns off model uploads and dataset downloads, accepts smaller
image uploads and caps every optimization's steps, so that one visitor cannot hold the server's
queue for minutes or fill its disk. Each limit is read where its widget is drawn.
"""

from __future__ import annotations

import os

PUBLIC_ENV = "VIZCORE_PUBLIC"
#: The most optimization steps a visitor may ask for in public mode.
MAX_STEPS = 200
#: The largest image upload in public mode (MB, as Streamlit's dropzone counts them).
IMAGE_UPLOAD_MB = 10


def is_public() -> bool:
    """True when ``VIZCORE_PUBLIC`` is set to anything but 0/false/no/off/empty."""
    return os.environ.get(PUBLIC_ENV, "").strip().lower() not in {"", "0", "false", "no", "off"}


def max_steps(limit: int) -> int:
    """A steps slider's upper bound: ``limit``, capped at :data:`MAX_STEPS` in public mode."""
    return min(limit, MAX_STEPS) if is_public() else limit


def capped(value: int, limit: int) -> int:
    """A slider's default within :func:`max_steps` (``limit`` the slider's own maximum)."""
    return min(value, max_steps(limit))


def image_upload_mb(default: int) -> int:
    """The image uploader's limit in MB: ``default``, or :data:`IMAGE_UPLOAD_MB` in public mode."""
    return min(default, IMAGE_UPLOAD_MB) if is_public() else default
