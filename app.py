"""CNN Visualization Studio: home page (run with `streamlit run app.py`)."""

from __future__ import annotations

import re

import streamlit as st

from vizui import cached
from vizui.frame import existing_pages, frame
from vizui.report_view import PageReport


def _plain(text: str) -> str:
    """``text`` with Markdown's special characters escaped (class names come from user files)."""
    return re.sub(r"([\\`*_\[\]<>#|~$])", r"\\\1", text)


ctx = frame(
    "CNN Visualization Studio",
    intro="Look inside an image classifier (two bundled ImageNet nets, or your own), point and "
    "click: the techniques of "
    "CS231n's lecture “Visualizing and Understanding”.",
)

with st.expander("How to use this app", expanded=False):
    st.markdown(
        """
1. **Pick a model** in the sidebar. The two bundled models (EfficientNet-Lite0 and SqueezeNet 1.1)
   carry real ImageNet weights and work offline; torchvision's AlexNet, VGG-16, GoogLeNet and
   ResNet-50 work once their weights file is in torch's cache. **Your model** (below the picker)
   loads a torchvision or timm architecture with your weights file, or a `torch.export` archive.
2. **Pick an image**: a bundled sample photo, or upload your own (PNG, JPEG, WebP, …).
3. **Open a page** from the sidebar. Every page works on the model and image chosen here, and
   your choices carry across pages.
"""
    )

prediction = cached.top_classes(ctx.model_key, ctx.digest, ctx.x)
index, label, probability = prediction.top1

left, right = st.columns([1, 1.3], gap="large")
with left:
    st.image(ctx.image, caption=ctx.image_label, width="stretch")
    size = ctx.spec.preprocessing.input_size
    st.caption(
        f"Original {ctx.image.width}×{ctx.image.height} px; the model sees a {size}×{size} centre "
        f"crop, normalized as {ctx.spec.preprocessing.normalization}."
    )
with right:
    st.subheader("What the model sees")
    class_kind = "ImageNet class" if ctx.spec.class_names is None else "class"
    st.markdown(
        f"**{ctx.spec.label}** says: **{label}** with probability **{probability:.1%}** "
        f"({class_kind} {index})."
    )
    labels = [
        f"{name} ({i})" for name, i in zip(prediction.labels, prediction.indices, strict=True)
    ]
    # Native bars, not a Plotly chart: Plotly's script is the page's largest download and took
    # 1.5 s more of the browser's time to draw (bench/results/share_load.md).
    with st.container(key="home_top5"):
        st.markdown("**Top-5 classes** (softmax probability)")
        for name, p in zip(labels, prediction.probabilities, strict=True):
            st.progress(min(max(float(p), 0.0), 1.0), text=f"{_plain(name)}: {p:.1%}")
    st.caption(ctx.spec.description)
    page_report = PageReport("What the model sees", ctx)  # the input image is its figure
    page_report.params["model input"] = f"{size}×{size}, {ctx.spec.preprocessing.normalization}"
    page_report.scores["top-1"] = f"{label} ({probability:.1%})"
    page_report.table("Top-5 classes", ("class", "probability"),
                      [(name, round(float(p), 4)) for name, p in
                       zip(labels, prediction.probabilities, strict=True)])  # fmt: skip
    page_report.downloads("home")
    page_report.seal()

pages = [page for page in existing_pages() if page.path != "app.py"]
if pages:
    st.subheader("Techniques")
    per_row = min(len(pages), 3)
    # Row by row (one st.columns per row): links of a row line up whatever their captions.
    for start in range(0, len(pages), per_row):
        for column, page in zip(st.columns(per_row), pages[start : start + per_row], strict=False):
            with column:
                st.page_link(page.path, label=page.label, icon=page.icon)
                st.caption(page.caption)
