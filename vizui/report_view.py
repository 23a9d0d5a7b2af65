"""The "Download report" control: a page records what it shows, the files are built on click.

A page creates one :class:`PageReport` per run, draws its buttons (:meth:`PageReport.downloads`,
anywhere on the page), adds each figure it displays (the same array it passes to ``st.image``),
its parameters and scores, and calls :meth:`PageReport.seal` at its end to record the link that
reopens the view. The HTML and the zip are built by :mod:`vizcore.core.report` only when a button is
clicked (Streamlit runs a callable ``data`` on click, after the run), from everything this run
recorded, so recording costs nothing on an ordinary rerun.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import streamlit as st

from vizcore.core import report
from vizui import view_link
from vizui.frame import Context

#: Session-state key of the last sealed report (what a test, or a later feature, can read back).
LAST_REPORT = "vz_last_report"
_ACTIVE = "vz_active_report"


class PageReport:
    """What one run of a page showed, for its report."""

    def __init__(self, page: str, ctx: Context) -> None:
        self.page = page
        self.model = ctx.spec.label
        self.image = ctx.image_label
        self.params: dict[str, object] = {}
        self.scores: dict[str, object] = {}
        self.figures: list[report.Figure] = []
        self.tables: list[report.Table] = []
        self.link: str | None = None
        self.figure("Input", np.asarray(ctx.image.convert("RGB")), ctx.image_label)
        st.session_state[_ACTIVE] = self  # for record(): helpers that draw figures of this run

    def figure(self, title: str, image: np.ndarray, caption: str = "") -> None:
        """Record one displayed image (uint8 RGB, as shown)."""
        self.figures.append(report.Figure(title, np.asarray(image), caption))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """Record the numbers of a chart."""
        self.tables.append(report.Table(title, tuple(columns), tuple(tuple(r) for r in rows)))

    def seal(self) -> None:
        """Record the link to the view as it is at the end of the run (call last).

        The sealed report is also kept as the session's last one (:data:`LAST_REPORT`); it
        holds references to the arrays shown, not copies.
        """
        self.link = view_link.current_link()
        st.session_state[LAST_REPORT] = self

    def build(self) -> report.Report:
        """The report as recorded so far, with the link that reopens the view."""
        return report.Report(
            page=self.page,
            model=self.model,
            image=self.image,
            params=dict(self.params),
            scores=dict(self.scores),
            figures=tuple(self.figures),
            tables=tuple(self.tables),
            link=self.link,
        )

    def downloads(self, key: str) -> None:
        """The two download buttons (HTML report, zip of PNGs + params.json)."""
        stem = re.sub(r"[^a-z0-9]+", "_", self.page.lower()).strip("_") or "report"
        # A horizontal row, not columns: in a narrow column (the home page's right half) fixed
        # column shares cut the labels to "D…" and "Fi…" (seen in the screenshot).
        row = st.container(horizontal=True)
        row.download_button(
            "Download report (HTML)",
            lambda: report.to_html(self.build()),
            file_name=f"{stem}_report.html",
            mime="text/html",
            key=f"{key}_report_html",
            icon=":material/description:",
            help="One self-contained HTML file: every figure shown here, the model, the image, "
            "every parameter and score, and the link that reopens this view.",
        )
        row.download_button(
            "Figures (zip)",
            lambda: report.to_zip(self.build()),
            file_name=f"{stem}_figures.zip",
            mime="application/zip",
            key=f"{key}_report_zip",
            icon=":material/folder_zip:",
            help="Every figure as a full-resolution PNG, with params.json.",
        )


def record(title: str, image: np.ndarray, caption: str = "") -> None:
    """Add a displayed figure to this run's report, from a helper that has no handle on it.

    Does nothing when no page report was started in the session.
    """
    active = st.session_state.get(_ACTIVE)
    if active is not None:
        active.figure(title, np.asarray(image), caption)
