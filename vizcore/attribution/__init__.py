"""Attribution: which input pixels made the model decide.

One function per method, captum's argument order: ``fn(model, x, *, target=None, layer=...,
...) -> AttributionMap``. ``x`` is one RGB image ``(1, 3, H, W)`` in [0, 1] (normalization lives
inside the model). Every function works on the shared model through
:func:`vizcore.core.hooks.inference_session` (lock, eval mode, frozen parameters, restored in
``finally``) and never swaps or mutates a module.

Targets (:func:`resolve_target`): ``None`` is the top-1 class, an ``int`` a class index (its
logit for gradient methods, its softmax probability for occlusion), a callable maps logits
``(B, K)`` to one score per image ``(B,)``.

Methods:

* perturbation: :func:`occlusion` (Zeiler & Fergus 2014);
* gradients to the input: :func:`saliency` (Simonyan et al. 2014), :func:`smoothgrad`
  (Smilkov et al. 2017, a wrapper), :func:`deconvnet` (Zeiler & Fergus 2014),
  :func:`guided_backprop` (Springenberg et al. 2015), :func:`integrated_gradients`
  (Sundararajan et al. 2017);
* class activation maps, one skeleton ``relu(sum_k w_k A_k)`` with per-variant weights:
  :func:`cam` (Zhou et al. 2016), :func:`grad_cam` (Selvaraju et al. 2017),
  :func:`grad_cam_plus_plus` (Chattopadhyay et al. 2018), :func:`score_cam` (Wang et al. 2020),
  and :func:`guided_grad_cam` (Selvaraju et al. 2017).

Modules: :mod:`~vizcore.attribution.targets` (targets, the map result),
:mod:`~vizcore.attribution.perturbation`, :mod:`~vizcore.attribution.gradients`,
:mod:`~vizcore.attribution.cams`, :mod:`~vizcore.attribution.costs` (passes and seconds per
method), :mod:`~vizcore.attribution.methods` (the registry :data:`METHODS`),
:mod:`~vizcore.attribution.decomposition` (a CAM's per-channel terms),
:mod:`~vizcore.attribution.faithfulness` (deletion/insertion, sanity checks) and
:mod:`~vizcore.attribution.segmentation` (GrabCut from a map). Every public name is importable
from ``vizcore.attribution``.
"""

from __future__ import annotations

from vizcore.attribution.cams import (
    CamWeights,
    cam,
    cam_skeleton,
    grad_cam,
    grad_cam_plus_plus,
    grad_cam_plus_plus_weights,
    grad_cam_weights,
    guided_grad_cam,
)
from vizcore.attribution.costs import (
    PASS_NEUTRAL_OPTIONS,
    Cost,
    CostFunction,
    PassTimes,
    cam_cost,
    grad_cam_cost,
    guided_grad_cam_cost,
    integrated_gradients_cost,
    measure_pass_times,
    method_cost,
    occlusion_cost,
    occlusion_progressive_cost,
    saliency_cost,
    score_cam_cost,
    smoothgrad_cost,
)
from vizcore.attribution.decomposition import (
    DECOMPOSABLE,
    CamParts,
    cam_parts,
)
from vizcore.attribution.faithfulness import (
    FaithfulnessCurves,
    RandomizationCheck,
    cascade_layers,
    deletion_insertion,
    deletion_insertion_cost,
    randomization_check,
    randomization_check_cost,
    spearman,
)
from vizcore.attribution.gradients import (
    GATED_ACTIVATIONS,
    FunctionalActivationError,
    GradientMethod,
    deconvnet,
    guided_backprop,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from vizcore.attribution.methods import (
    DEFAULT_METHODS,
    METHODS,
    MethodInfo,
)
from vizcore.attribution.perturbation import (
    FILLS,
    Fill,
    fill_image,
    occlusion,
    occlusion_grid,
    occlusion_progressive,
    occlusion_schedule,
    score_cam,
)
from vizcore.attribution.segmentation import (
    Segmentation,
    grabcut_from_saliency,
    mask_iou,
)
from vizcore.attribution.targets import (
    BATCH_SIZE,
    AttributionMap,
    ResolvedTarget,
    ScoreFn,
    Target,
    resolve_target,
)

__all__ = [
    "BATCH_SIZE",
    "DECOMPOSABLE",
    "DEFAULT_METHODS",
    "FILLS",
    "GATED_ACTIVATIONS",
    "METHODS",
    "PASS_NEUTRAL_OPTIONS",
    "AttributionMap",
    "CamParts",
    "CamWeights",
    "Cost",
    "CostFunction",
    "FaithfulnessCurves",
    "Fill",
    "FunctionalActivationError",
    "GradientMethod",
    "MethodInfo",
    "PassTimes",
    "RandomizationCheck",
    "ResolvedTarget",
    "ScoreFn",
    "Segmentation",
    "Target",
    "cam",
    "cam_cost",
    "cam_parts",
    "cam_skeleton",
    "cascade_layers",
    "deconvnet",
    "deletion_insertion",
    "deletion_insertion_cost",
    "fill_image",
    "grabcut_from_saliency",
    "grad_cam",
    "grad_cam_cost",
    "grad_cam_plus_plus",
    "grad_cam_plus_plus_weights",
    "grad_cam_weights",
    "guided_backprop",
    "guided_grad_cam",
    "guided_grad_cam_cost",
    "integrated_gradients",
    "integrated_gradients_cost",
    "mask_iou",
    "measure_pass_times",
    "method_cost",
    "occlusion",
    "occlusion_cost",
    "occlusion_grid",
    "occlusion_progressive",
    "occlusion_progressive_cost",
    "occlusion_schedule",
    "randomization_check",
    "randomization_check_cost",
    "resolve_target",
    "saliency",
    "saliency_cost",
    "score_cam",
    "score_cam_cost",
    "smoothgrad",
    "smoothgrad_cost",
    "spearman",
]
