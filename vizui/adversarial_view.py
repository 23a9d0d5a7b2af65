"""Streamlit helpers for the adversarial page: top-5 tables and attribution maps before/after."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import numpy as np
import streamlit as st
import torch
from torch import nn

from vizcore import render
from vizcore.predict import Prediction
from vizcore.techniques.attribution import grad_cam, saliency
from vizui import cached

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
