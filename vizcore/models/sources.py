"""Your own model: a torchvision or timm architecture plus weights, or a torch.export archive.

Three sources, each one function, all offline and all safe to point at a file from a stranger:

* :func:`torchvision_model`: any classification architecture ``torchvision.models.list_models``
  offers, built with random init and then given a ``state_dict``;
* :func:`timm_model`: any ``timm.list_models()`` architecture, with a ``state_dict`` or timm's own
  pretrained weights when they already sit in the local Hugging Face cache (never downloaded);
  its ``pretrained_cfg`` gives input size, mean/std, interpolation and crop;
* :func:`exported_model`: a whole ``torch.export`` archive (``.pt2``), loaded with
  ``torch.export.load`` and ``torch.export.unflatten`` so its submodules keep their dotted names
  and forward hooks work.

Safety: weights files are read with ``torch.load(..., weights_only=True)`` (tensors and plain
containers only) or the ``safetensors`` package, never with a full unpickler, so a ``.pt`` that
holds a pickled module or a code-execution payload is refused before anything in it runs.
TorchScript is not offered: torch 2.15 deprecates it and it refuses forward hooks.

:func:`load_user_model` turns any of them into a :class:`UserModel`: the module, wrapped so it
takes RGB in [0, 1] (normalization inside, like every model here), and a
:class:`~vizcore.models.registry.ModelSpec` whose presets are derived by
:mod:`vizcore.models.discovery`. The probe forward pass catches a wrong input size, channel count
or class-name count with a message.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from PIL import Image
from torch import nn

from vizcore.models.efficientnet_lite import Normalize
from vizcore.models.model_files import (
    MAX_MODEL_BYTES,
    ModelFileError,
    UnsafeModelFileError,
    WeightsMismatchError,
    check_export_archive,
    check_graph_ops,
    first_line,
    parse_class_names,
    read_model_bytes,
    read_state_dict,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_MODEL_BYTES",
    "InputConfig",
    "ModelFileError",
    "UnsafeModelFileError",
    "UserModel",
    "WeightsMismatchError",
    "exported_model",
    "load_user_model",
    "parse_class_names",
    "read_state_dict",
    "timm_architectures",
    "timm_input_config",
    "timm_model",
    "torchvision_architectures",
    "torchvision_model",
]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SourceKind = Literal["torchvision", "timm", "export"]
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class InputConfig:
    """How an image becomes this model's input (the model normalizes inside).

    Attributes:
        input_size: Side of the square input in pixels.
        crop_fraction: Resize the short side to ``input_size / crop_fraction``, then centre-crop.
        resample: ``"bilinear"``, ``"bicubic"``, ``"nearest"`` or ``"lanczos"``.
        mean, std: Per-channel normalization of RGB in [0, 1], applied inside the model. Use
            mean 0 and std 1 when the model normalizes by itself (e.g. an export of a model that
            already contains its normalization).
    """

    input_size: int = 224
    crop_fraction: float = 0.875
    resample: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or not isinstance(self.input_size, int):
            raise ValueError(f"The input size must be an integer, got {self.input_size!r}.")
        if not 16 <= self.input_size <= 1024:
            raise ValueError(f"The input size must be 16-1024 px, got {self.input_size}.")
        if not 0.2 <= float(self.crop_fraction) <= 1.0:
            raise ValueError(f"The crop fraction must be 0.2-1.0, got {self.crop_fraction}.")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"Resampling must be one of {', '.join(_RESAMPLE)}.")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(_finite(v) for v in values):
                raise ValueError(f"The {name} must be three finite numbers, got {values!r}.")
        if any(v <= 0 for v in self.std):
            raise ValueError(f"Every std must be > 0, got {self.std!r}.")

    @property
    def normalizes(self) -> bool:
        """False when mean is 0 and std 1 (the model gets RGB in [0, 1] as is)."""
        return tuple(self.mean) != (0.0, 0.0, 0.0) or tuple(self.std) != (1.0, 1.0, 1.0)

    @property
    def pil_resample(self) -> Image.Resampling:
        """The PIL filter for :attr:`resample`."""
        return _RESAMPLE[self.resample]


def _finite(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return number == number and abs(number) != float("inf")


# ------------------------------------------------------------------------------ architectures


def torchvision_architectures() -> list[str]:
    """Every image-classification architecture torchvision offers (no detection, video, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def timm_architectures(pattern: str = "") -> list[str]:
    """timm's architecture names, optionally filtered by a wildcard pattern (``"resnet*"``)."""
    import timm

    return list(timm.list_models(pattern or "*"))


def _load_checked(net: nn.Module, state: Mapping[str, torch.Tensor], arch: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    # BatchNorm's num_batches_tracked is bookkeeping; old checkpoints lack it.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected or shapes:
        raise WeightsMismatchError(arch, missing, unexpected, shapes)
    net.load_state_dict(state, strict=False)


def _classifier_width(net: nn.Module, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count the weights were trained for, when only the classifier's shape differs."""
    own = net.state_dict()
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not wrong:
        return None
    keys = list(own)
    tail = set(keys[-4:])  # the classifier's weight and bias sit at the end of the state_dict
    if not set(wrong) <= tail:
        return None
    widths = {int(state[k].shape[0]) for k in wrong}
    return widths.pop() if len(widths) == 1 else None


def torchvision_model(
    arch: str, state_dict: Mapping[str, torch.Tensor], *, num_classes: int | None = None
) -> nn.Module:
    """A torchvision classifier ``arch`` with the given weights (``num_classes`` inferred).

    Raises:
        ValueError: Unknown architecture.
        WeightsMismatchError: The weights do not fit (missing/unexpected/wrong-shape keys).
    """
    import torchvision

    archs = torchvision_architectures()
    if arch not in archs:
        raise ValueError(f"torchvision has no classification model {arch!r}; choose one of "
                         f"{', '.join(archs[:12])}, ...")  # fmt: skip
    kwargs: dict[str, object] = {"weights": None}
    if arch.startswith("googlenet") or arch.startswith("inception"):
        kwargs.update(aux_logits=False, init_weights=False)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("Aux")
                      and not k.startswith("aux")}  # fmt: skip
    net = torchvision.models.get_model(arch, **kwargs, num_classes=num_classes or 1000)
    if num_classes is None and (width := _classifier_width(net, state_dict)) is not None:
        net = torchvision.models.get_model(arch, **kwargs, num_classes=width)
    _load_checked(net, state_dict, arch)
    return net.eval()


def timm_model(
    arch: str,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    *,
    num_classes: int | None = None,
) -> nn.Module:
    """A timm classifier with the given weights, or timm's pretrained weights from the local
    Hugging Face cache when ``state_dict`` is ``None`` (never downloaded).

    Raises:
        ValueError: Unknown architecture.
        ModelFileError: No weights given and none in the local cache.
        WeightsMismatchError: The weights do not fit.
    """
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch[:6]}*")[:8] if arch else []
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(f"timm has no architecture {arch!r}.{hint}")
    if state_dict is None:
        net = timm.create_model(arch, pretrained=False)
        path = _cached_timm_weights(net.pretrained_cfg)
        if path is None:
            raise ModelFileError(
                f"timm's pretrained weights for {arch} are not in the local Hugging Face cache "
                f"({_hf_cache_dir()}); upload a weights file, or download them once where there "
                f"is internet: python -c \"import timm; timm.create_model('{arch}', "
                'pretrained=True)".'
            )
        state_dict = read_state_dict(path)
        if num_classes is None:
            num_classes = net.pretrained_cfg.get("num_classes")
    net = timm.create_model(arch, pretrained=False, num_classes=num_classes or 1000)
    if num_classes is None and (width := _classifier_width(net, state_dict)) is not None:
        net = timm.create_model(arch, pretrained=False, num_classes=width)
    _load_checked(net, state_dict, arch)
    return net.eval()


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - timm requires huggingface_hub
        return "~/.cache/huggingface/hub"


def _cached_timm_weights(cfg: Mapping[str, object]) -> Path | None:
    """The weights file of timm's pretrained config if it is already cached locally."""
    repo = cfg.get("hf_hub_id")
    if not isinstance(repo, str):
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def timm_input_config(arch: str) -> InputConfig:
    """Input size, crop, interpolation and mean/std from timm's ``pretrained_cfg`` of ``arch``."""
    import timm

    cfg = timm.create_model(arch, pretrained=False).pretrained_cfg
    size = cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224)
    interpolation = str(cfg.get("interpolation", "bicubic"))
    return InputConfig(
        input_size=int(size[-1]),
        crop_fraction=float(cfg.get("crop_pct") or 0.875),
        resample=interpolation if interpolation in _RESAMPLE else "bicubic",
        mean=tuple(float(v) for v in cfg.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in cfg.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
    )


def exported_model(source: bytes | str | os.PathLike[str]) -> nn.Module:
    """A ``torch.export`` archive (``.pt2``) as an ordinary module with its submodule names.

    Raises:
        ModelFileError: Not an export archive, or torch cannot load it.
    """
    data = read_model_bytes(source, "model")
    if data[:2] != b"PK":
        raise ModelFileError(
            "Not a torch.export archive (.pt2 files are zip archives written by "
            "torch.export.save). TorchScript (.pt from torch.jit.save) is not supported: it is "
            "deprecated and refuses forward hooks."
        )
    check_export_archive(data)
    try:
        program = torch.export.load(io.BytesIO(data))
    except Exception as exc:
        raise ModelFileError(
            f"torch.export.load cannot read this file ({first_line(exc)})."
        ) from exc
    check_graph_ops(program.graph)
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:
        raise ModelFileError(f"Cannot unflatten the exported program ({first_line(exc)}).") from exc
    size = exported_input_size(program)
    if size is not None:
        _resize_inputs_to(module, size)
    return module


def exported_input_size(program: torch.export.ExportedProgram) -> tuple[int, int] | None:
    """The static ``(height, width)`` of an exported image model's input (``None`` when the
    spatial sizes are dynamic or the input is not an image batch)."""
    user_inputs = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        shape = getattr(node.meta.get("val"), "shape", None)
        if shape is None or len(shape) != 4:
            return None
        height, width = shape[2], shape[3]
        if isinstance(height, int) and isinstance(width, int):
            return (height, width)
        return None
    return None


def _resize_inputs_to(module: nn.Module, size: tuple[int, int]) -> None:
    """Make an exported module with static spatial sizes accept any image size.

    Deviation, stated where it matters: every technique that feeds other sizes (a whole-picture
    view, DeepDream's octaves, style transfer at its own size) sees the image resized
    (bilinear, differentiable) to the export's ``height x width`` first. Done by giving the
    module a subclass whose ``forward`` resizes, so submodule names stay and no hook is added.
    """
    base = type(module)

    def forward(self: nn.Module, x: torch.Tensor, *args: object, **kwargs: object) -> object:
        if isinstance(x, torch.Tensor) and x.ndim == 4 and tuple(x.shape[-2:]) != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return base.forward(self, x, *args, **kwargs)

    module.__class__ = type(f"FixedSize{base.__name__}", (base,), {"forward": forward})
    module.fixed_input_size = size  # type: ignore[assignment]


# ------------------------------------------------------------------------------ the user model


class NormalizedModel(nn.Module):
    """``net(normalize(x))``: takes RGB in [0, 1] like every model of the studio."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.input_norm = Normalize(tuple(mean), tuple(std))
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


@dataclass(frozen=True)
class UserModel:
    """A loaded user model and its spec (see :func:`load_user_model`).

    The module is owned by whoever holds this object (in the app: one browser session); the
    registry only keeps a weak reference, so it is freed when the owner lets go.
    """

    spec: object  # vizcore.models.registry.ModelSpec (typed loosely to avoid an import cycle)
    model: nn.Module
    notes: tuple[str, ...] = field(default_factory=tuple)


def load_user_model(
    kind: SourceKind,
    *,
    arch: str | None = None,
    weights: bytes | str | os.PathLike[str] | None = None,
    weights_name: str | None = None,
    class_names: Sequence[str] | None = None,
    input_config: InputConfig | None = None,
    label: str | None = None,
    device: str | torch.device | None = None,
) -> UserModel:
    """Load a user model from one of the three sources and describe it.

    Args:
        kind: ``"torchvision"`` or ``"timm"`` (an architecture name + weights) or ``"export"``
            (a whole ``.pt2`` archive in ``weights``).
        arch: The architecture name (torchvision / timm).
        weights: File bytes or a path: a ``state_dict`` (``.pt``/``.pth``/``.safetensors``) or
            the ``.pt2`` archive. ``None`` for timm means its pretrained weights from the local
            cache.
        weights_name: The file name (for its extension and the label) when ``weights`` is bytes.
        class_names: One name per output; default: ImageNet's 1,000 when the head has 1,000
            outputs, else ``class 0``, ``class 1``, ...
        input_config: Input size, crop, resampling and mean/std; default: timm's
            ``pretrained_cfg``, the exported graph's input size, or torchvision's 224 px with
            ImageNet mean/std.
        label: Shown in the model picker.
        device: Where the model lives (``None``: :func:`vizcore.core.devices.default_device`). It is
            probed on the CPU first, then moved once, before anyone else sees it.

    Raises:
        ModelFileError (and its subclasses): unreadable, unsafe or mismatched files, a wrong
            input size or channel count, or class names that do not match the outputs.
        ValueError: An unknown architecture or a bad option.
    """
    from vizcore.models import registry

    name = weights_name or (Path(weights).name if isinstance(weights, str | os.PathLike) else "")
    notes: list[str] = []
    if kind == "export":
        if weights is None:
            raise ModelFileError("An exported model needs its .pt2 file.")
        net = exported_model(weights)
        fixed = getattr(net, "fixed_input_size", None)
        config = input_config or InputConfig(
            input_size=int(fixed[0]) if fixed else 224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)
        )
        arch_label = "torch.export archive"
    elif kind in ("torchvision", "timm"):
        if not arch:
            raise ValueError(f"A {kind} model needs an architecture name.")
        state = None if weights is None else read_state_dict(weights, filename=name or None)
        if kind == "torchvision":
            if state is None:
                raise ModelFileError("A torchvision architecture needs a weights file.")
            net = torchvision_model(arch, state)
            config = input_config or InputConfig()
        else:
            net = timm_model(arch, state)
            config = input_config or timm_input_config(arch)
            if state is None:
                notes.append("timm's pretrained weights from the local Hugging Face cache")
        arch_label = f"{kind} {arch}"
    else:
        raise ValueError(f"kind must be 'torchvision', 'timm' or 'export', got {kind!r}.")
    net.eval().requires_grad_(False)
    model = NormalizedModel(net, config.mean, config.std) if config.normalizes else net
    model.eval().requires_grad_(False)
    facts = _probe(model, config)
    model.min_input_side = _smallest_side(model, config.input_size)  # read by vizcore.core.checks
    names = _class_names(class_names, facts.num_classes, notes)
    digest = _digest(kind, arch, weights, config, names)
    from vizcore.core.devices import as_device

    model.to(as_device(device))  # not shared yet: the registry sees it only below
    spec = registry.user_spec(
        key=f"user:{digest}",
        label=label or f"{name or arch_label} (yours)",
        description=f"Your model: {arch_label}, {facts.num_classes} classes"
        + (f" ({'; '.join(notes)})" if notes else "")
        + ".",
        source=arch_label + (f", weights {name}" if name else ""),
        config=config,
        class_names=names,
        facts=facts,
        model=model,
        fixed_size=getattr(net, "fixed_input_size", None) is not None,
    )
    return UserModel(spec, model, tuple(notes))


def _probe(model: nn.Module, config: InputConfig):
    from vizcore.models.discovery import describe_model

    size = config.input_size
    try:
        facts = describe_model(model, input_size=size)
    except ValueError as exc:
        raise ModelFileError(str(exc)) from exc
    except RuntimeError as exc:
        raise ModelFileError(
            f"The model fails on a (1, 3, {size}, {size}) RGB input: {first_line(exc)} Check "
            "the input size and that the model reads 3-channel RGB images."
        ) from exc
    try:
        with torch.no_grad():
            model(torch.full((2, 3, size, size), 0.5))
    except RuntimeError as exc:
        raise ModelFileError(
            "The model accepts one image but not a batch of two; every technique here runs "
            "batches. Export it with a dynamic batch dimension: torch.export.export(model, (x,), "
            'dynamic_shapes={"x": {0: torch.export.Dim("batch")}}). '
            f"(torch said: {first_line(exc)})"
        ) from exc
    return facts


def _smallest_side(model: nn.Module, input_size: int) -> int:
    """The smallest square side (of a few candidates) the model runs on, so a too-small image
    gets a clear message from :func:`vizcore.core.checks.check_image_batch` instead of an error from
    deep inside the model."""
    for side in (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512):
        if side >= input_size:
            break
        try:
            with torch.no_grad():
                model(torch.full((1, 3, side, side), 0.5))
        except (RuntimeError, ValueError, IndexError, AssertionError):
            continue
        return side
    return input_size


def _class_names(
    class_names: Sequence[str] | None, num_classes: int, notes: list[str]
) -> tuple[str, ...]:
    from vizcore.models.registry import imagenet_categories

    if class_names is not None:
        names = tuple(str(n) for n in class_names)
        if len(names) != num_classes:
            raise ModelFileError(
                f"The class-names file lists {len(names)} classes, but the model has "
                f"{num_classes} outputs."
            )
        return names
    if num_classes == 1000:
        notes.append("ImageNet class names")
        return imagenet_categories()
    notes.append("no class names given")
    return tuple(f"class {i}" for i in range(num_classes))


def _digest(
    kind: str,
    arch: str | None,
    weights: bytes | str | os.PathLike[str] | None,
    config: InputConfig,
    names: Sequence[str],
) -> str:
    h = hashlib.sha256(json.dumps([kind, arch, config.__dict__, list(names)], default=str).encode())
    if isinstance(weights, bytes | bytearray | memoryview):
        h.update(bytes(weights))
    elif weights is not None:
        with contextlib.suppress(OSError):
            stat = Path(weights).stat()
            h.update(f"{Path(weights).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
