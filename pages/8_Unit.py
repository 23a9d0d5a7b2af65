"""Unit: one channel of one layer, Microscope style: its feature visualization, its top dataset
patches, its activation on the current image and the classes it feeds."""

from __future__ import annotations

import streamlit as st

from vizcore.core.layers import LayerNotFoundError
from vizui import index_view, inside_view, unit_view
from vizui.frame import frame

ctx = frame(
    "Unit",
    intro="Everything about one channel on one page, as on OpenAI Microscope's unit pages: what "
    "it looks for (feature visualization, Olah et al. 2017), which dataset patches excite it "
    "most (Zeiler & Fergus 2014), how it responds to the current image, and which classes it "
    "feeds.",
)
P = unit_view.P

idx = index_view.index_picker(P)
if idx is not None and not index_view.for_model(idx, ctx.model_key):
    idx = None
if idx is not None:
    st.caption(index_view.describe(idx))
layers = idx.layers if idx is not None else inside_view.map_layers(ctx.model_key)
if (linked := unit_view.linked_unit(layers)) is not None:
    st.session_state[f"{P}_layer"], st.session_state[f"{P}_channel"] = linked
if st.session_state.get(f"{P}_layer") not in layers:
    preset = [n for n in ctx.spec.preset("activations") if n in layers]
    st.session_state[f"{P}_layer"] = preset[len(preset) // 2] if preset else layers[-1]
c1, c2 = st.columns([3, 1])
layer = c1.selectbox(
    "Layer", layers, key=f"{P}_layer",
    help="The index's layers when a dataset index is chosen, else every map layer.",
)  # fmt: skip
try:
    acts = inside_view.activations(ctx.model_key, ctx.digest, ctx.x, layer, "mean")
except (ValueError, LayerNotFoundError) as exc:
    st.error(str(exc))
    st.stop()
n_channels = acts.maps.shape[0]
if not 0 <= int(st.session_state.get(f"{P}_channel", 0)) < n_channels:
    st.session_state[f"{P}_channel"] = 0
channel = int(c2.number_input("Channel", 0, n_channels - 1, key=f"{P}_channel",
                              help=f"0 … {n_channels - 1}"))  # fmt: skip
unit_view.publish_unit(layer, channel)
st.subheader(f"`{layer}` · channel {channel}")

left, right = st.columns(2, gap="large")
with left:
    st.markdown("**Feature visualization**")
    unit_view.feature_visualization(ctx, layer, channel)
    st.markdown(f"**Activation on “{ctx.image_label}”**")
    unit_view.activation(ctx, layer, channel)
with right:
    st.markdown("**Top dataset patches**")
    if idx is not None:
        index_view.patches_view(idx, layer=layer, channel=channel, k=8, columns=4)
    else:
        unit_view.gallery_patches(ctx, layer, channel, 8)
    st.markdown("**Classes it feeds most**")
    unit_view.classes(ctx, layer, channel)
