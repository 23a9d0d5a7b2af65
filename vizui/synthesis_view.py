"""Streamlit helpers for the optimization pages: settings controls, runs with live progress and a
Stop button, results kept in the session, downloads.

How Stop works: the Stop button is drawn before the run starts. Clicking it (or any widget) makes
Streamlit rerun the script; the rerun request surfaces inside the run's ``on_step`` callback as an
exception, which ``vizcore`` lets through after removing its hooks and restoring the model (the
bar is updated at most four times a second, so that is at most a quarter second later). The
callback keeps the frames seen so far in the session, so the rerun can show where the run was.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import streamlit as st

from vizcore import optvis
from vizcore.core import render
from vizcore.core.progress import OnStep, StepInfo
from vizcore.models.registry import ModelSpec
from vizcore.optvis.synthesis import (
    SynthesisSettings,
    synthesis_preset,
)
from vizui import public
from vizui.queue_view import heavy_job
from vizui.throttle import FRAME_INTERVAL, PROGRESS_INTERVAL, Throttle, preview_jpeg

logger = logging.getLogger(__name__)

R = TypeVar("R")


def _store(key: str) -> dict[str, Any]:
    return st.session_state.setdefault(key, {})


def start_stop(prefix: str, label: str = "Start") -> bool:
    """A Start and a Stop button side by side; returns whether Start was pressed."""
    left, right, _ = st.columns([1, 1, 4])
    started = left.button(
        label, key=f"{prefix}_start", type="primary", icon=":material/play_arrow:"
    )
    right.button(
        "Stop", key=f"{prefix}_stop", icon=":material/stop:",
        help="Stops a running optimization; the frames computed so far are kept.",
    )  # fmt: skip
    return started


def run_with_progress(
    prefix: str,
    params: tuple,
    compute: Callable[[OnStep], R],
    *,
    frame_width: int = 420,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``compute(on_step)`` with a progress bar and live frames; keep the result.

    The result goes to ``st.session_state[f"{prefix}_result"]`` together with ``params`` (the
    widget values it was made with). While running, the latest frames are mirrored into
    ``f"{prefix}_partial"`` so that an interrupted run (Stop) can still be shown. The bar is
    updated at most every :data:`~vizui.throttle.PROGRESS_INTERVAL` seconds of ``clock`` and the
    live frame (a downscaled JPEG) at most every :data:`~vizui.throttle.FRAME_INTERVAL`.
    """
    bar = st.progress(0.0, text="Starting…")
    slot = st.empty()
    partial: dict[str, Any] = {"params": params, "frames": [], "step": 0, "total": 0, "loss": None}
    st.session_state[f"{prefix}_partial"] = partial
    progress_gate = Throttle(PROGRESS_INTERVAL, clock=clock)
    frame_gate = Throttle(FRAME_INTERVAL, clock=clock)

    def on_step(info: StepInfo) -> bool:
        if info.waited is not None:  # another session has the model: say so, keep the state
            if progress_gate.ready():
                bar.progress(info.fraction, text=f"Step {info.step}/{info.total} · {info.message}")
            return True
        partial.update(step=info.step, total=info.total, loss=info.loss)
        if info.frame is not None:
            partial["frames"].append(info.frame)
            if frame_gate.ready():
                slot.image(
                    preview_jpeg(info.frame, width=frame_width),
                    caption=info.message or f"step {info.step}",
                    width=frame_width,
                )
        if progress_gate.ready():
            loss = "" if info.loss is None else f" · loss {info.loss:.4g}"
            bar.progress(info.fraction, text=f"Step {info.step}/{info.total}{loss}")
        return True

    try:
        with heavy_job():
            result = compute(on_step)
    except ValueError as exc:  # bad settings: the message says what to change
        st.session_state.pop(f"{prefix}_partial", None)
        bar.empty()
        st.error(str(exc))
        return
    st.session_state.pop(f"{prefix}_partial", None)
    st.session_state[f"{prefix}_result"] = {"params": params, "result": result}
    bar.empty()
    slot.empty()


def show_interrupted(prefix: str, *, context: tuple | None = None) -> None:
    """If a run was interrupted by Stop (or another widget), say so and show its last frame.

    ``context`` is the leading part of the page's params that names the model (and image) now
    selected; a run made with another one (the model was switched during the run) is dropped
    with a note instead of being shown as stopped under the new model.
    """
    partial = st.session_state.pop(f"{prefix}_partial", None)
    if not partial:
        return
    if context is not None and tuple(partial["params"][: len(context)]) != tuple(context):
        st.caption(
            "A run on another model or image was interrupted by the change; its frames were "
            "dropped."
        )
        return
    st.warning(
        f"Stopped at step {partial['step']} of {partial['total']}. Press Start to run again."
    )
    frames = partial["frames"]
    if frames:
        st.image(frames[-1], caption=f"Last frame (step {partial['step']})", width=420)
        gif_download(prefix + "_partial", frames)


def stored_result(prefix: str) -> tuple[tuple, Any] | None:
    """``(params, result)`` of the last finished run, if any."""
    entry = st.session_state.get(f"{prefix}_result")
    return (entry["params"], entry["result"]) if entry else None


def gif_download(prefix: str, frames: Sequence[np.ndarray], *, name: str = "optimization") -> None:
    """A download button for the run's frames as an animated GIF (encoded when clicked)."""
    if not frames:
        return
    kept = list(frames)
    st.download_button(
        "Download the optimization (GIF)",
        data=lambda: render.gif_bytes(kept, duration_ms=100),
        file_name=f"{name}.gif",
        mime="image/gif",
        key=f"{prefix}_gif",
        icon=":material/animation:",
    )


def png_download(prefix: str, image: np.ndarray, *, name: str = "image") -> None:
    """A download button for a uint8 image as PNG (encoded when clicked)."""
    st.download_button(
        "Download the image (PNG)",
        data=lambda: render.png_bytes(image),
        file_name=f"{name}.png",
        mime="image/png",
        key=f"{prefix}_png",
        icon=":material/download:",
    )


def settings_controls(
    prefix: str,
    spec: ModelSpec,
    *,
    has_relu6: bool,
    default_parameterization: str = "fourier",
) -> SynthesisSettings:
    """Widgets for :class:`SynthesisSettings`, initialized from the model's measured preset.

    Widget keys include the model and the parameterization, so switching either brings back
    that combination's preset values.
    """
    parameterization = st.radio(
        "Image parameterization",
        ["fourier", "pixel"],
        index=["fourier", "pixel"].index(default_parameterization),
        horizontal=True,
        key=f"{prefix}_param",
        format_func={
            "fourier": "Fourier + decorrelated colour (colourful, lucid-style)",
            "pixel": "Pixels + Yosinski regularizers (the CS231n look)",
        }.get,
    )
    preset = synthesis_preset(spec, parameterization)
    k = f"{prefix}_{spec.key}_{parameterization}"
    c1, c2, c3 = st.columns(3)
    steps = c1.slider(
        "Steps", 1, public.max_steps(500), public.capped(preset.steps, 500), key=f"{k}_steps"
    )
    if parameterization == "fourier":
        lr = c2.slider("Step size (Adam learning rate)", 0.005, 0.2, preset.lr, 0.005,
                       key=f"{k}_lr", format="%.3f")  # fmt: skip
    else:
        lr255 = c2.slider(
            "Step size (pixel levels, ×1/255)", 0.25, 8.0, preset.lr * 255, 0.25, key=f"{k}_lr",
            help="Normalized gradient ascent: x += step · g / mean|g|.",
        )  # fmt: skip
        lr = lr255 / 255
    size = c3.select_slider(
        "Image size", [64, 96, 128, 160, 192, 224, 227, 256, 320], preset.size, key=f"{k}_size",
        help="Smaller is faster; the bundled models work at any size.",
    )  # fmt: skip
    c1, c2, c3 = st.columns(3)
    l2_weight = c1.slider(
        "L2 penalty λ (Simonyan)", 0.0, 0.1, preset.l2_weight, 0.001, key=f"{k}_l2",
        format="%.3f", help="Maximize S_c(I) − λ‖I‖² (I centred on grey).",
    )  # fmt: skip
    jitter = c2.slider("Jitter (pixels)", 0, 32, preset.jitter, key=f"{k}_jitter",
                       help="Random shift each step.")  # fmt: skip
    scale_pct = c3.slider(
        "Scale jitter (±%)", 0, 40, round((preset.scale[1] - 1) * 100), key=f"{k}_scale",
        help="Random zoom each step. EfficientNet-Lite needs about ±25%.",
    )  # fmt: skip
    c1, c2, c3 = st.columns(3)
    rotate = c1.slider("Rotation jitter (±°)", 0, 30, int(preset.rotate), key=f"{k}_rotate")
    tv_weight = c2.slider("Total variation weight", 0.0, 5.0, preset.tv_weight, 0.1,
                          key=f"{k}_tv")  # fmt: skip
    relu6 = c3.toggle(
        "ReLU6 straight-through", value=preset.relu6_passthrough and has_relu6,
        key=f"{k}_relu6", disabled=not has_relu6,
        help="Gradients pass through ReLU6 above 6 (forward unchanged). EfficientNet-Lite "
        "gives noise without it.",
    )  # fmt: skip
    regularizers = optvis.PixelRegularizers()
    init = preset.init
    if parameterization == "pixel":
        if has_relu6:
            st.caption(
                "Measured on EfficientNet-Lite0: pixel space stays noisy even with these "
                "regularizers; the Fourier parameterization gives recognizable objects. "
                "SqueezeNet gives the classic CS231n look here."
            )
        st.markdown("**Yosinski et al. 2015 regularizers** (applied to the pixels after each step)")
        regs = preset.regularizers
        c1, c2, c3 = st.columns(3)
        decay = c1.slider("L2 decay (per step)", 0.0, 0.05, regs.l2_decay, 0.0005,
                          key=f"{k}_decay", format="%.4f")  # fmt: skip
        sigma = c2.slider("Blur σ (pixels)", 0.0, 2.0, regs.blur_sigma, 0.05, key=f"{k}_sigma")
        every = c3.slider("Blur every (steps)", 1, 20, regs.blur_every, key=f"{k}_every")
        c1, c2, c3 = st.columns(3)
        norm_pct = c1.slider("Clip small-norm pixels (percentile)", 0, 95,
                             int(regs.norm_percentile), key=f"{k}_normclip")  # fmt: skip
        contrib_pct = c2.slider(
            "Clip small-contribution pixels (percentile)", 0, 95,
            int(regs.contribution_percentile), key=f"{k}_contribclip",
            help="Zero the pixels whose |x · gradient| is small.",
        )  # fmt: skip
        init = c3.radio("Start from", ["zeros", "noise"], horizontal=True, key=f"{k}_init",
                        format_func={"zeros": "grey (zero)", "noise": "noise"}.get)  # fmt: skip
        regularizers = optvis.PixelRegularizers(
            l2_decay=decay,
            blur_sigma=sigma,
            blur_every=every,
            norm_percentile=norm_pct,
            contribution_percentile=contrib_pct,
        )
    return dataclasses.replace(
        preset,
        steps=int(steps),
        lr=float(lr),
        size=int(size),
        l2_weight=float(l2_weight),
        tv_weight=float(tv_weight),
        jitter=int(jitter),
        scale=(1 - scale_pct / 100, 1 + scale_pct / 100),
        rotate=float(rotate),
        pad=preset.pad if (scale_pct or rotate) else 0,
        relu6_passthrough=bool(relu6),
        regularizers=regularizers,
        init=init,
    )


def image_grid(
    images01: np.ndarray, captions: Sequence[str], *, columns: int = 3, width: int = 260
) -> np.ndarray:
    """Show float images in columns with captions; return them as one uint8 grid (for PNG)."""
    tiles = [render.to_uint8(img) for img in images01]
    cols = st.columns(min(columns, len(tiles)))
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        cols[i % len(cols)].image(tile, caption=caption, width=width)
    return render.grid(tiles, columns=min(columns, len(tiles)), pad=2)


def downloads(prefix: str, image: np.ndarray, frames: Sequence[np.ndarray], *, name: str) -> None:
    """The result as a PNG and its optimization as a GIF, side by side."""
    left, right = st.columns(2)
    with left:
        png_download(prefix, image, name=name)
    with right:
        gif_download(prefix, frames, name=name)
