"""How-it-works panels: a technique's lesson (:mod:`vizcore.lessons`) beside its live result.

Each panel is collapsed by default and shows, in the lecture's order: the formula, numbers from
the current run that plug into it, the algorithm's steps, what to look for, the pitfalls, where
this code deviates from the paper, and the paper's link. The numbers come from the result
objects the page already has (no model pass here), except the CAM decomposition, which is one
cached call of :func:`vizcore.attribution.decomposition.cam_parts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from vizcore import lessons
from vizcore.attribution import AttributionMap
from vizcore.attribution.decomposition import DECOMPOSABLE, CamParts, cam_parts
from vizcore.attribution.faithfulness import RandomizationCheck
from vizcore.core import render
from vizcore.optvis.adversarial import AdversarialResult
from vizui import cached

#: Every panel's expander label starts with this (tests look for it).
PANEL_PREFIX = "How it works:"


def panel(
    key: str,
    *,
    numbers: Mapping[str, str] | None = None,
    body: Callable[[], None] | None = None,
) -> None:
    """Draw the lesson of technique ``key`` as a collapsed expander.

    Args:
        key: A :data:`vizcore.lessons.LESSONS` key.
        numbers: Live values from this run, shown under the formula (``name -> value``).
        body: Draws more live content (a chart, maps) inside the panel, after the numbers.
    """
    lesson = lessons.lesson(key)
    with st.expander(f"{PANEL_PREFIX} {lesson.title}"):
        st.latex(lesson.formula)
        if numbers:
            st.markdown("**This run:** " + " · ".join(f"{k} **{v}**" for k, v in numbers.items()))
        if body is not None:
            body()
        st.markdown("\n".join(f"{i}. {step}" for i, step in enumerate(lesson.steps, 1)))
        st.markdown(f"**What to look for.** {lesson.look_for}")
        st.markdown(f"**Pitfalls.** {lesson.pitfalls}")
        if lesson.deviation:
            st.markdown(f"**Here vs the paper.** {lesson.deviation}")
        citation, url = lesson.paper
        st.markdown(f"Paper: [{citation}]({url})")


# ------------------------------------------------------------------------- attribution


@st.cache_data(max_entries=32, show_spinner=False)
def _cam_parts(
    model_key: str, digest: str, _x: torch.Tensor, layer: str, method: str, target: int
) -> CamParts:
    return cam_parts(cached.model(model_key), _x, layer=layer, method=method, target=target)


def attribution_numbers(result: AttributionMap, *, class_name: str) -> dict[str, str]:
    """The live numbers every attribution panel shows, plus the method's own."""
    numbers = {"class c": f"{class_name} ({result.target})"}
    if result.method == "occlusion" and result.raw.size:
        before = float(result.info.get("reference_probability", float("nan")))
        worst = float(result.raw.max())
        row, col = np.unravel_index(int(result.raw.argmax()), result.raw.shape)
        numbers["p_c(x)"] = f"{before:.3f}"
        numbers["p_c at the worst window"] = f"{before - worst:.3f} (window row {row}, col {col})"
        numbers["window positions"] = f"{result.raw.size}"
    elif result.layer is not None:
        h, w = result.raw.shape[-2:]
        side = result.map.shape[-1] / max(w, 1)
        numbers["layer"] = f"{result.layer}"
        numbers["map resolution"] = f"{h}×{w} (one cell ≈ {side:.0f} px)"
    else:
        numbers["max |∂S_c/∂x|"] = f"{float(np.abs(result.raw).max()):.3g}"
    if "delta" in result.info:
        numbers["completeness error Σ IG − (S(x) − S(0))"] = f"{float(result.info['delta']):.3g}"
    numbers["time"] = f"{result.seconds * 1000:.0f} ms"
    return numbers


def _cam_body(parts: CamParts) -> Callable[[], None]:
    def draw() -> None:
        labels = [f"k={c}" for c in parts.channels]
        fig = go.Figure(go.Bar(x=labels, y=parts.weights[parts.channels], marker_color="#c0392b"))
        fig.update_layout(
            height=220, margin={"l": 10, "r": 10, "t": 30, "b": 10},
            title=f"Weights w_k of the {len(labels)} channels that contribute most",
        )  # fmt: skip
        st.plotly_chart(fig, key=f"hiw_weights_{parts.method}", width="stretch")
        scale = max(float(parts.activations.max()), 1e-12)  # one scale: maps stay comparable
        tiles = [
            render.colorize(np.clip(a / scale, 0.0, 1.0), colormap="viridis")
            for a in parts.activations
        ]
        captions = [
            f"A^{c} · w={w:.3g} · Σ w·A={s:.3g}"
            for c, w, s in zip(
                parts.channels, parts.weights[parts.channels], parts.contributions, strict=True
            )
        ]
        st.image(tiles, caption=captions, width=110)
        st.caption(
            f"These {len(labels)} of {len(parts.weights)} channels carry "
            f"{parts.top_share:.0%} of the positive contributions; ReLU of the sum over all "
            f"channels{' plus the bias' if parts.bias else ''} is the map above "
            f"({parts.total.shape[0]}×{parts.total.shape[1]}, upsampled). Maps share one "
            "colour scale."
        )

    return draw


def attribution_panels(
    results: Mapping[str, AttributionMap],
    *,
    model_key: str,
    digest: str,
    x: torch.Tensor,
    class_names: Sequence[str],
    method_keys: Mapping[str, str],
    sanity: Mapping[str, RandomizationCheck] | None = None,
) -> None:
    """One panel per shown method of the Attribution page (``label -> result``).

    ``sanity`` (``label -> check``) adds the randomization check's last correlation, so the
    pitfall of guided backprop and deconvnet is shown by this run's number, not only told.
    """
    for label, result in results.items():
        key = method_keys[label]
        name = class_names[result.target] if result.target is not None else "callable target"
        numbers = attribution_numbers(result, class_name=name)
        check = (sanity or {}).get(label)
        if check is not None and len(check.correlations):
            numbers[f"sanity check ρ (top {len(check.correlations)} blocks random)"] = (
                f"{check.correlations[-1]:.2f}"
            )
        body = None
        if key in DECOMPOSABLE and result.layer is not None and result.target is not None:
            try:
                parts = _cam_parts(model_key, digest, x, result.layer, key, int(result.target))
            except ValueError:
                parts = None
            if parts is not None:
                body = _cam_body(parts)
        panel(key, numbers=numbers, body=body)


# ------------------------------------------------------------------------- adversarial


def adversarial_panel(result: AdversarialResult, class_names: Sequence[str]) -> None:
    """FGSM/PGD: the perturbation's L∞ norm and the class probabilities before and after."""
    source = int(result.before.indices[0])
    numbers = {
        "ε": f"{result.epsilon * 255:.0f}/255",
        "‖x′ − x‖∞": f"{result.linf * 255:.0f}/255",
        f"p({class_names[source]})": (
            f"{result.probs_before[source]:.3f} → {result.probs_after[source]:.3f}"
        ),
    }
    if result.target is not None and result.target != source:
        t = int(result.target)
        numbers[f"p({class_names[t]})"] = (
            f"{result.probs_before[t]:.3f} → {result.probs_after[t]:.3f}"
        )
    numbers["steps"] = f"{result.steps_done}"

    def body() -> None:
        if len(result.losses) > 1:
            st.caption("Cross-entropy after each step (to the target, or from the source):")
            st.line_chart(np.asarray(result.losses, dtype=np.float64), height=160)

    panel(result.method, numbers=numbers, body=body)


# ------------------------------------------------------------------ images made by the net


def optimization_panel(
    key: str,
    *,
    losses: np.ndarray,
    numbers: Mapping[str, str],
    objective_name: str = "objective",
) -> None:
    """An optimization's lesson with this run's numbers and its objective over the steps.

    ``losses`` are the minimized losses per step; the chart shows ``-loss`` for the methods that
    maximize (class and neuron visualization, DeepDream) so the curve climbs as in the lecture.
    """
    maximize = key in ("class_visualization", "neuron_visualization", "deepdream", "multifaceted")

    def body() -> None:
        values = np.asarray(losses, dtype=np.float64).reshape(len(losses), -1).mean(axis=1)
        if len(values) > 1:
            st.caption(f"{objective_name} after each step (this run):")
            st.line_chart(-values if maximize else values, height=160)

    panel(key, numbers=numbers, body=body)


@st.cache_data(max_entries=16, show_spinner=False)
def _gram_image(model_key: str, digest: str, _x: torch.Tensor, layer: str) -> np.ndarray:
    from vizcore.core.hooks import inference_session
    from vizcore.style import gram

    model = cached.model(model_key)
    with inference_session(model), torch.no_grad():
        features = gram.extract_features(model, _x, (layer,))[layer]
        matrix = gram.gram_matrix(features)[0].float().cpu().numpy()
    size = min(matrix.shape[0], 64)  # the first 64 channels: readable cells
    return render.colorize(render.normalize01(matrix[:size, :size]), colormap="viridis")


def gram_panel(
    key: str,
    *,
    model_key: str,
    digest: str,
    style_x: torch.Tensor,
    layer: str,
    numbers: Mapping[str, str],
) -> None:
    """Texture / style lesson with the Gram matrix of one layer of the style image as a heat map."""

    def body() -> None:
        image = _gram_image(model_key, digest, style_x, layer)
        st.image(image, caption=f"G at `{layer}` of the style image (first 64 channels)", width=220)

    panel(key, numbers=numbers, body=body)
