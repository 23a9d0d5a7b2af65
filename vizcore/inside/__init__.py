"""What a trained network holds: filters, activations, feature space, receptive fields.

Every public name of the modules below is importable from ``vizcore.inside``.
"""

from __future__ import annotations

from vizcore.inside.embedding import (
    MAP_METHODS,
    METRICS,
    FeatureMap,
    GalleryMap,
    NeighbourComparison,
    Neighbours,
    embed_points,
    feature_map,
    fit_map,
    max_perplexity,
    nearest,
    neighbours,
    pca,
    pixel_vectors,
    place_query,
    query_features,
)
from vizcore.inside.filters import (
    SORT_ORDERS,
    ActivationMaps,
    FilterKernels,
    FilterTiles,
    PatchSet,
    activation_maps,
    apply_threshold,
    filter_kernels,
    first_conv_layer,
    first_layer_filters,
    max_activating_patches,
)
from vizcore.inside.receptive_fields import (
    ReceptiveField,
    receptive_field,
    unit_box,
)
from vizcore.inside.units import (
    CLASS_METHODS,
    ChannelClasses,
    channel_classes,
    pre_activation_layer,
    weights_apply,
)

__all__ = [
    "CLASS_METHODS",
    "MAP_METHODS",
    "METRICS",
    "SORT_ORDERS",
    "ActivationMaps",
    "ChannelClasses",
    "FeatureMap",
    "FilterKernels",
    "FilterTiles",
    "GalleryMap",
    "NeighbourComparison",
    "Neighbours",
    "PatchSet",
    "ReceptiveField",
    "activation_maps",
    "apply_threshold",
    "channel_classes",
    "embed_points",
    "feature_map",
    "filter_kernels",
    "first_conv_layer",
    "first_layer_filters",
    "fit_map",
    "max_activating_patches",
    "max_perplexity",
    "nearest",
    "neighbours",
    "pca",
    "pixel_vectors",
    "place_query",
    "pre_activation_layer",
    "query_features",
    "receptive_field",
    "unit_box",
    "weights_apply",
]
