"""The one offline switch: ``VIZCORE_OFFLINE`` turns off every download (weights, galleries).

Unset, empty, ``0``, ``false``, ``no`` or ``off`` (any case) mean online; any other value means
offline, so a typo errs on the side of never touching the network.
"""

from __future__ import annotations

import os

OFFLINE_ENV = "VIZCORE_OFFLINE"
_ONLINE_VALUES = frozenset({"", "0", "false", "no", "off"})


def is_offline() -> bool:
    """True when ``VIZCORE_OFFLINE`` is set to anything but an explicit "no" (see module doc)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in _ONLINE_VALUES
