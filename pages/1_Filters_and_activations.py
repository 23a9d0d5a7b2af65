"""Filters and activations: what the first layer detects, what a layer does with this image, and
which gallery patches excite a channel most."""

from __future__ import annotations

import numpy as np
import streamlit as st

from vizcore.core import render
from vizcore.core.layers import LayerNotFoundError
from vizcore.core.render import COLORMAPS
from vizcore.data.features import lookup_channel_maxima
from vizcore.data.gallery import GalleryError
from vizcore.inside.filters import SORT_ORDERS, apply_threshold
from vizui import gallery_view, how_it_works, index_view, inside_view
from vizui.frame import frame
from vizui.keep import keep_choice
from vizui.report_view import PageReport
from vizui.view_link import Control, int_in, one_of, restore, share, unless_set

ctx = frame(
    "Filters & activations",
    intro="Look at the weights of the network, at how one layer responds to the current image, and "
    "at the gallery patches that excite a channel most (Zeiler & Fergus 2014; Yosinski et al. "
    "2015; Girshick et al. 2014).",
)
P = "filters"
page_report = PageReport("Filters & activations", ctx)
page_report.downloads(P)  # the files are built on click, from every tab's figures below
tab_filters, tab_maps, tab_patches = st.tabs(
    ["Filters", "Activation maps", "Maximally activating patches"]
)

# ---------------------------------------------------------------------------------- filters
with tab_filters:
    first = inside_view.first_filters(ctx.model_key)
    f, c, kh, kw = first.weight_shape
    st.subheader("First-layer filters")
    st.markdown(
        f"`{first.layer}`: **{f} filters × {c} channels × {kh}×{kw}**, stride {first.stride[0]}. "
        "Each filter is scaled to its own min–max, so compare patterns, not brightness."
    )
    first_grid = inside_view.filter_grid(first.tiles, tile=48, columns=16)
    st.image(first_grid, width="content")
    page_report.figure("First-layer filters", first_grid, f"{first.layer}: {f}×{c}×{kh}×{kw}")
    if kh <= 3:
        st.caption(
            f"{kh}×{kw} kernels are tiny: edge and colour-contrast detectors are still visible, "
            "but AlexNet's famous Gabor-like 11×11 filters need a larger first kernel."
        )
    how_it_works.panel(
        "first_layer_filters",
        numbers={
            "layer": f"`{first.layer}`",
            "W": f"{f} × {c} × {kh}×{kw}",
            "pixels per filter and channel": f"{kh * kw} (AlexNet: 121)",
            "stride": f"{first.stride[0]}",
        },
    )

    st.subheader("A later layer's filter, kernel by kernel")
    convs = [name for name in inside_view.conv_layers(ctx.model_key) if name != first.layer]
    left, right = st.columns([2, 1])
    kernel_link = Control("kernel_layer", f"{P}_kernel_layer", one_of(convs),
                          convs[min(2, len(convs) - 1)])  # fmt: skip
    restore(kernel_link)
    layer = left.selectbox(
        "Conv layer", convs, key=f"{P}_kernel_layer",
        index=unless_set(f"{P}_kernel_layer", min(2, len(convs) - 1)) or 0,
    )  # fmt: skip
    weights_shape = inside_view.kernels(ctx.model_key, layer, 0).weight_shape
    filter_link = Control("filter", f"{P}_kernel_filter", int_in(range(weights_shape[0])), 0)
    restore(filter_link)
    index = right.number_input(
        "Filter", 0, weights_shape[0] - 1, unless_set(f"{P}_kernel_filter", 0),
        key=f"{P}_kernel_filter", help=f"0 … {weights_shape[0] - 1}",
    )  # fmt: skip
    share(kernel_link, filter_link)
    k = inside_view.kernels(ctx.model_key, layer, int(index))
    st.markdown(
        f"`{layer}`: weight shape **{' × '.join(map(str, k.weight_shape))}**, groups {k.groups}, "
        f"stride {k.stride[0]}."
    )
    if k.depthwise and k.depthwise_kernels01 is not None:
        st.info(
            "This is a **depthwise** convolution: each filter reads exactly one input channel, "
            "so a filter has a single kernel. Shown: every filter's kernel (each scaled on its "
            "own); "
            f"filter {int(index)} reads input channel {k.input_channels[0]}."
        )
        kernel_image = inside_view.filter_grid(k.depthwise_kernels01, tile=40, columns=24)
        st.image(kernel_image, width="content")
    elif k.kernels.shape[-1] == 1:
        n = k.kernels.shape[0]
        side = int(np.ceil(np.sqrt(n)))
        padded = np.full(side * side, 0.5, dtype=np.float32)
        padded[:n] = k.kernels01.reshape(-1)
        st.info(
            f"A 1×1 convolution: each of the {n} “kernels” is one number, a weight per input "
            "channel. Shown as a grid (grey = 0, white = positive, black = negative), row by row."
        )
        kernel_image = inside_view.upscale(render.to_uint8(padded.reshape(side, side)), 320)
        st.image(kernel_image, width="content")
    else:
        st.caption(
            f"Filter {int(index)}: {k.kernels.shape[0]} kernels, one per input channel it reads "
            "(grey = 0, white = positive, black = negative; one scale for the whole filter)."
        )
        kernel_image = inside_view.filter_grid(k.kernels01, tile=40, columns=24)
        st.image(kernel_image, width="content")
    page_report.figure(f"{layer}, filter {int(index)}", kernel_image, f"groups {k.groups}")
    page_report.params["kernels: layer, filter"] = f"{layer}, {int(index)}"

# ---------------------------------------------------------------------------- activation maps
layers = inside_view.map_layers(ctx.model_key)
preset = ctx.spec.preset("activations")
default_layer = preset[min(4, len(preset) - 1)] if preset else layers[0]
with tab_maps:
    st.subheader(f"Activation maps for “{ctx.image_label}”")
    c1, c2, c3 = st.columns(3)
    maps_links = (
        Control("maps_layer", f"{P}_maps_layer", one_of(layers), default_layer),
        Control("sort", f"{P}_maps_sort", one_of(SORT_ORDERS), SORT_ORDERS[0]),
    )
    restore(*maps_links)
    layer = c1.selectbox(
        "Layer", layers, index=unless_set(f"{P}_maps_layer", layers.index(default_layer)) or 0,
        key=f"{P}_maps_layer", help="Every conv, activation and block output of the model.",
    )  # fmt: skip
    sort = c2.radio("Sort channels by", SORT_ORDERS, horizontal=True, key=f"{P}_maps_sort",
                    format_func={"mean": "mean", "max": "max", "index": "index"}.get)  # fmt: skip
    share(*maps_links)
    colormap = c3.selectbox("Colormap", list(COLORMAPS), index=2, key=f"{P}_maps_cmap")
    try:
        acts = inside_view.activations(ctx.model_key, ctx.digest, ctx.x, layer, sort)
    except (ValueError, LayerNotFoundError) as exc:
        st.error(f"{exc}")
        st.stop()
    n_channels, h, w = acts.maps.shape
    top = float(acts.maps.max())
    c1, c2, c3 = st.columns(3)
    count_link = Control("count", f"{P}_maps_count", int_in(range(1, n_channels + 1)),
                         min(32, n_channels))  # fmt: skip
    restore(count_link)
    count = c1.slider(
        "Channels shown", 1, n_channels, unless_set(f"{P}_maps_count", min(32, n_channels)),
        key=f"{P}_maps_count",
    )  # fmt: skip
    share(count_link)
    threshold_pct = c2.slider(
        "Hide activations below (% of the layer max)", 0, 100, 0, key=f"{P}_maps_threshold"
    )
    per_channel = c3.toggle(
        "Scale each map on its own", value=False, key=f"{P}_maps_scale",
        help="Off: one scale for the layer, so weak channels look dark.",
    )  # fmt: skip
    threshold = threshold_pct / 100 * top if threshold_pct else None
    st.markdown(
        f"`{layer}`: **{n_channels} channels of {h}×{w}**; layer max {top:.3g}. Showing the "
        f"{count} channels with the largest {sort} activation"
        + (" (in index order)" if sort == "index" else "")
        + f": {', '.join(str(int(c)) for c in acts.order[: min(count, 12)])}"
        + ("…" if count > 12 else "")
    )
    grid = inside_view.activation_grid(
        acts.maps, acts.order, count=count, threshold=threshold, per_channel=per_channel,
        colormap=colormap,
    )  # fmt: skip
    st.image(grid, width="content")
    page_report.figure(f"Activation maps: {layer}", grid, f"{count} channels by {sort}")
    how_it_works.panel(
        "activations",
        numbers={
            "layer": f"`{layer}`",
            "A": f"{n_channels} × {h}×{w}",
            "channels all zero on this image": f"{int((acts.maxes <= 0).sum())} of {n_channels}",
            "one cell covers": f"≈ {ctx.x.shape[-1] / w:.0f} px",
        },
    )

    st.markdown("**One channel, large and over the image**")
    c1, c2 = st.columns([1, 2])
    most_active = int(np.argmax(acts.means))
    channel_link = Control("channel", f"{P}_maps_ch", int_in(range(n_channels)), most_active,
                           context=(ctx.model_key, ctx.digest, layer))  # fmt: skip
    restore(channel_link)
    channel = c1.number_input(
        "Channel", 0, n_channels - 1, key=f"{P}_maps_ch",
        on_change=keep_choice(f"{P}_maps_ch", (ctx.model_key, ctx.digest, layer),
                              default=most_active),
        help=f"Default: the channel most active (largest mean) here, {most_active}.",
    )  # fmt: skip
    share(channel_link)
    alpha = c1.slider("Overlay opacity", 0.0, 1.0, 0.5, key=f"{P}_maps_alpha")
    channel_map = apply_threshold(acts.maps[int(channel)], threshold)
    c1.caption(
        f"Channel {int(channel)}: mean {acts.means[int(channel)]:.3g}, max "
        f"{acts.maxes[int(channel)]:.3g}."
    )
    big = render.normalize01(channel_map)
    base = render.tensor_image(ctx.x.numpy())
    with c2:
        a, b = st.columns(2)
        big_map = render.colorize(render.resize_map(big, base.shape[:2]), colormap=colormap)
        over = render.overlay(base, big, alpha=alpha, colormap=colormap)
        a.image(big_map, caption=f"{layer}, channel {int(channel)}", width="stretch")
        b.image(over, caption="Over the model's input", width="stretch")
    page_report.figure(f"{layer}, channel {int(channel)}", big_map, colormap)
    page_report.figure(f"{layer}, channel {int(channel)} over the input", over, f"α {alpha}")
    page_report.params.update({
        "activation maps: layer": layer, "sort": sort, "channels shown": count,
        "threshold (% of max)": threshold_pct, "own scale per map": per_channel,
        "colormap": colormap, "channel": int(channel), "overlay opacity": alpha,
    })  # fmt: skip

# ------------------------------------------------------------------- maximally activating patches
with tab_patches:
    st.subheader("Maximally activating patches")
    st.caption(
        "For one channel, the gallery images whose best unit responds most, cropped to that unit's "
        "receptive field (computed from the kernel sizes, strides, paddings and dilations on the "
        "path, not guessed)."
    )
    idx = index_view.index_picker(P)
    if idx is not None and index_view.for_model(idx, ctx.model_key):
        index_view.patches_tab(idx, key=P, default_layer=default_layer)
        st.stop()  # what follows is the gallery's scan
    g = gallery_view.gallery_picker(P)
    spatial = layers
    c1, c2, c3 = st.columns(3)
    patch_layer_link = Control("patch_layer", f"{P}_patch_layer", one_of(spatial), default_layer)
    restore(patch_layer_link)
    p_layer = c1.selectbox(
        "Layer", spatial, index=unless_set(f"{P}_patch_layer", spatial.index(default_layer)) or 0,
        key=f"{P}_patch_layer",
    )  # fmt: skip
    size = ctx.spec.preprocessing.input_size
    try:
        acts_here = inside_view.activations(ctx.model_key, ctx.digest, ctx.x, p_layer, "mean")
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    n_ch = acts_here.maps.shape[0]
    patch_default = int(np.argmax(acts_here.means))
    patch_links = (
        Control("patch_channel", f"{P}_patch_channel", int_in(range(n_ch)), patch_default,
                context=(ctx.model_key, ctx.digest, p_layer)),
        Control("top_k", f"{P}_patch_k", int_in(range(1, 33)), 12),
    )  # fmt: skip
    restore(*patch_links)
    p_channel = c2.number_input(
        "Channel", 0, n_ch - 1, key=f"{P}_patch_channel",
        on_change=keep_choice(f"{P}_patch_channel", (ctx.model_key, ctx.digest, p_layer),
                              default=patch_default),
        help="Default: the channel most active (largest mean) on the current image, "
        f"{patch_default}; it follows the model, image and layer.",
    )  # fmt: skip
    top_k = c3.slider("Top k", 1, 32, unless_set(f"{P}_patch_k", 12), key=f"{P}_patch_k")
    share(patch_layer_link, *patch_links)
    stats = lookup_channel_maxima(g, layer=p_layer, model_key=ctx.model_key, input_size=size)
    if stats is None:
        st.info(
            f"The gallery ({len(g)} images) has not been scanned at `{p_layer}` yet: one forward "
            "pass per image up to that layer, then every channel's patches are instant (cached "
            "on disk)."
        )
        if st.button("Scan the gallery", key=f"{P}_patch_scan", type="primary"):
            from vizcore.data.features import gallery_channel_maxima

            try:
                gallery_view.run_with_progress(
                    "Scanning the gallery",
                    lambda on_step: gallery_channel_maxima(
                        ctx.model, g, layer=p_layer, model_key=ctx.model_key, input_size=size,
                        on_step=on_step,
                    ),
                    key=f"{P}_patch",
                )  # fmt: skip
            except (ValueError, GalleryError) as exc:
                st.error(str(exc))
                st.stop()
            st.rerun()
    else:
        try:
            ps = inside_view.patches(ctx.model_key, g.digest, g, p_layer, int(p_channel), top_k)
        except ValueError as exc:
            st.error(str(exc))
            st.stop()
        rf = ps.receptive_field
        page_report.params.update({
            "patches: layer, channel": f"{p_layer}, {int(p_channel)}", "top k": top_k,
            "gallery": f"{len(g)} images", "receptive field": f"{rf.size[0]:.0f} px",
        })  # fmt: skip
        st.markdown(
            f"`{p_layer}` channel **{int(p_channel)}**: receptive field **{rf.size[0]:.0f}×"
            f"{rf.size[1]:.0f} px**, units {rf.jump[0]:.0f} px apart, on a {size}×{size} input "
            f"({ps.map_shape[0]}×{ps.map_shape[1]} map). Patches at the border are clipped."
        )
        for i, full in enumerate(inside_view.patch_grid(ps, columns=6)):
            page_report.figure(f"Patch {i + 1}", np.asarray(ps.patches[i]), full)
        how_it_works.panel(
            "max_patches",
            numbers={
                "unit": f"`{p_layer}` channel {int(p_channel)}",
                "receptive field": f"{rf.size[0]:.0f}×{rf.size[1]:.0f} px",
                "top activation": f"{ps.values[0]:.3g}" if len(ps.values) else "n/a",
                "gallery": f"{len(g)} images",
            },
        )
page_report.seal()  # every control is published by now: the report's link is this view
