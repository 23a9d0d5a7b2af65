"""The attribution methods as the app names them: UI label -> the library's method.

The library (:data:`vizcore.attribution.METHODS`) is keyed by method id (``"grad_cam"``); the
labels a user reads (``"Grad-CAM"``) live here, with the same registry keyed by label, so pages and
widgets keep their label-based keys while no library module names a UI label.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from vizcore import attribution
from vizcore.attribution import MethodInfo

#: Method id -> the label the app shows.
LABELS: Mapping[str, str] = MappingProxyType(
    {
        "occlusion": "Occlusion",
        "saliency": "Saliency",
        "smoothgrad": "SmoothGrad",
        "deconvnet": "Deconvnet",
        "guided_backprop": "Guided backprop",
        "cam": "CAM",
        "grad_cam": "Grad-CAM",
        "guided_grad_cam": "Guided Grad-CAM",
        "grad_cam_plus_plus": "Grad-CAM++",
        "score_cam": "Score-CAM",
        "integrated_gradients": "Integrated gradients",
    }
)

#: UI label -> the library's :class:`MethodInfo`, in the library's order.
METHODS: Mapping[str, MethodInfo] = MappingProxyType(
    {LABELS[key]: info for key, info in attribution.METHODS.items()}
)

#: The comparison grid's default selection, as labels.
DEFAULT_METHODS: tuple[str, ...] = tuple(LABELS[key] for key in attribution.DEFAULT_METHODS)


def label_of(method_id: str) -> str:
    """The label of a library method id (the id itself for a method without one)."""
    return LABELS.get(method_id, method_id)
