"""Streamlit helpers for the Attribution page: cached computations and rendering.

No math here: every number comes from :mod:`vizcore.attribution` and
:mod:`vizcore.attribution.faithfulness`. ``COMPUTE_CALLS`` counts real (uncached) computations, so
tests can check that display-only controls never recompute.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch

from vizcore import attribution
from vizcore.attribution import AttributionMap, faithfulness
from vizcore.attribution.faithfulness import FaithfulnessCurves, RandomizationCheck
from vizcore.attribution.segmentation import Segmentation, grabcut_from_saliency
from vizcore.core import render
from vizcore.core.progress import OnStep
from vizui import cached, method_labels

#: Number of real computations per kind ("map", "curves", "sanity", "forward_time").
COMPUTE_CALLS: Counter[str] = Counter()

#: Methods whose cost is many forwards: computed only when the user presses Run.
SLOW = frozenset(label for label, info in method_labels.METHODS.items() if info.slow)

#: Methods with an ``exact=`` keyword (batched forwards that may run in bf16).
PRECISION_METHODS = frozenset({"Occlusion", "Score-CAM"})


def method_key(label: str) -> str:
    """A method's checkbox key: ``"Grad-CAM++"`` -> ``"attribution_method_grad_cam__"``."""
    return "attribution_method_" + re.sub(r"[^a-z0-9]", "_", label.lower())


@dataclass(frozen=True)
class MethodParams:
    """Everything that determines one method's map (hashable, for keys and caches)."""

    label: str
    target: int
    layer: str | None
    window: int
    stride: int
    fill: str
    exact: bool = True

    def kwargs(self) -> dict[str, Any]:
        """Keyword options for the vizcore function."""
        out: dict[str, Any] = {"target": self.target}
        if method_labels.METHODS[self.label].uses_layer:
            out["layer"] = self.layer
        if self.label == "Occlusion":
            out.update(window=self.window, stride=self.stride, fill=self.fill)
        if self.label in PRECISION_METHODS:
            out["exact"] = self.exact
        return out


def compute_map(
    model: torch.nn.Module, x: torch.Tensor, params: MethodParams, on_step: OnStep | None = None
) -> AttributionMap:
    """Run one method (uncached); long methods report progress through ``on_step``."""
    COMPUTE_CALLS["map"] += 1
    info = method_labels.METHODS[params.label]
    kwargs = params.kwargs()
    if info.slow:
        kwargs["on_step"] = on_step
    return info.fn(model, x, **kwargs)


@st.cache_data(max_entries=256, show_spinner=False)
def fast_map(model_key: str, digest: str, _x: torch.Tensor, params: MethodParams) -> AttributionMap:
    """A fast method's map, cached on model, image and parameters."""
    return compute_map(cached.model(model_key), _x, params)


def compute_curves(
    model: torch.nn.Module,
    x: torch.Tensor,
    result: AttributionMap,
    on_step: OnStep | None = None,
    *,
    exact: bool = True,
) -> FaithfulnessCurves:
    """Deletion/insertion curves of one map (uncached)."""
    COMPUTE_CALLS["curves"] += 1
    return faithfulness.deletion_insertion(
        model, x, result, steps=CURVE_STEPS, on_step=on_step, exact=exact
    )


def compute_sanity(
    model: torch.nn.Module, x: torch.Tensor, params: MethodParams, on_step: OnStep | None = None
) -> RandomizationCheck:
    """The cascading randomization check of one method (uncached)."""
    COMPUTE_CALLS["sanity"] += 1
    info = method_labels.METHODS[params.label]
    return faithfulness.randomization_check(
        model, x, method=info.fn, steps=SANITY_STEPS, on_step=on_step, **params.kwargs()
    )


@st.cache_data(max_entries=16, show_spinner=False)
def pass_times(model_key: str, size: int) -> attribution.PassTimes:
    """Measured seconds per model pass (batch 1, batch 16, with backward), once per model/size."""
    COMPUTE_CALLS["forward_time"] += 1
    return attribution.measure_pass_times(cached.model(model_key), size=(size, size))


#: Deletion/insertion steps of the page's scoring (``2 (steps + 1)`` images).
CURVE_STEPS = 20
#: Cascading randomization steps of the page's sanity check.
SANITY_STEPS = 3
#: Occlusion runs by itself, coarse to fine, when its whole estimate is at most this (seconds).
LIVE_SECONDS = 15.0


def live_seconds() -> float:
    """:data:`LIVE_SECONDS`, or ``VIZCORE_LIVE_SECONDS`` when set (the browser test sets it, so
    that its occlusion runs live however loaded the machine is)."""
    value = os.environ.get("VIZCORE_LIVE_SECONDS", "").strip()
    try:
        return float(value) if value else LIVE_SECONDS
    except ValueError:
        return LIVE_SECONDS


def method_cost(model: torch.nn.Module, size: int, params: MethodParams) -> attribution.Cost:
    """The passes one method's map takes (:attr:`MethodInfo.cost`, the page's options)."""
    return method_labels.METHODS[params.label].cost(model, (size, size), **params.kwargs())


def method_seconds(
    model: torch.nn.Module, size: int, params: MethodParams, times: attribution.PassTimes
) -> float:
    """Estimated seconds of one method's map."""
    return method_cost(model, size, params).seconds(times)


def curves_seconds(times: attribution.PassTimes) -> float:
    """Estimated seconds of one deletion/insertion scoring."""
    return faithfulness.deletion_insertion_cost(steps=CURVE_STEPS).seconds(times)


def sanity_seconds(
    model: torch.nn.Module, size: int, params: MethodParams, times: attribution.PassTimes
) -> float:
    """Estimated seconds of one method's randomization check."""
    info = method_labels.METHODS[params.label]
    cost = faithfulness.randomization_check_cost(
        model, (size, size), method=info.fn, steps=SANITY_STEPS, **params.kwargs()
    )
    return cost.seconds(times)


def live_occlusion_seconds(
    model: torch.nn.Module, size: int, params: MethodParams, times: attribution.PassTimes
) -> tuple[float, float]:
    """Estimated seconds to the first (coarse) map and to the full map, coarse to fine."""
    cost = attribution.method_cost(attribution.occlusion_progressive)
    first = cost(model, (size, size), levels=1, **params.kwargs())
    whole = cost(model, (size, size), **params.kwargs())
    return first.seconds(times), whole.seconds(times)


def live_occlusion(
    model: torch.nn.Module,
    x: torch.Tensor,
    params: MethodParams,
    *,
    show: Callable[[AttributionMap], None],
    status: Any,
) -> AttributionMap | None:
    """Occlusion coarse to fine, ``show(map)`` after each level; the final map, or ``None``.

    ``status`` (an ``st.empty``) gets the progress after every batch: that Streamlit call is
    where a rerun (a new slider value) interrupts the run, between model turns, so the model
    lock is free by then. Returns ``None`` when the run was stopped before the full map.
    """
    COMPUTE_CALLS["map"] += 1
    start = time.monotonic()

    def on_step(info: Any) -> bool:
        elapsed = time.monotonic() - start
        left = ""
        if info.waited is None and info.step > 0 and elapsed > 0.5:
            left = f" · about {format_seconds(elapsed / info.step * (info.total - info.step))} left"
        status.caption(f"Refining: {info.step}/{info.total} positions{left}")
        return True

    final: AttributionMap | None = None
    for result in attribution.occlusion_progressive(model, x, on_step=on_step, **params.kwargs()):
        show(result)
        if result.stopped:
            return None
        final = result
    status.empty()
    return final


def blank_message(label: str, result: AttributionMap) -> str | None:
    """What to show instead of a blank tile, or ``None`` when the map has something to show."""
    if not result.is_blank:
        return None
    value = float(result.map.flat[0]) if result.map.size else 0.0
    what = "all zero" if value == 0 else f"constant ({value:.3g})"
    if method_labels.METHODS[label].uses_layer:
        return (
            f"{label} at `{result.layer}` is {what}: the weighted sum of this layer's "
            "channels is negative or zero everywhere, and the ReLU of the CAM formula clears "
            "it. Pick a layer taken after an activation (its values are non-negative)."
        )
    return f"{label} is {what} for this image and class: there is nothing to show."


def overlay_tile(
    image: np.ndarray, result: AttributionMap, *, alpha: float, colormap: str
) -> np.ndarray:
    """The map over the image (display only: no recomputation)."""
    return overlay_array(image, result.map, alpha=alpha, colormap=colormap)


def overlay_array(
    image: np.ndarray, attribution_map: np.ndarray, *, alpha: float, colormap: str
) -> np.ndarray:
    """A non-negative part of a map, scaled to its 99.5th percentile, over the image."""
    heat = render.normalize01(np.clip(attribution_map, 0, None), percentile=99.5)
    return render.overlay(image, heat, alpha=alpha, colormap=colormap)


def map_png(result: AttributionMap, colormap: str) -> bytes:
    """The colorized map alone, as PNG bytes."""
    heat = render.normalize01(np.clip(result.map, 0, None), percentile=99.5)
    return render.png_bytes(render.colorize(heat, colormap=colormap))


def overlay_png(image: np.ndarray, result: AttributionMap, *, alpha: float, colormap: str) -> bytes:
    """The map over the image exactly as the tile shows it, as PNG bytes."""
    return render.png_bytes(overlay_tile(image, result, alpha=alpha, colormap=colormap))


def raw_npz(result: AttributionMap) -> bytes:
    """``map`` and ``raw`` arrays plus metadata, as ``.npz`` bytes."""
    return render.npz_bytes(
        map=result.map,
        raw=result.raw,
        target=np.asarray(-1 if result.target is None else result.target),
        seconds=np.asarray(result.seconds),
    )


def curves_chart(curves: FaithfulnessCurves) -> Any:
    """A small Plotly figure of the deletion and insertion curves."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=curves.fractions, y=curves.deletion, name="deletion", mode="lines")
    fig.add_scatter(x=curves.fractions, y=curves.insertion, name="insertion", mode="lines")
    fig.update_layout(
        height=180,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title="fraction of pixels",
        yaxis={"range": [0, 1], "title": "p(class)"},
        legend={"orientation": "h", "y": 1.15},
    )
    return fig


def progress_callback(bar: Any, prefix: str) -> Callable[[Any], bool]:
    """An ``on_step`` that drives an ``st.progress`` bar."""

    def on_step(info: Any) -> bool:
        bar.progress(info.fraction, text=f"{prefix}: {info.message}")
        return True

    return on_step


@dataclass(frozen=True)
class RunTask:
    """One piece of a Run: its progress label and its estimated seconds."""

    name: str
    seconds: float


def format_seconds(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"`` (rounded up to whole seconds, never negative)."""
    total = max(0, int(np.ceil(seconds)))
    if total < 60:
        return f"{total} s"
    return f"{total // 60} min {total % 60:02d} s"


class RunProgress:
    """One progress bar over a whole Run, with a time left measured from the progress so far.

    The estimates of the tasks only set their relative weights and the first guess: once a task
    has made progress, the time left is the estimated work still to do times the measured
    seconds per estimated second so far, so a slow or fast machine corrects it live.
    """

    def __init__(
        self,
        bar: Any,
        tasks: list[RunTask],
        *,
        clock: Callable[[], float] = time.monotonic,
        min_elapsed: float = 0.5,
    ) -> None:
        """``bar`` is an ``st.progress`` element (anything with ``.progress(value, text=)``)."""
        if any(task.seconds < 0 or not np.isfinite(task.seconds) for task in tasks):
            raise ValueError("Task estimates must be finite and non-negative seconds.")
        if min_elapsed < 0:
            raise ValueError("min_elapsed must be non-negative.")
        self._bar = bar
        self._tasks = {task.name: task for task in tasks}
        self._total = sum(task.seconds for task in tasks)
        self._finished = 0.0
        self._clock = clock
        self._start = clock()
        self._min_elapsed = min_elapsed
        self.last_text = ""

    def seconds_left(self, done: float) -> float:
        """Time left when ``done`` estimated seconds of work are done (measured rate if any)."""
        left = max(self._total - done, 0.0)
        elapsed = self._clock() - self._start
        if done > 0 and elapsed >= self._min_elapsed:
            return left * elapsed / done
        return left

    def callback(self, name: str) -> Callable[[Any], bool]:
        """The ``on_step`` for task ``name`` (one of the planned tasks)."""
        if name not in self._tasks:
            raise ValueError(f"{name!r} is not a planned task of this Run.")
        weight = self._tasks[name].seconds

        def on_step(info: Any) -> bool:
            done = self._finished + weight * min(max(float(info.fraction), 0.0), 1.0)
            self._update(f"{name}: {info.message}", done)
            return True

        return on_step

    def finish(self, name: str) -> None:
        """Mark task ``name`` done (finished, skipped or failed)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            self._finished += task.seconds
            self._update(f"{name}: done", self._finished)

    def done(self) -> None:
        """The whole Run is over."""
        elapsed = self._clock() - self._start
        self.last_text = f"Done in {format_seconds(elapsed)}."
        self._bar.progress(1.0, text=self.last_text)

    def _update(self, text: str, done: float) -> None:
        fraction = done / self._total if self._total > 0 else 1.0
        left = self.seconds_left(done)
        self.last_text = f"{text} · about {format_seconds(left)} left"
        self._bar.progress(min(max(fraction, 0.0), 1.0), text=self.last_text)


@st.cache_data(max_entries=64, show_spinner="Running GrabCut…")
def segment(
    model_key: str,
    digest: str,
    params: MethodParams,
    *,
    _image: np.ndarray,
    _map: np.ndarray,
    foreground: float,
    background: float,
    smooth_sigma: float,
    iterations: int,
) -> Segmentation:
    """GrabCut seeded by an attribution map (keyed by model, image, method and thresholds).

    The key holds the image digest and the method's parameters, which determine ``_map``.
    """
    return grabcut_from_saliency(
        _image,
        _map,
        foreground_percentile=foreground,
        background_percentile=background,
        smooth_sigma=smooth_sigma,
        iterations=iterations,
    )


def seed_overlay(image: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The image dimmed, sure-foreground seeds red, sure-background seeds blue."""
    out = (image.astype(np.float32) * 0.6).astype(np.uint8)
    out[seeds == 1] = (230, 40, 40)
    out[seeds == 0] = (40, 80, 230)
    return out


def mask_overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The object kept in colour, the background greyed out."""
    grey = image.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.35 + 150
    return np.where(mask[..., None], image, grey.astype(np.uint8))
