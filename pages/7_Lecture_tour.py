"""Lecture tour: CS231n's "Visualizing and Understanding", step by step, on the current image."""

from __future__ import annotations

import streamlit as st

from vizui import tour
from vizui.frame import frame
from vizui.report_view import PageReport

ctx = frame(
    "Lecture tour",
    icon="🎓",
    intro="The lecture's techniques in its order, on the model and image chosen in the sidebar: "
    "a few sentences, the formula and a small live result each, with a link to the full page. "
    "Fast steps show at once; slow ones (optimizations) run when you press their button.",
)
st.caption(
    f"Model: **{ctx.spec.label}** · image: **{ctx.image_label}**. Change either in the sidebar "
    "and the tour follows."
)
page_report = PageReport("Lecture tour", ctx)  # the steps add what they show (report_view.record)
page_report.downloads("tour")
page_report.params.update({
    "steps": len(tour.STEPS),
    "slow steps (run on their button; short settings in each caption)": ", ".join(
        step.key for step in tour.STEPS if step.slow
    ),
})  # fmt: skip
for number, step in enumerate(tour.STEPS, 1):
    tour.render_step(number, step, ctx)
page_report.seal()
