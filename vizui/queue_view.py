"""Heavy jobs wait in the server's one queue (:data:`vizcore.core.jobs.HEAVY_JOBS`), and say so.

Every optimization, occlusion or Score-CAM run, gallery extraction and t-SNE of the app enters
:func:`heavy_job` before it starts. When the server's slots are taken, the page shows the job's
place in the line (updated about four times a second) and Stop (any rerun) leaves the line: the
rerun interrupts the wait at the next update and the queue drops the ticket in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from vizcore.core import jobs


def _say(slot: st.delta_generator.DeltaGenerator, label: str, position: int) -> None:
    queue = jobs.HEAVY_JOBS
    ahead = "next in line" if position == 1 else f"place {position} in line"
    slot.info(
        f"⏳ {label} waits for the server: {ahead} ({queue.running} of {queue.slots} heavy "
        "job(s) running for other users). It starts by itself; Stop leaves the line."
    )


@contextmanager
def heavy_job(label: str = "This run") -> Iterator[None]:
    """Hold a place in the heavy-job queue for the ``with`` body; show the line while waiting."""
    slot = st.empty()

    def on_wait(position: int) -> bool:
        _say(slot, label, position)  # a Streamlit call: a pending rerun (Stop) interrupts here
        return True

    try:
        with jobs.HEAVY_JOBS.slot(on_wait=on_wait):
            slot.empty()
            yield
    finally:
        slot.empty()
