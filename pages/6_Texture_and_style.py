"""Texture & style: Gram-matrix texture synthesis beside image quilting, Gatys style transfer, and a
fast feed-forward style network beside Gatys, with a two-style blend."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from vizcore.data import images
from vizcore.style import gatys as style_tech
from vizcore.style.quilting import max_patch, quilt_texture
from vizui import how_it_works, public
from vizui import style_view as sv
from vizui.frame import frame
from vizui.report_view import PageReport
from vizui.view_link import Control, float_in, int_in, one_of, restore, share, unless_set

ctx = frame(
    "Texture & style",
    intro="The Gram matrix G = F Fᵀ of a layer's features keeps which features occur together and "
    "throws away where: enough to describe a texture or a painting's style (Gatys et al. 2015, "
    "2016). A feed-forward network can learn to apply a style in one pass (Johnson et al. 2016).",
)
model_key, spec = ctx.model_key, ctx.spec
style_layers_default = list(spec.preset("style"))
content_default = spec.preset("content")
if not style_layers_default or not content_default:
    st.info(
        f"{spec.label} has no style/content layer presets; pick EfficientNet-Lite0 or "
        "SqueezeNet (or VGG-16) in the sidebar."
    )
    st.stop()
texture_layers = style_tech.style_settings(spec, texture=True).style_layers or ()
layer_options = list(
    dict.fromkeys(
        [*spec.preset("activations"), *style_layers_default, *content_default, *texture_layers]
    )
)

#: Style weights offered (log steps of about 3x; the measured useful range is 0.1 to 30).
STYLE_WEIGHTS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0]

#: Style images a link can name (an uploaded one cannot travel).
LINKABLE_STYLES = [key for key in sv.style_options() if key != sv.UPLOAD]
page_report = PageReport("Texture & style", ctx)
page_report.downloads("texture_style")  # built on click from every tab's figures below
tex_tab, gatys_tab, fast_tab = st.tabs(
    ["Texture synthesis", "Style transfer (Gatys)", "Fast style (feed-forward)"]
)

# ------------------------------------------------------------------------- texture synthesis
with tex_tab:
    st.markdown(
        "Synthesize a new texture from a sample two ways: **image quilting** (Efros & Freeman "
        "2001: copy patches whose overlap matches, cut along the best seam; no network) and "
        "**Gram matching** (Gatys et al. 2015: start from noise, match the sample's Gram "
        "matrices at several layers). Try **brick**: quilting keeps the wall, Gram statistics "
        "lose its long-range regularity (they only record which features co-occur)."
    )
    tex_settings = style_tech.style_settings(spec, texture=True)
    c1, c2, c3 = st.columns(3)
    tex_links = (
        Control("texture", f"texture_style_{model_key}_style", one_of(LINKABLE_STYLES),
                tex_settings.sample or "gravel"),
        Control("texture_size", "texture_style_size", one_of([128, 160, 192, 256]), 192),
    )  # fmt: skip
    restore(*tex_links)
    with c1:
        choice = sv.style_picker(
            f"texture_style_{model_key}", "Texture sample", tex_settings.sample or "gravel"
        )
        size = st.select_slider(
            "Output size (px)", [128, 160, 192, 256], unless_set("texture_style_size", 192),
            key="texture_style_size",
        )  # fmt: skip
    share(*tex_links)
    # Full width: a multiselect keeps its chips on one line and hides what does not fit (in a
    # third of the page only 3 of the 5 default layers showed).
    layers = st.multiselect(
        "Gram layers",
        layer_options,
        default=list(tex_settings.style_layers or style_layers_default),
        key=f"texture_style_layers_{model_key}",
    )
    with c2:
        optimizer = st.radio(
            "Optimizer",
            ["lbfgs", "adam"],
            horizontal=True,
            index=["lbfgs", "adam"].index(tex_settings.optimizer)
            if tex_settings.optimizer in ("lbfgs", "adam")
            else 0,
            key=f"texture_style_opt_{model_key}",
        )
        steps = st.slider(
            "Steps",
            20,
            public.max_steps(500),
            public.capped(tex_settings.steps, 500),
            10,
            key=f"texture_style_steps_{model_key}",
        )
    with c3:
        tv = st.number_input(
            "TV weight",
            0.0,
            10.0,
            tex_settings.tv_weight,
            0.05,
            key=f"texture_style_tv_{model_key}",
        )
        patch = st.slider(
            "Quilting patch size (px)",
            8,
            64,
            32,
            4,
            key="texture_style_patch",
            help="Larger patches keep larger structures (about one brick).",
        )
        seed = st.number_input("Seed", 0, 10_000, 0, key="texture_style_seed")
    if tex_settings.note:
        st.caption(f"{spec.label}: {tex_settings.note}.")
    tex_context = (model_key, choice.key if choice is not None else None)
    tex_stopped = sv.show_partial(
        "texture_style_run", "Gram texture synthesis", context=tex_context, name="gram_texture"
    )
    if choice is not None and st.button(
        "Synthesize", type="primary", key="texture_style_go", icon=":material/play_arrow:"
    ):
        if not layers:
            st.error("Choose at least one Gram layer.")
        else:
            sample = sv.pil_tensor(choice.image, size)
            sample_np = (sample[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            # The block must fit the sample: an elongated picture allows less than the slider.
            patch_used = min(patch, size - 8, max_patch(sample_np.shape))
            quilt = None
            try:
                with st.spinner("Image quilting…"):
                    quilt = quilt_texture(
                        sample_np, size=(size, size), patch=patch_used, seed=int(seed)
                    )
            except ValueError as exc:
                st.error(f"Image quilting: {exc}")
            gram_res = None
            if quilt is not None:
                gram_res = sv.run_with_progress(
                    "texture_style_run",
                    "Gram texture synthesis",
                    style_tech.texture_synthesis,
                    context=tex_context,
                    model=ctx.model,
                    x=sample,
                    layers=layers,
                    size=(size, size),
                    optimizer=optimizer,
                    steps=steps,
                    lr=sv.default_lr(optimizer, 0.05),
                    tv_weight=tv,
                    seed=int(seed),
                )
            if gram_res is not None:
                st.session_state["texture_style_result"] = {
                    "sample": sample_np,
                    "quilt": quilt,
                    "patch_asked": patch,
                    "gram": gram_res,
                    "label": choice.label,
                    "model": spec.label,
                }
    res = st.session_state.get("texture_style_result")
    if res:
        if tex_stopped:
            st.markdown("**Last finished run** (the stopped run is above the button)")
        a, b, c = st.columns(3)
        a.image(res["sample"], caption=f"Sample: {res['label']}", width="stretch")
        q, g = res["quilt"], res["gram"]
        page_report.figure("Texture sample", res["sample"], res["label"])
        page_report.figure("Image quilting", q.image, f"patch {q.patch} px: {q.seconds:.1f} s")
        page_report.figure(f"Gram matching on {res['model']}", g.image,
                           f"{g.steps_done} steps: {g.seconds:.1f} s")  # fmt: skip
        page_report.params.update({
            "texture: sample": res["label"], "Gram layers": ", ".join(g.settings["layers"]),
        })  # fmt: skip
        page_report.scores["Gram distance start → end"] = (
            f"{g.style_loss_start:.3g} → {g.style_loss_end:.3g}"
        )
        b.image(
            q.image,
            caption=f"Image quilting, patch {q.patch} px: {q.seconds:.1f} s",
            width="stretch",
        )
        asked = res.get("patch_asked", q.patch)
        if asked > q.patch:
            b.caption(
                f"Patch reduced from {asked} to {q.patch} px to fit the sample "
                f"({res['sample'].shape[1]}×{res['sample'].shape[0]} px) and the output."
            )
        with b:
            sv.downloads("texture_style_q", "quilted_texture", q.image)
        how_it_works.panel(
            "quilting",
            numbers={
                "patch": f"{q.patch} px",
                "overlap": f"{q.overlap} px",
                "distinct sample pixels used": (
                    f"{len(np.unique(q.source.reshape(-1, 2), axis=0))} of "
                    f"{res['sample'].shape[0] * res['sample'].shape[1]}"
                ),
                "time": f"{q.seconds:.2f} s",
            },
        )
        status = " (stopped)" if g.stopped else ""
        c.image(
            g.image,
            caption=f"Gram matching on {res['model']}, {g.steps_done} steps: "
            f"{g.seconds:.1f} s{status}",
            width="stretch",
        )
        with c:
            st.caption(
                f"Gram distance {g.style_loss_start:.3g} → {g.style_loss_end:.3g} "
                f"({g.style_loss_start / max(g.style_loss_end, 1e-12):.0f}× lower)."
            )
            sv.downloads("texture_style_g", "gram_texture", g.image, g.frames)
        if res["model"] == spec.label:  # the Gram matrix below is this model's
            sample_image = Image.fromarray(res["sample"])
            how_it_works.gram_panel(
                "texture_synthesis",
                model_key=model_key,
                digest=images.image_digest(sample_image),
                style_x=images.to_tensor01(sample_image),
                layer=g.settings["layers"][-1],
                numbers={
                    "layers": ", ".join(f"`{name}`" for name in g.settings["layers"]),
                    "Gram loss": f"{g.style_loss_start:.3g} → {g.style_loss_end:.3g}",
                    "steps": f"{g.steps_done}",
                },
            )

# --------------------------------------------------------------------------------- Gatys
with gatys_tab:
    settings = style_tech.style_settings(spec)
    st.markdown(
        "Start from the photo and minimize *style weight × style loss + content weight × content "
        "loss + TV weight × total variation* (Gatys et al. 2016). Both losses are relative: the "
        "style loss is 1 at the photo, the content loss reaches about 1 when the photo's features "
        "are gone. Equal weights balance them; each step of the style weight is about 3× more "
        "style."
    )
    c1, c2, c3 = st.columns(3)
    sw_default = settings.style_weight if settings.style_weight in STYLE_WEIGHTS else 3.0
    steps_default = public.capped(settings.steps, 500)
    gatys_links = (
        Control("style", "gatys_style_style", one_of(LINKABLE_STYLES), "marble"),
        Control("style_size", "gatys_style_size", one_of([128, 192, 256, 320, 384]), 256),
        Control("style_weight", f"gatys_style_sw_{model_key}", one_of(STYLE_WEIGHTS), sw_default),
        Control("content_weight", f"gatys_style_cw_{model_key}", float_in(0.0, 1e3),
                float(settings.content_weight)),
        Control("style_steps", f"gatys_style_steps_{model_key}",
                int_in(range(10, public.max_steps(500) + 1, 10)), steps_default),
    )  # fmt: skip
    restore(*gatys_links)
    with c1:
        g_choice = sv.style_picker("gatys_style", "Style image", "marble")
        g_size = st.select_slider(
            "Output size (long side, px)", [128, 192, 256, 320, 384],
            unless_set("gatys_style_size", 256), key="gatys_style_size",
        )  # fmt: skip
    g_layers = st.multiselect(  # full width, as the Gram layers above
        "Style layers",
        layer_options,
        default=style_layers_default,
        key=f"gatys_style_layers_{model_key}",
    )
    with c2:
        g_content = st.selectbox(
            "Content layer",
            layer_options,
            index=layer_options.index(content_default[0]),
            key=f"gatys_style_content_{model_key}",
        )
        g_opt = st.radio(
            "Optimizer",
            ["adam", "lbfgs"],
            horizontal=True,
            index=0 if settings.optimizer != "lbfgs" else 1,
            key=f"gatys_style_opt_{model_key}",
        )
    with c3:
        g_sw = st.select_slider(
            "Style weight",
            STYLE_WEIGHTS,
            unless_set(f"gatys_style_sw_{model_key}", sw_default),
            format_func=lambda v: f"{v:g}",
            key=f"gatys_style_sw_{model_key}",
            help="0.1 keeps the photo, 1 balances style and content, 10 paints the style over "
            "it; above about 30 the result hardly changes (bench/results/style_weights.md).",
        )
        g_cw = st.number_input(
            "Content weight",
            0.0,
            1e3,
            unless_set(f"gatys_style_cw_{model_key}", float(settings.content_weight)),
            0.5,
            key=f"gatys_style_cw_{model_key}",
        )
        g_tv = st.number_input(
            "TV weight", 0.0, 100.0, settings.tv_weight, 0.5, key=f"gatys_style_tv_{model_key}"
        )
        g_steps = st.slider(
            "Steps",
            10,
            public.max_steps(500),
            unless_set(f"gatys_style_steps_{model_key}", steps_default),
            10,
            key=f"gatys_style_steps_{model_key}",
        )
    share(*gatys_links)
    if settings.note:
        st.caption(f"Measured default for {spec.label}: {settings.note}.")
    g_context = (model_key, ctx.digest, g_choice.key if g_choice is not None else None)
    g_stopped = sv.show_partial(
        "gatys_style_run", "Style transfer", context=g_context, name="style_transfer"
    )
    if g_choice is not None and st.button(
        "Stylize", type="primary", key="gatys_style_go", icon=":material/play_arrow:"
    ):
        if not g_layers:
            st.error("Choose at least one style layer.")
        else:
            g_res = sv.run_with_progress(
                "gatys_style_run",
                "Style transfer",
                style_tech.style_transfer,
                context=g_context,
                model=ctx.model,
                x=sv.pil_tensor(ctx.image, g_size),
                style=sv.pil_tensor(g_choice.image, g_size),
                style_layers=g_layers,
                content_layer=g_content,
                style_weight=g_sw,
                content_weight=g_cw,
                tv_weight=g_tv,
                optimizer=g_opt,
                steps=g_steps,
                lr=sv.default_lr(g_opt, settings.lr),
            )
            if g_res is not None:
                store = st.session_state.setdefault("gatys_style_results", {})
                store[(model_key, ctx.digest, g_choice.key)] = g_res
                st.session_state["gatys_style_last"] = {
                    "key": (model_key, ctx.digest, g_choice.key),
                    "style": g_choice.image,
                    "label": g_choice.label,
                }
    last = st.session_state.get("gatys_style_last")
    if last and last["key"][:2] == (model_key, ctx.digest):
        g_res = st.session_state["gatys_style_results"][last["key"]]
        if g_stopped:
            st.markdown("**Last finished run** (the stopped run is above the button)")
        a, b, c = st.columns(3)
        a.image(ctx.image, caption=f"Content: {ctx.image_label}", width="stretch")
        b.image(last["style"], caption=f"Style: {last['label']}", width="stretch")
        status = " (stopped)" if g_res.stopped else ""
        c.image(
            g_res.image,
            caption=f"Gatys on {spec.label}: {g_res.steps_done} steps, "
            f"{g_res.seconds:.1f} s{status}",
            width="stretch",
        )
        with c:
            st.caption(sv.loss_terms(g_res))
            sv.downloads("gatys_style_dl", "style_transfer", g_res.image, g_res.frames)
        page_report.figure("Style image", np.asarray(last["style"].convert("RGB")), last["label"])
        page_report.figure(f"Gatys on {spec.label}", g_res.image,
                           f"{g_res.steps_done} steps, {g_res.seconds:.1f} s")  # fmt: skip
        page_report.params.update({
            f"style transfer: {name}": value for name, value in g_res.settings.items()
        })  # fmt: skip
        page_report.scores["style transfer: style loss left"] = f"{g_res.style_ratio:.3f}"
        style_image = last["style"]
        how_it_works.gram_panel(
            "style_transfer",
            model_key=model_key,
            digest=images.image_digest(style_image),
            style_x=images.to_tensor01(style_image.convert("RGB")),
            layer=g_res.settings["style_layers"][-1],
            numbers={
                "α (content weight)": f"{g_res.settings['content_weight']:g}",
                "β (style weight)": f"{g_res.settings['style_weight']:g}",
                "style loss left": f"{g_res.style_ratio:.3f} of the photo's",
                "content loss": (
                    f"{g_res.content_loss_end:.3f}" if g_res.content_loss_end is not None else "n/a"
                ),
                "steps": f"{g_res.steps_done}",
            },
        )

# ----------------------------------------------------------------------------- fast style
with fast_tab:
    try:
        net = sv.preset()
    except (ValueError, OSError) as exc:
        st.error(f"The fast-style preset could not be loaded: {exc}")
        st.stop()
    info = net.info
    st.markdown(
        "A small image transformation network (Johnson et al. 2016) with conditional instance "
        f"normalization (Dumoulin et al. 2017) holds **{len(net.styles)} styles** in one network: "
        f"{', '.join(net.styles)}. Stylizing is one forward pass at the image's full resolution. "
        f"It was trained here on CPU for {info.get('steps', '?')} steps "
        f"({float(info.get('seconds', 0)) / 60:.0f} min) on crops of the bundled photos, with "
        f"{info.get('loss_model', '?')} as loss network; see vizcore/data/styles/README.md."
    )
    f1, f2 = st.columns(2)
    fast_link = Control("fast_style", "fast_style_style", one_of(list(net.styles)), net.styles[0])
    restore(fast_link)
    f_style = f1.selectbox("Style", list(net.styles), key="fast_style_style")
    others = [s for s in net.styles if s != f_style]
    blend_links = (
        Control("blend_with", "fast_style_other", one_of(others), others[0]),
        Control("blend", "fast_style_blend", float_in(0.0, 1.0), 0.0, text=lambda v: f"{v:.2f}"),
    )
    restore(*blend_links)
    f_other = f2.selectbox("Blend with", others, key="fast_style_other")
    f_blend = st.slider(
        "Blend",
        0.0,
        1.0,
        unless_set("fast_style_blend", 0.0),
        0.05,
        key="fast_style_blend",
        help="Mixes the two styles' instance-norm scales and shifts: 0 is the "
        "first style, 1 the second.",
    )
    share(fast_link, *blend_links)
    # At blend 0 the other style has no weight (exactly): changing it must not restyle.
    fast = sv.fast_result(ctx.digest, ctx.image, f_style, f_other if f_blend else None, f_blend)
    a, b = st.columns(2)
    h, w = fast.image.shape[:2]
    # The style the fast image mostly shows (all of it at blend 0 or 1): Gatys beside it uses it.
    g_style = f_style if f_blend <= 0.5 else f_other
    if f_blend in (0.0, 1.0):
        label = g_style
    else:
        label = f"{1 - f_blend:.2f}·{f_style} + {f_blend:.2f}·{f_other}"
    a.image(
        fast.image,
        caption=f"Fast style ({label}), {w}×{h} px: {fast.seconds:.2f} s",
        width="stretch",
    )
    page_report.figure(f"Fast style ({label})", fast.image, f"{w}×{h} px: {fast.seconds:.2f} s")
    page_report.params.update({"fast style": label, "blend": f_blend})
    with a:
        sv.downloads(
            "fast_style_dl", f"fast_style_{label if f_blend in (0.0, 1.0) else 'blend'}", fast.image
        )
        how_it_works.panel(
            "fast_style",
            numbers={
                "styles": label,
                "b (blend)": f"{f_blend:.2f}",
                "one forward pass": f"{fast.seconds:.2f} s at {w}×{h} px",
            },
        )
    with b:
        key = (model_key, ctx.digest, g_style)
        sv.show_partial(
            "fast_style_gatys_run", f"Gatys with {g_style}", context=key, name="style_transfer"
        )
        g_done = st.session_state.get("gatys_style_results", {}).get(key)
        if g_done is not None:
            gh, gw = g_done.image.shape[:2]
            g_caption = (
                f"Gatys ({g_style}, {spec.label}), {gw}×{gh} px, "
                f"{g_done.steps_done} steps: {g_done.seconds:.1f} s"
            )
            st.image(g_done.image, caption=g_caption, width="stretch")
            page_report.figure(f"Gatys beside the fast style ({g_style})", g_done.image, g_caption)
        else:
            st.info(f"Run Gatys with the same style ({g_style}) to compare quality and time.")
        if 0.0 < f_blend < 1.0:
            st.caption(
                f"Gatys here takes one style: {g_style}, the larger part of the fast image's blend."
            )
        if st.button(
            f"Run Gatys with {g_style}", key="fast_style_gatys", icon=":material/play_arrow:"
        ):
            settings = style_tech.style_settings(spec)
            g_new = sv.run_with_progress(
                "fast_style_gatys_run",
                "Style transfer",
                style_tech.style_transfer,
                context=key,
                model=ctx.model,
                x=sv.pil_tensor(ctx.image, 256),
                style=sv.pil_tensor(sv.style_image(g_style), 256),
                style_layers=style_layers_default,
                content_layer=content_default[0],
                style_weight=settings.style_weight,
                content_weight=settings.content_weight,
                tv_weight=settings.tv_weight,
                optimizer=settings.optimizer,
                lr=settings.lr,
                steps=settings.steps,
            )
            if g_new is not None:
                st.session_state.setdefault("gatys_style_results", {})[key] = g_new
                st.rerun()
    st.caption(
        "What a few minutes of CPU training on nine photos can give: the style's palette and "
        "some of its texture, applied in a fraction of a second. What it cannot give: the "
        "fidelity of Gatys' per-image optimization, or robustness on images unlike the training "
        "crops. Johnson et al. trained for hours on 80,000 COCO images on a GPU."
    )
page_report.seal()
