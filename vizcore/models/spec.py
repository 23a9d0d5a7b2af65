"""What a model is to the app and the techniques: its :class:`ModelSpec` (label, loader,
preprocessing, class names, layer presets, tuning), how an image becomes its input
(:class:`Preprocessing`), whether it can be loaded now (:class:`Availability`), and ImageNet's
class names. :mod:`vizcore.models.registry` holds the specs and loads the models; it re-exports
these names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from PIL import Image
from torch import nn

from vizcore.models.discovery import ModelFacts

__all__ = ["Availability", "ModelSpec", "Preprocessing", "imagenet_categories"]


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes the model's input.

    Attributes:
        input_size: Side S of the square input.
        crop_fraction: Resize the short side to ``S / crop_fraction``, then centre-crop S x S.
        resample: PIL resampling filter for the resize.
        normalization: Human-readable description of the normalization inside the model.
        fixed_size: The model only accepts ``S x S`` inputs (an exported graph with static
            spatial sizes): whole-picture views are centre-cropped instead.
    """

    input_size: int
    crop_fraction: float
    resample: Image.Resampling
    normalization: str
    fixed_size: bool = False


@dataclass(frozen=True)
class Availability:
    """Whether a model can be loaded now, and if not why and how to fix it."""

    available: bool
    reason: str = ""
    how_to_get: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the app and the techniques need to know about one model.

    Attributes:
        key: Registry key (``user:<hash>`` for a user model).
        label, description, source: Shown in the model picker and on the home page.
        loader: Builds the module (bundled models; a weak lookup for user models).
        preprocessing: Input size, crop, resampling, normalization description.
        layer_presets: Hand-set layer presets per family, over the derived ones.
        availability: Whether the model can be loaded now, and why not.
        torchvision_arch: The torchvision architecture of the zoo entries (for downloads).
        class_names: One name per output; ``None`` means ImageNet's 1,000.
        tuning: Hand-tuned technique settings per family (``"synthesis.fourier"``,
            ``"synthesis.pixel"``, ``"inversion"``, ``"style"``, ``"texture"``): keyword mappings
            applied over the technique's generic defaults. Measured on the bundled nets; a
            model without an entry gets the generic defaults.
        user: A user model (belongs to the session that loaded it).
    """

    key: str
    label: str
    description: str
    source: str
    loader: Callable[[], nn.Module]
    preprocessing: Preprocessing
    layer_presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    availability: Callable[[], Availability] = lambda: Availability(True)
    torchvision_arch: str | None = None
    class_names: tuple[str, ...] | None = None
    tuning: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    user: bool = False

    def preset(self, family: str) -> tuple[str, ...]:
        """Layer names a technique family starts from: the hand-set ones, else the derived ones
        (empty tuple when the model cannot be loaded or the family does not apply)."""
        if family in self.layer_presets:
            return tuple(self.layer_presets[family])
        facts = self.facts()
        return tuple(facts.presets.get(family, ())) if facts is not None else ()

    def facts(self) -> ModelFacts | None:
        """What one probe forward found (layers, head, derived presets); ``None`` if the model
        is unavailable."""
        from vizcore.models.registry import model_facts  # the registry holds the facts

        return model_facts(self.key)

    def categories(self) -> tuple[str, ...]:
        """One name per output class."""
        return self.class_names if self.class_names is not None else imagenet_categories()

    def tuned(self, family: str) -> Mapping[str, object]:
        """The hand-tuned settings for ``family`` (empty when there are none)."""
        return MappingProxyType(dict(self.tuning.get(family, {})))


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (not typed by hand)."""
    import torchvision

    weights = torchvision.models.get_model_weights("resnet50").DEFAULT
    categories = tuple(weights.meta["categories"])
    if len(categories) != 1000:  # pragma: no cover - guards a torchvision change
        raise RuntimeError(f"Expected 1000 ImageNet classes, torchvision gave {len(categories)}.")
    return categories
