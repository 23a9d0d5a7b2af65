"""Cached wrappers and render helpers for the filters and feature-space pages.

Streamlit-only glue: every function here calls :mod:`vizcore` and caches on hashable keys
(model key, image digest, gallery digest, parameters); ``_``-prefixed arguments are identified by
the digest next to them.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image

from vizcore.core import render
from vizcore.core.layers import list_layers
from vizcore.data.gallery import Gallery
from vizcore.inside import embedding, filters
from vizcore.models import registry
from vizui import cached

_PALETTE = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6",
    "#9d755d", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#17becf",
)  # fmt: skip


@st.cache_data(max_entries=8, show_spinner=False)
def first_filters(model_key: str) -> filters.FilterTiles:
    """First-layer RGB filters of a model."""
    return filters.first_layer_filters(cached.model(model_key))


@st.cache_data(max_entries=8, show_spinner=False)
def conv_layers(model_key: str) -> list[str]:
    """Conv layer names in module order."""
    return list_layers(cached.model(model_key), kind="conv")


@st.cache_data(max_entries=8, show_spinner=False)
def map_layers(model_key: str) -> list[str]:
    """Layers with channel maps worth showing: presets, convs and activations, in module order."""
    model = cached.model(model_key)
    wanted = set(list_layers(model, kind="conv")) | set(list_layers(model, kind="activation"))
    wanted |= set(registry.get_spec(model_key).preset("activations"))
    return [name for name in list_layers(model) if name in wanted]


@st.cache_data(max_entries=64, show_spinner=False)
def kernels(model_key: str, layer: str, filter_index: int) -> filters.FilterKernels:
    """Per-input-channel kernels of one filter."""
    return filters.filter_kernels(cached.model(model_key), layer=layer, filter_index=filter_index)


def activations(model_key: str, digest: str, x: torch.Tensor, layer: str, sort: str):
    """Activation maps (served from vizcore's activation cache after the first forward)."""
    return filters.activation_maps(
        cached.model(model_key), x, layer=layer, sort=sort, cache_key=(model_key, digest)
    )


def upscale(image: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscale of a small uint8 image (keeps pixels crisp)."""
    pil = Image.fromarray(image)
    return np.asarray(pil.resize((size, size * pil.height // pil.width), Image.Resampling.NEAREST))


def filter_grid(tiles01: np.ndarray, *, tile: int = 48, columns: int = 16) -> np.ndarray:
    """``(F, k, k, 3)`` or ``(F, k, k)`` tiles in [0, 1] as one uint8 grid image."""
    images = [upscale(render.to_uint8(t), tile) for t in tiles01]
    return render.grid(images, columns=columns, pad=2)


def activation_grid(
    maps: np.ndarray,
    order: np.ndarray,
    *,
    count: int,
    threshold: float | None,
    per_channel: bool,
    colormap: str,
    tile: int = 72,
    columns: int = 8,
) -> np.ndarray:
    """Colorized grid of the first ``count`` channels in ``order``."""
    shown = filters.apply_threshold(maps[order[:count]], threshold)
    top = float(maps.max()) if maps.size else 1.0
    tiles = []
    for m in shown:
        m01 = render.normalize01(m) if per_channel else np.clip(m / max(top, 1e-12), 0.0, 1.0)
        tiles.append(render.colorize(render.resize_map(m01, (tile, tile)), colormap=colormap))
    return render.grid(tiles, columns=columns, pad=2)


@st.cache_data(max_entries=32, show_spinner=False)
def patches(
    model_key: str, gallery_digest: str, _gallery: Gallery, layer: str, channel: int, top_k: int
) -> filters.PatchSet:
    """Maximally activating patches (the gallery scan itself comes from the disk cache)."""
    spec = registry.get_spec(model_key)
    return filters.max_activating_patches(
        cached.model(model_key), _gallery, layer=layer, channel=channel, model_key=model_key,
        input_size=spec.preprocessing.input_size, top_k=top_k,
    )  # fmt: skip


@st.cache_data(max_entries=4, show_spinner=False)
def pixel_vectors(gallery_digest: str, _gallery: Gallery) -> np.ndarray:
    """The gallery's 32x32 pixel vectors for pixel-space neighbours (once per gallery)."""
    return embedding.pixel_vectors(_gallery.images)


def features_digest(features: np.ndarray) -> str:
    """A short content digest of a feature matrix (keys the gallery map on what it is fit to)."""
    data = np.ascontiguousarray(features)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{data.dtype.str}{data.shape}".encode())
    h.update(data.tobytes())
    return h.hexdigest()


#: Fitted gallery maps held by the server (shared by sessions; never changed after the fit).
#: One is about 0.1 MB per 100 gallery images (``GalleryMap.nbytes``).
GALLERY_MAP_ENTRIES = 8


@st.cache_resource(max_entries=GALLERY_MAP_ENTRIES, show_spinner=False)
def gallery_map(
    model_key: str,
    layer: str,
    features_key: str,
    _features: np.ndarray,
    method: str,
    perplexity: float,
    seed: int,
    n_iter: int,
) -> embedding.GalleryMap:
    """The gallery's PCA / t-SNE map, fitted once per (model, layer, features, parameters).

    Independent of the current image: a new image is placed on it by :func:`query_point`.
    Shared read-only by every session (``GalleryMap`` is immutable; placing never writes to it).
    """
    del model_key, layer  # part of the cache key only (with the features' own digest)
    return embedding.fit_map(_features, method=method, perplexity=perplexity, seed=seed,
                             n_iter=n_iter)  # fmt: skip


@st.cache_data(max_entries=64, show_spinner=False)
def query_point(
    model_key: str,
    layer: str,
    features_key: str,
    map_key: tuple[str, float, int, int],
    _gallery_map: embedding.GalleryMap,
    image_digest: str,
    _x: torch.Tensor,
) -> tuple[np.ndarray, float]:
    """The current image's position on a fitted map and the seconds placing it took."""
    del features_key, map_key  # identify ``_gallery_map`` in the cache key
    t0 = time.perf_counter()
    q = embedding.query_features(cached.model(model_key), _x, layer=layer,
                                 cache_key=(model_key, image_digest))  # fmt: skip
    point = embedding.place_query(_gallery_map, q)
    return point, time.perf_counter() - t0


def feature_map(
    model_key: str,
    layer: str,
    gallery_digest: str,
    features: np.ndarray,
    image_digest: str,
    x: torch.Tensor,
    method: str,
    perplexity: float,
    seed: int,
    n_iter: int,
) -> embedding.FeatureMap:
    """PCA / t-SNE map with the current image placed in it.

    The gallery map is cached apart from the current image (:func:`gallery_map`); choosing
    another image only places the new star (:func:`query_point`). ``gallery_digest`` is kept for
    callers; the map is keyed on the features' own digest.
    """
    del gallery_digest
    if method == "pca":  # t-SNE's settings do not change a PCA map
        perplexity, seed, n_iter = 0.0, 0, 0
    key = features_digest(features)
    fitted = gallery_map(model_key, layer, key, features, method, perplexity, seed, n_iter)
    if fitted.stopped:
        return fitted.with_query(None)
    point, seconds = query_point(model_key, layer, key, (method, perplexity, seed, n_iter),
                                 fitted, image_digest, x)  # fmt: skip
    return fitted.with_query(point, seconds=seconds)


def scatter(
    fmap: embedding.FeatureMap,
    g: Gallery,
    *,
    selected: int | None,
    current_label: str,
    height: int = 560,
) -> go.Figure:
    """Plotly scatter coloured by label; the current image a star, the selected point ringed."""
    fig = go.Figure()
    labels = np.array(g.labels)
    for i, label in enumerate(g.classes):
        idx = np.flatnonzero(labels == label)
        fig.add_trace(
            go.Scatter(
                x=fmap.coords[idx, 0], y=fmap.coords[idx, 1], mode="markers", name=label,
                marker={"size": 8, "color": _PALETTE[i % len(_PALETTE)], "opacity": 0.85,
                        "line": {"width": 0.5, "color": "white"}},
                customdata=np.stack([idx.astype(str), np.array(g.names)[idx]], axis=1),
                hovertemplate="%{customdata[1]}<br>" + label.replace("%", "%%")
                + "<extra></extra>",
            )
        )  # fmt: skip
    if selected is not None and 0 <= selected < len(g):
        fig.add_trace(
            go.Scatter(
                x=[fmap.coords[selected, 0]], y=[fmap.coords[selected, 1]], mode="markers",
                name="Selected", hoverinfo="skip",
                marker={"size": 18, "color": "rgba(0,0,0,0)",
                        "line": {"width": 3, "color": "black"}},
            )
        )  # fmt: skip
    if fmap.query is not None:
        fig.add_trace(
            go.Scatter(
                x=[fmap.query[0]], y=[fmap.query[1]], mode="markers", name="Current image",
                customdata=[["current", current_label]],
                marker={"size": 20, "symbol": "star", "color": "gold",
                        "line": {"width": 2, "color": "black"}},
                hovertemplate="Current image: %{customdata[1]}<extra></extra>",
            )
        )  # fmt: skip
    axis = "PC" if fmap.method == "pca" else "t-SNE "
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title=f"{axis}1", yaxis_title=f"{axis}2", legend_title_text="Label",
        dragmode="pan", hovermode="closest",
    )  # fmt: skip
    return fig


def short_caption(text: str, *, limit: int = 18) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (one caption line in a narrow tile)."""
    if limit < 2:
        raise ValueError("limit must be at least 2 characters.")
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def patch_grid(ps: filters.PatchSet, *, columns: int) -> list[str]:
    """The top patches row by row (one ``st.columns`` per row, so the rows line up), each
    captioned with its value and label on one line (the whole caption on hover).

    Returns:
        The whole caption of each patch, in order (for a report).
    """
    captions = [f"{value:.3g} · {label}" for value, label in zip(ps.values, ps.labels, strict=True)]
    for start in range(0, len(ps.values), columns):
        row = range(start, min(start + columns, len(ps.values)))
        for col, i in zip(st.columns(columns), row, strict=False):
            with col:
                st.image(ps.patches[i], width="stretch")
                st.caption(short_caption(captions[i]), help=captions[i])
    return captions


def thumbnail_row(
    g: Gallery, indices: np.ndarray, distances: np.ndarray, *, width: int = 96
) -> None:
    """Gallery images in a row of columns, captioned with label and distance."""
    if len(indices) == 0:
        st.caption("No neighbours.")
        return
    cols = st.columns(len(indices))
    for col, i, d in zip(cols, indices, distances, strict=True):
        with col:
            st.image(g.images[int(i)], width=width)
            st.caption(f"{g.labels[int(i)]} · {d:.3g}")
