"""Real model files for "bring your own model" tests (issue 12): writers and the facts behind them.

Every ``write_*`` function writes one file into ``directory`` (created if missing) and returns its
path. The slow parts (weight conversion, ``torch.export``) are cached per process, so writing the
same file into many ``tmp_path`` directories costs only the file write. ``tests/MODEL_FILES.md``
records what was measured with these files.

What is here:

* **SqueezeNet 1.1 as a torchvision checkpoint** (:func:`squeezenet_torchvision_state_dict`): the
  bundled Caffe weights in the exact keys of ``torchvision.models.squeezenet1_1``, with the Caffe
  preprocessing (BGR flip, 0..255 scale, BGR mean) folded into ``features.0`` so that torchvision's
  standard preprocessing (:data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`) gives the bundled logits.
  Exact at 224 px (and any size where every pooling input is odd); not at 227 px, because
  torchvision pools with ``ceil_mode=True`` and the bundled port with floor mode.
* **EfficientNet-Lite0 as a ``torch.export`` archive** (:func:`write_lite0_pt2`), dynamic batch.
* **EfficientNet-Lite0 as a timm checkpoint** (:func:`lite0_timm_state_dict`) for
  ``timm.create_model("tf_efficientnet_lite0")``, fed with :data:`LITE0_MEAN` / :data:`LITE0_STD`.
* **Tiny 10-class test models** with random (seeded) weights, never pretrained: a torchvision
  ``squeezenet1_1(num_classes=10)`` checkpoint, class-name files, and a small ``.pt2``.
* **Broken and hostile files**: key mismatches, a wrong classifier shape, a pickle payload, a
  pickled whole module, and ``.pt2`` archives whose loading runs a pickle payload.
"""

from __future__ import annotations

import functools
import io
import json
import operator
import os
import pathlib
import zipfile
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE0_MEAN",
    "LITE0_STD",
    "LITE0_TIMM_ARCH",
    "MISMATCH_MISSING_KEY",
    "MISMATCH_RENAMED_KEY",
    "TINY_CLASS_NAMES",
    "TINY_INPUT_SIZE",
    "TINY_NUM_CLASSES",
    "TinyExportNet",
    "lite0_timm_state_dict",
    "save_state_dict",
    "squeezenet_mismatched_state_dict",
    "squeezenet_torchvision_state_dict",
    "squeezenet_wrong_shape_state_dict",
    "tiny_squeezenet_state_dict",
    "write_class_names_json",
    "write_class_names_txt",
    "write_lite0_pt2",
    "write_lite0_timm_safetensors",
    "write_pickle_payload_pt",
    "write_pickled_module_pt",
    "write_pt2_with_pickle_payload",
    "write_squeezenet_mismatch_pth",
    "write_squeezenet_pth",
    "write_squeezenet_safetensors",
    "write_squeezenet_wrong_shape_pth",
    "write_tiny_pt2",
    "write_tiny_pth",
    "write_tiny_safetensors",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""torchvision's standard ImageNet normalization mean (RGB, [0, 1] scale)."""
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""torchvision's standard ImageNet normalization std (RGB, [0, 1] scale)."""

LITE0_MEAN: tuple[float, float, float] = (127.0 / 255.0,) * 3
"""The normalization the Lite0 weights want: ``(255 x - 127) / 128`` = ``(x - mean) / std``."""
LITE0_STD: tuple[float, float, float] = (128.0 / 255.0,) * 3
"""See :data:`LITE0_MEAN` (timm's ``tf_efficientnet_lite0`` config says 0.5 / 0.5 instead)."""
LITE0_TIMM_ARCH = "tf_efficientnet_lite0"
"""The timm architecture :func:`lite0_timm_state_dict` fits (TF "same" padding, BN eps 1e-3)."""

TINY_NUM_CLASSES = 10
TINY_INPUT_SIZE = 64
"""Input side of :class:`TinyExportNet` (the tiny squeezenet also runs at 64 px)."""
TINY_CLASS_NAMES: tuple[str, ...] = (
    "zero-cat",
    "one-dog",
    "two-owl",
    "three-fox",
    "four-eel",
    "five-yak",
    "six-gnu",
    "seven-emu",
    "eight-bat",
    "nine-dog",
)
"""Custom class names for the tiny 10-class models (``.txt``: one a line; ``.json``: a list)."""

MISMATCH_RENAMED_KEY: tuple[str, str] = ("features.3.squeeze.weight", "features.3.squeeze.kernel")
"""``(expected key, key in the file)`` renamed by :func:`squeezenet_mismatched_state_dict`."""
MISMATCH_MISSING_KEY = "classifier.1.bias"
"""The key :func:`squeezenet_mismatched_state_dict` leaves out."""

_SEED = 12
# torchvision squeezenet1_1: index of each Fire module in ``features``, with the bundled name.
_TV_FIRE_INDEX: dict[str, int] = {
    "fire2": 3,
    "fire3": 4,
    "fire4": 6,
    "fire5": 7,
    "fire6": 9,
    "fire7": 10,
    "fire8": 11,
    "fire9": 12,
}
# Lite0's 16 blocks as timm (stage, index) pairs: stage repeats 1, 2, 2, 3, 3, 4, 1.
_LITE0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def _directory(directory: str | os.PathLike[str]) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A fresh dict of fresh tensors, so callers may change what they get."""
    return {key: value.detach().clone() for key, value in state.items()}


def save_state_dict(state: dict[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Saves a state_dict as ``.safetensors`` (by suffix) or with ``torch.save`` otherwise.

    Args:
        state: Tensors by key.
        path: Destination file; its parent directory is created.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(target))
    else:
        torch.save(state, target)
    return target


# --------------------------------------------------------------------------------------------
# 1. SqueezeNet 1.1: bundled Caffe weights as a torchvision checkpoint
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _squeezenet_tv_state() -> dict[str, torch.Tensor]:
    from vizcore.models.squeezenet import CAFFE_BGR_MEAN, Fire, load_squeezenet11

    model = load_squeezenet11()
    if model.conv1.padding != (0, 0):  # the fold below is exact only without padding
        raise RuntimeError(f"conv1 has padding {model.conv1.padding}; the fold is not exact.")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    caffe_mean_rgb = torch.tensor(CAFFE_BGR_MEAN).flip(0).view(1, 3, 1, 1)
    # Bundled: conv1(255 * flip(x) - mean_bgr). torchvision: conv1'(z) with x = z * std + mean.
    # So W'[:, c] = 255 * std_c * W[:, 2 - c] and b' = b + sum W[:, 2 - c] (255 mean_c - caffe_c).
    weight_rgb = model.conv1.weight.detach().flip(1)
    state = {
        "features.0.weight": weight_rgb * (255.0 * std),
        "features.0.bias": model.conv1.bias.detach()
        + (weight_rgb * (255.0 * mean - caffe_mean_rgb)).sum(dim=(1, 2, 3)),
    }
    for name, index in _TV_FIRE_INDEX.items():
        fire = model.get_submodule(name)
        assert isinstance(fire, Fire)
        for part in ("squeeze", "expand1x1", "expand3x3"):
            conv = fire.get_submodule(part)
            state[f"features.{index}.{part}.weight"] = conv.weight.detach()
            state[f"features.{index}.{part}.bias"] = conv.bias.detach()
    state["classifier.1.weight"] = model.conv10.weight.detach()
    state["classifier.1.bias"] = model.conv10.bias.detach()
    return _clone(state)


def squeezenet_torchvision_state_dict() -> dict[str, torch.Tensor]:
    """The bundled SqueezeNet 1.1 weights in ``torchvision.models.squeezenet1_1``'s keys.

    ``squeezenet1_1(weights=None).load_state_dict(sd, strict=True)`` then, fed with
    ``(x - IMAGENET_MEAN) / IMAGENET_STD`` of RGB ``x`` in [0, 1], gives the bundled model's
    logits on ``x`` (max abs difference about 3e-6 at 224 px). The Caffe BGR flip, 0..255 scale
    and BGR mean are folded into ``features.0`` (exact: conv1 has no padding). Inputs whose
    pooling stages see an even size (227 px) differ, because torchvision pools with
    ``ceil_mode=True``.

    Returns:
        A fresh dict of 52 float32 tensors (the conversion is cached; the tensors are copies).
    """
    return _clone(_squeezenet_tv_state())


def write_squeezenet_pth(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`squeezenet_torchvision_state_dict` with ``torch.save``.

    Returns:
        ``directory / "squeezenet1_1_bundled.pth"``.
    """
    target = _directory(directory) / "squeezenet1_1_bundled.pth"
    return save_state_dict(_squeezenet_tv_state(), target)


def write_squeezenet_safetensors(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`squeezenet_torchvision_state_dict` as safetensors.

    Returns:
        ``directory / "squeezenet1_1_bundled.safetensors"``.
    """
    target = _directory(directory) / "squeezenet1_1_bundled.safetensors"
    return save_state_dict(_squeezenet_tv_state(), target)


# --------------------------------------------------------------------------------------------
# 2. EfficientNet-Lite0 as a torch.export archive
# --------------------------------------------------------------------------------------------


def _export_bytes(model: nn.Module, size: int, *, dynamic_batch: bool) -> bytes:
    # Batch 2 in the example: with a batch-1 example torch.export specializes the size-1 dim.
    example = torch.zeros(2 if dynamic_batch else 1, 3, size, size)
    dynamic_shapes = None
    if dynamic_batch:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


@functools.lru_cache(maxsize=2)
def _lite0_pt2_bytes(dynamic_batch: bool) -> bytes:
    from vizcore.models.registry import load_model

    return _export_bytes(load_model("efficientnet_lite0"), 224, dynamic_batch=dynamic_batch)


def write_lite0_pt2(directory: str | os.PathLike[str], *, dynamic_batch: bool = True) -> Path:
    """Writes ``torch.export.save`` of the bundled Lite0 (RGB in [0, 1], 224 px, normalization
    inside, eval mode, frozen parameters).

    The first call per process and mode exports (about 5-8 s on this CPU); later calls write
    the cached bytes (about 20 MB, of which 1.2 MB is the saved example input).

    Args:
        directory: Where to write.
        dynamic_batch: ``True``: batch dimension ``torch.export.Dim("batch", min=1, max=1024)``.
            ``False``: static batch 1 (a batch-2 input raises ``RuntimeError``).

    Returns:
        ``directory / "lite0.pt2"`` or ``directory / "lite0_static.pt2"``.
    """
    name = "lite0.pt2" if dynamic_batch else "lite0_static.pt2"
    target = _directory(directory) / name
    target.write_bytes(_lite0_pt2_bytes(dynamic_batch))
    return target


# --------------------------------------------------------------------------------------------
# 3. EfficientNet-Lite0 for timm
# --------------------------------------------------------------------------------------------


def _lite0_timm_key_map() -> dict[str, str]:
    """Bundled Lite0 module prefix -> timm ``tf_efficientnet_lite0`` module prefix."""
    mapping = {"stem.conv": "conv_stem", "stem.bn": "bn1", "head.conv": "conv_head"}
    mapping.update({"head.bn": "bn2", "fc": "classifier"})
    flat = 0
    for stage, repeats in enumerate(_LITE0_STAGE_REPEATS):
        for index in range(repeats):
            src, dst = f"blocks.{flat}", f"blocks.{stage}.{index}"
            if flat == 0:  # DepthwiseSeparableConv: no expansion
                parts = {"depthwise.conv": "conv_dw", "depthwise.bn": "bn1"}
                parts.update({"project.conv": "conv_pw", "project.bn": "bn2"})
            else:  # InvertedResidual
                parts = {"expand.conv": "conv_pw", "expand.bn": "bn1"}
                parts.update({"depthwise.conv": "conv_dw", "depthwise.bn": "bn2"})
                parts.update({"project.conv": "conv_pwl", "project.bn": "bn3"})
            mapping.update({f"{src}.{a}": f"{dst}.{b}" for a, b in parts.items()})
            flat += 1
    return mapping


@functools.lru_cache(maxsize=1)
def _lite0_timm_state() -> dict[str, torch.Tensor]:
    from vizcore.models.registry import load_model

    source = load_model("efficientnet_lite0").state_dict()
    prefixes = _lite0_timm_key_map()
    state: dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("input_norm."):
            continue  # the normalization is the caller's job with timm (LITE0_MEAN / STD)
        module, _, leaf = key.rpartition(".")
        state[f"{prefixes[module]}.{leaf}"] = value
    return _clone(state)


def lite0_timm_state_dict() -> dict[str, torch.Tensor]:
    """The bundled Lite0 weights in timm ``tf_efficientnet_lite0``'s keys (296 entries).

    ``timm.create_model("tf_efficientnet_lite0", pretrained=False)`` with these loaded strictly
    and fed ``(x - LITE0_MEAN) / LITE0_STD`` gives the bundled logits at 224 px. timm's
    pretrained config says mean = std = 0.5, which is close but not the same (see
    ``MODEL_FILES.md`` for the measured difference). ``efficientnet_lite0`` (no ``tf_``) loads
    the same keys strictly but uses symmetric padding and BN eps 1e-5, so its logits differ.

    Returns:
        A fresh dict (the mapping is cached; the tensors are copies).
    """
    return _clone(_lite0_timm_state())


def write_lite0_timm_safetensors(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`lite0_timm_state_dict` as safetensors.

    Returns:
        ``directory / "tf_efficientnet_lite0_bundled.safetensors"``.
    """
    target = _directory(directory) / "tf_efficientnet_lite0_bundled.safetensors"
    return save_state_dict(_lite0_timm_state(), target)


# --------------------------------------------------------------------------------------------
# 4. Tiny 10-class test models (random weights, never pretrained)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _tiny_squeezenet_state() -> dict[str, torch.Tensor]:
    import torchvision

    with torch.random.fork_rng(devices=[]):  # torchvision's init draws from the global RNG
        torch.manual_seed(_SEED)
        model = torchvision.models.squeezenet1_1(weights=None, num_classes=TINY_NUM_CLASSES)
    return _clone(model.state_dict())


def tiny_squeezenet_state_dict() -> dict[str, torch.Tensor]:
    """Seeded random weights of ``torchvision.models.squeezenet1_1(num_classes=10)``.

    A test model only (random weights, never presented as pretrained). 0.72 M parameters; it
    runs at 64 px and more. The global RNG state is left as it was.

    Returns:
        A fresh dict (cached per process; the tensors are copies).
    """
    return _clone(_tiny_squeezenet_state())


def write_tiny_pth(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`tiny_squeezenet_state_dict` with ``torch.save``.

    Returns:
        ``directory / "tiny_squeezenet10.pth"``.
    """
    target = _directory(directory) / "tiny_squeezenet10.pth"
    return save_state_dict(_tiny_squeezenet_state(), target)


def write_tiny_safetensors(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`tiny_squeezenet_state_dict` as safetensors.

    Returns:
        ``directory / "tiny_squeezenet10.safetensors"``.
    """
    target = _directory(directory) / "tiny_squeezenet10.safetensors"
    return save_state_dict(_tiny_squeezenet_state(), target)


def write_class_names_txt(directory: str | os.PathLike[str]) -> Path:
    """Writes :data:`TINY_CLASS_NAMES` one a line (UTF-8, trailing newline).

    Returns:
        ``directory / "tiny_classes.txt"``.
    """
    target = _directory(directory) / "tiny_classes.txt"
    target.write_text("\n".join(TINY_CLASS_NAMES) + "\n", encoding="utf-8")
    return target


def write_class_names_json(directory: str | os.PathLike[str]) -> Path:
    """Writes :data:`TINY_CLASS_NAMES` as a JSON list.

    Returns:
        ``directory / "tiny_classes.json"``.
    """
    target = _directory(directory) / "tiny_classes.json"
    target.write_text(json.dumps(list(TINY_CLASS_NAMES)), encoding="utf-8")
    return target


class TinyExportNet(nn.Module):
    """conv-ReLU-conv-ReLU-GAP-linear, 10 classes, 64 px: the tiny ``.pt2`` test model.

    Modules: ``conv1`` (3->8, 3x3, padding 1), ``relu1``, ``conv2`` (8->16, 3x3, stride 2,
    padding 1), ``relu2``, ``pool`` (global average), ``fc`` (16->10). Random weights.
    """

    def __init__(self, num_classes: int = TINY_NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(x).flatten(1))


def _tiny_export_net() -> TinyExportNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        return TinyExportNet().eval()


@functools.lru_cache(maxsize=1)
def _tiny_pt2_bytes() -> bytes:
    return _export_bytes(_tiny_export_net(), TINY_INPUT_SIZE, dynamic_batch=True)


def write_tiny_pt2(directory: str | os.PathLike[str]) -> Path:
    """Writes a ``torch.export`` archive of :class:`TinyExportNet` (seeded), dynamic batch, 64 px.

    Returns:
        ``directory / "tiny10.pt2"``.
    """
    target = _directory(directory) / "tiny10.pt2"
    target.write_bytes(_tiny_pt2_bytes())
    return target


# --------------------------------------------------------------------------------------------
# 5. Hostile files
# --------------------------------------------------------------------------------------------


class _Touch:
    """Pickles as "create this file": ``pathlib.Path.touch(path)`` runs when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


class _TouchThen:
    """Unpickles as ``value``, after creating ``path`` (``getitem((touch(path), value), 1)``)."""

    def __init__(self, path: Path, value: object) -> None:
        self.path = path
        self.value = value

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (operator.getitem, ((_Touch(self.path), self.value), 1))


def write_pickle_payload_pt(
    directory: str | os.PathLike[str], marker_path: str | os.PathLike[str]
) -> Path:
    """Writes a ``torch.save`` file whose unpickling creates ``marker_path``.

    The payload is a ``__reduce__`` to ``pathlib.Path.touch`` (inside a dict, as a checkpoint
    would be). ``torch.load(weights_only=True)`` refuses it without running it
    (``pickle.UnpicklingError``, "... Unsupported global: GLOBAL getattr ...": ``torch.save``'s
    pickle protocol 2 spells ``pathlib.Path.touch`` as ``getattr(pathlib.Path, "touch")``); a
    plain ``torch.load(weights_only=False)`` creates the marker.

    Returns:
        ``directory / "payload.pt"``.
    """
    target = _directory(directory) / "payload.pt"
    torch.save({"weight": torch.zeros(1), "payload": _Touch(Path(marker_path))}, target)
    return target


def write_pickled_module_pt(directory: str | os.PathLike[str]) -> Path:
    """Writes ``torch.save`` of a whole :class:`TinyExportNet` (a module, not a state_dict).

    ``torch.load(weights_only=True)`` refuses it ("Unsupported global: GLOBAL
    tests.model_files.TinyExportNet").

    Returns:
        ``directory / "whole_module.pt"``.
    """
    target = _directory(directory) / "whole_module.pt"
    torch.save(_tiny_export_net(), target)
    return target


def write_pt2_with_pickle_payload(
    directory: str | os.PathLike[str],
    marker_path: str | os.PathLike[str],
    *,
    where: str = "sample_inputs",
) -> Path:
    """Writes a ``.pt2`` whose ``torch.export.load`` creates ``marker_path`` (torch 2.15).

    It is :func:`write_tiny_pt2`'s archive with one member replaced; ``torch.export.load`` still
    succeeds and the program still runs, so nothing looks wrong afterwards.

    Args:
        directory: Where to write.
        marker_path: The file the payload creates.
        where: ``"sample_inputs"``: ``data/sample_inputs/model.pt`` becomes a payload that
            unpickles to the real example inputs. It is read by ``deserialize_torch_artifact``
            (``torch/_export/serde/serialize.py``), which tries ``weights_only=True`` and, on any
            exception, retries with ``weights_only=False``. ``"weights"``: the first weight gets
            ``"use_pickle": true`` in ``model_weights_config.json`` and its file becomes a payload
            that unpickles to the real tensor; ``_load_state_dict``
            (``torch/export/pt2_archive/_package.py``) reads such weights with
            ``torch.load(weights_only=False)`` directly.

    Returns:
        ``directory / "payload_<where>.pt2"``.

    Raises:
        ValueError: If ``where`` is neither ``"sample_inputs"`` nor ``"weights"``.
    """
    if where not in ("sample_inputs", "weights"):
        raise ValueError(f"where must be 'sample_inputs' or 'weights', got {where!r}.")
    marker = Path(marker_path)
    source = zipfile.ZipFile(io.BytesIO(_tiny_pt2_bytes()))
    names = source.namelist()
    root = names[0].split("/", 1)[0]
    replaced: dict[str, bytes] = {}
    if where == "sample_inputs":
        member = f"{root}/data/sample_inputs/model.pt"
        real = torch.load(io.BytesIO(source.read(member)), weights_only=True)
        replaced[member] = _torch_save_bytes(_TouchThen(marker, real))
    else:
        config_name = f"{root}/data/weights/model_weights_config.json"
        config = json.loads(source.read(config_name))
        fqn, meta = next(iter(config["config"].items()))
        weight = _tiny_export_net().state_dict()[fqn]
        meta["use_pickle"] = True
        replaced[config_name] = json.dumps(config).encode()
        replaced[f"{root}/data/weights/{meta['path_name']}"] = _torch_save_bytes(
            _TouchThen(marker, nn.Parameter(weight, requires_grad=False))
        )
    target = _directory(directory) / f"payload_{where}.pt2"
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            out.writestr(info, replaced.get(info.filename, source.read(info.filename)))
    return target


def _torch_save_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# 6. State dicts that do not fit
# --------------------------------------------------------------------------------------------


def squeezenet_mismatched_state_dict() -> dict[str, torch.Tensor]:
    """:func:`squeezenet_torchvision_state_dict` with one key renamed and one missing.

    ``features.3.squeeze.weight`` is stored as ``features.3.squeeze.kernel``
    (:data:`MISMATCH_RENAMED_KEY`) and ``classifier.1.bias`` is absent
    (:data:`MISMATCH_MISSING_KEY`).
    """
    state = squeezenet_torchvision_state_dict()
    expected, stored = MISMATCH_RENAMED_KEY
    state[stored] = state.pop(expected)
    del state[MISMATCH_MISSING_KEY]
    return state


def squeezenet_wrong_shape_state_dict() -> dict[str, torch.Tensor]:
    """:func:`squeezenet_torchvision_state_dict` with a 10-class classifier (from the tiny model).

    Every key matches ``squeezenet1_1(num_classes=1000)``; ``classifier.1.weight`` is
    ``(10, 512, 1, 1)`` and ``classifier.1.bias`` ``(10,)``.
    """
    state = squeezenet_torchvision_state_dict()
    tiny = _tiny_squeezenet_state()
    for key in ("classifier.1.weight", "classifier.1.bias"):
        state[key] = tiny[key].clone()
    return state


def write_squeezenet_mismatch_pth(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`squeezenet_mismatched_state_dict` with ``torch.save``.

    Returns:
        ``directory / "squeezenet1_1_mismatch.pth"``.
    """
    target = _directory(directory) / "squeezenet1_1_mismatch.pth"
    return save_state_dict(squeezenet_mismatched_state_dict(), target)


def write_squeezenet_wrong_shape_pth(directory: str | os.PathLike[str]) -> Path:
    """Writes :func:`squeezenet_wrong_shape_state_dict` with ``torch.save``.

    Returns:
        ``directory / "squeezenet1_1_wrong_shape.pth"``.
    """
    target = _directory(directory) / "squeezenet1_1_wrong_shape.pth"
    return save_state_dict(squeezenet_wrong_shape_state_dict(), target)
