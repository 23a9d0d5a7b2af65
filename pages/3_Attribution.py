"""Attribution: which pixels made the model decide (occlusion, gradients, the CAM family)."""

from __future__ import annotations

import logging

import streamlit as st

from vizcore import attribution
from vizcore.attribution import occlusion_grid
from vizcore.core import render
from vizcore.core.layers import list_layers
from vizui import attribution_view as view
from vizui import cached, how_it_works, method_labels, segmentation_view, view_link
from vizui.frame import frame
from vizui.keep import keep_choice
from vizui.precision_view import exact_toggle
from vizui.queue_view import heavy_job
from vizui.report_view import PageReport
from vizui.view_link import Control, int_in, one_of, restore, share, unless_set

logger = logging.getLogger(__name__)

ctx = frame(
    "Attribution",
    intro="Which pixels made the model decide? Occlusion, gradients (saliency, deconvnet, guided "
    "backprop) and class activation maps side by side, each scored by how faithful it is "
    "(deletion/insertion AUC), with Adebayo et al.'s sanity check.",
)

size = int(ctx.x.shape[-1])
image = render.tensor_image(ctx.x.numpy())
prediction = cached.top_classes(ctx.model_key, ctx.digest, ctx.x)
names = ctx.spec.categories()
page_report = PageReport("Attribution", ctx)

# ---------------------------------------------------------------------------- controls
left, right = st.columns([1, 2], gap="large")
with left:
    st.image(image, caption=f"{ctx.image_label} — what the model sees ({size}×{size})")
    top = [int(i) for i in prediction.indices]
    options = [*top, -1]

    def _target_label(index: int) -> str:
        if index < 0:
            return "Another class…"
        p = prediction.probabilities[top.index(index)]
        return f"{names[index]} ({p:.1%})"

    linked = view_link.take("target", view_link.int_in(range(len(names))))
    if linked is not None:  # a shared link's class: a top-5 button, or the search box
        st.session_state["attribution_target_choice"] = linked if linked in top else -1
        if linked not in top:
            st.session_state["attribution_target_search"] = linked
    choice = st.radio(
        "Explain the class",
        options,
        format_func=_target_label,
        key="attribution_target_choice",
        help="Top-1 by default; any of the top 5, or any ImageNet class.",
    )
    if choice < 0:
        target = st.selectbox(
            "Search an ImageNet class",
            list(range(len(names))),
            index=view_link.unless_set("attribution_target_search", top[0]) or 0,
            format_func=lambda i: f"{names[i]} ({i})",
            key="attribution_target_search",
        )
    else:
        target = int(choice)

with right:
    # One checkbox per method, in columns: every name stays readable at any width (a
    # multiselect showed about five chips and cut the rest; pills scroll sideways).
    st.markdown(
        "**Methods**",
        help="; ".join(f"{k}: {v.citation}" for k, v in method_labels.METHODS.items()),
    )
    labels = list(method_labels.METHODS)
    method_ids = {method_labels.METHODS[label].key: label for label in labels}
    linked_methods = view_link.take("methods", view_link.subset_of(list(method_ids)))
    if linked_methods is not None:
        for label in labels:
            st.session_state[view.method_key(label)] = method_labels.METHODS[label].key in set(
                linked_methods
            )
    per_column = -(-len(labels) // 3)
    method_columns = st.columns(3)
    methods = [
        label
        for i, label in enumerate(labels)
        if method_columns[i // per_column].checkbox(
            label,
            value=bool(
                view_link.unless_set(view.method_key(label), label in method_labels.DEFAULT_METHODS)
            ),
            key=view.method_key(label),
        )
    ]
    presets = list(ctx.spec.preset("cam"))
    conv_layers = [name for name in list_layers(ctx.model, kind="conv") if name not in presets]
    layer_options = [*presets, *list_layers(ctx.model, kind="activation"), *conv_layers]
    layer_options = list(dict.fromkeys(layer_options))
    layer_key = f"attribution_layer_{ctx.model_key}"
    links = (
        Control("layer", layer_key, one_of(layer_options), layer_options[0], context=ctx.model_key),
        Control("window", "attribution_window", int_in(range(8, min(112, size) + 1, 8)), 32),
        Control("stride", "attribution_stride", int_in(range(4, 65, 4)), 8),
        Control("fill", "attribution_fill", one_of(attribution.FILLS), attribution.FILLS[1]),
    )
    restore(*links)
    layer = st.selectbox(
        "Layer for Grad-CAM, Grad-CAM++, Score-CAM, Guided Grad-CAM",
        layer_options,
        key=layer_key,
        on_change=keep_choice(
            layer_key, ctx.model_key, default=layer_options[0], options=layer_options
        ),
        help="The preset comes first (the last convolutional feature map); any conv or "
        "activation layer can be chosen by name.",
    )
    cam_layer = (ctx.spec.preset("cam_features") or (layer,))[0]
    st.caption(
        f"CAM always uses the layer feeding the classifier's global average pool: `{cam_layer}`."
    )
    c1, c2, c3 = st.columns(3)
    window = c1.slider(
        "Occlusion window (px)", 8, min(112, size), unless_set("attribution_window", 32),
        8, key="attribution_window",
    )  # fmt: skip
    stride = c2.slider(
        "Occlusion stride (px)", 4, 64, unless_set("attribution_stride", 8), 4,
        key="attribution_stride",
    )  # fmt: skip
    fill = c3.selectbox(
        "Occlusion fill", attribution.FILLS,
        index=unless_set("attribution_fill", 1) or 0, key="attribution_fill",
    )  # fmt: skip
    view_link.publish("target", None if int(target) == top[0] else str(int(target)))
    chosen_ids = [method_labels.METHODS[label].key for label in methods]
    default_ids = [method_labels.METHODS[label].key for label in method_labels.DEFAULT_METHODS]
    same = set(chosen_ids) == set(default_ids)
    view_link.publish("methods", None if same else ",".join(chosen_ids))
    share(*links)
    d1, d2 = st.columns(2)
    alpha = d1.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="attribution_alpha")
    colormap = d2.selectbox("Colormap", list(render.COLORMAPS), key="attribution_colormap")
    score_maps = d1.toggle(
        "Deletion / insertion AUC",
        value=True,
        key="attribution_auc",
        help="Score each map on Run by how fast deleting or inserting its top pixels changes "
        "the class probability (Petsiuk et al. 2018).",
    )
    sanity = d2.toggle(
        "Sanity check",
        value=False,
        key="attribution_sanity",
        help="On Run, randomize the top layers and see whether each fast map changes "
        "(Adebayo et al. 2018).",
    )
    exact = exact_toggle("attribution", container=d1)
page_report.params.update({
    "class": f"{names[int(target)]} ({int(target)})",
    "methods": ", ".join(methods),
    "layer (Grad-CAM family)": layer,
    "layer (CAM)": cam_layer,
    "occlusion window / stride / fill": f"{window} px / {stride} px / {fill}",
    "overlay": f"{colormap}, opacity {alpha}",
    "precision": "exact fp32" if exact else "bf16 where fast",
})  # fmt: skip

rows, cols = occlusion_grid((size, size), window, stride)
positions = rows * cols
times = view.pass_times(ctx.model_key, size)  # measured once per model and size


def _params(label: str) -> view.MethodParams:
    chosen = cam_layer if label == "CAM" else layer
    uses_layer = method_labels.METHODS[label].uses_layer
    occluding = label == "Occlusion"
    return view.MethodParams(
        label=label,
        target=int(target),
        layer=chosen if uses_layer else None,
        window=window if occluding else 0,
        stride=stride if occluding else 0,
        fill=fill if occluding else "",
        exact=exact if label in view.PRECISION_METHODS else True,
    )


def _seconds(label: str) -> float:
    """Estimated seconds of one method's map, from its cost function and the measured passes."""
    try:
        return view.method_seconds(ctx.model, size, _params(label), times)
    except ValueError:  # e.g. a layer Score-CAM cannot use: the error shows on its tile
        return 0.0


def _curve_key(label: str) -> tuple[view.MethodParams, bool]:
    # The curves' own forwards follow the toggle too, whatever the method.
    return _params(label), exact


slow_selected = [m for m in methods if m in view.SLOW]
occlusion_params = _params("Occlusion")
first_map_s, live_s = view.live_occlusion_seconds(ctx.model, size, occlusion_params, times)
#: Short occlusion settings run by themselves, coarse to fine, on every change (no Run).
live_ok = live_s <= view.live_seconds()

# ---------------------------------------------------------------------------- state
store_key = (ctx.model_key, ctx.digest)
if st.session_state.get("attribution_store_key") != store_key:
    st.session_state["attribution_store_key"] = store_key
    st.session_state["attribution_slow"] = {}
    st.session_state["attribution_curves"] = {}
    st.session_state["attribution_checks"] = {}
slow_results: dict = st.session_state["attribution_slow"]
curves: dict = st.session_state["attribution_curves"]
checks: dict = st.session_state["attribution_checks"]


def _runs_live(label: str) -> bool:
    """The map is computed live after the page is drawn (not by Run)."""
    return label == "Occlusion" and live_ok and _params(label) not in slow_results


def _plan() -> list[view.RunTask]:
    """What Run still has to do (what is already computed for these settings is not counted)."""
    planned = [
        view.RunTask(label, _seconds(label))
        for label in slow_selected
        if _params(label) not in slow_results and not _runs_live(label)
    ]
    if score_maps:
        planned += [
            view.RunTask(f"{label} deletion/insertion", view.curves_seconds(times))
            for label in methods
            if _curve_key(label) not in curves and not _runs_live(label)
        ]
    if sanity:
        planned += [
            view.RunTask(
                f"{label} sanity check", view.sanity_seconds(ctx.model, size, _params(label), times)
            )
            for label in methods
            if label not in view.SLOW and _params(label) not in checks
        ]
    return planned


def _summary(planned: list[view.RunTask]) -> str:
    text = (
        f"Occlusion: {rows}×{cols} = **{positions} window positions**. Measured forward: "
        f"{times.batched_forward * 1000:.0f} ms/image (batch 16). "
    )
    if "Occlusion" in methods and _runs_live("Occlusion"):
        text += (
            f"Occlusion runs live, coarse to fine: first map ≈ "
            f"{view.format_seconds(first_map_s)}, full ≈ {view.format_seconds(live_s)}. "
        )
    if not planned:
        return text + "Everything selected is computed: Run has nothing left to do."
    scored_left = sum(t.name.endswith("deletion/insertion") for t in planned)
    checks_left = sum(t.name.endswith("sanity check") for t in planned)
    parts = [
        *(t.name for t in planned if t.name in view.SLOW),
        *([f"deletion/insertion of {scored_left} map(s)"] if scored_left else []),
        *([f"sanity check of {checks_left} method(s)"] if checks_left else []),
    ]
    seconds = sum(t.seconds for t in planned)
    return text + (
        f"Run ≈ **{view.format_seconds(seconds)}** for what is not computed yet: "
        f"{', '.join(parts)}. The time left is updated from the measured progress while it runs."
    )


tasks = _plan()
eta = sum(task.seconds for task in tasks)
estimate_slot = st.empty()  # refilled after a Run, so it never shows the cost of finished work
estimate_slot.caption(_summary(tasks))

run_col, stop_col, _ = st.columns([1, 1, 4])
run = run_col.button("Run", type="primary", key="attribution_run", width="stretch")
stop = stop_col.button("Stop", key="attribution_stop", width="stretch")
page_report.downloads("attribution")
if stop:
    st.info(
        "Stopped. Methods that finished are kept; the one interrupted starts again from the "
        "beginning on the next Run."
    )

errors: dict[str, str] = {}
results: dict[str, attribution.AttributionMap] = {}
for label in methods:
    params = _params(label)
    if label in view.SLOW:
        if params in slow_results:
            results[label] = slow_results[params]
        continue
    try:
        results[label] = view.fast_map(ctx.model_key, ctx.digest, ctx.x, params)
    except ValueError as exc:
        errors[label] = str(exc)
    except Exception as exc:
        logger.exception("Attribution method %s failed", label)
        errors[label] = f"Unexpected error: {exc}"

if run:
    with heavy_job("Run"):  # the server's one queue: place in line shown while waiting
        bar = st.progress(0.0, text=f"Starting… about {view.format_seconds(eta)} left")
        tracker = view.RunProgress(bar, tasks)
        planned = {task.name for task in tasks}
        try:
            for label in slow_selected:
                params = _params(label)
                if label not in planned:
                    continue
                try:
                    result = view.compute_map(
                        ctx.model, ctx.x, params, on_step=tracker.callback(label)
                    )
                except ValueError as exc:
                    errors[label] = str(exc)
                    tracker.finish(label)
                    continue
                tracker.finish(label)
                if not result.stopped:
                    slow_results[params] = result
                results[label] = result
            if score_maps:
                for label, result in results.items():
                    curve_key = _curve_key(label)
                    name = f"{label} deletion/insertion"
                    if curve_key not in curves and name in planned:
                        curves[curve_key] = view.compute_curves(
                            ctx.model, ctx.x, result, tracker.callback(name), exact=exact
                        )
                    tracker.finish(name)
            if sanity:
                for label in results:
                    params = _params(label)
                    name = f"{label} sanity check"
                    if params not in checks and name in planned:
                        checks[params] = view.compute_sanity(
                            ctx.model, ctx.x, params, tracker.callback(name)
                        )
                    tracker.finish(name)
            tracker.done()
        except ValueError as exc:
            st.error(str(exc))
        estimate_slot.caption(_summary(_plan()))

# ---------------------------------------------------------------------------- the grid
live_holder = live_status = None


def _draw_tile(label: str, result: attribution.AttributionMap) -> None:
    """One method's tile: the overlay, its time, its AUC and the downloads."""
    blank = view.blank_message(label, result)
    if blank is not None:
        st.warning(blank)
        return
    tile = view.overlay_tile(image, result, alpha=alpha, colormap=colormap)
    st.image(tile, caption=f"{result.seconds * 1000:.0f} ms", width="stretch")
    scored = curves.get(_curve_key(label))
    page_report.figure(label, tile, f"{result.seconds * 1000:.0f} ms")
    if scored is not None:
        page_report.scores[f"{label}: deletion AUC (lower is better)"] = (
            f"{scored.deletion_auc:.3f}"
        )
        page_report.scores[f"{label}: insertion AUC (higher is better)"] = (
            f"{scored.insertion_auc:.3f}"
        )
        st.caption(
            f"AUC: del. **{scored.deletion_auc:.3f}** ↓ · ins. **{scored.insertion_auc:.3f}** ↑",
            help=f"Deletion AUC {scored.deletion_auc:.3f} (lower is better) and "
            f"insertion AUC {scored.insertion_auc:.3f} (higher is better), "
            "Petsiuk et al. 2018; the curves are in the expander below.",
        )
    name = f"{result.method}_{int(target)}"
    with st.popover("Download", icon=":material/download:", width="stretch"):
        st.download_button(
            "PNG: overlay, as shown",
            view.overlay_png(image, result, alpha=alpha, colormap=colormap),
            file_name=f"{name}_overlay.png",
            mime="image/png",
            key=f"attribution_overlay_png_{label}",
            width="stretch",
        )
        st.download_button(
            "PNG: colour map only",
            view.map_png(result, colormap),
            file_name=f"{name}.png",
            mime="image/png",
            key=f"attribution_png_{label}",
            width="stretch",
        )
        st.download_button(
            "npz: raw map and metadata",
            view.raw_npz(result),
            file_name=f"{name}.npz",
            mime="application/octet-stream",
            key=f"attribution_npz_{label}",
            width="stretch",
        )


st.subheader(f"Why “{names[int(target)]}”? ({int(target)})")
if not methods:
    st.info("Pick at least one method above.")
GRID = 4
# Row by row (one st.columns per row): tiles of a row line up whatever their content.
for start in range(0, len(methods), GRID):
    row = st.columns(GRID)
    for column, label in zip(row, methods[start : start + GRID], strict=False):
        with column:
            st.markdown(f"**{label}**")
            if label in errors:
                st.warning(errors[label])
                continue
            result = results.get(label)
            if result is None and _runs_live(label) and not stop:
                live_holder, live_status = st.empty(), st.empty()
                live_holder.info(f"Live: first map in ≈ {view.format_seconds(first_map_s)}…")
                continue
            if result is None:
                need = view.format_seconds(_seconds(label))
                st.info(f"Slow: press **Run** (≈ {need}).")
                continue
            _draw_tile(label, result)

st.markdown("#### How it works")
st.caption(
    "Each method's formula with this run's numbers in it, its steps, what to look for, its "
    "pitfalls and its paper. The CAM family's panels show the channels of the weighted sum."
)
how_it_works.attribution_panels(
    results,
    model_key=ctx.model_key,
    digest=ctx.digest,
    x=ctx.x,
    class_names=names,
    method_keys={label: method_labels.METHODS[label].key for label in results},
    sanity={label: check for label in results if (check := checks.get(_params(label))) is not None},
)

if score_maps and curves:
    with st.expander("Deletion and insertion curves (Petsiuk et al. 2018)"):
        st.caption(
            "Deletion blacks out the pixels the map ranks highest first: a faithful map makes "
            "the probability fall fast (low AUC). Insertion adds them to a blurred image: it "
            "should rise fast (high AUC)."
        )
        curve_cols = st.columns(4)
        shown = [label for label in methods if _curve_key(label) in curves]
        for i, label in enumerate(shown):
            with curve_cols[i % 4]:
                st.markdown(f"**{label}**")
                st.plotly_chart(
                    view.curves_chart(curves[_curve_key(label)]),
                    key=f"attribution_curve_{label}",
                    width="stretch",
                )
    how_it_works.panel(
        "deletion_insertion",
        numbers={
            label: f"del. {curves[_curve_key(label)].deletion_auc:.3f} · "
            f"ins. {curves[_curve_key(label)].insertion_auc:.3f}"
            for label in methods
            if _curve_key(label) in curves
        },
    )

if sanity:
    st.subheader("Sanity check: randomize the top layers (Adebayo et al. 2018)")
    st.caption(
        "Each row re-initializes the model's top blocks in cascade (on a copy of the model) and "
        "recomputes the map. ρ is the Spearman rank correlation with the original map: a method "
        "that explains the model should change (ρ falls); guided backprop and Guided Grad-CAM "
        "barely do. Slow methods are not checked here."
    )
    for label in methods:
        check = checks.get(_params(label))
        if check is None:
            continue
        st.markdown(f"**{label}**")
        tiles = [
            view.overlay_array(image, check.maps[k], alpha=alpha, colormap=colormap)
            for k in range(check.maps.shape[0])
        ]
        captions = ["original"] + [
            f"{' + '.join(check.layers[: k + 1])} random · ρ = {rho:.2f}"
            for k, rho in enumerate(check.correlations)
        ]
        st.image(tiles, caption=captions, width=180)
        for tile, caption in zip(tiles, captions, strict=True):
            page_report.figure(f"{label} sanity check", tile, caption)
        if len(check.correlations):
            page_report.scores[f"{label}: sanity check rho (top blocks random)"] = (
                f"{check.correlations[-1]:.2f}"
            )
    if not checks:
        st.info("Press **Run** to compute the sanity check.")
    how_it_works.panel(
        "randomization_check",
        numbers={
            f"ρ of {label} (top {len(check.correlations)} blocks random)": (
                f"{check.correlations[-1]:.2f}"
            )
            for label in methods
            if (check := checks.get(_params(label))) is not None and len(check.correlations)
        },
    )

segmentation_view.render_section(ctx, _params, alpha=alpha, colormap=colormap, report=page_report)

page_report.seal()  # every control is published by now: the report's link is this view

# ---------------------------------------------------------------------------- live occlusion
# Last, so the whole page is drawn first; a new slider value interrupts it at its next progress
# report (between model turns) and the rerun starts over with the new settings.
if live_holder is not None and live_status is not None:
    holder, status = live_holder, live_status

    def _show(partial: attribution.AttributionMap) -> None:
        if partial.info.get("preview"):
            caption = (
                f"Preview: {int(partial.info['done'])}/{int(partial.info['positions'])} "
                f"positions, {partial.seconds:.1f} s"
            )
            holder.image(
                view.overlay_tile(image, partial, alpha=alpha, colormap=colormap),
                caption=caption,
                width="stretch",
            )

    try:
        with heavy_job("Live occlusion"):
            final = view.live_occlusion(
                ctx.model, ctx.x, occlusion_params, show=_show, status=status
            )
    except ValueError as exc:
        holder.warning(str(exc))
    else:
        if final is not None:
            slow_results[occlusion_params] = final
            with holder.container():
                _draw_tile("Occlusion", final)
            estimate_slot.caption(_summary(_plan()))
