"""Links that reopen a view: the model and image travel as ``?model=…&image=…``.

Page controls travel with Streamlit's own widget binding (``bind="query-params"``: the widget's
key is the parameter's name, a value equal to the default is left out, an invalid value is
dropped by Streamlit). The sidebar's model and image are read here once per session, checked
(an unknown or unavailable model, an image that was an upload or a camera photo, which cannot
travel in a URL) and written back on every run, so navigating between pages keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlencode

import streamlit as st

MODEL_PARAM = "model"
IMAGE_PARAM = "image"
_SEEN = "vz_url_seen"
_NOTICES = "vz_url_notices"
_SLOT = "vz_link_slot"

T = TypeVar("T")


def adopt(
    param: str, store_key: str, options: Sequence[str], *, usable: Callable[[str], str]
) -> None:
    """On a session's first run, make the link's ``param`` the stored choice ``store_key``.

    ``usable(value)`` returns ``""`` when the value may be used, else the reason it may not;
    then the default stays and the reason is shown once (:func:`notices`).
    """
    seen = st.session_state.setdefault(_SEEN, set())
    if param in seen:
        return
    seen.add(param)
    value = st.query_params.get(param)
    if value is None:
        return
    reason = usable(value) if value in options else f"“{value}” is not one of this app's {param}s"
    if reason:
        st.session_state.setdefault(_NOTICES, []).append(
            f"The link's {param} could not be used ({reason}); showing the default instead."
        )
        return
    st.session_state[store_key] = value


def take(param: str, parse: Callable[[str], T | None]) -> T | None:
    """A page control's value from the link, once per session; ``None`` when absent or bad.

    ``parse`` turns the text into the control's value, or returns ``None`` when it is not valid
    here (an unknown layer, a class out of range): then a short notice says the default is shown.
    Call it before drawing the control, and set the control's state from the result.
    """
    seen = st.session_state.setdefault(_SEEN, set())
    if param in seen:
        return None
    seen.add(param)
    raw = st.query_params.get(param)
    if raw is None:
        return None
    value = parse(raw)
    if value is None:
        st.info(f"The link's {param} “{raw}” does not fit here; the default is shown instead.")
    return value


def publish(param: str, value: str | None) -> None:
    """Write the current choice to the URL (``None`` removes it: default, or cannot travel).

    The sidebar's "Link to this view" is redrawn when the URL changes, so it always shows the
    view as it is now, even when a page control changed late in the run.
    """
    if value is None:
        if param not in st.query_params:
            return
        del st.query_params[param]
    elif st.query_params.get(param) == value:
        return
    else:
        st.query_params[param] = value
    _draw_link()


def notices() -> None:
    """Show (once) why a link's model or image was not used."""
    for message in st.session_state.pop(_NOTICES, []):
        st.sidebar.info(message)


def current_link() -> str | None:
    """This page's URL with every query parameter now set (``None`` outside a browser)."""
    base = st.context.url
    if not base:
        return None
    pairs = [(key, value) for key in st.query_params for value in st.query_params.get_all(key)]
    return base + ("?" + urlencode(pairs) if pairs else "")


def link_popover(*, upload_shown: bool, user_model: bool) -> None:
    """ "Link to this view" under the page title: the URL in a code box (its button copies it).

    The popover is drawn once per run; only the code box inside it is refilled when a page
    control changes the URL later in the run. It sits in the main area: in the sidebar, below
    the camera widget, it made page switches with a camera photo hang in a browser (the camera
    browser test; cause not found).
    """
    with st.popover("Link to this view", icon=":material/link:"):
        st.session_state[_SLOT] = st.empty()
        notes = []
        if upload_shown:
            notes.append(
                "The current image is an upload or a camera photo: it cannot travel in a link, "
                "so the link opens the default sample."
            )
        if user_model:
            notes.append("Your own model stays in this session: the link opens the default model.")
        st.caption(
            "Copy it with the button in the box. Opening it restores this page with this model, "
            "image and the page's settings. " + " ".join(notes)
        )
    _draw_link()


def _draw_link() -> None:
    slot = st.session_state.get(_SLOT)
    if slot is None:
        return
    link = current_link()
    if link is None:
        slot.caption("The link is available in a browser.")
    else:
        slot.code(link, language=None, wrap_lines=True)


# ------------------------------------------------------------- parsers for take()


def int_in(valid: range) -> Callable[[str], int | None]:
    """Parse a whole number that lies in ``valid``."""

    def parse(raw: str) -> int | None:
        text = raw.strip()
        if not text.lstrip("-").isdigit():
            return None
        value = int(text)
        return value if value in valid else None

    return parse


def one_of(options: Sequence[T]) -> Callable[[str], T | None]:
    """Parse one of ``options`` (compared as text)."""
    by_text = {str(option): option for option in options}
    return by_text.get


def subset_of(ids: Sequence[str]) -> Callable[[str], tuple[str, ...] | None]:
    """Parse a comma-separated list of ``ids`` (empty, or any unknown id: invalid)."""

    def parse(raw: str) -> tuple[str, ...] | None:
        chosen = tuple(part for part in raw.split(",") if part)
        return chosen if chosen and all(c in ids for c in chosen) else None

    return parse


def unless_set(widget_key: str, default: T) -> T | None:
    """``default`` for a widget, or ``None`` when its state was set (e.g. from a link).

    A widget given both a default and a state set through ``st.session_state`` makes Streamlit
    print a warning; the state wins either way.
    """
    return None if widget_key in st.session_state else default
