"""Streamlit side of the Unit page: one channel of one layer, four views side by side.

The four views, as on OpenAI Microscope's unit pages: the channel's feature visualization
(:func:`vizcore.optvis.synthesis.neuron_visualization`, small and fast settings, behind a
button), its top dataset patches (from a dataset index, or the built-in gallery when none is
chosen), its activation on the current image, and the classes it feeds most
(:func:`vizcore.inside.units.channel_classes`).

The unit travels in the URL as ``?unit=LAYER:CHANNEL`` (:mod:`vizui.view_link`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import streamlit as st

from vizcore.core import render
from vizcore.data.features import gallery_channel_maxima, lookup_channel_maxima
from vizcore.data.gallery import GalleryError
from vizcore.inside import units
from vizcore.optvis import synthesis
from vizui import cached, gallery_view, inside_view, view_link
from vizui import synthesis_view as view
from vizui.frame import Context

P = "unit"
UNIT_PARAM = "unit"
_PUBLISHED = "unit_published"
#: The unit page's feature visualization: the model's Fourier preset, smaller and shorter.
FAST_SIZE = 128
FAST_STEPS = 32


def parse_unit(layers: list[str]) -> Callable[[str], tuple[str, int] | None]:
    """A parser of ``LAYER:CHANNEL`` (the layer one of ``layers``) for :func:`view_link.take`."""

    def parse(raw: str) -> tuple[str, int] | None:
        layer, sep, channel = raw.rpartition(":")
        if not sep or layer not in layers or not channel.isdigit():
            return None
        return layer, int(channel)

    return parse


def linked_unit(layers: list[str]) -> tuple[str, int] | None:
    """The unit in the URL: on the session's first run (:func:`view_link.take`), and later
    whenever the URL's unit differs from the one this page last published (a link from the
    Filters page switches here with a new ``?unit=``)."""
    parse = parse_unit(layers)
    first = view_link.take(UNIT_PARAM, parse)
    if first is not None:
        return first
    raw = st.query_params.get(UNIT_PARAM)
    if raw is None or raw == st.session_state.get(_PUBLISHED):
        return None
    return parse(raw)


def publish_unit(layer: str, channel: int) -> None:
    """Write the unit to the URL (always: the unit is what the page is about)."""
    value = f"{layer}:{int(channel)}"
    st.session_state[_PUBLISHED] = value
    view_link.publish(UNIT_PARAM, value)


def feature_visualization(ctx: Context, layer: str, channel: int) -> None:
    """The channel's feature visualization, computed on a button press (kept per unit)."""
    settings = dataclasses.replace(synthesis.synthesis_preset(ctx.spec, "fourier"),
                                   size=FAST_SIZE, steps=FAST_STEPS)  # fmt: skip
    target = units.pre_activation_layer(ctx.model, layer) or layer
    params = (ctx.model_key, layer, int(channel), FAST_SIZE, FAST_STEPS)
    where = f"`{layer}`" if target == layer else (
        f"`{target}`, the input of the rectifier `{layer}` (a ReLU passes no gradient where the "
        "channel is negative, so a start from grey would stay at 0)"
    )  # fmt: skip
    stored = view.stored_result(f"{P}_fv")
    if stored is not None and stored[0] == params:
        result = stored[1]
        st.image(result.images[0], caption=f"mean activation {result.scores[0]:.3g} after "
                 f"{result.steps_done} steps ({result.seconds:.1f} s)",
                 width="stretch")  # fmt: skip
        st.caption(f"Maximized: channel {int(channel)} of {where}.")
        return
    st.caption(
        f"The image that excites this channel most (mean over positions) at {where}: "
        f"{FAST_STEPS} steps of the Fourier parameterization at {FAST_SIZE} px (the Feature "
        "visualization page runs longer and larger; here about 20-80 s on two busy cores)."
    )
    # One button (the page's half-width column is too narrow for Start + Stop side by side);
    # another widget's click stops a run, and its last frame is shown (show_interrupted).
    if st.button("Visualize", key=f"{P}_fv_start", type="primary",
                 icon=":material/play_arrow:"):  # fmt: skip
        view.run_with_progress(
            f"{P}_fv", params,
            lambda on_step: synthesis.neuron_visualization(
                ctx.model, layer=target, channel=int(channel), settings=settings, on_step=on_step
            ),
            frame_width=200,
        )  # fmt: skip
        stored = view.stored_result(f"{P}_fv")
        if stored is not None and stored[0] == params:
            st.rerun()
    view.show_interrupted(f"{P}_fv", context=(ctx.model_key, layer, int(channel)))


def gallery_patches(ctx: Context, layer: str, channel: int, k: int) -> None:
    """Top patches from the built-in gallery (scanned once per layer, on a button press)."""
    g = gallery_view.builtin()
    size = ctx.spec.preprocessing.input_size
    stats = lookup_channel_maxima(g, layer=layer, model_key=ctx.model_key, input_size=size)
    if stats is None:
        st.caption(
            f"No dataset index is chosen, and the built-in gallery ({len(g)} crops) has not been "
            f"scanned at `{layer}` yet (one forward pass per image, then cached on disk)."
        )
        if st.button("Scan the gallery", key=f"{P}_scan"):
            try:
                gallery_view.run_with_progress(
                    "Scanning the gallery",
                    lambda on_step: gallery_channel_maxima(
                        ctx.model, g, layer=layer, model_key=ctx.model_key, input_size=size,
                        on_step=on_step,
                    ),
                    key=f"{P}_scan",
                )  # fmt: skip
            except (ValueError, GalleryError) as exc:
                st.error(str(exc))
                return
            st.rerun()
        return
    try:
        ps = inside_view.patches(ctx.model_key, g.digest, g, layer, int(channel), k)
    except ValueError as exc:
        st.error(str(exc))
        return
    st.caption(f"From the built-in gallery ({len(g)} crops of the bundled photos; choose a "
               "dataset index above for a real dataset).")  # fmt: skip
    inside_view.patch_grid(ps, columns=4)


def activation(ctx: Context, layer: str, channel: int) -> None:
    """The channel's map on the current image, over the image, with its rank in the layer."""
    acts = inside_view.activations(ctx.model_key, ctx.digest, ctx.x, layer, "mean")
    base = render.tensor_image(ctx.x.numpy())
    big = render.normalize01(acts.maps[int(channel)])
    a, b = st.columns(2)
    a.image(render.colorize(render.resize_map(big, base.shape[:2])), caption="Map",
            width="stretch")  # fmt: skip
    b.image(render.overlay(base, big, alpha=0.5), caption="Over the input", width="stretch")
    rank = int(np.flatnonzero(acts.order == int(channel))[0]) + 1 if len(acts.order) else 0
    st.caption(
        f"Mean {acts.means[int(channel)]:.3g}, max {acts.maxes[int(channel)]:.3g} on "
        f"“{ctx.image_label}”: rank {rank} of {len(acts.means)} channels by mean."
    )


@st.cache_data(max_entries=64, show_spinner=False)
def _classes(model_key: str, digest: str, layer: str, channel: int, method: str, _ctx: Context):
    head = _ctx.spec.facts().head if _ctx.spec.facts() is not None else None
    return units.channel_classes(
        _ctx.model, _ctx.x, layer=layer, channel=channel, method=method, head=head, top=6,
        categories=cached.categories(model_key),
    )  # fmt: skip


def classes(ctx: Context, layer: str, channel: int) -> None:
    """The classes the channel raises most and lowers most, and which measure says so."""
    facts = ctx.spec.facts()
    head = facts.head if facts is not None else None
    method = "weights" if units.weights_apply(head, layer) else "gradient"
    try:
        found = _classes(ctx.model_key, ctx.digest if method == "gradient" else "", layer,
                         int(channel), method, ctx)  # fmt: skip
    except ValueError as exc:
        st.error(str(exc))
        return
    names = cached.categories(ctx.model_key)
    for col, title, ids in zip(st.columns(2), ("Raises most", "Lowers most"),
                               (found.top, found.bottom), strict=True):  # fmt: skip
        rows = [{"class": names[int(i)], "score": float(found.scores[int(i)])} for i in ids]
        col.markdown(f"*{title}*")
        col.dataframe(rows, hide_index=True, width="stretch")
    if method == "weights":
        st.caption(
            f"`{layer}` feeds the classifier `{head.classifier}` through global average pooling: "
            "the score is its weight W[class, channel] (the same for every image)."
        )
    else:
        st.caption(
            "Score: ∂ logit / ∂ (a uniform shift of this channel's map) on the current image, "
            "by forward-mode autodiff (the gradient of each logit with respect to the channel, "
            f"summed over positions). `{layer}` does not feed the classifier directly, so the "
            "answer depends on the image."
        )
