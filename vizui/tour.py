"""The lecture tour: CS231n's "Visualizing and Understanding" in its own order, on one image.

Each :class:`TourStep` has two or three sentences, a small live result on the current model and
image, the technique's formula (from :mod:`vizcore.lessons`) and a link to its full page. Fast
steps (one forward or backward pass) render at once from the pages' own caches; slow ones
(optimizations, gallery-wide work) wait behind a button per step and run with short settings,
progress and a Stop button. Their results are kept per session and per (model, image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from vizcore import lessons
from vizcore.core import render
from vizcore.core.progress import OnStep, StepInfo
from vizcore.data import images
from vizcore.inside import embedding
from vizcore.models import registry
from vizcore.optvis import adversarial, dream, inversion, synthesis
from vizcore.style import gatys as style_tech
from vizui import attribution_view, cached, gallery_view, inside_view, method_labels, style_view
from vizui.frame import Context
from vizui.queue_view import heavy_job
from vizui.report_view import record

P = "tour"


@dataclass(frozen=True)
class TourStep:
    """One stop of the tour.

    Attributes:
        key: The lesson key (:data:`vizcore.lessons.LESSONS`).
        page: The full page's script path.
        text: Two or three sentences of the lecture.
        show: Draws the live result (fast steps) or, for slow ones, runs it (``None``: none).
        slow: Whether the step waits for its button.
        cost: What a slow step runs (passes or optimization steps), shown before its button.
    """

    key: str
    page: str
    text: str
    show: Callable[[Context], None]
    slow: bool = False
    cost: str = ""


# ------------------------------------------------------------------------------ fast steps


def _filters(ctx: Context) -> None:
    first = inside_view.first_filters(ctx.model_key)
    grid = inside_view.filter_grid(first.tiles, tile=28, columns=16)
    st.image(grid, width="content")
    f, c, kh, kw = first.weight_shape
    record("First-layer filters", grid, f"{first.layer}: {f} filters of {c}×{kh}×{kw}")
    st.caption(f"`{first.layer}`: {f} filters of {c}×{kh}×{kw}.")


def _activations(ctx: Context) -> None:
    layers = inside_view.map_layers(ctx.model_key)
    preset = ctx.spec.preset("activations")
    layer = preset[min(4, len(preset) - 1)] if preset else layers[len(layers) // 2]
    acts = inside_view.activations(ctx.model_key, ctx.digest, ctx.x, layer, "mean")
    grid = inside_view.activation_grid(
        acts.maps, acts.order, count=16, threshold=None, per_channel=False, colormap="viridis"
    )
    st.image(grid, width="content")
    n, h, w = acts.maps.shape
    record(f"Activations: {layer}", grid, f"the 16 most active of {n} channels")
    st.caption(f"`{layer}`: the 16 most active of {n} channels ({h}×{w}).")


def _attribution(label: str) -> Callable[[Context], None]:
    def show(ctx: Context) -> None:

        info = method_labels.METHODS[label]
        layer = ctx.spec.preset("cam")[0] if info.uses_layer else None
        top = cached.top_classes(ctx.model_key, ctx.digest, ctx.x).top1[0]
        params = attribution_view.MethodParams(
            label=label, target=int(top), layer=layer, window=0, stride=0, fill=""
        )
        result = attribution_view.fast_map(ctx.model_key, ctx.digest, ctx.x, params)
        image = render.tensor_image(ctx.x.numpy())
        tile = attribution_view.overlay_tile(image, result, alpha=0.5, colormap="jet")
        names = ctx.spec.categories()
        st.image(tile, caption=f"{label} for “{names[int(top)]}”", width=260)
        record(label, tile, f"{label} for “{names[int(top)]}” ({result.seconds * 1000:.0f} ms)")

    return show


def _occlusion(ctx: Context) -> None:
    top = int(cached.top_classes(ctx.model_key, ctx.digest, ctx.x).top1[0])
    params = attribution_view.MethodParams(
        label="Occlusion", target=top, layer=None, window=56, stride=28, fill="gray"
    )
    result = _run_slow(
        ctx,
        "occlusion",
        lambda on_step: attribution_view.compute_map(ctx.model, ctx.x, params, on_step=on_step),
    )
    if result is not None:
        image = render.tensor_image(ctx.x.numpy())
        tile = attribution_view.overlay_tile(image, result, alpha=0.5, colormap="jet")
        names = ctx.spec.categories()
        st.image(tile, caption=f"Occlusion for “{names[top]}” (window 56, stride 28)", width=260)
        record("Occlusion", tile, f"window 56, stride 28, {result.seconds:.1f} s")


def _adversarial(ctx: Context) -> None:
    result = _fgsm(ctx.model_key, ctx.digest, ctx.x)
    before, after = result.before, result.after
    scale = max(float(np.abs(result.perturbation).max()), 1e-12)
    shown = (
        ("FGSM: original", render.to_uint8(result.original), f"{before.labels[0]}"),
        ("FGSM: perturbation", render.to_uint8(0.5 + 0.5 * result.perturbation / scale),
         f"perturbation ×{0.5 / scale:.0f}"),
        ("FGSM: adversarial", render.to_uint8(result.adversarial), f"{after.labels[0]}"),
    )  # fmt: skip
    for column, (title, picture, caption) in zip(st.columns(3), shown, strict=True):
        column.image(picture, caption=caption, width="stretch")
        record(title, picture, caption)
    st.caption(
        f"FGSM, ε = 4/255: top-1 “{before.labels[0]}” ({before.probabilities[0]:.0%}) → "
        f"“{after.labels[0]}” ({after.probabilities[0]:.0%}); largest pixel change "
        f"{result.linf * 255:.0f}/255."
    )


@st.cache_data(max_entries=16, show_spinner=False)
def _fgsm(model_key: str, digest: str, _x: Any) -> adversarial.AdversarialResult:
    spec = registry.get_spec(model_key)
    return adversarial.fgsm(cached.model(model_key), _x, categories=spec.categories())


# ---------------------------------------------------------------- gallery-wide steps


def _gallery_feats(ctx: Context, step: str) -> tuple[Any, np.ndarray, str] | None:
    g = gallery_view.builtin()
    layer = ctx.spec.preset("embedding")[0]
    hit = gallery_view.gallery_features(ctx, g, layer, key=f"{P}_{step}_feats")
    return None if hit is None else (g, hit.features, layer)


def _neighbours(ctx: Context) -> None:
    got = _gallery_feats(ctx, "neighbours")
    if got is None:
        return
    g, feats, layer = got
    comparison = embedding.neighbours(
        ctx.model, ctx.x, gallery=g, gallery_features=feats, layer=layer, k=6,
        cache_key=(ctx.model_key, ctx.digest),
    )  # fmt: skip
    st.markdown(f"**Feature space** (`{layer}`)")
    inside_view.thumbnail_row(g, comparison.feature.indices, comparison.feature.distances, width=80)
    st.markdown("**Pixel space** (32×32 RGB)")
    inside_view.thumbnail_row(g, comparison.pixel.indices, comparison.pixel.distances, width=80)
    for title, found in (("feature", comparison.feature), ("pixel", comparison.pixel)):
        row = render.grid(list(g.images[found.indices]), columns=len(found.indices), pad=2)
        record(f"Nearest in {title} space", row, " · ".join(g.labels[i] for i in found.indices))


def _tsne(ctx: Context) -> None:
    got = _gallery_feats(ctx, "tsne")
    if got is None:
        return
    g, feats, layer = got
    fmap = _run_slow(
        ctx,
        "feature_map",
        lambda on_step: embedding.feature_map(
            ctx.model, ctx.x, gallery_features=feats, layer=layer, method="tsne", n_iter=250,
            cache_key=(ctx.model_key, ctx.digest), on_step=on_step,
        ),
    )  # fmt: skip
    if fmap is not None:
        fig = inside_view.scatter(fmap, g, selected=None, current_label=ctx.image_label, height=380)
        st.plotly_chart(fig, key=f"{P}_tsne_chart", width="stretch")


# ------------------------------------------------------------------------- slow steps


def _run_slow(ctx: Context, key: str, compute: Callable[[OnStep], Any]) -> Any:
    """The kept result of step ``key`` for this model and image, or its button and a run."""
    store = st.session_state.setdefault(f"{P}_results", {})
    ident = (key, ctx.model_key, ctx.digest)
    if ident in store:
        return store[ident]
    left, right, _ = st.columns([1, 1, 3])
    if not left.button("Run this step", key=f"{P}_{key}_run", type="primary"):
        return None
    right.button("Stop", key=f"{P}_{key}_stop", help="Stops the run; nothing is kept.")
    bar = st.progress(0.0, text="Starting…")

    def on_step(info: StepInfo) -> bool:
        bar.progress(info.fraction, text=f"{info.step}/{info.total} · {info.message}")
        return True

    try:
        with heavy_job():
            result = compute(on_step)
    except ValueError as exc:
        bar.empty()
        st.error(str(exc))
        return None
    bar.empty()
    if not getattr(result, "stopped", False):
        store[ident] = result
    return result


def _class_vis(ctx: Context) -> None:
    names = ctx.spec.categories()
    top = int(cached.top_classes(ctx.model_key, ctx.digest, ctx.x).top1[0])
    settings = dataclasses.replace(synthesis.synthesis_preset(ctx.spec, "fourier"), steps=96)
    result = _run_slow(
        ctx,
        "class_visualization",
        lambda on_step: synthesis.class_visualization(
            ctx.model, target=[top], settings=settings, categories=names, on_step=on_step
        ),
    )
    if result is not None:
        st.image(render.to_uint8(result.images[0]), caption=f"{result.titles[0]}", width=260)
        record(f"Class visualization: {result.titles[0]}", render.to_uint8(result.images[0]),
               f"{result.steps_done} steps in {result.seconds:.1f} s")  # fmt: skip
        st.caption(f"{result.steps_done} steps in {result.seconds:.1f} s (the page runs more).")


def _inversion(ctx: Context) -> None:
    layers, settings = inversion.inversion_preset(ctx.spec)
    layer = layers[len(layers) // 2]
    settings = dataclasses.replace(settings, steps=80)
    result = _run_slow(
        ctx,
        "feature_inversion",
        lambda on_step: inversion.feature_inversion(
            ctx.model, ctx.x, layer=layer, settings=settings, on_step=on_step
        ),
    )
    if result is not None:
        st.image(
            [render.to_uint8(result.original), render.to_uint8(result.images[0])],
            caption=["the photo", f"from `{layer}`'s features"],
            width=200,
        )
        record(f"Inversion from {layer}", render.to_uint8(result.images[0]),
               f"{result.steps_done} steps in {result.seconds:.1f} s")  # fmt: skip


def _deepdream(ctx: Context) -> None:
    layer = dream.deepdream_layers(ctx.spec, ctx.model)[0]
    settings = dream.DreamSettings(octaves=2, steps_per_octave=8, max_size=256)
    result = _run_slow(
        ctx,
        "deepdream",
        lambda on_step: dream.deep_dream(
            ctx.model, images.to_tensor01(ctx.image), layer=layer, settings=settings,
            on_step=on_step,
        ),
    )  # fmt: skip
    if result is not None:
        st.image(render.to_uint8(result.image), caption=f"DeepDream · `{layer}`", width=260)
        record(f"DeepDream · {layer}", render.to_uint8(result.image), f"{result.seconds:.1f} s")


def _texture(ctx: Context) -> None:
    settings = style_tech.style_settings(ctx.spec, texture=True)
    sample_name = settings.sample or images.list_samples("texture")[0].name
    sample = style_view.pil_tensor(style_view.style_image(sample_name), 128)
    layers = settings.style_layers or ctx.spec.preset("style")
    result = _run_slow(
        ctx,
        "texture_synthesis",
        lambda on_step: style_tech.texture_synthesis(
            ctx.model, sample, layers=layers, size=(128, 128), optimizer=settings.optimizer,
            steps=60, lr=settings.lr, tv_weight=settings.tv_weight, on_step=on_step,
        ),
    )  # fmt: skip
    if result is not None:
        st.image(
            [render.to_uint8(sample[0].permute(1, 2, 0).numpy()), result.image],
            caption=[f"sample: {sample_name}", "synthesized (60 steps)"],
            width=160,
        )
        record("Texture synthesis", result.image, f"from {sample_name}, {result.seconds:.1f} s")


def _style(ctx: Context) -> None:
    settings = style_tech.style_settings(ctx.spec)
    style_name = next(iter(style_view.style_options()))
    result = _run_slow(
        ctx,
        "style_transfer",
        lambda on_step: style_tech.style_transfer(
            ctx.model, style_view.pil_tensor(ctx.image, 192),
            style=style_view.pil_tensor(style_view.style_image(style_name), 192),
            style_layers=settings.style_layers or ctx.spec.preset("style"),
            content_layer=ctx.spec.preset("content")[0], style_weight=settings.style_weight,
            content_weight=settings.content_weight, tv_weight=settings.tv_weight,
            optimizer=settings.optimizer, lr=settings.lr, steps=60, on_step=on_step,
        ),
    )  # fmt: skip
    if result is not None:
        st.image(result.image, caption=f"Gatys, style “{style_name}” (60 steps)", width=260)
        record("Style transfer", result.image, f"style {style_name}, {result.seconds:.1f} s")


STEPS: tuple[TourStep, ...] = (
    TourStep("first_layer_filters", "pages/1_Filters_and_activations.py",
             "The first layer's weights look straight at pixels, so they can be shown as "
             "pictures: edges and colour contrasts. Later layers cannot be read this way.",
             _filters),
    TourStep("neighbours", "pages/2_Feature_space.py",
             "Images close in the last layer's feature space show the same kind of thing; "
             "images close in pixel space only share colours and layout.", _neighbours),
    TourStep("feature_map", "pages/2_Feature_space.py",
             "t-SNE squeezes the whole gallery's features into a 2-D map where neighbours "
             "stay neighbours: classes form clusters.", _tsne, slow=True,
             cost="t-SNE of the gallery, 250 + 250 iterations"),
    TourStep("activations", "pages/1_Filters_and_activations.py",
             "A middle layer's channels for this image: each channel is a detector, "
             "active where its pattern is.", _activations),
    TourStep("max_patches", "pages/1_Filters_and_activations.py",
             "Which gallery patches excite one unit most? A common theme across them tells "
             "what the unit detects. The full page scans the gallery once per layer.",
             lambda ctx: st.page_link("pages/1_Filters_and_activations.py",
                                      label="Scan the gallery on the Filters page")),
    TourStep("occlusion", "pages/3_Attribution.py",
             "Hide a patch and see how much the class probability drops: red is what the "
             "network needs.", _occlusion, slow=True,
             cost="49 window positions, one forward pass each"),
    TourStep("saliency", "pages/3_Attribution.py",
             "The gradient of the class score with respect to each pixel: which pixels would "
             "change the score most.", _attribution("Saliency")),
    TourStep("guided_backprop", "pages/3_Attribution.py",
             "The gradient with only positive signals passed back through the ReLUs: crisp "
             "edges, but hardly about the class (the Attribution page's sanity check shows it).",
             _attribution("Guided backprop")),
    TourStep("grad_cam", "pages/3_Attribution.py",
             "CAM and Grad-CAM weigh the last feature maps by how much the class uses them: "
             "a coarse, class-specific heat map.", _attribution("Grad-CAM")),
    TourStep("class_visualization", "pages/4_Feature_visualization.py",
             "Start from noise and climb the class score's gradient, with regularizers that "
             "keep the image natural.", _class_vis, slow=True,
             cost="96 steps of gradient ascent (one forward and backward each)"),
    TourStep("feature_inversion", "pages/4_Feature_visualization.py",
             "Find an image whose features match the photo's at one layer: what survives is "
             "what the layer keeps.", _inversion, slow=True,
             cost="80 optimization steps"),
    TourStep("deepdream", "pages/4_Feature_visualization.py",
             "Amplify whatever a layer already sees in the photo.", _deepdream, slow=True,
             cost="2 octaves of 8 steps at 256 px"),
    TourStep("texture_synthesis", "pages/6_Texture_and_style.py",
             "Match the Gram matrices (feature correlations) of a texture sample, starting "
             "from noise.", _texture, slow=True,
             cost="60 L-BFGS/Adam steps at 128 px"),
    TourStep("style_transfer", "pages/6_Texture_and_style.py",
             "Keep the photo's deep features (content) and match a painting's Gram matrices "
             "(style).", _style, slow=True,
             cost="60 optimization steps at 192 px"),
    TourStep("fgsm", "pages/5_Adversarial_examples.py",
             "A perturbation too small to see, along the sign of the loss gradient, changes "
             "the prediction.", _adversarial),
)  # fmt: skip


def render_step(number: int, step: TourStep, ctx: Context) -> None:
    """One tour stop in a bordered box: text, formula, live result, link."""
    lesson = lessons.lesson(step.key)
    with st.container(border=True):
        st.markdown(f"#### {number}. {lesson.title}")
        st.markdown(step.text)
        st.latex(lesson.formula)
        if step.slow:
            st.caption(f"Slow step: {step.cost}. Press its button to run it.")
        try:
            step.show(ctx)
        except ValueError as exc:
            st.warning(str(exc))
        st.page_link(step.page, label=f"Open the full page: {lesson.title}", icon="➡️")
