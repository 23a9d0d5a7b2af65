"""The multifaceted class visualization section of the feature-visualization page.

Nguyen, Yosinski & Clune 2016: cluster the gallery images the model assigns to a class, start one
class visualization per cluster from the image nearest its centre, add a centre bias, and show the
facets beside the plain result. All math is in :mod:`vizcore.optvis.multifaceted`; this module
collects widget values, runs it behind Start (with progress and Stop) and draws the result kept in
the session.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from torch import nn

from vizcore.core import render
from vizcore.core.progress import StepInfo
from vizcore.data import features, gallery
from vizcore.optvis import multifaceted as mf
from vizui import gallery_view, how_it_works
from vizui import synthesis_view as sview
from vizui.cached import top_classes
from vizui.frame import Context
from vizui.report_view import PageReport
from vizui.view_link import Control, int_in, restore, share, unless_set

logger = logging.getLogger(__name__)

P = "featvis_mf"
_KNOWN = "featvis_mf_known_predictions"


def _stored_predictions(model_key: str, digest: str) -> mf.GalleryPredictions | None:
    """The gallery's predictions made earlier in this session (one gallery pass per model)."""
    return st.session_state.get(_KNOWN, {}).get((model_key, digest))


def _class_counts(preds: mf.GalleryPredictions, names: tuple[str, ...], top_k: int) -> str:
    counts = Counter(int(c) for row in preds.indices[:, :top_k] for c in row)
    best = counts.most_common(6)
    return ", ".join(f"{names[c]} ({n})" for c, n in best)


def render_multifaceted(ctx: Context, *, report: PageReport | None = None) -> None:
    """Controls, Start/Stop with progress, and the facets beside the plain result and the inits.

    The class and the number of facets travel in the link; the result shown goes to ``report``.
    """
    names = ctx.spec.categories()
    st.divider()
    st.markdown(
        "**Multifaceted class visualization** (Nguyen, Yosinski & Clune 2016). A class fires for "
        "several kinds of images (a cat's face, a whole cat, its fur); one visualization mixes "
        "them. Here the gallery images that the model classifies as the class are clustered in "
        "feature space (k-means), one optimization starts from the mean of the images nearest "
        "each cluster centre, and a **centre bias** rewards class evidence in the middle of the "
        "image and penalizes it at the borders, so that one object forms in the centre instead "
        "of many fragments. The plain class visualization (grey start, no centre bias) is shown "
        "beside it."
    )
    top1 = int(top_classes(ctx.model_key, ctx.digest, ctx.x, 1).indices[0])
    c1, c2 = st.columns([3, 2])
    class_key = f"{P}_class_{ctx.model_key}"
    links = (
        Control("facet_class", class_key, int_in(range(len(names))), top1),
        Control("facets", f"{P}_facets", int_in(range(1, 7)), 3),
    )
    restore(*links)
    target = c1.selectbox(
        "Class",
        list(range(len(names))),
        index=unless_set(class_key, top1) or 0,
        format_func=lambda i: f"{i}: {names[i]}",
        key=class_key,
        help="Defaults to the model's top-1 class for the current image.",
    )
    with c2:
        g = gallery_view.gallery_picker(P, describe=False)
    hint = c1.empty()  # under the Class box; replaced once a run has classified the gallery
    st.caption(g.description)
    c1, c2, c3, c4 = st.columns(4)
    facets = c1.slider("Facets (clusters)", 1, 6, unless_set(f"{P}_facets", 3), key=f"{P}_facets")
    share(*links)
    center_bias = c2.slider(
        "Centre bias β", 0.0, 10.0, 5.0, 0.5, key=f"{P}_bias",
        help="Weight of the term Σg·M/Σg − Σ(1−g)·relu(M)/Σ(1−g), where M is the class-evidence "
        "map of the last spatial layer (its mean is the class score) and g a centred Gaussian. "
        "0 = off; below about 1 it hardly changes anything; 5-10 gives one object in the middle.",
    )  # fmt: skip
    top_k = c3.radio(
        "Gallery images of the class", [5, 1], horizontal=True, key=f"{P}_topk",
        format_func={1: "top-1 prediction", 5: "class in the top-5"}.get,
        help="The model splits similar classes (tabby, tiger cat, Egyptian cat), so top-1 "
        "leaves few images per class; top-5 is the default.",
    )  # fmt: skip
    init = c4.radio(
        "Start each facet from", ["mean", "nearest"], horizontal=True, key=f"{P}_init",
        format_func={"nearest": "image nearest the centre", "mean": "mean of 15 nearest"}.get,
        help="The paper starts from the mean of the 15 images nearest each cluster centre: a "
        "blurry prior that the optimization turns into an object. From the single nearest "
        "image the result stays close to that photo.",
    )  # fmt: skip
    with st.expander("Optimization settings", expanded=False):
        has_relu6 = any(isinstance(m, nn.ReLU6) for m in ctx.model.modules())
        settings = sview.settings_controls(P, ctx.spec, has_relu6=has_relu6)
        c1, c2 = st.columns(2)
        seed = int(c1.number_input("Seed", 0, 10_000, 0, key=f"{P}_seed"))
        compare = c2.toggle("Also run the plain visualization", True, key=f"{P}_plain")
    layer = ctx.spec.preset("embedding")[0] if ctx.spec.preset("embedding") else None
    _members_hint(hint, _stored_predictions(ctx.model_key, g.digest), target, top_k, g, names)
    params = (ctx.model_key, g.digest, int(target), facets, center_bias, top_k, init, settings,
              seed, bool(compare))  # fmt: skip
    if sview.start_stop(P):
        if layer is None:
            st.error("This model has no embedding layer preset; pick another model.")
        else:
            _run(ctx, g, params, layer=layer, hint=hint)
    sview.show_interrupted(P, context=(ctx.model_key, g.digest))
    if stored := sview.stored_result(P):
        picture, result = _show(*stored, params=params, g=g)
        if report is not None:
            report.figure(f"Multifaceted: {result.title}", picture,
                          f"{result.steps_done} steps in {result.seconds:.1f} s")  # fmt: skip
            report.params.update({"multifaceted: class": f"{result.title} ({result.target})",
                                  "facets": len(result.images),
                                  "centre bias": result.center_bias})  # fmt: skip


def _members_hint(
    slot: DeltaGenerator,
    preds: mf.GalleryPredictions | None,
    target: int,
    top_k: int,
    g: gallery.Gallery,
    names: tuple[str, ...],
) -> None:
    """How many gallery images the model puts in the class, or what Start does first."""
    if preds is None:
        slot.caption(
            f"Start first classifies the {len(g)} gallery images (once per model and gallery) "
            "and reads their features (cached on disk), then optimizes one image per facet."
        )
        return
    members = mf.class_members(preds, target, top_k=top_k)
    which = "top-1" if top_k == 1 else "top-5"
    if len(members):
        slot.caption(
            f"{len(members)} of {len(g)} gallery images are classified as "
            f"**{names[target]}** ({which})."
        )
    else:
        slot.warning(
            f"No gallery image is classified as **{names[target]}** ({which}), so there are no "
            "facets: only the centre bias applies (one image from the default start). Classes "
            f"with images in this gallery: {_class_counts(preds, names, top_k)}."
        )


def _run(
    ctx: Context, g: gallery.Gallery, params: tuple, *, layer: str, hint: DeltaGenerator
) -> None:
    _, _, target, facets, center_bias, top_k, init, settings, seed, compare = params
    size = ctx.spec.preprocessing.input_size
    bar = st.progress(0.0, text="Reading the gallery features…")

    def gallery_step(info: StepInfo) -> bool:
        bar.progress(info.fraction, text=info.message)
        return True

    feats = features.gallery_features(
        ctx.model, g, layer=layer, model_key=ctx.model_key, input_size=size,
        on_step=gallery_step,
    )  # fmt: skip
    preds = _stored_predictions(ctx.model_key, g.digest)
    if preds is None:
        preds = mf.gallery_predictions(
            ctx.model, g, input_size=size, features=feats.features, on_step=gallery_step
        )
        st.session_state.setdefault(_KNOWN, {})[(ctx.model_key, g.digest)] = preds
    bar.empty()
    _members_hint(hint, preds, target, top_k, g, ctx.spec.categories())
    members = mf.class_members(preds, target, top_k=top_k)
    sview.run_with_progress(
        P,
        params,
        lambda on_step: mf.multifaceted_class_visualization(
            ctx.model,
            target=target,
            gallery_images=g.images[members],
            gallery_features=feats.features[members],
            facets=facets,
            center_bias=center_bias,
            init=init,
            settings=settings,
            compare_plain=compare,
            categories=ctx.spec.categories(),
            seed=seed,
            on_step=on_step,
        ),
    )
    if (entry := st.session_state.get(f"{P}_result")) and entry["params"] == params:
        entry["members"] = members


def _pct(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{100 * value:.0f}%"


def _show(
    old_params: tuple, result: mf.MultifacetedResult, *, params: tuple, g
) -> tuple[np.ndarray, mf.MultifacetedResult]:
    if old_params != params:
        st.caption("Shown: the last run (the settings have changed since; press Start).")
    if result.from_gallery:
        st.info(result.note)
    else:
        st.warning(result.note)
    entry = st.session_state.get(f"{P}_result", {})
    members = entry.get("members")
    k = len(result.images)
    cols = st.columns(k + (1 if result.plain is not None else 0))
    tiles = []
    for j in range(k):
        with cols[j]:
            averaged = int(result.init_counts[j])
            if result.from_gallery and averaged > 1:
                start_caption = (
                    f"start: mean of the {averaged} images nearest the centre · "
                    f"cluster of {result.cluster_sizes[j]}"
                )
            elif result.from_gallery:
                name = ""
                if members is not None and old_params[1] == g.digest:
                    name = g.names[int(members[result.init_indices[j]])] + " · "
                start_caption = f"start: {name}the image nearest the centre · cluster of " + str(
                    result.cluster_sizes[j]
                )
            else:
                start_caption = "start: default (no gallery image)"
            st.image(render.to_uint8(result.init_images[j]), caption=start_caption,
                     width="stretch")  # fmt: skip
            tile = render.to_uint8(result.images[j])
            tiles.append(tile)
            st.image(
                tile,
                caption=f"facet {j + 1} · logit {result.initial_scores[j]:.1f}→"
                f"{result.scores[j]:.1f} · p={result.probabilities[j]:.2f} · centre "
                f"{_pct(result.centre_fractions[j])}",
                width="stretch",
            )
    if result.plain is not None:
        with cols[-1]:
            st.markdown("&nbsp;")
            plain = render.to_uint8(result.plain.images[0])
            tiles.append(plain)
            st.image(
                plain,
                caption=f"plain · p={result.plain.probabilities[0]:.2f} · centre "
                f"{_pct(result.plain_centre_fraction)}",
                width="stretch",
            )
    st.caption(
        f"{result.title}: {result.steps_done} steps in {result.seconds:.1f} s"
        + (" (stopped)" if result.stopped else "")
        + f". Centre bias β = {result.center_bias:g}. “centre” = share of the positive class "
        "evidence (the map whose mean is the class score) that falls in the central Gaussian; "
        "higher means the class sits in the middle of the image."
    )
    picture = render.grid(tiles, columns=len(tiles), pad=2)
    sview.png_download(P, picture, name=f"multifaceted_{result.target}")
    how_it_works.panel(
        "multifaceted",
        numbers={
            "class c": f"{result.title} ({result.target})",
            "facets K": f"{len(result.images)}",
            "gallery images per facet": ", ".join(str(int(n)) for n in result.cluster_sizes),
            "S_c start → end": ", ".join(
                f"{a:.1f}→{b:.1f}"
                for a, b in zip(result.initial_scores, result.scores, strict=True)
            ),
            "β (centre bias)": f"{result.center_bias:g}",
        },
    )
    return picture, result
