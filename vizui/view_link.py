"""Links that reopen a view: the model, the image and each page's main controls in the URL.

The sidebar's model and image travel as ``?model=…&image=…``: read here once per session, checked
(an unknown or unavailable model, an image that was an upload or a camera photo, which cannot
travel in a URL) and written back on every run, so navigating between pages keeps them.

A page's controls travel through a small declarative table of :class:`Control` rows (URL
parameter, widget key, parser, default): :func:`restore` before the widgets are drawn (a fresh
session's link values become their state; a bad or stale value keeps the default and says so),
:func:`share` after (each value that is not the default goes to the URL). Streamlit's own
binding (``bind="query-params"``) is not used: ``keep_choice`` and the sidebar write widget
state before the widget exists, which the binding would fight.

:func:`link_box` ("Copy link to this view", under the page title) shows the URL as it is after
every :func:`publish`, in a code box whose button copies it. It is an expander, not a popover: a
popover holding the link made page switches with a camera photo hang in a browser (NOTES).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import streamlit as st

MODEL_PARAM = "model"
IMAGE_PARAM = "image"
_SEEN = "vz_url_seen"
_NOTICES = "vz_url_notices"
_SLOT = "vz_link_slot"
_NOTICE_SLOT = "vz_link_notice_slot"

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
        # Under the page title (frame's slot), so a notice about a control in a closed tab shows.
        slot = st.session_state.get(_NOTICE_SLOT)
        (slot if slot is not None else st).info(
            f"The link's {param} “{raw}” does not fit here; the default is shown instead."
        )
    return value


@dataclass(frozen=True)
class Control:
    """One page control that travels in the link.

    Attributes:
        param: The URL parameter's name (unique across the app's pages).
        key: The widget's ``key``.
        parse: Text to the widget's value, ``None`` when not valid here (see the parsers below).
        default: The value the widget shows without a link; it is left out of the URL.
        text: The widget's value to text (the inverse of ``parse``).
        context: For a widget managed by :func:`vizui.keep.keep_choice`: its context; a linked
            value is then recorded as the user's choice for it instead of set directly.
    """

    param: str
    key: str
    parse: Callable[[str], Any]
    default: Any = None
    text: Callable[[Any], str] = str
    context: Hashable | None = None


def restore(*controls: Control) -> None:
    """Before the widgets are drawn: a link's values become their state (once per session).

    Widgets given a default (``value``, ``index``, ``default``) pass it through
    :func:`unless_set`, so that Streamlit does not warn about a state set twice.
    """
    from vizui.keep import remember_choice  # keep imports nothing from here; no cycle at load

    for control in controls:
        value = take(control.param, control.parse)
        if value is None:
            continue
        if control.context is not None:
            remember_choice(control.key, control.context, value)
        else:
            st.session_state[control.key] = value


def share(*controls: Control) -> None:
    """After the widgets are drawn: write each value to the URL (a default is left out)."""
    for control in controls:
        value = st.session_state.get(control.key)
        shown = None if value is None else control.text(value)
        default = None if control.default is None else control.text(control.default)
        publish(control.param, None if shown == default else shown)


def publish(param: str, value: str | None) -> None:
    """Write the current choice to the URL (``None`` removes it: default, or cannot travel).

    "Copy link to this view" (:func:`link_box`) is redrawn when the URL changes, so it always
    shows the view as it is now, even when a page control changed late in the run.
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


def link_box(*, upload_shown: bool, user_model: bool) -> None:
    """ "Copy link to this view" under the page title: an expander with the URL in a code box.

    Also makes the slot where :func:`take` says that a link's value did not fit. The code box is
    refilled by every :func:`publish` of the run, so it shows the view as it is at the end.
    """
    with st.expander("Copy link to this view", icon=":material/link:"):
        st.session_state[_SLOT] = st.empty()
        st.caption(_link_caption(upload_shown=upload_shown, user_model=user_model))
    st.session_state[_NOTICE_SLOT] = st.container()
    _draw_link()


def _link_caption(*, upload_shown: bool, user_model: bool) -> str:
    notes = []
    if upload_shown:
        notes.append(
            "The current image is an upload or a camera photo: it cannot travel in a link, "
            "so the link opens the default sample."
        )
    if user_model:
        notes.append("Your own model stays in this session: the link opens the default model.")
    return (
        "Copy it with the button in the box. Opening it restores this page with this model, "
        "image and the page's settings. " + " ".join(notes)
    )


def _draw_link() -> None:
    slot = st.session_state.get(_SLOT)
    if slot is None:
        return
    link = current_link()
    if link is None:
        query = urlencode([(k, v) for k in st.query_params for v in st.query_params.get_all(k)])
        slot.caption(f"The full link is available in a browser. Its parameters: {query or 'none'}")
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


def float_in(low: float, high: float) -> Callable[[str], float | None]:
    """Parse a finite number in ``[low, high]``."""

    def parse(raw: str) -> float | None:
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if low <= value <= high else None

    return parse


def flag(raw: str) -> bool | None:
    """Parse ``"1"``/``"0"`` (also ``true``/``false``); see :func:`flag_text`."""
    return {"1": True, "true": True, "0": False, "false": False}.get(raw.strip().lower())


def flag_text(value: object) -> str:
    """``"1"`` or ``"0"``: a switch in the link."""
    return "1" if value else "0"


def list_of(options: Sequence[T], *, most: int) -> Callable[[str], list[T] | None]:
    """Parse a comma-separated list of up to ``most`` distinct ``options`` (compared as text)."""
    by_text = {str(option): option for option in options}

    def parse(raw: str) -> list[T] | None:
        parts = [part for part in raw.split(",") if part]
        if not parts or len(parts) > most or len(set(parts)) < len(parts):
            return None
        if not all(part in by_text for part in parts):
            return None
        return [by_text[part] for part in parts]

    return parse


def list_text(values: Sequence[object]) -> str:
    """A list control's value as comma-separated text (see :func:`list_of`)."""
    return ",".join(str(value) for value in values)


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
