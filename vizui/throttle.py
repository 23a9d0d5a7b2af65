"""Time-based throttling of what a run sends to the browser while it runs.

A run's ``on_step`` is called after every optimization step (tens per second for a small image).
Each progress-bar update is a message to the browser, and each live frame is an image encoded,
stored in the media manager and fetched by the browser, all in the server process that also
runs the optimization. Sent on every step they made the app 2x slower than the library
(issue 19). A :class:`Throttle` lets an update through at most once per interval of wall time,
so the cost per second is bounded whatever the step rate; the bookkeeping that Stop needs (the
latest step and frame) is still done on every step.

Stop still works: Streamlit surfaces a rerun request inside the next Streamlit call, which is at
most one interval later.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

#: Seconds between two progress-bar updates (at most 4 per second).
PROGRESS_INTERVAL = 0.25
#: Seconds between two live frames (at most 2 per second).
FRAME_INTERVAL = 0.5
#: JPEG quality of live frames (a preview; the result and the downloads stay lossless).
PREVIEW_QUALITY = 80


class Throttle:
    """Lets an event through at most once per ``interval`` seconds; the first one always."""

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` returns seconds (monotonic); tests pass a fake one."""
        if not np.isfinite(interval) or interval < 0:
            raise ValueError(f"interval must be finite and non-negative seconds, got {interval}.")
        self.interval = float(interval)
        self._clock = clock
        self._last: float | None = None

    def ready(self) -> bool:
        """Whether an event may go through now (if so, the interval starts again)."""
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


def preview_jpeg(frame: np.ndarray, *, width: int, quality: int = PREVIEW_QUALITY) -> bytes:
    """A live frame as JPEG bytes, downscaled to ``width`` pixels when it is wider.

    ``st.image`` of an array encodes it at JPEG quality 100, decodes it again and, when the
    display width is smaller, resizes and encodes it a second time; JPEG bytes already at the
    display width are passed through as they are.
    """
    if width < 1:
        raise ValueError(f"width must be a positive number of pixels, got {width}.")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality must be in [1, 95], got {quality}.")
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(
            f"frame must be a uint8 (H, W) or (H, W, 3) array, got {array.dtype} {array.shape}."
        )
    image = Image.fromarray(array)
    if image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
