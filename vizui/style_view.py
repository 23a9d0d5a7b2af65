"""Streamlit helpers for the texture and style page: style-image picker, runs with progress and
Stop, cached fast-style presets, result panels with downloads. No math here (see vizcore)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
import torch
from PIL import Image

from vizcore.core.progress import StepInfo
from vizcore.core.render import gif_bytes, png_bytes
from vizcore.data import images
from vizcore.style import fast_style
from vizcore.style.gatys import StyleResult
from vizcore.style.patterns import STYLE_PATTERNS
from vizui import cached, view_link
from vizui.queue_view import heavy_job
from vizui.throttle import FRAME_INTERVAL, PROGRESS_INTERVAL, Throttle, preview_jpeg

logger = logging.getLogger(__name__)

UPLOAD = "upload"
#: Long side at which uploaded or bundled style images are used.
STYLE_SIDE = 256
#: Fast style runs at full resolution, capped at this long side.
FAST_MAX_SIDE = 1024
#: Display width of the live frame during a run.
FRAME_WIDTH = 320


@dataclass(frozen=True)
class StyleChoice:
    """A style or texture image chosen on the page."""

    key: str
    label: str
    image: Image.Image


def style_options() -> dict[str, str]:
    """Key -> label of the style images offered (generated patterns, bundled textures, upload)."""
    options = {name: f"{name.capitalize()} (generated pattern)" for name in STYLE_PATTERNS}
    for sample in images.list_samples("texture"):
        options[sample.name] = f"{sample.label}, bundled"
    options[UPLOAD] = "Upload a style image…"
    return options


@st.cache_data(max_entries=16, show_spinner=False)
def _pattern(name: str, size: int) -> Image.Image:
    return STYLE_PATTERNS[name](size, seed=0)


def style_image(key: str, size: int = STYLE_SIDE) -> Image.Image:
    """A generated pattern or a bundled texture, centre-cropped to ``size`` (not uploads)."""
    if key in STYLE_PATTERNS:
        return _pattern(key, size)
    return images.resize_center_crop(cached.sample_image(key), size=size)


def style_picker(prefix: str, label: str, default: str) -> StyleChoice | None:
    """A selectbox of style images plus an uploader; None (after an error) when unusable."""
    options = style_options()
    keys = list(options)
    index = view_link.unless_set(f"{prefix}_style", keys.index(default))  # None: a link set it
    key = st.selectbox(
        label, keys, index=index or 0, format_func=options.get, key=f"{prefix}_style"
    )
    if key != UPLOAD:
        return StyleChoice(key, options[key], style_image(key))
    upload = st.file_uploader(
        "Style image",
        type=["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"],
        key=f"{prefix}_upload",
    )
    if upload is None:
        st.info("Upload an image to use as the style (a painting, a texture, a pattern).")
        return None
    try:
        image = cached.decoded_image(upload.getvalue())
    except images.ImageLoadError as exc:
        st.error(f"{upload.name}: {exc}")
        return None
    return StyleChoice(f"upload:{upload.name}", f"Uploaded: {upload.name}", image)


def pil_tensor(image: Image.Image, long_side: int) -> torch.Tensor:
    """``(1, 3, H, W)`` in [0, 1] with the long side resized to ``long_side``."""
    scale = long_side / max(image.size)
    size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
    return images.to_tensor01(image.resize(size, Image.Resampling.BICUBIC))


def run_with_progress(
    prefix: str,
    label: str,
    fn: Callable[..., object],
    *,
    context: Hashable = None,
    clock: Callable[[], float] = time.monotonic,
    **kwargs: object,
) -> object | None:
    """Run ``fn(**kwargs, on_step=...)`` with a progress bar, live frame and a Stop button.

    Pressing Stop reruns the page, which interrupts the run (the model is restored by vizcore);
    the frames so far are kept in session state, with ``context`` (what the run belongs to: model,
    image, style), so that :func:`show_partial` shows them only under that same context. The Stop
    button and the progress bar are removed when the run ends. The bar is updated at most every
    :data:`~vizui.throttle.PROGRESS_INTERVAL` seconds of ``clock``, the live frame (a downscaled
    JPEG) at most every :data:`~vizui.throttle.FRAME_INTERVAL`.
    """
    head = st.empty()
    stop_col, bar_col = head.container().columns([1, 5])
    stop_col.button("Stop", key=f"{prefix}_stop", icon=":material/stop:")
    bar = bar_col.progress(0.0, text=f"{label}: starting…")
    frame_slot = st.empty()
    partial: dict[str, Any] = {"frames": [], "step": 0, "total": 0, "context": context}
    progress_gate = Throttle(PROGRESS_INTERVAL, clock=clock)
    frame_gate = Throttle(FRAME_INTERVAL, clock=clock)

    def on_step(info: StepInfo) -> bool:
        if info.waited is not None:  # another session has the model: say so
            if progress_gate.ready():
                bar.progress(info.fraction, text=f"{label}: {info.message}")
            return True
        if info.frame is not None:
            partial["frames"].append(info.frame)
            partial.update(step=info.step, total=info.total)
            st.session_state[f"{prefix}_partial"] = partial
            if frame_gate.ready():
                frame_slot.image(
                    preview_jpeg(info.frame, width=FRAME_WIDTH),
                    caption=f"{label}, step {info.step}",
                    width=FRAME_WIDTH,
                )
        if progress_gate.ready():
            loss = f", loss {info.loss:.4g}" if info.loss is not None else ""
            bar.progress(info.fraction, text=f"{label}: step {info.step}/{info.total}{loss}")
        return True

    st.session_state.pop(f"{prefix}_partial", None)
    try:
        with heavy_job(label):
            result = fn(**kwargs, on_step=on_step)
    except ValueError as exc:
        head.empty()
        st.error(f"{exc}")
        return None
    head.empty()
    frame_slot.empty()
    st.session_state.pop(f"{prefix}_partial", None)
    return result


def loss_terms(result: StyleResult) -> str:
    """One line with a style transfer's loss terms at the result, raw and weighted."""
    sw = float(result.settings.get("style_weight", 1.0))
    cw = float(result.settings.get("content_weight", 1.0))
    text = (
        f"Style loss {result.style_ratio:.3f} of the photo's (× {sw:g} = "
        f"{sw * result.style_ratio:.3g})"
    )
    if result.content_loss_end is not None:
        c = result.content_loss_end
        text += f", content loss {c:.3f} (× {cw:g} = {cw * c:.3g})"
    return text + "."


def show_partial(
    prefix: str, label: str, *, context: Hashable = None, name: str = "stopped"
) -> bool:
    """If a run with this ``context`` was stopped (Stop, or another widget), show its last frame,
    labelled as the stopped run, with PNG and GIF downloads; return whether it was shown.

    A stopped run of another context (another model, image or style) is not shown.
    """
    partial = st.session_state.get(f"{prefix}_partial")
    if not isinstance(partial, dict) or partial.get("context") != context or not partial["frames"]:
        return False
    frames = partial["frames"]
    st.warning(
        f"**Stopped run:** {label} was stopped at step {partial['step']} of {partial['total']}. "
        "Its last frame is below; a finished run, if any, is shown under the button."
    )
    st.image(frames[-1], caption=f"Stopped run, step {partial['step']}", width=320)
    downloads(f"{prefix}_partial", name, frames[-1], tuple(frames))
    return True


def downloads(
    prefix: str, name: str, image: np.ndarray, frames: tuple[np.ndarray, ...] = ()
) -> None:
    """PNG (and GIF of the optimization, when there are frames) download buttons."""
    cols = st.columns(2)
    cols[0].download_button(  # the bytes are encoded when the button is clicked, not per rerun
        "PNG",
        lambda: png_bytes(image),
        file_name=f"{name}.png",
        mime="image/png",
        key=f"{prefix}_png",
        icon=":material/download:",
    )
    if len(frames) > 1:
        cols[1].download_button(
            "GIF",
            lambda: gif_bytes(list(frames)),
            file_name=f"{name}.gif",
            mime="image/gif",
            key=f"{prefix}_gif",
            icon=":material/animation:",
            help="The optimization, frame by frame (animated GIF).",
        )


@st.cache_resource(max_entries=2, show_spinner="Loading the fast-style network…")
def preset(name: str = fast_style.DEFAULT_PRESET) -> fast_style.StylePreset:
    """The shared, cached preset network (never trained or changed)."""
    return fast_style.load_preset(name)


def default_lr(optimizer: str, adam_lr: float) -> float:
    """Step size for the chosen optimizer: 1 for L-BFGS, the measured Adam rate otherwise."""
    return 1.0 if optimizer == "lbfgs" else adam_lr


@st.cache_data(max_entries=64, show_spinner=False)
def fast_result(
    digest: str, _image: Image.Image, style: str, blend_with: str | None, blend: float
) -> fast_style.FastStyleResult:
    """Stylize the image at full resolution (long side capped at :data:`FAST_MAX_SIDE`)."""
    net = preset()
    x = pil_tensor(_image, min(max(_image.size), FAST_MAX_SIDE))
    return fast_style.apply_style(net, x, style=style, blend_with=blend_with, blend=blend)
