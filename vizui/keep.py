"""Widget choices that survive page switches and follow the model, image or layer they belong to.

Streamlit forgets a widget's state as soon as a run does not draw that widget (another page, or
another model whose widget has a different key). :func:`keep_choice` mirrors a user's explicit
choice into a plain session-state dictionary, keyed by the widget and by the *context* the choice
belongs to (a model key; a model, image and layer), as ``vizui/frame.py`` does for the sidebar:

* a context seen for the first time shows ``default`` (which may depend on the context, such as
  the channel most active on the current image);
* a context the user already set shows the user's choice again, after any detour.

Call it right before drawing the widget, pass no ``value``/``index``/``default`` to the widget (its
value comes from session state), and pass the returned callback as the widget's ``on_change``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import streamlit as st

_STORE = "vz_kept_choices"


def _marker(widget_key: str) -> str:
    return f"vz_kept_context:{widget_key}"


def keep_choice(
    widget_key: str,
    context: Hashable,
    *,
    default: Any,
    options: Sequence[Any] | None = None,
) -> Callable[[], None]:
    """Set ``widget_key``'s state to the user's choice for ``context`` (else ``default``).

    Args:
        widget_key: The widget's ``key``.
        context: What the choice belongs to (hashable), e.g. ``(model_key, digest, layer)``.
        default: The value shown for a context the user has not set (must be valid).
        options: The widget's options, when it has some: a remembered value that is no longer
            among them falls back to ``default``.

    Returns:
        The ``on_change`` callback that remembers the user's choice for ``context``.

    Raises:
        ValueError: If ``widget_key`` is empty or ``default`` is not among ``options``.
    """
    if not widget_key:
        raise ValueError("widget_key must be a non-empty string.")
    if options is not None and default not in options:
        raise ValueError(f"default {default!r} is not among the widget's options.")
    store: dict[tuple[str, Hashable], Any] = st.session_state.setdefault(_STORE, {})
    slot = (widget_key, context)
    value = store.get(slot, default)
    if options is not None and value not in options:
        value = default
    marker = _marker(widget_key)
    if st.session_state.get(marker) != context or widget_key not in st.session_state:
        st.session_state[widget_key] = value
        st.session_state[marker] = context

    def remember() -> None:
        store[slot] = st.session_state[widget_key]

    return remember


def remember_choice(widget_key: str, context: Hashable, value: Any) -> None:
    """Record ``value`` as the user's choice for ``context`` (a shared link's choice)."""
    store: dict[tuple[str, Hashable], Any] = st.session_state.setdefault(_STORE, {})
    store[(widget_key, context)] = value
    st.session_state.pop(_marker(widget_key), None)  # the next keep_choice() applies it
