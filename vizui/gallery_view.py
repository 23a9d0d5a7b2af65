"""Streamlit side of galleries: pick, upload or download one; extract its features with progress.

Both feature pages share the selected gallery through ``st.session_state["vz_gallery"]``. User
galleries live in the session only (``vz_user_galleries``); features of every gallery go to the
on-disk cache of :mod:`vizcore.data.features`, so a second visit or a restart reuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from vizcore.core import precision
from vizcore.core.progress import StepInfo
from vizcore.data import datasets, features, gallery
from vizui import public
from vizui.frame import Context
from vizui.hover_thumbs import data_uri
from vizui.queue_view import heavy_job

logger = logging.getLogger(__name__)

_SELECTED = "vz_gallery"
_USER = "vz_user_galleries"
BUILTIN = "builtin"
UPLOAD_TYPES = ["zip", "png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]

T = TypeVar("T")


@st.cache_resource(max_entries=1, show_spinner="Building the demo gallery…")
def builtin() -> gallery.Gallery:
    """The built-in gallery (generated once per server, then read from the disk cache)."""
    return gallery.builtin_gallery()


@st.cache_resource(max_entries=2, show_spinner="Loading the dataset…")
def dataset(key: str) -> gallery.Gallery:
    """A downloaded dataset's gallery."""
    return datasets.dataset_gallery(key)


@st.cache_data(ttl=60, show_spinner=False)
def dataset_status(key: str) -> datasets.DatasetStatus:
    """Download status (cached a minute; never blocks more than ~1.5 s, never when offline)."""
    return datasets.dataset_status(key)


@st.cache_data(max_entries=8, show_spinner=False)
def thumbnails(digest: str, _gallery: gallery.Gallery, size: int = 72) -> dict[str, str]:
    """``{str(index): data URI}`` for every gallery image (keyed by the gallery digest)."""
    return {str(i): data_uri(img, size) for i, img in enumerate(_gallery.images)}


def user_galleries() -> dict[str, gallery.Gallery]:
    """The galleries built from this session's uploads."""
    return st.session_state.setdefault(_USER, {})


def _options() -> dict[str, str]:
    options = {BUILTIN: "Built-in demo gallery (crops of the bundled photos)"}
    for gid, g in user_galleries().items():
        options[gid] = f"{g.name}: {len(g)} images, {len(g.classes)} label(s)"
    for key, info in datasets.DATASETS.items():
        if dataset_status(key).downloaded:
            options[f"dataset:{key}"] = info.label
    return options


def current_gallery() -> gallery.Gallery:
    """The selected gallery (the built-in one by default)."""
    gid = st.session_state.get(_SELECTED, BUILTIN)
    if gid in user_galleries():
        return user_galleries()[gid]
    if gid.startswith("dataset:"):
        try:
            return dataset(gid.removeprefix("dataset:"))
        except gallery.GalleryError as exc:
            st.warning(str(exc))
    return builtin()


def gallery_picker(prefix: str, *, describe: bool = True) -> gallery.Gallery:
    """A select box of the available galleries; returns the chosen one.

    ``describe=False`` leaves out the gallery's description (the caller shows it elsewhere, e.g.
    at full width below a row of narrow columns).
    """
    options = _options()
    current = st.session_state.get(_SELECTED, BUILTIN)
    if current not in options:
        current = BUILTIN
    widget = f"{prefix}_gallery"
    st.session_state[widget] = current

    def persist() -> None:
        st.session_state[_SELECTED] = st.session_state[widget]

    st.selectbox("Gallery", list(options), key=widget, format_func=options.get, on_change=persist)
    g = current_gallery()
    if describe:
        st.caption(g.description)
    return g


def upload_section(prefix: str) -> None:
    """Upload images or a zip of class folders; build a gallery; report skipped files."""
    limits = gallery.UploadLimits()
    message = st.session_state.pop(f"{prefix}_built_msg", None)
    if message:
        text, skipped = message
        st.success(text)
        if skipped:
            with st.expander(f"{len(skipped)} file(s) skipped"):
                st.markdown("\n".join(f"- {line}" for line in skipped[:200]))
    files = st.file_uploader(
        "Upload images, or a zip with one folder per class",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=f"{prefix}_upload",
        help=(
            f"Up to {limits.max_images} images, {limits.max_file_bytes // 2**20} MB per image, "
            f"{limits.max_total_bytes // 2**20} MB in all. In a zip, `cats/a.jpg` gets the label "
            "`cats`. Nested archives are refused; files that are not images are skipped."
        ),
    )
    if not files:
        return
    if not st.button("Build gallery from the upload", key=f"{prefix}_build", type="primary"):
        return
    named = [(f.name, f.getvalue()) for f in files]
    name = files[0].name.rsplit(".", 1)[0] if len(files) == 1 else "Uploaded images"
    try:
        with st.spinner("Reading the upload…"):
            built = gallery.gallery_from_uploads(named, name=name, limits=limits)
    except gallery.GalleryError as exc:
        st.error(str(exc))
        return
    gid = f"upload:{built.digest[:12]}"
    user_galleries()[gid] = built
    st.session_state[_SELECTED] = gid
    text = f"Built “{built.name}”: {len(built)} images, labels: {', '.join(built.classes)}."
    st.session_state[f"{prefix}_built_msg"] = (text, built.skipped)
    st.rerun()


def dataset_section(prefix: str) -> None:
    """Offer downloadable datasets when online; say why not otherwise (never hangs)."""
    if public.is_public():
        st.caption("Dataset downloads are off on this public server (VIZCORE_PUBLIC).")
        return
    for key, info in datasets.DATASETS.items():
        status = dataset_status(key)
        if status.downloaded:
            st.caption(f"✅ {info.label}: downloaded.")
        elif not status.available:
            st.caption(f"⛔ {info.label} (~{info.size_mb} MB): unavailable. {status.reason}")
        elif st.button(f"Download {info.label} (~{info.size_mb} MB)", key=f"{prefix}_dl_{key}"):
            bar = st.progress(0.0, text=f"Downloading {info.label}…")

            def on_step(step: StepInfo, bar=bar, label=info.label) -> bool:
                bar.progress(step.fraction, text=f"Downloading {label}: {step.message}")
                return True

            try:
                datasets.download_dataset(key, on_step=on_step)
            except ConnectionError as exc:
                st.error(f"{exc} The built-in gallery and uploads work offline.")
                continue
            dataset_status.clear()
            st.session_state[_SELECTED] = f"dataset:{key}"
            st.rerun()


def gallery_controls(prefix: str) -> gallery.Gallery:
    """Picker plus (in an expander) upload and datasets; returns the chosen gallery."""
    g = gallery_picker(prefix)
    with st.expander("Use your own images or a dataset"):
        upload_section(prefix)
        st.markdown("**Datasets** (downloaded once into the cache folder)")
        dataset_section(prefix)
    return g


def run_with_progress(
    label: str, work: Callable[[Callable[[StepInfo], bool]], T], *, key: str
) -> T:
    """Run ``work(on_step)`` with a progress bar and a Stop button (a click reruns and stops)."""
    st.button("Stop", key=f"{key}_stop", help="Stops the work; nothing half-done is cached.")
    bar = st.progress(0.0, text=label)

    def on_step(step: StepInfo) -> bool:
        bar.progress(step.fraction, text=f"{label}: {step.message}")
        return True

    with heavy_job(label):
        result = work(on_step)
    bar.empty()
    return result


def gallery_features(
    ctx: Context, g: gallery.Gallery, layer: str, *, key: str, exact: bool = True
) -> features.GalleryFeatures | None:
    """The gallery's features from the disk cache, or a button that extracts them with progress.

    ``exact=False`` lets the extraction run in bf16 where it is fast (cached apart from fp32).
    """
    size = ctx.spec.preprocessing.input_size
    used = precision.precision_of(exact=exact, device=precision.model_device(ctx.model))
    hit = features.lookup_features(
        g, layer=layer, model_key=ctx.model_key, input_size=size, precision=used
    )
    if hit is not None:
        return hit
    # The notice, the buttons and the progress share one placeholder, emptied once the features
    # are there: the finished results never sit below a stale "not cached yet" box.
    slot = st.empty()
    with slot.container():
        st.info(
            f"Features of the {len(g)} gallery images at `{layer}` are not cached yet. "
            "Extracting them takes one forward pass per image in batches of 16 (about a minute "
            "per 1,000 images on 2 CPU cores); they are then kept on disk for every later visit."
        )
        if not st.button("Extract gallery features", key=f"{key}_extract", type="primary"):
            return None
        result = run_with_progress(
            "Extracting features",
            lambda on_step: features.gallery_features(
                ctx.model, g, layer=layer, model_key=ctx.model_key, input_size=size,
                on_step=on_step, exact=exact,
            ),
            key=key,
        )  # fmt: skip
    slot.empty()
    return result
