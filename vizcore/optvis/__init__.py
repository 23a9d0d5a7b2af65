"""Optimization-based visualization: images optimized against a model.

Class and neuron visualization, feature inversion, DeepDream, style transfer and texture synthesis
are all "optimize an image instead of the weights". They differ only in their parts, which live
in small composable modules (the design follows lucid/lucent: objectives, parameterizations,
transforms):

* an :class:`Objective` to *maximize*, built from captured activations and/or the logits
  (:func:`class_logit`, :func:`channel`, :func:`neuron`, :func:`layer_l2`, :func:`feature_match`),
  composable with ``+``, ``-`` and scalar ``*``;
* an image parameterization returning ``(params, image_fn)``: :func:`pixel_image` (plain pixels)
  or :func:`fourier_image` (1/f spectrum, decorrelated colour, sigmoid);
* transforms applied to the image before each forward pass (:func:`jitter`, :func:`random_scale`,
  :func:`random_rotate`, :func:`pad`, :func:`compose`), all drawing from the run's local generator;
* pixel-space regularizers from Yosinski et al. 2015 (:class:`PixelRegularizers`: L2 decay,
  Gaussian blur every k steps, clipping pixels with small norm or small contribution) and loss
  terms usable with any parameterization (total variation, Simonyan's L2 penalty);
* the runner :func:`optimize`, which takes one ``inference_session(model)`` turn per step (so
  another session waits at most one step), reports progress through ``on_step`` and can be
  stopped.

The techniques built on them: :mod:`~vizcore.optvis.synthesis` (class and neuron visualization),
:mod:`~vizcore.optvis.inversion` (feature inversion), :mod:`~vizcore.optvis.dream` (DeepDream),
:mod:`~vizcore.optvis.multifaceted` (one image per facet of a class) and
:mod:`~vizcore.optvis.adversarial` (FGSM, PGD). Every public name is importable from
``vizcore.optvis``.

Images are RGB in [0, 1], ``(N, 3, H, W)``; the models normalize internally.
"""

from __future__ import annotations

from vizcore.core.blur import gaussian_blur  # the one blur, re-exported for optimization use
from vizcore.optvis.adversarial import (
    LEAST_LIKELY,
    AdversarialResult,
    evaluate,
    fgsm,
    pgd,
)
from vizcore.optvis.dream import (
    DreamResult,
    DreamSettings,
    deep_dream,
    deepdream_layers,
)
from vizcore.optvis.inversion import (
    InversionResult,
    InversionSettings,
    depth_tv_weight,
    feature_inversion,
    inversion_preset,
)
from vizcore.optvis.multifaceted import (
    ClassMap,
    GalleryPredictions,
    MultifacetedResult,
    centre_fraction,
    centre_weights,
    class_members,
    cluster_features,
    find_class_map,
    gallery_predictions,
    multifaceted_class_visualization,
)
from vizcore.optvis.objectives import (
    REFERENCE_PREFIX,
    Acts,
    Objective,
    ObjectiveFn,
    channel,
    class_logit,
    feature_match,
    layer_l2,
    neuron,
    reference_key,
)
from vizcore.optvis.param import (
    FourierBasis,
    ImageFn,
    Param,
    PixelImage,
    fft_size,
    fourier_image,
    pixel_image,
)
from vizcore.optvis.regularizers import (
    PixelRegularizers,
    clip_small_contribution,
    clip_small_norm,
    relu6_passthrough,
    total_variation,
)
from vizcore.optvis.runner import (
    OptimizationResult,
    OptimizerName,
    optimize,
    relu6_passthrough_ctx,
)
from vizcore.optvis.synthesis import (
    Parameterization,
    SynthesisResult,
    SynthesisSettings,
    check_channels,
    class_visualization,
    default_synthesis_settings,
    layer_channels,
    neuron_visualization,
    run_with_settings,
    synthesis_preset,
)
from vizcore.optvis.transforms import (
    Transform,
    compose,
    jitter,
    pad,
    random_affine,
    random_rotate,
    random_scale,
)

__all__ = [
    "LEAST_LIKELY",
    "REFERENCE_PREFIX",
    "Acts",
    "AdversarialResult",
    "ClassMap",
    "DreamResult",
    "DreamSettings",
    "FourierBasis",
    "GalleryPredictions",
    "ImageFn",
    "InversionResult",
    "InversionSettings",
    "MultifacetedResult",
    "Objective",
    "ObjectiveFn",
    "OptimizationResult",
    "OptimizerName",
    "Param",
    "Parameterization",
    "PixelImage",
    "PixelRegularizers",
    "SynthesisResult",
    "SynthesisSettings",
    "Transform",
    "centre_fraction",
    "centre_weights",
    "channel",
    "check_channels",
    "class_logit",
    "class_members",
    "class_visualization",
    "clip_small_contribution",
    "clip_small_norm",
    "cluster_features",
    "compose",
    "deep_dream",
    "deepdream_layers",
    "default_synthesis_settings",
    "depth_tv_weight",
    "evaluate",
    "feature_inversion",
    "feature_match",
    "fft_size",
    "fgsm",
    "find_class_map",
    "fourier_image",
    "gallery_predictions",
    "gaussian_blur",
    "inversion_preset",
    "jitter",
    "layer_channels",
    "layer_l2",
    "multifaceted_class_visualization",
    "neuron",
    "neuron_visualization",
    "optimize",
    "pad",
    "pgd",
    "pixel_image",
    "random_affine",
    "random_rotate",
    "random_scale",
    "reference_key",
    "relu6_passthrough",
    "relu6_passthrough_ctx",
    "run_with_settings",
    "synthesis_preset",
    "total_variation",
]
