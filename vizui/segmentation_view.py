"""The Attribution page's GrabCut section: segment the object from a class map.

Simonyan, Vedaldi & Zisserman 2014 (section 3.1): a saliency map's top pixels seed GrabCut's
foreground, its bottom pixels the background. The math is
:func:`vizcore.attribution.segmentation.grabcut_from_saliency`
(through :func:`vizui.attribution_view.segment`, cached); this module only draws the controls
and the three figures, which also go into the page's report.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from vizcore.core import render
from vizui import attribution_view as view
from vizui import cached, how_it_works, method_labels
from vizui.frame import Context
from vizui.report_view import PageReport

__all__ = ["render_section"]


def render_section(
    ctx: Context,
    params: Callable[[str], view.MethodParams],
    *,
    alpha: float,
    colormap: str,
    report: PageReport,
) -> None:
    """Seed-map choice, percentiles, smoothing and iterations; the seed map, seeds and mask.

    ``params(label)`` gives the page's current parameters of a method (so the seed map is the
    one the grid above shows, computed on the whole picture instead of the centre crop).
    """
    st.subheader("Segment the object from a map (Simonyan et al. 2014)")
    st.caption(
        "A class map knows where the object is without any segmentation labels: its top "
        "pixels seed GrabCut's foreground, its bottom pixels the background, and GrabCut's "
        "colour models fill in the outline. It runs on the whole picture (not the centre "
        "crop), so the object's surroundings are there to be left out."
    )
    seed_methods = [label for label in method_labels.METHODS if label not in view.SLOW]
    s1, s2, s3, s4, s5 = st.columns(5)
    seg_label = s1.selectbox(
        "Seed map",
        seed_methods,
        index=seed_methods.index("Saliency") if "Saliency" in seed_methods else 0,
        key="attribution_seg_map",
    )
    fg = s2.slider("Foreground above percentile", 50, 99, 85, 1, key="attribution_seg_fg")
    bg = s3.slider(
        "Background below percentile",
        1,
        90,
        10,
        1,
        key="attribution_seg_bg",
        help="The paper uses 95 / 30. On close-ups, where the object fills most of the frame, "
        "30% background seeds land on the object, so the defaults here are 85 / 10 with a "
        "smoothed map.",
    )
    sigma = s4.slider("Smooth the map (px)", 0, 16, 8, 1, key="attribution_seg_sigma")
    iterations = s5.slider("GrabCut iterations", 1, 10, 5, 1, key="attribution_seg_iters")
    full_x = cached.full_view_input(ctx.model_key, ctx.digest, ctx.image)
    full_image = render.tensor_image(full_x.numpy())
    try:
        seed_map = view.fast_map(ctx.model_key, ctx.digest + ":full", full_x, params(seg_label))
        segmentation = view.segment(
            ctx.model_key,
            ctx.digest,
            params(seg_label),
            _image=full_image,
            _map=seed_map.map,
            foreground=float(fg),
            background=float(bg),
            smooth_sigma=float(sigma),
            iterations=int(iterations),
        )
    except ValueError as exc:
        st.warning(str(exc))
    else:
        g1, g2, g3 = st.columns(3)
        shown = [
            (g1, "GrabCut seed map",
             view.overlay_array(full_image, seed_map.map, alpha=alpha, colormap=colormap),
             f"{seg_label} on the whole picture ({full_image.shape[1]}×{full_image.shape[0]})"),
            (g2, "GrabCut seeds", view.seed_overlay(full_image, segmentation.seeds),
             "Seeds: red sure foreground, blue sure background"),
            (g3, "GrabCut mask", view.mask_overlay(full_image, segmentation.mask),
             f"GrabCut mask ({segmentation.mask.mean():.0%} of the image, "
             f"{segmentation.seconds * 1000:.0f} ms)"),
        ]  # fmt: skip
        for column, title, picture, caption in shown:
            column.image(picture, caption=caption, width="stretch")
            report.figure(title, picture, caption)
        how_it_works.panel(
            "grabcut",
            numbers={
                "seed map": seg_label,
                "foreground above": f"P{fg}",
                "background below": f"P{bg}",
                "mask": f"{segmentation.mask.mean():.0%} of the image",
            },
        )
