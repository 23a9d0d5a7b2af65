"""Streamlit helpers for the adversarial page: top-5 tables and attribution maps before/after."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import streamlit as st
import torch
from torch import nn

from vizcore import render
from vizcore.predict import Prediction

logger = logging.getLogger(__name__)

try:  # built on the attribution branch; the comparison appears once it is merged
    from vizcore.techniques.attribution import grad_cam, saliency

    ATTRIBUTION_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the merge order
    grad_cam = saliency = None
    ATTRIBUTION_AVAILABLE = False


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
    """The attribution maps offered for the before/after comparison (empty if unavailable)."""
    if not ATTRIBUTION_AVAILABLE:
        return {}
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
