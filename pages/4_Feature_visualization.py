"""Feature visualization: images made by the network (class and neuron visualization, feature
inversion, DeepDream). Every run is behind a Start button, shows progress, can be stopped."""

from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st
from torch import nn

from vizcore.core import render
from vizcore.core.layers import LayerNotFoundError, list_layers
from vizcore.data import images
from vizcore.optvis import dream, inversion, synthesis
from vizui import how_it_works
from vizui import synthesis_view as view
from vizui.frame import frame
from vizui.multifaceted_view import render_multifaceted
from vizui.report_view import PageReport
from vizui.view_link import Control, int_in, list_of, list_text, one_of, restore, share, unless_set

ctx = frame(
    "Feature visualization",
    intro="Optimize an image instead of the weights: the image a class or a channel likes most "
    "(Simonyan et al. 2014; Yosinski et al. 2015; Olah et al. 2017), the image whose features "
    "match the photo's (Mahendran & Vedaldi 2015), and DeepDream (Mordvintsev et al. 2015).",
)
P = "featvis"
names = ctx.spec.categories()
page_report = PageReport("Feature visualization", ctx)
page_report.downloads(P)  # built on click from every tab's result shown below


def _called_layers() -> list[str]:
    """Layers that produce an output once per forward (never a container its parent skips)."""
    facts = ctx.spec.facts()
    return facts.names() if facts is not None else list_layers(ctx.model)


has_relu6 = any(isinstance(m, nn.ReLU6) for m in ctx.model.modules())
tab_class, tab_neuron, tab_invert, tab_dream = st.tabs(
    ["Class visualization", "Neuron visualization", "Feature inversion", "DeepDream"]
)

DEFAULT_CLASSES = ("goldfish", "flamingo", "pineapple")

# ------------------------------------------------------------------------- class visualization
with tab_class:
    st.markdown(
        "Gradient ascent on the class score from a grey image: "
        r"$I^* = \arg\max_I S_c(I) - \lambda\lVert I\rVert^2$. The presets were measured on the "
        "bundled models; on EfficientNet-Lite0 only the Fourier parameterization with ±25% scale "
        "jitter and ReLU6 straight-through gives recognizable objects."
    )
    default_classes = [names.index(c) for c in DEFAULT_CLASSES if c in names]
    classes_link = Control("classes", f"{P}_cv_classes", list_of(range(len(names)), most=8),
                           default_classes, text=list_text)  # fmt: skip
    restore(classes_link)
    chosen = st.multiselect(
        "Classes (one image each, optimized together)",
        list(range(len(names))),
        default=unless_set(f"{P}_cv_classes", default_classes),
        format_func=lambda i: f"{i}: {names[i]}",
        max_selections=8,
        key=f"{P}_cv_classes",
    )
    share(classes_link)
    with st.expander("Settings", expanded=False):
        settings = view.settings_controls(f"{P}_cv", ctx.spec, has_relu6=has_relu6)
        seed = st.number_input("Seed", 0, 10_000, 0, key=f"{P}_cv_seed")
    started = view.start_stop(f"{P}_cv")
    params = (ctx.model_key, tuple(chosen), settings, int(seed))
    if started:
        if not chosen:
            st.error("Choose at least one class.")
        else:
            view.run_with_progress(
                f"{P}_cv",
                params,
                lambda on_step: synthesis.class_visualization(
                    ctx.model,
                    target=list(chosen),
                    settings=settings,
                    categories=names,
                    seed=int(seed),
                    on_step=on_step,
                ),
            )
    view.show_interrupted(f"{P}_cv", context=(ctx.model_key,))
    if stored := view.stored_result(f"{P}_cv"):
        old_params, result = stored
        if old_params != params:
            st.caption("Shown: the last run (the settings have changed since; press Start).")
        captions = [
            f"{t} · p={p:.2f}" for t, p in zip(result.titles, result.probabilities, strict=True)
        ]
        picture = view.image_grid(result.images, captions)
        page_report.figure("Class visualization", picture, " · ".join(captions))
        page_report.params["class visualization"] = ", ".join(result.titles)
        page_report.scores["class visualization: steps, seconds"] = (
            f"{result.steps_done}, {result.seconds:.1f}"
        )
        st.caption(
            f"{result.steps_done} steps in {result.seconds:.1f} s"
            + (" (stopped)" if result.stopped else "")
            + ". p = the model's softmax probability of the class on the final image."
        )
        view.downloads(f"{P}_cv", picture, result.frames, name="class_visualization")
        how_it_works.optimization_panel(
            "class_visualization",
            losses=result.losses,
            objective_name="Class score minus regularizers (mean over the images)",
            numbers={
                **{
                    f"S_c({t}), p": f"{sc:.3g}, {pc:.2f}"
                    for t, sc, pc in zip(
                        result.titles, result.scores, result.probabilities, strict=True
                    )
                },
                "steps": f"{result.steps_done}",
                "parameterization": settings.parameterization,
                "λ (L2 decay)": f"{getattr(settings.regularizers, 'l2_decay', 0.0):g}",
            },
        )

# ------------------------------------------------------------------------ neuron visualization
with tab_neuron:
    st.markdown(
        "The image that excites one channel of a layer most (mean over positions), or one "
        "neuron (the channel's centre unit)."
    )
    layer_options = _called_layers()
    preset_layers = [name for name in ctx.spec.preset("activations") if name in layer_options]
    default_layer = preset_layers[len(preset_layers) // 2] if preset_layers else layer_options[-1]
    c1, c2, c3, c4 = st.columns([3, 1, 1, 2])
    neuron_layer_link = Control("neuron_layer", f"{P}_nv_layer", one_of(layer_options),
                                default_layer)  # fmt: skip
    restore(neuron_layer_link)
    layer = c1.selectbox(
        "Layer", layer_options, key=f"{P}_nv_layer",
        index=unless_set(f"{P}_nv_layer", layer_options.index(default_layer)) or 0,
    )  # fmt: skip
    n_channels = synthesis.layer_channels(ctx.model, layer)
    neuron_links = (
        Control("neuron_channel", f"{P}_nv_channel", int_in(range(n_channels or 4096)), 0),
        Control("neuron_count", f"{P}_nv_count", int_in(range(1, 7)), 3),
        Control("neuron_mode", f"{P}_nv_mode", one_of(["channel", "neuron"]), "channel"),
    )
    restore(*neuron_links)
    first = c2.number_input(
        "First channel", 0, 4095, unless_set(f"{P}_nv_channel", 0), key=f"{P}_nv_channel"
    )
    count = c3.number_input(
        "Channels", 1, 6, unless_set(f"{P}_nv_count", 3), key=f"{P}_nv_count",
        help="Consecutive channels, one image each.",
    )  # fmt: skip
    mode = c4.radio(
        "Maximize",
        ["channel", "neuron"],
        horizontal=True,
        key=f"{P}_nv_mode",
        format_func={"channel": "channel mean", "neuron": "centre neuron"}.get,
    )
    share(neuron_layer_link, *neuron_links)
    channels = list(range(int(first), int(first) + int(count)))
    if n_channels is not None:
        st.caption(f"**{layer}** has **{n_channels}** channels, numbered 0 to {n_channels - 1}.")
        if channels[-1] >= n_channels:
            st.warning(
                f"Channel {channels[-1]} does not exist: choose a first channel of at most "
                f"{max(n_channels - int(count), 0)} for {int(count)} channel(s)."
            )
    with st.expander("Settings", expanded=False):
        nv_settings = view.settings_controls(f"{P}_nv", ctx.spec, has_relu6=has_relu6)
        nv_seed = st.number_input("Seed", 0, 10_000, 0, key=f"{P}_nv_seed")
    nv_params = (ctx.model_key, layer, tuple(channels), mode, nv_settings, int(nv_seed))
    if view.start_stop(f"{P}_nv"):
        try:
            view.run_with_progress(
                f"{P}_nv",
                nv_params,
                lambda on_step: synthesis.neuron_visualization(
                    ctx.model,
                    layer=layer,
                    channel=channels,
                    mode=mode,
                    settings=nv_settings,
                    seed=int(nv_seed),
                    on_step=on_step,
                ),
            )
        except LayerNotFoundError as exc:
            st.error(str(exc))
    view.show_interrupted(f"{P}_nv", context=(ctx.model_key,))
    if stored := view.stored_result(f"{P}_nv"):
        old_params, result = stored
        if old_params != nv_params:
            st.caption("Shown: the last run (the settings have changed since; press Start).")
        captions = [
            f"{t} · activation {s:.3g}" for t, s in zip(result.titles, result.scores, strict=True)
        ]
        picture = view.image_grid(result.images, captions)
        page_report.figure("Neuron visualization", picture, " · ".join(captions))
        page_report.params["neuron visualization"] = ", ".join(result.titles)
        page_report.scores["neuron visualization: steps, seconds"] = (
            f"{result.steps_done}, {result.seconds:.1f}"
        )
        st.caption(f"{result.steps_done} steps in {result.seconds:.1f} s.")
        view.downloads(f"{P}_nv", picture, result.frames, name="neuron_visualization")
        how_it_works.optimization_panel(
            "neuron_visualization",
            losses=result.losses,
            objective_name="Mean activation (mean over the images)",
            numbers={
                **{
                    f"mean A({t})": f"{sc:.3g}"
                    for t, sc in zip(result.titles, result.scores, strict=True)
                },
                "steps": f"{result.steps_done}",
            },
        )

# --------------------------------------------------------------------------- feature inversion
with tab_invert:
    st.markdown(
        "Find the image whose features at a layer match the photo's: "
        r"$I^* = \arg\min_I \lVert\phi(I)-\phi(I_0)\rVert^2/\lVert\phi(I_0)\rVert^2 + "
        r"\lambda_{TV}\,TV(I)$. Early layers keep almost everything; deep layers keep what "
        "matters for the class and lose colour and detail. The TV weight grows with depth."
    )
    preset_layers, inv_preset = inversion.inversion_preset(ctx.spec)
    all_layers = _called_layers()
    default_inv = (
        [preset_layers[0], preset_layers[len(preset_layers) // 2], preset_layers[-1]]
        if len(preset_layers) >= 3
        else list(preset_layers)
    )
    inv_key = f"{P}_inv_layers_{ctx.model_key}"
    inv_link = Control("inversion_layers", inv_key, list_of(all_layers, most=5), default_inv,
                       text=list_text)  # fmt: skip
    restore(inv_link)
    inv_layers = st.multiselect(
        "Layers (shallow to deep)",
        all_layers,
        default=unless_set(inv_key, default_inv),
        max_selections=5,
        key=inv_key,
    )
    share(inv_link)
    with st.expander("Settings", expanded=False):
        c1, c2, c3 = st.columns(3)
        inv_steps = c1.slider(
            "Steps", 1, 400, inv_preset.steps, key=f"{P}_inv_steps_{ctx.model_key}"
        )
        inv_lr = c2.slider(
            "Step size (Adam)",
            0.005,
            0.2,
            inv_preset.lr,
            0.005,
            key=f"{P}_inv_lr_{ctx.model_key}",
            format="%.3f",
        )
        inv_jitter = c3.slider(
            "Jitter (pixels)", 0, 16, inv_preset.jitter, key=f"{P}_inv_jitter_{ctx.model_key}"
        )
        c1, c2, c3 = st.columns(3)
        tv_scale = c1.select_slider(
            "TV weight × (all layers)",
            [0.0, 0.1, 0.3, 1.0, 3.0, 10.0],
            1.0,
            key=f"{P}_inv_tvscale",
            help="Scales every layer's measured TV weight.",
        )
        inv_size = c2.select_slider(
            "Image size", [96, 128, 160, 192, 224, 227], 160, key=f"{P}_inv_size"
        )
        inv_relu6 = c3.toggle(
            "ReLU6 straight-through", value=has_relu6, disabled=not has_relu6, key=f"{P}_inv_relu6"
        )
    known = {name: inversion.depth_tv_weight(ctx.model, name) for name in inv_layers}
    known |= {n: w for n, w in inv_preset.tv_weights if n in known}
    inv_settings = dataclasses.replace(
        inv_preset,
        steps=int(inv_steps),
        lr=float(inv_lr),
        jitter=int(inv_jitter),
        tv_weights=tuple((n, w * tv_scale) for n, w in known.items()),
        relu6_passthrough=bool(inv_relu6),
    )
    photo = images.resize_center_crop(ctx.image, size=int(inv_size))
    inv_params = (ctx.model_key, ctx.digest, tuple(inv_layers), inv_settings, int(inv_size))
    if view.start_stop(f"{P}_inv"):
        if not inv_layers:
            st.error("Choose at least one layer.")
        else:
            view.run_with_progress(
                f"{P}_inv",
                inv_params,
                lambda on_step: inversion.feature_inversion(
                    ctx.model,
                    images.to_tensor01(photo),
                    layer=inv_layers,
                    settings=inv_settings,
                    on_step=on_step,
                ),
                frame_width=700,
            )
    view.show_interrupted(f"{P}_inv", context=(ctx.model_key, ctx.digest))
    if stored := view.stored_result(f"{P}_inv"):
        old_params, result = stored
        if old_params != inv_params:
            st.caption("Shown: the last run (the settings have changed since; press Start).")
        captions = ["original"] + [
            f"{name} · TV {w:g} · error {e:.2f}"
            for name, w, e in zip(
                result.layers, result.tv_weights, result.relative_errors, strict=True
            )
        ]
        picture = view.image_grid(
            np.concatenate([result.original[None], result.images]),
            captions,
            columns=len(captions),
            width=200,
        )
        page_report.figure("Feature inversion", picture, " · ".join(captions))
        page_report.scores["feature inversion: steps, seconds"] = (
            f"{result.steps_done}, {result.seconds:.1f}"
        )
        st.caption(
            f"{result.steps_done} steps in {result.seconds:.1f} s. error = "
            "‖φ(I) − φ(I₀)‖² / ‖φ(I₀)‖² on the final image."
        )
        view.downloads(f"{P}_inv", picture, result.frames, name="feature_inversion")
        how_it_works.optimization_panel(
            "feature_inversion",
            losses=result.losses,
            objective_name="Relative feature error + λ_TV·TV (mean over the layers)",
            numbers={
                **{
                    f"error at `{name}`": f"{err:.3f} (λ_TV {tv:g})"
                    for name, err, tv in zip(
                        result.layers, result.relative_errors, result.tv_weights, strict=True
                    )
                },
                "steps": f"{result.steps_done}",
            },
        )

# ----------------------------------------------------------------------------------- DeepDream
with tab_dream:
    st.markdown(
        "Amplify whatever a layer sees in the photo: gradient ascent on ½·mean(A²) over an "
        "octave pyramid with jitter. Shallow layers paint edges and stripes, deeper ones eyes, "
        "snouts and fur."
    )
    dream_layers = dream.deepdream_layers(ctx.spec, ctx.model)
    c1, c2, c3 = st.columns(3)
    dream_default = min(1, len(dream_layers) - 1)
    dream_link = Control("dream_layer", f"{P}_dd_layer", one_of(dream_layers),
                         dream_layers[dream_default])  # fmt: skip
    restore(dream_link)
    dream_layer = c1.selectbox(
        "Layer", dream_layers, index=unless_set(f"{P}_dd_layer", dream_default) or 0,
        key=f"{P}_dd_layer",
    )  # fmt: skip
    share(dream_link)
    octaves = c2.slider("Octaves", 1, 6, 4, key=f"{P}_dd_octaves")
    octave_scale = c3.slider("Octave scale", 1.1, 2.0, 1.4, 0.05, key=f"{P}_dd_scale")
    c1, c2, c3, c4 = st.columns(4)
    per_octave = c1.slider("Steps per octave", 1, 40, 10, key=f"{P}_dd_steps")
    dd_lr = c2.slider("Step size (×1/255)", 0.25, 6.0, 1.5, 0.25, key=f"{P}_dd_lr")
    dd_jitter = c3.slider("Jitter (pixels)", 0, 64, 32, key=f"{P}_dd_jitter")
    dd_size = c4.select_slider(
        "Longest side", [128, 192, 256, 320, 400, 512], 400, key=f"{P}_dd_size"
    )
    dd_relu6 = st.toggle(
        "ReLU6 straight-through", value=False, disabled=not has_relu6, key=f"{P}_dd_relu6"
    )
    dd_settings = dream.DreamSettings(
        octaves=int(octaves),
        octave_scale=float(octave_scale),
        steps_per_octave=int(per_octave),
        lr=float(dd_lr) / 255,
        jitter=int(dd_jitter),
        max_size=int(dd_size),
        relu6_passthrough=bool(dd_relu6),
    )
    dd_params = (ctx.model_key, ctx.digest, dream_layer, dd_settings)
    if view.start_stop(f"{P}_dd"):
        view.run_with_progress(
            f"{P}_dd",
            dd_params,
            lambda on_step: dream.deep_dream(
                ctx.model,
                images.to_tensor01(ctx.image),
                layer=dream_layer,
                settings=dd_settings,
                on_step=on_step,
            ),
            frame_width=520,
        )
    view.show_interrupted(f"{P}_dd", context=(ctx.model_key, ctx.digest))
    if stored := view.stored_result(f"{P}_dd"):
        old_params, result = stored
        other = old_params[:2] != dd_params[:2]
        if other:
            st.caption(
                "Shown: the last run, made with another model or image (press Start to dream "
                "with the current ones)."
            )
        elif old_params != dd_params:
            st.caption("Shown: the last run (the settings have changed since; press Start).")
        c1, c2 = st.columns(2)
        original_label = "The image it started from" if other else ctx.image_label
        c1.image(render.to_uint8(result.original), caption=original_label, width="stretch")
        dream_image = render.to_uint8(result.image)
        c2.image(dream_image, caption=f"DeepDream · {result.layer}", width="stretch")
        page_report.figure("DeepDream: the start", render.to_uint8(result.original),
                           original_label)  # fmt: skip
        page_report.figure(f"DeepDream · {result.layer}", dream_image,
                           f"{result.steps_done} steps in {result.seconds:.1f} s")  # fmt: skip
        page_report.params["DeepDream layer"] = result.layer
        st.caption(f"{result.steps_done} steps in {result.seconds:.1f} s.")
        view.downloads(f"{P}_dd", dream_image, result.frames, name=f"deepdream_{result.layer}")
        how_it_works.optimization_panel(
            "deepdream",
            losses=result.losses,
            objective_name="½·mean(A²) at the layer",
            numbers={
                "layer": f"`{result.layer}`",
                "½·mean(A²) at the end": f"{-float(result.losses[-1]):.3g}"
                if len(result.losses)
                else "n/a",
                "steps": f"{result.steps_done}",
            },
        )

with tab_class:  # issue 8: multifaceted class visualization, below the plain one
    render_multifaceted(ctx, report=page_report)
page_report.params.update({
    "classes": ", ".join(names[i] for i in chosen), "neuron layer, channels": f"{layer} "
    f"{channels[0]}-{channels[-1]} ({mode})", "inversion layers": ", ".join(inv_layers),
    "DeepDream layer (chosen)": dream_layer,
})  # fmt: skip
page_report.seal()
