"""Links that reopen a view: the model and image travel as ``?model=…&image=…``.

Page controls travel with Streamlit's own widget binding (``bind="query-params"``: the widget's
key is the parameter's name, a value equal to the default is left out, an invalid value is
dropped by Streamlit). The sidebar's model and image are read here once per session, checked
(an unknown or unavailable model, an image that was an upload or a camera photo, which cannot
travel in a URL) and written back on every run, so navigating between pages keeps them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

import streamlit as st

MODEL_PARAM = "model"
IMAGE_PARAM = "image"
_SEEN = "vz_url_seen"
_NOTICES = "vz_url_notices"


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


def publish(param: str, value: str | None) -> None:
    """Write the current choice to the URL (``None`` removes it: it cannot travel)."""
    if value is None:
        if param in st.query_params:
            del st.query_params[param]
    elif st.query_params.get(param) != value:
        st.query_params[param] = value


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
    """The sidebar's "Link to this view": the URL in a code box (its button copies it)."""
    with st.sidebar.popover("Link to this view", icon=":material/link:", width="stretch"):
        link = current_link()
        if link is None:
            st.caption("The link is available in a browser.")
            return
        st.code(link, language=None, wrap_lines=True)
        st.caption(
            "Copy it with the button in the box. Opening it restores this page with this model, "
            "image and the page's settings."
            + (
                " The current image is an upload or a camera photo: it cannot travel in a "
                "link, so the link opens the default sample."
                if upload_shown
                else ""
            )
            + (
                " Your own model stays in this session: the link opens the default model."
                if user_model
                else ""
            )
        )
