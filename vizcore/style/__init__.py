"""Texture and style: Gram statistics, Gatys optimization, fast style networks, quilting.

Every public name of the modules below is importable from ``vizcore.style``.
"""

from __future__ import annotations

from vizcore.style.fast_style import (
    PRESETS_DIR,
    ConditionalInstanceNorm2d,
    FastStyleResult,
    StylePreset,
    TransformNet,
    apply_style,
    load_preset,
    style_vector,
)
from vizcore.style.gatys import (
    StyleResult,
    StyleSettings,
    gram_style,
    style_transfer,
    texture_synthesis,
)
from vizcore.style.gram import (
    GramTargets,
    content_loss,
    extract_features,
    gram_matrix,
    gram_targets,
    layer_weights,
    style_loss,
    total_variation,
)
from vizcore.style.patterns import (
    STYLE_PATTERNS,
    marble,
    mosaic,
    waves,
)
from vizcore.style.quilting import (
    MIN_PATCH,
    QuiltResult,
    max_patch,
    quilt_texture,
)

__all__ = [
    "MIN_PATCH",
    "PRESETS_DIR",
    "STYLE_PATTERNS",
    "ConditionalInstanceNorm2d",
    "FastStyleResult",
    "GramTargets",
    "QuiltResult",
    "StylePreset",
    "StyleResult",
    "StyleSettings",
    "TransformNet",
    "apply_style",
    "content_loss",
    "extract_features",
    "gram_matrix",
    "gram_style",
    "gram_targets",
    "layer_weights",
    "load_preset",
    "marble",
    "max_patch",
    "mosaic",
    "quilt_texture",
    "style_loss",
    "style_transfer",
    "style_vector",
    "texture_synthesis",
    "total_variation",
    "waves",
]
