"""Streamlit side of dataset indexes (issue 17): choose one, open it once, show what it holds.

An index is a folder written by ``vizcore index build`` (:mod:`vizcore.data.index`). The app
offers the folders listed in ``VIZCORE_INDEXES`` (set by whoever runs the server, separated by
``os.pathsep``) and, except in public mode, any folder a visitor types in (kept in the session).
The choice is shared by the Filters, Feature space and Unit pages (``st.session_state
["vz_index"]``). Opening is cached per server (features and thumbnails stay memory-mapped);
nothing here runs the model over the index.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from vizcore.data import index_query, index_tsne
from vizcore.data.index import ImageIndex, open_index
from vizcore.inside import embedding
from vizui import inside_view, public, view_link
from vizui.frame import Context
from vizui.hover_thumbs import data_uri, hover_thumbnails

logger = logging.getLogger(__name__)

INDEXES_ENV = "VIZCORE_INDEXES"
NONE = ""
_SELECTED = "vz_index"
_USER = "vz_user_indexes"
#: The URL parameter of the chosen index: a ``VIZCORE_INDEXES`` entry's folder name (its
#: 1-based position when two entries share a name), never a path.
INDEX_PARAM = "index"
#: Map sample caps offered (a t-SNE of more points takes minutes on two cores).
MAP_CAPS = (250, 500, 1000, 2000, 5000)
#: A precomputed map: points drawn at most (a seeded sample above), hover thumbnails at most
#: (about 2.5 kB each in the page), and WebGL markers above this many points.
DISPLAY_MAX = 100_000
HOVER_THUMBS = 5_000
WEBGL_ABOVE = 5_000


def configured() -> list[str]:
    """The server's index folders (``VIZCORE_INDEXES``), as given."""
    raw = os.environ.get(INDEXES_ENV, "")
    return [part.strip() for part in raw.split(os.pathsep) if part.strip()]


def _stamp(path: str) -> float:
    try:
        return (Path(path) / "manifest.json").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(max_entries=4, show_spinner="Opening the index…")
def _opened(path: str, stamp: float) -> ImageIndex:
    """The index at ``path`` (reopened when its manifest changes: ``stamp`` is its mtime)."""
    del stamp
    return open_index(path)


def opened(path: str) -> ImageIndex:
    """The opened index at ``path`` (cached per server). Raises ``ValueError`` if it is not one."""
    return _opened(path, _stamp(path))


def link_name(path: str) -> str | None:
    """How ``path`` travels in a link: its folder name, or its position when the name is not
    unique; ``None`` for a folder typed in (not a server index: it stays in the session)."""
    entries = list(dict.fromkeys(configured()))
    if path not in entries:
        return None
    names = [Path(p).name for p in entries]
    name = Path(path).name
    return name if names.count(name) == 1 else str(entries.index(path) + 1)


def _from_link(raw: str) -> str | None:
    """The ``VIZCORE_INDEXES`` entry a link names (see :func:`link_name`), else ``None``."""
    entries = list(dict.fromkeys(configured()))
    for path in entries:
        if link_name(path) == raw:
            return path
    if raw.isdigit() and 1 <= int(raw) <= len(entries):
        return entries[int(raw) - 1]
    return None


def _options() -> dict[str, str]:
    options = {NONE: "None: the gallery below"}
    paths = configured() + ([] if public.is_public() else st.session_state.get(_USER, []))
    for path in dict.fromkeys(paths):
        try:
            idx = opened(path)
        except ValueError as exc:
            options[path] = f"{Path(path).name} (cannot open: {exc})"
            continue
        options[path] = f"{Path(path).name}: {len(idx)} images, {idx.manifest['model_key']}"
    return options


def _open_folder(prefix: str) -> None:
    """A text box for an index folder (not in public mode); a valid one is added and chosen."""
    with st.expander("Open an index folder"):
        st.caption(
            "Build one with `vizcore index build FOLDER --model KEY --layers L1,L2 --out "
            "INDEX`, then give the INDEX folder here (a path on the server)."
        )
        folder = st.text_input("Index folder", key=f"{prefix}_index_path")
        if st.button("Open", key=f"{prefix}_index_open") and folder.strip():
            path = os.fspath(Path(folder.strip()).expanduser())
            try:
                opened(path)
            except ValueError as exc:
                st.error(str(exc))
                return
            known = st.session_state.setdefault(_USER, [])
            if path not in known:
                known.append(path)
            st.session_state[_SELECTED] = path
            st.rerun()


def index_picker(prefix: str) -> ImageIndex | None:
    """A select box of the available indexes ("None" first); returns the chosen one, opened.

    In public mode only the server's ``VIZCORE_INDEXES`` are offered and no folder can be typed.
    The choice travels in the page link (``?index=NAME``, :func:`link_name`) when it is one of
    the server's indexes; a link naming anything else shows the default with a short notice.
    """
    linked = view_link.take(INDEX_PARAM, _from_link)  # a server index, never a path
    if linked is not None:
        st.session_state[_SELECTED] = linked
    options = _options()
    current = st.session_state.get(_SELECTED, NONE)
    if current not in options:
        current = NONE
    if len(options) == 1 and public.is_public():
        return None  # nothing configured: no control at all
    widget = f"{prefix}_index"
    st.session_state[widget] = current

    def persist() -> None:
        st.session_state[_SELECTED] = st.session_state[widget]

    st.selectbox(
        "Dataset index", list(options), key=widget, format_func=options.get, on_change=persist,
        help="A dataset indexed once with `vizcore index build`: every channel's top images "
        "and every image's features are read from it, without running the model over it.",
    )  # fmt: skip
    if not public.is_public():
        _open_folder(prefix)
    view_link.publish(INDEX_PARAM, link_name(current))
    if current == NONE:
        return None
    try:
        return opened(current)
    except ValueError as exc:
        st.error(str(exc))
        return None


def for_model(idx: ImageIndex, model_key: str) -> bool:
    """True when ``idx`` was built with ``model_key``; otherwise says so and returns False."""
    try:
        index_query.check_index_model(idx, model_key)
    except ValueError as exc:
        st.warning(str(exc))
        return False
    return True


def describe(idx: ImageIndex) -> str:
    """One line about an index, for a caption."""
    m = idx.manifest
    skipped = len(m.get("skipped", []))
    done = "" if m.get("complete", True) else " (an unfinished build: its finished shards)"
    return (
        f"Index `{idx.path.name}`: **{len(idx)} images**{done} from `{m['source']}`, model "
        f"`{m['model_key']}`, layers {', '.join(f'`{n}`' for n in idx.layers)}, top "
        f"{m['top_k']} per channel, features of `{m['embedding_layer']}`"
        + (f"; {skipped} file(s) skipped when it was built." if skipped else ".")
    )


# ------------------------------------------------------------------------------ patches


@st.cache_data(max_entries=64, show_spinner=False)
def unit_patches(path: str, stamp: float, layer: str, channel: int, k: int):
    """A channel's top patches from the index (cached per index state, layer, channel, k)."""
    del stamp
    return index_query.unit_patches(opened(path), layer, channel, k=k)


def patch_grid(found: index_query.UnitPatches, *, columns: int = 6) -> None:
    """The patches row by row (one ``st.columns`` per row), captioned with value and file."""
    for start in range(0, len(found.patches), columns):
        row = range(start, min(start + columns, len(found.patches)))
        for col, i in zip(st.columns(columns), row, strict=False):
            with col:
                p = found.patches[i]
                st.image(found.crops[i], width="stretch")
                short = f"{p.value:.3g} · {Path(p.path).name}"
                st.caption(inside_view.short_caption(short), help=f"{p.value:.3g} · {p.path}")


def patches_view(
    idx: ImageIndex, *, layer: str, channel: int, k: int, columns: int = 6
) -> index_query.UnitPatches | None:
    """One channel's top-``k`` patches read from the index, with what they are."""
    try:
        found = unit_patches(os.fspath(idx.path), _stamp(os.fspath(idx.path)), layer,
                             int(channel), int(k))  # fmt: skip
    except ValueError as exc:
        st.error(str(exc))
        return None
    rf = found.field_size
    field = f"receptive field **{rf[0]:.0f}×{rf[1]:.0f} px**" if rf else "receptive field unknown"
    st.markdown(
        f"`{layer}` channel **{int(channel)}**: the top {len(found.patches)} of "
        f"**{found.images} indexed images**, read from the index (no scan); {field} on a "
        f"{found.input_size}×{found.input_size} view ({found.map_shape[0]}×{found.map_shape[1]}"
        " map), cropped at the stored position of each maximum."
    )
    patch_grid(found, columns=columns)
    return found


def patches_tab(idx: ImageIndex, *, key: str, default_layer: str) -> None:
    """The Filters page's patches tab over an index: any indexed channel at once, no scan."""
    st.caption(describe(idx))
    layers = idx.layers
    c1, c2, c3 = st.columns(3)
    layer = c1.selectbox(
        "Indexed layer", layers, key=f"{key}_ix_layer",
        index=layers.index(default_layer) if default_layer in layers else 0,
    )  # fmt: skip
    n = idx.channels(layer)
    if not 0 <= int(st.session_state.get(f"{key}_ix_channel", 0)) < n:
        st.session_state[f"{key}_ix_channel"] = 0
    channel = int(c2.number_input("Channel", 0, n - 1, key=f"{key}_ix_channel",
                                  help=f"0 … {n - 1}"))  # fmt: skip
    top = int(idx.manifest["top_k"])
    k = c3.slider("Top k", 1, top, min(12, top), key=f"{key}_ix_k",
                  help=f"The index keeps the top {top} images of every channel.")  # fmt: skip
    patches_view(idx, layer=layer, channel=channel, k=k)
    st.page_link("pages/8_Unit.py", label=f"Open `{layer}` channel {channel} on the Unit page",
                 icon=":material/neurology:",
                 query_params={"unit": f"{layer}:{channel}"})  # fmt: skip


# ------------------------------------------------------------------------- feature space


@st.cache_data(max_entries=16, show_spinner=False)
def query_vector(model_key: str, layer: str, image_digest: str, _ctx: Context) -> np.ndarray:
    """The current image's features at the index's embedding layer."""
    return embedding.query_features(_ctx.model, _ctx.x, layer=layer,
                                    cache_key=(model_key, image_digest))  # fmt: skip


def thumbnail_row(idx: ImageIndex, nb: embedding.Neighbours, *, width: int = 96) -> None:
    """Index images (stored thumbnails) in a row, captioned with file and distance."""
    if len(nb.indices) == 0:
        st.caption("No neighbours.")
        return
    for col, i, d in zip(st.columns(len(nb.indices)), nb.indices, nb.distances, strict=True):
        with col:
            st.image(idx.thumbnail(int(i)), width=width)
            name = Path(idx.paths[int(i)]).name
            st.caption(inside_view.short_caption(f"{d:.3g} · {name}", limit=16),
                       help=f"{d:.3g} · {idx.paths[int(i)]}")  # fmt: skip


@st.cache_resource(max_entries=4, show_spinner=False)
def _index_map(path: str, stamp: float, cap: int, perplexity: float, seed: int, n_iter: int):
    del stamp
    return index_query.index_map(opened(path), cap=cap, perplexity=perplexity, seed=seed,
                                 n_iter=n_iter)  # fmt: skip


def _map_stamp(path: str) -> float:
    try:
        return (Path(path) / index_tsne.MAP_FOLDER / "map.json").stat().st_mtime
    except OSError:
        return 0.0


@st.cache_resource(max_entries=4, show_spinner=False)
def _stored_map(path: str, stamp: float, map_stamp: float) -> index_tsne.IndexTSNE | None:
    """The map ``vizcore index tsne`` stored next to the index (re-read when it changes)."""
    del stamp, map_stamp
    return index_tsne.read_tsne(opened(path))


def stored_map(idx: ImageIndex) -> index_tsne.IndexTSNE | None:
    """The index's precomputed t-SNE map, or ``None`` (a damaged one is reported and ignored)."""
    path = os.fspath(idx.path)
    try:
        return _stored_map(path, _stamp(path), _map_stamp(path))
    except ValueError as exc:
        st.warning(str(exc))
        return None


@st.cache_data(max_entries=16, show_spinner=False)
def _placed(path: str, stamp: float, map_stamp: float, digest: str, query: np.ndarray):
    del stamp, map_stamp, digest
    found = _stored_map(path, _stamp(path), _map_stamp(path))
    return index_tsne.place_on_map(opened(path), found, query)


@st.cache_data(max_entries=4, show_spinner=False)
def _thumb_uris(path: str, stamp: float, ids: tuple[int, ...]) -> dict[str, str]:
    del stamp
    idx = opened(path)
    return {str(i): data_uri(idx.thumbnail(i), 64, quality=80) for i in ids}


def _scatter(coords: np.ndarray, ids: np.ndarray, query: np.ndarray | None,
             selected: int | None) -> go.Figure:  # fmt: skip
    trace = go.Scattergl if len(ids) > WEBGL_ABOVE else go.Scatter
    fig = go.Figure(
        trace(
            x=coords[:, 0], y=coords[:, 1], mode="markers", name="Index images",
            marker={"size": 6 if len(ids) <= WEBGL_ABOVE else 3, "color": "#4C78A8",
                    "opacity": 0.7},
            customdata=np.stack([ids.astype(str)], axis=1),
            hovertemplate="image %{customdata[0]}<extra></extra>",
        )
    )  # fmt: skip
    where = np.flatnonzero(ids == selected) if selected is not None else []
    if len(where):
        fig.add_trace(go.Scatter(x=coords[where, 0], y=coords[where, 1], mode="markers",
                                 name="Selected", hoverinfo="skip",
                                 marker={"size": 16, "color": "rgba(0,0,0,0)",
                                         "line": {"width": 3, "color": "black"}}))  # fmt: skip
    if query is not None:
        fig.add_trace(go.Scatter(x=[query[0]], y=[query[1]], mode="markers",
                                 name="Current image", customdata=[["current"]],
                                 marker={"size": 18, "symbol": "star", "color": "gold",
                                         "line": {"width": 2, "color": "black"}},
                                 hovertemplate="Current image<extra></extra>"))  # fmt: skip
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="t-SNE 1", yaxis_title="t-SNE 2", dragmode="pan",
                      hovermode="closest")  # fmt: skip
    return fig


def feature_space_view(ctx: Context, idx: ImageIndex, *, key: str) -> None:
    """Nearest neighbours of the current image over the whole index, and a t-SNE map of it."""
    st.caption(describe(idx))
    if not for_model(idx, ctx.model_key):
        return
    layer = idx.manifest["embedding_layer"]
    st.subheader(f"Nearest neighbours of “{ctx.image_label}” in the index")
    c1, c2 = st.columns(2)
    metric = c1.radio("Distance", embedding.METRICS, horizontal=True, key=f"{key}_ix_metric",
                      format_func={"l2": "L2", "cosine": "cosine"}.get)  # fmt: skip
    k = c2.slider("Neighbours", 1, 12, 8, key=f"{key}_ix_k")
    q = query_vector(ctx.model_key, layer, ctx.digest, ctx)
    nb = idx.nearest(q, k, metric=metric)
    left, right = st.columns([1, 6])
    left.image(ctx.image, caption="Current image", width="stretch")
    with right:
        st.markdown(f"**Feature space** (`{layer}`, {metric}), over all {len(idx)} images")
        thumbnail_row(idx, nb)
    st.caption(
        "Exact search: distances to every stored feature vector, computed block by block over "
        "the memory-mapped shards (numpy; no faiss, no approximation). The index stores no pixel "
        "vectors, so the pixel-space comparison is the gallery's only."
    )
    st.subheader("Map of the index")
    stored = stored_map(idx)
    if stored is not None:
        _stored_map_view(ctx, idx, stored, q, key=key, metric=metric, k=k)
    else:
        _sample_map_view(ctx, idx, q, key=key, metric=metric, k=k)


def _sample_map_view(ctx: Context, idx: ImageIndex, q: np.ndarray, *, key: str, metric: str,
                     k: int) -> None:  # fmt: skip
    """A t-SNE of a sample, computed here behind a button (no precomputed map)."""
    path, stamp = os.fspath(idx.path), _stamp(os.fspath(idx.path))
    c1, c2, c3, c4 = st.columns(4)
    cap = c1.select_slider("Points (a sample)", MAP_CAPS, 500, key=f"{key}_ix_cap",
                           help="t-SNE of a uniform random sample of at most this many "
                           "images (all when the index is smaller).")  # fmt: skip
    perplexity = c2.slider("Perplexity", 5, 50, 30, key=f"{key}_ix_perplexity")
    n_iter = c3.select_slider("Iterations", [250, 500, 750, 1000], 500, key=f"{key}_ix_iter")
    seed = c4.number_input("Seed", 0, 10_000, 0, key=f"{key}_ix_seed")
    params = (path, stamp, int(min(cap, len(idx))), float(perplexity), int(seed), int(n_iter))
    shown = st.session_state.setdefault(f"{key}_ix_maps", set())
    if params not in shown:
        slot = st.empty()  # the notice and button go once the map is there
        with slot.container():
            st.info(
                f"t-SNE of {params[2]} of the {len(idx)} images takes a while on a CPU (about "
                "40 s for 500 points on two busy cores); it is then kept for every session. "
                "`vizcore index tsne INDEX` precomputes a map of every image, shown here instead."
            )
            if not st.button("Compute the map", key=f"{key}_ix_map", type="primary"):
                return
        slot.empty()
        shown.add(params)
    with st.spinner("Running t-SNE…"):
        try:
            fmap = _index_map(*params)
        except ValueError as exc:
            st.error(str(exc))
            return
    query = embedding.place_query(fmap.gallery_map, q)
    g = fmap.gallery_map
    caption = (
        f"t-SNE (openTSNE, Barnes-Hut, perplexity {g.params.get('perplexity', perplexity):.0f}, "
        f"seed {int(seed)}) of {len(fmap.ids)} of the {fmap.total} images"
        + (" (a uniform random sample)" if fmap.sampled else "")
        + f", fitted in {g.seconds:.1f} s."
    )
    _map_and_selection(ctx, idx, g.coords, fmap.ids, query, caption, key=key, metric=metric, k=k)


def _stored_map_view(ctx: Context, idx: ImageIndex, stored: index_tsne.IndexTSNE,
                     q: np.ndarray, *, key: str, metric: str, k: int) -> None:  # fmt: skip
    """The map ``vizcore index tsne`` stored: no button, no t-SNE here."""
    path = os.fspath(idx.path)
    p, n = stored.params, len(stored.ids)
    if stored.sampled:
        st.markdown(f"**{n:,} of {stored.index_images:,} points** (a seeded sample, precomputed "
                    "by `vizcore index tsne --sample`)")  # fmt: skip
    else:
        st.markdown(f"**All {n:,} points** (precomputed by `vizcore index tsne`)")
    if len(idx) > stored.index_images:
        st.info(f"The index has grown to {len(idx):,} images since the map was computed "
                f"({stored.index_images:,}); run `vizcore index tsne` again to map the new "
                "ones.")  # fmt: skip
    coords, ids = stored.coords, stored.ids
    if n > DISPLAY_MAX:  # a browser draws this many at most; a seeded sample of the stored map
        rows = index_query.sample_ids(n, cap=DISPLAY_MAX, seed=0)
        coords, ids = coords[rows], ids[rows]
    query = _placed(path, _stamp(path), _map_stamp(path), ctx.digest, q)
    gradient = {"fft": "FFT gradient", "bh": "Barnes-Hut"}.get(p.get("gradient"), "?")
    caption = (
        f"t-SNE ({p.get('library', 'openTSNE')}, {gradient}, perplexity {p['perplexity']:.0f}, "
        f"seed {p['seed']}) of {n:,} images, computed once in {p['seconds']:.0f} s"
        + (f"; {len(ids):,} of them drawn" if len(ids) < n else "")
        + ". The current image (star) sits at the median of its 10 nearest mapped images (the "
        "stored map has no affinities to optimize it against)."
    )
    _map_and_selection(ctx, idx, coords, ids, query, caption, key=key, metric=metric, k=k)


def _map_and_selection(ctx: Context, idx: ImageIndex, coords: np.ndarray, ids: np.ndarray,
                       query: np.ndarray | None, caption: str, *, key: str, metric: str,
                       k: int) -> None:  # fmt: skip
    """The scatter with hover thumbnails, and the neighbours of a clicked point."""
    path, stamp = os.fspath(idx.path), _stamp(os.fspath(idx.path))
    selected = st.session_state.get(f"{key}_ix_selected")
    event = st.plotly_chart(_scatter(coords, ids, query, selected), key="fspace-index-map",
                            on_select="rerun", selection_mode="points",
                            width="stretch")  # fmt: skip
    with_thumbs = ids
    if len(ids) > HOVER_THUMBS:
        with_thumbs = ids[index_query.sample_ids(len(ids), cap=HOVER_THUMBS, seed=0)]
    thumbs = dict(_thumb_uris(path, stamp, tuple(int(i) for i in with_thumbs)))
    thumbs["current"] = data_uri(ctx.image)
    captions = {str(int(i)): idx.paths[int(i)] for i in with_thumbs}
    captions["current"] = f"Current image: {ctx.image_label}"
    hover_thumbnails("fspace-index-map", thumbs, captions=captions)
    more = (f" Thumbnails on hover for {len(with_thumbs):,} of them (a seeded sample)."
            if len(with_thumbs) < len(ids) else "")  # fmt: skip
    st.caption(caption + more + " Hover a point to see its thumbnail; click one to see its "
               "nearest neighbours over the whole index.")  # fmt: skip
    points = event.selection.points if event and event.selection else []
    if points and points[0].get("customdata"):
        point = str(points[0]["customdata"][0])
        if point.isdigit() and int(point) != selected:
            st.session_state[f"{key}_ix_selected"] = int(point)
            st.rerun()
    if selected is not None and 0 <= selected < len(idx):
        a, b = st.columns([1, 6])
        a.image(idx.thumbnail(selected), caption=idx.paths[selected], width="stretch")
        with b:
            st.markdown(f"Its nearest neighbours over all {len(idx)} images ({metric})")
            thumbnail_row(idx, idx.nearest(idx.features(selected), k, metric=metric,
                                           exclude=selected))  # fmt: skip
