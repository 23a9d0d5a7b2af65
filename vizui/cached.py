"""Streamlit cache wrappers around vizcore (the only place the app caches).

Models are cached with ``st.cache_resource`` (bounded) and shared by every session, one per
(model key, device): a session that switches device gets another copy, never a shared model moved
in place. Results are cached with ``st.cache_data`` keyed on hashable arguments (model key, image
digest, parameters; not the device: results agree across devices within float error). Arguments
whose names start with ``_`` are not hashed by Streamlit: their content is identified by the
digest argument next to them.
"""

from __future__ import annotations

import streamlit as st
import torch
from PIL import Image
from torch import nn

from vizcore.core import devices
from vizcore.core.cache import DecodedImageCache
from vizcore.data import images
from vizcore.models import registry
from vizcore.models.predict import Prediction, predict

#: Session-state key of the device chosen in the sidebar (a string such as ``"cuda:0"``).
DEVICE_KEY = "vz_device"


def device() -> torch.device:
    """The session's device: its sidebar choice, else ``VIZCORE_DEVICE`` / the best available
    (the CPU when ``VIZCORE_DEVICE`` is not a device name; the sidebar shows why)."""
    try:
        chosen = st.session_state.get(DEVICE_KEY)
    except Exception:  # noqa: BLE001 - no session (a bare script): use the process default
        chosen = None
    if chosen in devices.available_devices():
        return torch.device(chosen)
    try:
        return devices.default_device()
    except ValueError:
        return torch.device("cpu")


def model(key: str) -> nn.Module:
    """The model for ``key`` on the session's :func:`device` (never change it).

    Bundled and zoo models are shared by every session (a bounded resource cache keyed on the
    model and the device); a user model is held by the session that loaded it (see
    :mod:`vizui.model_upload`) and looked up weakly, so it is never cached here and never
    outlives its session.
    """
    where = device()
    if registry.is_user_key(key):
        return registry.load_model(key, device=where)
    return _shared_model(key, str(where))


@st.cache_resource(max_entries=3, show_spinner="Loading the model…")
def _shared_model(key: str, device: str) -> nn.Module:
    return registry.load_model(key, device=device)


@st.cache_data(max_entries=32, show_spinner=False)
def availability(key: str) -> registry.Availability:
    """Whether a model can be loaded; cached briefly in the session's server."""
    return registry.get_spec(key).availability()


#: Decoded uploads, bounded by their decoded size (``st.cache_data`` bounds only the number of
#: entries, and eight 21 KB PNGs of 6000x6000 held about 1 GB for the life of the server).
DECODED_IMAGES = DecodedImageCache(max_bytes=256 * 1024 * 1024, max_entries=16)


def decoded_image(data: bytes) -> Image.Image:
    """Decode uploaded bytes into RGB (raises ``ImageLoadError`` with a user message).

    Cached by content digest in :data:`DECODED_IMAGES`; each call returns a copy.
    """
    return DECODED_IMAGES.get_or_load(data, images.load_image)


@st.cache_data(max_entries=32, show_spinner=False)
def sample_image(name: str) -> Image.Image:
    """A bundled sample image."""
    return images.load_sample(name)


@st.cache_data(max_entries=64, show_spinner=False)
def model_input(model_key: str, digest: str, _image: Image.Image) -> torch.Tensor:
    """The preprocessed ``(1, 3, S, S)`` input for ``model_key`` (keyed by the image digest)."""
    return registry.preprocess(_image, registry.get_spec(model_key))


@st.cache_data(max_entries=16, show_spinner=False)
def full_view_input(model_key: str, digest: str, _image: Image.Image) -> torch.Tensor:
    """The whole picture, short side at the model's input size (no centre crop)."""
    return registry.preprocess(_image, registry.get_spec(model_key), crop=False)


@st.cache_data(max_entries=128, show_spinner=False)
def top_classes(model_key: str, digest: str, _x: torch.Tensor, top_k: int = 5) -> Prediction:
    """Top-k prediction for the current image (keyed by model and image digest)."""
    names = registry.get_spec(model_key).categories()
    return predict(model(model_key), _x, top_k=min(top_k, len(names)), categories=names)


def categories(model_key: str) -> tuple[str, ...]:
    """The class names of the model ``model_key`` (ImageNet's 1,000 for the bundled nets)."""
    return registry.get_spec(model_key).categories()
