"""Streamlit helpers for the adversarial page: top-5 tables, attribution maps before/after, and
an attack kept when Stop interrupts it."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st
import torch
from torch import nn

from vizcore.attribution import grad_cam, saliency
from vizcore.core import render
from vizcore.core.progress import OnStep, StepInfo
from vizcore.models.predict import Prediction
from vizcore.optvis import adversarial
from vizui import cached
from vizui import synthesis_view as view

logger = logging.getLogger(__name__)


def top5_table(prediction: Prediction, *, highlight: int | None = None) -> dict[str, list]:
    """The top-5 as a small table (class, probability), the highlighted class marked."""
    return {
        "class": [
            f"{label} ◀" if int(i) == highlight else label
            for i, label in zip(prediction.indices, prediction.labels, strict=True)
        ],
        "probability": [float(p) for p in prediction.probabilities],
    }


def show_top5(title: str, prediction: Prediction, *, highlight: int | None = None) -> None:
    """A captioned top-5 table with probability bars."""
    st.markdown(f"**{title}**")
    st.dataframe(
        top5_table(prediction, highlight=highlight),
        hide_index=True,
        width="stretch",
        column_config={
            "probability": st.column_config.ProgressColumn(
                "probability", min_value=0.0, max_value=1.0, format="%.3f"
            )
        },
    )


def attribution_methods(cam_layer: str | None) -> dict[str, Callable[..., object]]:
    """The attribution maps offered for the before/after comparison."""
    methods: dict[str, Callable[..., object]] = {}
    if cam_layer:
        methods["Grad-CAM"] = lambda model, x, target: grad_cam(
            model, x, target=target, layer=cam_layer
        )
    methods["Saliency (gradient)"] = lambda model, x, target: saliency(model, x, target=target)
    return methods


def attribution_overlay(
    method: Callable[..., object], model: nn.Module, image01: np.ndarray, target: int
) -> np.ndarray | None:
    """The method's map for ``target`` over ``image01`` (``(H, W, 3)``), or ``None`` on failure."""
    x = torch.from_numpy(np.ascontiguousarray(image01)).permute(2, 0, 1)[None].float()
    try:
        result = method(model, x, target)
    except (ValueError, RuntimeError, TypeError) as exc:
        logger.exception("Attribution failed")
        st.warning(f"The attribution map could not be computed: {exc}")
        return None
    heat = np.asarray(result.map, dtype=np.float32)
    return render.overlay(image01, render.normalize01(heat), alpha=0.5)


def run_attack(
    prefix: str,
    params: tuple,
    attack: Callable[[OnStep], adversarial.AdversarialResult],
    *,
    evaluate_kwargs: dict[str, Any],
) -> None:
    """Run ``attack(on_step)`` with progress (see :func:`synthesis_view.run_with_progress`).

    Each step's adversarial image (``StepInfo.frame``) and loss are kept in the session under
    ``f"{prefix}_iterate"`` with ``evaluate_kwargs`` (the options of
    :func:`vizcore.optvis.adversarial.evaluate`), so that :func:`keep_stopped` can turn an
    attack interrupted by Stop into a result. The frame is not drawn while running: an
    adversarial image looks like the original.
    """
    start = time.perf_counter()
    record: dict[str, Any] = {
        "params": params, "frame": None, "step": 0, "total": 0, "losses": [], "seconds": 0.0,
        "kwargs": dict(evaluate_kwargs),
    }  # fmt: skip
    key = f"{prefix}_iterate"
    st.session_state[key] = record

    def run(on_step: OnStep) -> adversarial.AdversarialResult:
        def tracked(info: StepInfo) -> bool | None:
            if info.waited is None and info.frame is not None:
                record["losses"].append(info.loss)
                record.update(
                    frame=info.frame, step=info.step, total=info.total,
                    seconds=time.perf_counter() - start,
                )  # fmt: skip
            return on_step(dataclasses.replace(info, frame=None))

        return attack(tracked)

    view.run_with_progress(prefix, params, run)
    st.session_state.pop(key, None)  # finished (or refused): nothing to recover


def keep_stopped(
    prefix: str,
    model: nn.Module,
    x: torch.Tensor,
    *,
    context: tuple,
    categories: tuple[str, ...],
    label: str,
) -> None:
    """After an interrupted attack: keep the attack so far as the result, and say so.

    ``context`` is the leading part of ``params`` that names the model and the image (the page
    starts its params with them). An attack made on another model or image is dropped, with a
    note: its image would be shown and scored under the wrong model.
    """
    partial = st.session_state.pop(f"{prefix}_partial", None)
    record = st.session_state.pop(f"{prefix}_iterate", None)
    if partial is None and record is None:
        return
    params = (record or partial)["params"]
    if tuple(params[: len(context)]) != tuple(context):
        st.caption(
            "An attack on another model or image was interrupted by the change; it was dropped."
        )
        return
    if record is None or record["frame"] is None:
        st.warning(f"Stopped before the first step. Press **{label}** to run again.")
        return
    result = adversarial.evaluate(
        model, x, record["frame"], **record["kwargs"], categories=categories,
        losses=record["losses"], stopped=record["step"] < record["total"],
        seconds=record["seconds"],
    )  # fmt: skip
    st.session_state[f"{prefix}_result"] = {"params": params, "result": result}
    st.warning(
        f"Stopped at step {record['step']} of {record['total']}: the attack so far is shown "
        f"below. Press **{label}** to run again."
    )


def target_standing(
    result: adversarial.AdversarialResult, names: tuple[str, ...], *, adversarial_side: bool
) -> str:
    """Where the target class stands when it is outside the shown top-5 (else "")."""
    if result.target is None:
        return ""
    shown = result.after if adversarial_side else result.before
    if result.target in {int(i) for i in shown.indices}:
        return ""
    rank, probability = result.standing(result.target, adversarial=adversarial_side)
    return (
        f"Target **{names[result.target]}**: rank {rank} of {len(names)}, "
        f"probability {probability:.2g}."
    )


def untargeted_note(result: adversarial.AdversarialResult, names: tuple[str, ...]) -> str:
    """Why an untargeted attack often looks weak: it crosses the nearest decision boundary."""
    if result.target is not None:
        return ""
    text = (
        "An untargeted attack only has to leave the original class, so it stops at the nearest "
        "decision boundary, usually a similar class"
    )
    new = int(result.after.indices[0])
    if new != result.source:
        rank, probability = result.standing(new, adversarial=False)
        text += (
            f": **{names[new]}** was already number {rank} on the original "
            f"(probability {probability:.1%})"
        )
    return text + (
        ". To change what kind of thing the network sees, switch **Targeted** on and choose a "
        "class, or the least likely class (Kurakin et al. 2017)."
    )


def image_key(image01: np.ndarray) -> str:
    """A content digest of an ``(H, W, 3)`` float image (keys the cached maps below)."""
    data = np.ascontiguousarray(image01, dtype=np.float32)
    h = hashlib.blake2b(digest_size=16)
    h.update(str(data.shape).encode())
    h.update(data.tobytes())
    return h.hexdigest()


@st.cache_data(max_entries=32, show_spinner=False)
def attribution_heat(
    model_key: str, label: str, cam_layer: str | None, key: str, _image01: np.ndarray, target: int
) -> np.ndarray:
    """The raw map of ``attribution_methods(cam_layer)[label]`` for ``target`` on ``_image01``.

    Cached on (model, method, layer, image digest ``key``, class): the before/after maps are one
    forward and backward each, and every widget on the page reruns it (the attack settings only
    change what the next Attack does).
    """
    method = attribution_methods(cam_layer)[label]
    x = torch.from_numpy(np.ascontiguousarray(_image01)).permute(2, 0, 1)[None].float()
    result = method(cached.model(model_key), x, target)
    return np.asarray(result.map, dtype=np.float32)


def cached_attribution_overlay(
    model_key: str, label: str, cam_layer: str | None, image01: np.ndarray, target: int
) -> np.ndarray | None:
    """:func:`attribution_overlay` through the :func:`attribution_heat` cache."""
    try:
        heat = attribution_heat(model_key, label, cam_layer, image_key(image01), image01, target)
    except (ValueError, RuntimeError, TypeError) as exc:
        logger.exception("Attribution failed")
        st.warning(f"The attribution map could not be computed: {exc}")
        return None
    return render.overlay(image01, render.normalize01(heat), alpha=0.5)
