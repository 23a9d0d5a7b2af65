"""The method registry: ids, function, cost, family; UI labels live in ``vizui``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from vizcore.attribution.cams import cam, grad_cam, grad_cam_plus_plus, guided_grad_cam
from vizcore.attribution.costs import CostFunction, method_cost
from vizcore.attribution.gradients import (
    deconvnet,
    guided_backprop,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from vizcore.attribution.perturbation import occlusion, score_cam
from vizcore.attribution.targets import AttributionMap

# --------------------------------------------------------------------------------------------
# The registry: method id -> how to call it (UI labels: vizui/method_labels.py)


@dataclass(frozen=True)
class MethodInfo:
    """One attribution method: its id, function, whether it takes a layer, speed, paper."""

    key: str
    fn: Callable[..., AttributionMap]
    uses_layer: bool
    slow: bool
    citation: str

    @property
    def cost(self) -> CostFunction:
        """``cost(model, size, **options) -> Cost``: the passes one call makes."""
        return method_cost(self.fn)


METHODS: Mapping[str, MethodInfo] = MappingProxyType(
    {
        "occlusion": MethodInfo("occlusion", occlusion, False, True, "Zeiler & Fergus 2014"),
        "saliency": MethodInfo("saliency", saliency, False, False, "Simonyan et al. 2014"),
        "smoothgrad": MethodInfo("smoothgrad", smoothgrad, False, True, "Smilkov et al. 2017"),
        "deconvnet": MethodInfo("deconvnet", deconvnet, False, False, "Zeiler & Fergus 2014"),
        "guided_backprop": MethodInfo(
            "guided_backprop", guided_backprop, False, False, "Springenberg et al. 2015"
        ),
        "cam": MethodInfo("cam", cam, True, False, "Zhou et al. 2016"),
        "grad_cam": MethodInfo("grad_cam", grad_cam, True, False, "Selvaraju et al. 2017"),
        "guided_grad_cam": MethodInfo(
            "guided_grad_cam", guided_grad_cam, True, False, "Selvaraju et al. 2017"
        ),
        "grad_cam_plus_plus": MethodInfo(
            "grad_cam_plus_plus", grad_cam_plus_plus, True, False, "Chattopadhyay et al. 2018"
        ),
        "score_cam": MethodInfo("score_cam", score_cam, True, True, "Wang et al. 2020"),
        "integrated_gradients": MethodInfo(
            "integrated_gradients",
            integrated_gradients,
            False,
            True,
            "Sundararajan et al. 2017",
        ),
    }
)

#: The comparison grid's default selection (method ids).
DEFAULT_METHODS: tuple[str, ...] = (
    "occlusion",
    "saliency",
    "deconvnet",
    "guided_backprop",
    "cam",
    "grad_cam",
    "guided_grad_cam",
    "grad_cam_plus_plus",
)
