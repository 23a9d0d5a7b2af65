"""Feature space: nearest neighbours in feature vs pixel space, and a PCA / t-SNE map of a gallery
with thumbnails on hover."""

from __future__ import annotations

import numpy as np
import streamlit as st

from vizcore.core import render
from vizcore.inside import embedding
from vizui import gallery_view, how_it_works, index_view, inside_view
from vizui.frame import frame
from vizui.hover_thumbs import data_uri, hover_thumbnails
from vizui.precision_view import exact_toggle
from vizui.report_view import PageReport
from vizui.view_link import Control, int_in, one_of, restore, share, unless_set

ctx = frame(
    "Feature space",
    intro="Where images land in the network's last-layer feature space: their nearest neighbours "
    "(versus neighbours in raw pixels) and a 2-D map of a whole gallery (PCA, t-SNE).",
)
P = "fspace"
_SELECTED = f"{P}_selected"

idx = index_view.index_picker(P)
if idx is not None:
    index_view.feature_space_view(ctx, idx, key=P)
    st.stop()  # what follows is the gallery's
g = gallery_view.gallery_controls(P)
layers = list(dict.fromkeys(ctx.spec.preset("embedding") + ctx.spec.preset("activations")))
METHODS = ("tsne", "pca")
ITERATIONS = [250, 500, 750, 1000]
links = (
    Control("feature_layer", f"{P}_layer", one_of(layers), layers[0]),
    Control("metric", f"{P}_metric", one_of(embedding.METRICS), embedding.METRICS[0]),
    Control("neighbours", f"{P}_k", int_in(range(1, 13)), 8),
    Control("map", f"{P}_method", one_of(METHODS), METHODS[0]),
    Control("iterations", f"{P}_iter", one_of(ITERATIONS), 500),
    Control("seed", f"{P}_seed", int_in(range(10_001)), 0),
)
restore(*links)
layer = st.selectbox(
    "Feature layer", layers, key=f"{P}_layer",
    help="The first entry is the model's last feature layer (what its classifier reads). Conv maps "
    "are global-average pooled to one vector per image.",
)  # fmt: skip
exact = exact_toggle(P)
result = gallery_view.gallery_features(ctx, g, layer, key=P, exact=exact)
if result is None:
    share(*links)
    st.stop()
feats = result.features
page_report = PageReport("Feature space", ctx)
page_report.downloads(P)  # built on click from the figures below (the map as a table)
if st.session_state.get(f"{P}_gallery_digest") != g.digest:
    st.session_state[f"{P}_gallery_digest"] = g.digest
    st.session_state.pop(_SELECTED, None)

# ------------------------------------------------------------------------- nearest neighbours
st.subheader(f"Nearest neighbours of “{ctx.image_label}”")
c1, c2 = st.columns(2)
metric = c1.radio("Distance", embedding.METRICS, horizontal=True, key=f"{P}_metric",
                  format_func={"l2": "L2", "cosine": "cosine"}.get)  # fmt: skip
k = c2.slider("Neighbours", 1, 12, unless_set(f"{P}_k", 8), key=f"{P}_k")
comparison = embedding.neighbours(
    ctx.model, ctx.x, gallery=g, gallery_features=feats, layer=layer, k=k, metric=metric,
    cache_key=(ctx.model_key, ctx.digest), gallery_pixels=inside_view.pixel_vectors(g.digest, g),
)  # fmt: skip
left, right = st.columns([1, 6])
left.image(ctx.image, caption="Current image", width="stretch")
with right:
    st.markdown(f"**Feature space** (`{layer}`, {metric})")
    inside_view.thumbnail_row(g, comparison.feature.indices, comparison.feature.distances)
    st.markdown(f"**Pixel space** (32×32 RGB, {metric})")
    inside_view.thumbnail_row(g, comparison.pixel.indices, comparison.pixel.distances)
page_report.figure(f"Nearest in feature space ({layer}, {metric})",
                   render.grid(list(g.images[comparison.feature.indices]), columns=k, pad=2),
                   " · ".join(f"{g.labels[i]} {d:.3g}" for i, d in
                              zip(comparison.feature.indices, comparison.feature.distances,
                                  strict=True)))  # fmt: skip
page_report.figure(f"Nearest in pixel space ({metric})",
                   render.grid(list(g.images[comparison.pixel.indices]), columns=k, pad=2),
                   " · ".join(f"{g.labels[i]} {d:.3g}" for i, d in
                              zip(comparison.pixel.indices, comparison.pixel.distances,
                                  strict=True)))  # fmt: skip
st.caption(
    "Pixel neighbours share colours and layout; feature neighbours share content. With the "
    "built-in gallery both often find the same photo, because its crops share colours too: "
    "upload a labelled zip to see the difference on real classes."
)
how_it_works.panel(
    "neighbours",
    numbers={
        "φ": f"`{layer}`, {feats.shape[1]} numbers per image (averaged over positions)",
        "nearest in feature space": f"{comparison.feature.distances[0]:.3g} ({metric})",
        "nearest in pixel space": f"{comparison.pixel.distances[0]:.3g}",
        f"images in both top-{k} lists": str(
            len(set(comparison.feature.indices.tolist()) & set(comparison.pixel.indices.tolist()))
        ),
        "gallery": f"{len(g)} images",
    },
)

# ------------------------------------------------------------------------------------- map
st.subheader("Map of the gallery")
c1, c2, c3, c4 = st.columns(4)
method = c1.radio("Method", METHODS, horizontal=True, key=f"{P}_method",
                  format_func={"tsne": "t-SNE", "pca": "PCA"}.get)  # fmt: skip
# The slider offers only what t-SNE can use on this gallery (about a third of its size).
top = min(50, int(embedding.max_perplexity(len(feats))))
if top >= 3:
    low = 5 if top > 5 else 2
    perplexity_link = Control(
        "perplexity", f"{P}_perplexity_{low}_{top}", int_in(range(low, top + 1)), min(30, top)
    )
    restore(perplexity_link)
    perplexity = c2.slider(
        "Perplexity", low, top, unless_set(perplexity_link.key, min(30, top)),
        key=perplexity_link.key,
        disabled=method != "tsne",
        help=f"Roughly the number of neighbours each point keeps close; at most {top} for "
        f"{len(feats)} images (a third of the gallery).",
    )  # fmt: skip
else:
    perplexity_link = None
    perplexity = 2
    c2.caption(
        f"Perplexity: {embedding.max_perplexity(len(feats)):.0f} (only {len(feats)} images)."
    )
n_iter = c3.select_slider("Iterations", ITERATIONS, unless_set(f"{P}_iter", 500), key=f"{P}_iter",
                          disabled=method != "tsne",
                          help="After 250 early-exaggeration iterations.")  # fmt: skip
seed = c4.number_input("Seed", 0, 10_000, unless_set(f"{P}_seed", 0), key=f"{P}_seed",
                       disabled=method != "tsne")  # fmt: skip
share(*links, *([perplexity_link] if perplexity_link else []))
with st.spinner("Computing the map…" if method == "pca" else "Running t-SNE…"):
    fmap = inside_view.feature_map(
        ctx.model_key, layer, g.digest, feats, ctx.digest, ctx.x, method, float(perplexity),
        int(seed), int(n_iter),
    )  # fmt: skip
if fmap.method == "pca":
    st.caption(
        f"PCA: the two axes explain {fmap.explained[0]:.1%} and {fmap.explained[1]:.1%} of the "
        f"variance. The current image (★) is {fmap.placement}."
    )
else:
    st.caption(
        f"t-SNE (openTSNE, Barnes-Hut, after PCA to {fmap.params['pca_dims']} dims; perplexity "
        f"{fmap.params['perplexity']:.0f}, seed {fmap.params['seed']}) fitted in "
        f"{fmap.seconds - fmap.placement_seconds:.1f} s, once per gallery and settings. The "
        f"current image (★) is {fmap.placement}, in {fmap.placement_seconds:.1f} s. Distances "
        "between clusters mean little in t-SNE; neighbourhoods do."
    )
selected = st.session_state.get(_SELECTED)
fig = inside_view.scatter(fmap, g, selected=selected, current_label=ctx.image_label)
event = st.plotly_chart(fig, key="fspace-map", on_select="rerun", selection_mode="points",
                        width="stretch")  # fmt: skip
thumbs = dict(gallery_view.thumbnails(g.digest, g))
thumbs["current"] = data_uri(ctx.image)
captions = {str(i): f"{g.labels[i]} · {g.names[i]}" for i in range(len(g))}
captions["current"] = f"Current image: {ctx.image_label}"
hover_thumbnails("fspace-map", thumbs, captions=captions)
st.caption("Hover a point to see its image; click one to select it and see its neighbours.")
map_numbers = {"points": f"{len(g)} gallery images + the current one", "method": fmap.method}
page_report.params.update({
    "feature layer": layer, "distance": metric, "neighbours": k, "gallery": g.name,
    "map": fmap.method, **{f"map {key}": value for key, value in fmap.params.items()},
})  # fmt: skip
page_report.scores["map time (s)"] = round(fmap.seconds, 2)
map_rows = [(g.names[i], g.labels[i], *np.round(fmap.coords[i], 3)) for i in range(len(g))]
if fmap.query is not None:
    map_rows.append(("current image", ctx.image_label, *np.round(fmap.query, 3)))
page_report.table(f"Map of the gallery ({fmap.method})", ("image", "label", "x", "y"), map_rows)
if fmap.method == "tsne":
    map_numbers.update(
        perplexity=f"{fmap.params['perplexity']:.0f}",
        iterations=f"{fmap.params['early_exaggeration_iter']} + {fmap.params['n_iter']}",
        fit=f"{fmap.seconds - fmap.placement_seconds:.1f} s",
    )
else:
    map_numbers["variance explained"] = f"{fmap.explained[0]:.1%} + {fmap.explained[1]:.1%}"
how_it_works.panel("feature_map", numbers=map_numbers)

points = event.selection.points if event and event.selection else []
if points:
    point_id = str(points[0]["customdata"][0]) if points[0].get("customdata") else ""
    if point_id.isdigit() and int(point_id) != selected:
        st.session_state[_SELECTED] = int(point_id)
        st.rerun()
if selected is not None and 0 <= selected < len(g):
    st.markdown(f"**Selected: {g.names[selected]}** ({g.labels[selected]})")
    a, b = st.columns([1, 6])
    a.image(g.images[selected], caption=f"Selected: {g.names[selected]}", width="stretch")
    nb = embedding.nearest(feats[selected], feats, k=k, metric=metric, exclude=selected)
    with b:
        st.markdown(f"Its nearest neighbours in feature space (`{layer}`, {metric})")
        inside_view.thumbnail_row(g, nb.indices, nb.distances)
    page_report.figure(f"Selected: {g.names[selected]}", g.images[selected], g.labels[selected])
    page_report.figure("Its nearest neighbours", render.grid(list(g.images[nb.indices]),
                                                             columns=k, pad=2))  # fmt: skip
page_report.seal()
