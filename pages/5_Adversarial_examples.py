"""Adversarial examples: FGSM and PGD, untargeted or toward any ImageNet class, with the top-5
and an attribution map before and after."""

from __future__ import annotations

import streamlit as st

from vizcore.core import render
from vizcore.optvis import adversarial
from vizui import adversarial_view as adv_view
from vizui import how_it_works
from vizui import synthesis_view as view
from vizui.frame import frame
from vizui.report_view import PageReport
from vizui.view_link import Control, flag, flag_text, int_in, one_of, restore, share, unless_set

ctx = frame(
    "Adversarial examples",
    intro="Change every pixel by at most ε (a few 8-bit levels, invisible) so that the network "
    "changes its mind: the fast gradient sign method (Goodfellow et al. 2015) and its iterated, "
    "projected version (Kurakin et al. 2017; Madry et al. 2018).",
)
P = "adversarial"
names = ctx.spec.categories()
LEAST = adversarial.LEAST_LIKELY
target_options: list[int | str] = [LEAST, *range(len(names))]
target_default = 1 + names.index("goldfish") if "goldfish" in names else 0
links = (
    Control("attack", f"{P}_method", one_of(["pgd", "fgsm"]), "pgd"),
    Control("targeted", f"{P}_targeted", flag, True, text=flag_text),
    Control("target_class", f"{P}_target", one_of(target_options), target_options[target_default]),
    Control("eps", f"{P}_eps", int_in(range(1, 17)), 4),
    Control("step", f"{P}_step", int_in(range(1, 9)), 1),
    Control("steps", f"{P}_steps", int_in(range(1, 101)), 10),
    Control("random_start", f"{P}_random", flag, False, text=flag_text),
)
restore(*links)

c1, c2, c3 = st.columns(3)
method = c1.radio(
    "Attack",
    ["pgd", "fgsm"],
    horizontal=True,
    key=f"{P}_method",
    format_func={"pgd": "PGD (iterated)", "fgsm": "FGSM (one step)"}.get,
)
targeted = c2.toggle("Targeted", value=unless_set(f"{P}_targeted", True), key=f"{P}_targeted")
target = c3.selectbox(
    "Target class",
    target_options,
    index=unless_set(f"{P}_target", target_default) or 0,
    format_func=lambda i: "the least likely class" if i == LEAST else f"{i}: {names[i]}",
    key=f"{P}_target",
    disabled=not targeted,
    help="Untargeted: move away from the current prediction (often only to a similar class). "
    "The least likely class: the class the model finds least likely on this image "
    "(Kurakin et al. 2017), a change of kind.",
)
chosen_target = (target if target == LEAST else int(target)) if targeted else None
c1, c2, c3, c4 = st.columns(4)
eps255 = c1.slider("ε (pixel levels, ×1/255)", 1, 16, unless_set(f"{P}_eps", 4), key=f"{P}_eps")
step255 = c2.slider(
    "Step size (×1/255)", 1, 8, unless_set(f"{P}_step", 1), key=f"{P}_step",
    disabled=method == "fgsm",
    help="FGSM takes one step of size ε.",
)  # fmt: skip
steps = c3.slider("Steps", 1, 100, unless_set(f"{P}_steps", 10), key=f"{P}_steps",
                  disabled=method == "fgsm")  # fmt: skip
random_start = c4.toggle(
    "Random start", value=unless_set(f"{P}_random", False), key=f"{P}_random",
    disabled=method == "fgsm", help="Start from a random point of the ε-ball (Madry et al.).",
)  # fmt: skip
share(*links)
seed = 0
params = (
    ctx.model_key, ctx.digest, method, chosen_target, eps255, step255, steps, random_start,
)  # fmt: skip

if view.start_stop(P, label="Attack"):
    kwargs = {"target": chosen_target, "epsilon": eps255 / 255, "categories": names}
    if method == "fgsm":
        run = lambda on_step: adversarial.fgsm(ctx.model, ctx.x, **kwargs, on_step=on_step)  # noqa: E731
    else:
        run = lambda on_step: adversarial.pgd(  # noqa: E731
            ctx.model, ctx.x, **kwargs, step_size=step255 / 255, steps=int(steps),
            random_start=bool(random_start), seed=seed, on_step=on_step,
        )  # fmt: skip
    adv_view.run_attack(
        P, params, run,
        evaluate_kwargs={"epsilon": eps255 / 255, "method": method, "target": chosen_target},
    )  # fmt: skip
adv_view.keep_stopped(
    P, ctx.model, ctx.x, context=(ctx.model_key, ctx.digest), categories=names, label="Attack"
)

stored = view.stored_result(P)
if stored is None:
    st.info("Choose an attack and press **Attack**. PGD toward 'goldfish' at ε = 4/255 takes "
            "about a second.")  # fmt: skip
    st.stop()
old_params, result = stored
if old_params != params:
    st.caption("Shown: the last attack (the settings have changed since; press Attack).")

if result.target is None:
    goal = "untargeted"
elif result.least_likely:
    goal = f"toward the least likely class, **{names[result.target]}**"
else:
    goal = f"toward **{names[result.target]}**"
verdict = "succeeded" if result.success else "did not succeed"
(st.success if result.success else st.warning)(
    f"{result.method.upper()} {goal}, ε = {round(result.epsilon * 255)}/255: the attack "
    f"{verdict}. Now: **{result.after.labels[0]}** ({result.after.probabilities[0]:.1%}); "
    f"largest pixel change {result.linf * 255:.0f}/255"
    + (" (stopped early)" if result.stopped else "")
    + f", {result.steps_done} step(s) in {result.seconds:.2f} s."
)
if note := adv_view.untargeted_note(result, names):
    st.caption(note)
original = render.to_uint8(result.original)
adv_image = render.to_uint8(result.adversarial)
magnified = render.to_uint8(result.magnified_perturbation)
shown = (
    ("Original", original, f"Original: {result.before.labels[0]}"),
    ("Adversarial", adv_image, f"Adversarial: {result.after.labels[0]}"),
    ("Perturbation", magnified, f"Perturbation, magnified ×{0.5 / result.epsilon:.0f} (grey = 0)"),
)
page_report = PageReport("Adversarial examples", ctx)
for column, (title, picture, caption) in zip(st.columns(3), shown, strict=True):
    column.image(picture, caption=caption, width="stretch")
    page_report.figure(title, picture, caption)
page_report.params.update({
    "attack": result.method.upper(), "goal": goal.replace("**", ""),
    "ε": f"{round(result.epsilon * 255)}/255", "step size": f"{step255}/255 (PGD)",
    "steps": f"{result.steps_done}", "random start": bool(random_start),
})  # fmt: skip
page_report.scores.update({
    "success": bool(result.success), "largest pixel change": f"{result.linf * 255:.0f}/255",
    "top-1 after": f"{result.after.labels[0]} ({result.after.probabilities[0]:.1%})",
    "run time (s)": round(result.seconds, 2),
})  # fmt: skip
for title, prediction in (("Top-5 before", result.before), ("Top-5 after", result.after)):
    page_report.table(title, ("class", "probability"),
                      [(label, round(float(p), 4)) for label, p in
                       zip(prediction.labels, prediction.probabilities, strict=True)])  # fmt: skip
c1, c2 = st.columns(2)
for column, title, prediction, side in (
    (c1, "Top-5 before", result.before, False),
    (c2, "Top-5 after", result.after, True),
):
    with column:
        adv_view.show_top5(title, prediction, highlight=result.target)
        if standing := adv_view.target_standing(result, names, adversarial_side=side):
            st.caption(standing)
view.png_download(P, adv_image, name="adversarial")
page_report.downloads(P)  # built on click, with the before/after maps below
if result.on_grid:
    st.caption("The adversarial image lies on the 8-bit grid: the PNG keeps the attack exactly.")
how_it_works.adversarial_panel(result, names)

st.subheader("What the model looks at, before and after")
cam_layers = ctx.spec.preset("cam")
methods = adv_view.attribution_methods(cam_layers[0] if cam_layers else None)
if methods:
    c1, c2 = st.columns(2)
    map_link = Control("attr_map", f"{P}_attr_method", one_of(list(methods)), next(iter(methods)))
    restore(map_link)
    chosen = c1.selectbox("Attribution map", list(methods), key=f"{P}_attr_method")
    share(map_link)
    explain = c2.radio(
        "Explain the class",
        ["predicted", "original"],
        horizontal=True,
        key=f"{P}_attr_class",
        format_func={
            "predicted": "each image's own top class",
            "original": "the original top class in both",
        }.get,
    )
    before_class = int(result.before.indices[0])
    after_class = int(result.after.indices[0]) if explain == "predicted" else before_class
    c1, c2 = st.columns(2)
    for column, image01, cls, label in (
        (c1, result.original, before_class, "before"),
        (c2, result.adversarial, after_class, "after"),
    ):
        heat = adv_view.cached_attribution_overlay(
            ctx.model_key, chosen, cam_layers[0] if cam_layers else None, image01, cls
        )
        if heat is not None:
            column.image(heat, caption=f"{chosen} {label}: {names[cls]}", width="stretch")
            page_report.figure(f"{chosen} {label}", heat, names[cls])
page_report.seal()
