"""What a model is made of, found by running it once: layers, their kinds and shapes, its head.

Every model goes through this one path, the bundled ones included, so a model the team has never
seen gets working defaults: one probe forward pass (seeded noise, batch 1, hooks removed in
``finally``) records, for every named module, how often it ran and the shape of its output. From
that:

* :func:`layer_kind` classifies a module as ``conv``, ``activation``, ``norm``, ``pool``,
  ``linear`` or ``block`` (a container). Plain ``nn.Module`` s are classified by type; the
  submodules of an unflattened ``torch.export`` archive are ``InterpreterModule`` s, so they are
  classified by the ATen operators of their own graph (``aten.conv2d`` -> ``conv``, ...).
* :func:`find_gap_head` finds the "global average pooling + linear classifier" structure that CAM
  and the multifaceted centre bias need, checked numerically on the probe (one tolerance, one
  place): the spatial map ``A`` whose spatial mean feeds the classifier, the classifier, and the
  layers whose spatial mean already *is* the logits (SqueezeNet's ``conv10``).
* :func:`derive_presets` picks the layers each technique family starts from.

The CAM-family default is the map that feeds global pooling, taken after its activation
(EfficientNet-Lite0 ``head.act``, SqueezeNet ``fire9``), not the last convolution or batch norm:
``bench/cam_layers.py`` measured why (``bench/results/cam_layers.md``; on Lite0's ``head.bn``
94 % of the values are negative and Score-CAM's map is all zero on the cat photo).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

from vizcore.core.hooks import inference_session
from vizcore.models.layer_kinds import (
    RECTIFIER_OPS,
    ConvGeometry,
    LayerKind,
    conv_geometry,
    graph_ops,
    is_rectifier,
    layer_kind,
)

__all__ = [
    "RECTIFIER_OPS",
    "ConvGeometry",
    "GapHead",
    "LayerInfo",
    "LayerKind",
    "ModelFacts",
    "conv_geometry",
    "derive_presets",
    "describe_model",
    "facts_for",
    "find_gap_head",
    "functional_rectifiers",
    "graph_ops",
    "is_rectifier",
    "layer_kind",
    "maps_close",
]


@dataclass(frozen=True)
class LayerInfo:
    """One named module as seen in the probe forward pass.

    Attributes:
        name: Dotted name from ``named_modules()``.
        kind: See :func:`layer_kind`.
        shape: Output shape for a batch-1 probe (``()`` when it never ran or its output is not a
            tensor).
        calls: How many times it ran in one forward pass (0: never called, e.g. a container
            that the parent's ``forward`` iterates over; >1: reused at several call sites).
        order: Position of its first output among all outputs (-1 when never called).
    """

    name: str
    kind: LayerKind
    shape: tuple[int, ...]
    calls: int
    order: int

    @property
    def usable(self) -> bool:
        """Ran exactly once with a tensor output: hooks on it see one well-defined activation."""
        return self.calls == 1 and bool(self.shape)

    @property
    def spatial(self) -> bool:
        """A ``(1, C, H, W)`` output with more than one position."""
        return len(self.shape) == 4 and self.shape[2] * self.shape[3] > 1


@dataclass(frozen=True)
class GapHead:
    """A classifier head of the form ``logits = W · mean_{x,y} A(x, y) + b``.

    Attributes:
        kind: ``"linear"``: ``A`` feeds a linear layer through global average pooling
            (EfficientNet, ResNet); ``"conv1x1"``: ``A`` feeds a 1x1 convolution with one output
            channel per class whose spatial mean (after an optional ReLU) is the logits
            (SqueezeNet).
        feature_layers: Layers whose output is ``A`` (a block and its last activation give the
            same tensor), best name first.
        classifier: The linear / 1x1-conv module's name.
        class_map_layers: Layers whose spatial mean already is the logits (one channel per class:
            SqueezeNet's ``conv10`` and ``relu10``), latest first.
        relu_before_pool: For ``conv1x1``: the class maps pass a ReLU before the pooling.
    """

    kind: Literal["linear", "conv1x1"]
    feature_layers: tuple[str, ...]
    classifier: str
    class_map_layers: tuple[str, ...] = ()
    relu_before_pool: bool = False

    @property
    def feature_layer(self) -> str:
        """The preferred name of ``A``."""
        return self.feature_layers[0]

    def class_weights(self, model: nn.Module, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's row ``w^c`` and bias ``b_c`` for class ``index`` (float32 copies)."""
        from vizcore.core.layers import get_layer

        module = get_layer(model, self.classifier)
        weight = _parameter(module, "weight").detach().float()
        bias = getattr(module, "bias", None)
        row = weight[index].reshape(-1)
        b = (
            bias[index].detach().float()
            if isinstance(bias, torch.Tensor)
            else torch.zeros((), device=weight.device)
        )
        return row.clone(), b.clone()


def _parameter(module: nn.Module, name: str) -> torch.Tensor:
    value = getattr(module, name, None)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{type(module).__name__} has no tensor attribute {name!r}.")
    return value


@dataclass(frozen=True)
class ModelFacts:
    """Everything :func:`describe_model` found.

    Attributes:
        input_size: Side of the square probe input.
        num_classes: Width of the logits.
        layers: Every named submodule, in ``named_modules()`` order.
        head: The GAP head, or ``None`` (then CAM and the centre bias do not apply).
        head_reason: Why there is no head, in plain words ("" when there is one).
        presets: Derived layer presets per technique family (see :func:`derive_presets`).
        functional_rectifiers: Rectifier operators the model calls outside a module of its own
            (guided backprop / deconvnet cannot gate those), as "where: op" strings.
    """

    input_size: int
    num_classes: int
    layers: tuple[LayerInfo, ...]
    head: GapHead | None
    head_reason: str
    presets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    functional_rectifiers: tuple[str, ...] = ()

    def layer(self, name: str) -> LayerInfo | None:
        """The entry for ``name`` (``None`` if the model has no such module)."""
        return next((info for info in self.layers if info.name == name), None)

    def names(self, *kinds: str, spatial: bool = False) -> list[str]:
        """Usable layers (ran once, tensor output) of the given kinds, in definition order."""
        return [
            info.name
            for info in self.layers
            if info.usable and (not kinds or info.kind in kinds) and (info.spatial or not spatial)
        ]


def maps_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The one tolerance for "these two activations are the same tensor" (relative 1e-4)."""
    if a.shape != b.shape:
        return False
    scale = max(1.0, float(b.detach().abs().max()))
    return bool(
        torch.allclose(a.detach().float(), b.detach().float(), rtol=1e-4, atol=1e-4 * scale)
    )


@dataclass
class _Probe:
    """What one probe forward recorded."""

    outputs: dict[str, list[torch.Tensor | None]]
    inputs: dict[str, torch.Tensor]
    order: dict[str, int]
    logits: torch.Tensor


def _probe_input(input_size: int | tuple[int, int]) -> torch.Tensor:
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 3, height, width, generator=generator, device="cpu")
    return (0.5 + 0.2 * noise).clamp(0, 1)


def _run_probe(model: nn.Module, x: torch.Tensor) -> _Probe:
    names = {id(m): n for n, m in model.named_modules() if n}
    probe = _Probe({}, {}, {}, torch.empty(0, device=x.device))
    counter = iter(range(1 << 30))

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        name = names.get(id(module))
        if name is None:
            return
        tensor = output if isinstance(output, torch.Tensor) else None
        # Cloned: a later in-place op (ResNet's ``out += identity``, ``ReLU(inplace=True)``)
        # would otherwise change the recorded value.
        probe.outputs.setdefault(name, []).append(
            tensor.detach().clone() if tensor is not None else None
        )
        probe.order.setdefault(name, next(counter))
        if inputs and isinstance(inputs[0], torch.Tensor) and name not in probe.inputs:
            probe.inputs[name] = inputs[0].detach().clone()

    handles = []
    with inference_session(model), torch.no_grad():
        try:
            for module in model.modules():
                if id(module) in names:
                    handles.append(module.register_forward_hook(hook))
            logits = model(x)
        finally:
            for handle in handles:
                handle.remove()
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"A classifier must return logits of shape (batch, classes); this model returned "
            f"{shape} for a (1, 3, H, W) input."
        )
    probe.logits = logits.detach().float()
    return probe


def _layer_infos(model: nn.Module, probe: _Probe) -> tuple[LayerInfo, ...]:
    infos = []
    for name, module in model.named_modules():
        if not name:
            continue
        outs = probe.outputs.get(name, [])
        first = outs[0] if outs else None
        infos.append(
            LayerInfo(
                name=name,
                kind=layer_kind(module),
                shape=tuple(first.shape) if first is not None else (),
                calls=len(outs),
                order=probe.order.get(name, -1),
            )
        )
    return tuple(infos)


def _same_as_first(names: list[str], probe: _Probe, kinds: Mapping[str, str]) -> list[str]:
    """Order layers that hold the same tensor: activations/convs first, then blocks, then
    pass-throughs (dropout, identity), each group by the order its hook fired."""
    rank = {"activation": 0, "conv": 0, "norm": 0, "pool": 1, "block": 2, "other": 2}
    return sorted(names, key=lambda n: (rank.get(kinds[n], 3), probe.order[n]))


def _find_head(model: nn.Module, probe: _Probe, infos: Sequence[LayerInfo]) -> GapHead | None:
    logits = probe.logits
    num_classes = logits.shape[1]
    kinds = {i.name: i.kind for i in infos}
    spatial = [i for i in infos if i.usable and i.spatial]
    outputs = {i.name: probe.outputs[i.name][0] for i in spatial}
    class_maps = [
        n
        for n in (i.name for i in spatial)
        if outputs[n].shape[1] == num_classes and maps_close(outputs[n].mean((2, 3)), logits)
    ]
    class_maps.sort(key=lambda n: -probe.order[n])
    classifiers = [
        i for i in infos if i.usable and i.kind in ("linear", "conv") and i.name in probe.inputs
    ]
    for info in sorted(classifiers, key=lambda i: -i.order):
        features = probe.inputs[info.name]
        out = probe.outputs[info.name][0]
        if info.kind == "linear":
            if out.ndim != 2 or not maps_close(out, logits) or features.ndim != 2:
                continue
            matches = [
                n
                for n, a in outputs.items()
                if a.shape[1] == features.shape[1] and maps_close(a.mean((2, 3)), features)
            ]
            if matches:
                return GapHead("linear", tuple(_same_as_first(matches, probe, kinds)), info.name)
        elif out.ndim == 4 and out.shape[1] == num_classes and features.ndim == 4:
            pooled, relu_pooled = out.mean((2, 3)), torch.relu(out).mean((2, 3))
            relu = not maps_close(pooled, logits) and maps_close(relu_pooled, logits)
            if not (relu or maps_close(pooled, logits)):
                continue
            weight = getattr(get_module(model, info.name), "weight", None)
            if not isinstance(weight, torch.Tensor) or tuple(weight.shape[2:]) != (1, 1):
                continue
            matches = [n for n, a in outputs.items() if maps_close(a, features)]
            if matches:
                return GapHead(
                    "conv1x1",
                    tuple(_same_as_first(matches, probe, kinds)),
                    info.name,
                    tuple(class_maps),
                    relu_before_pool=relu,
                )
    return None


def get_module(model: nn.Module, name: str) -> nn.Module:
    """``get_layer`` without the import cycle (hooks -> layers is fine; layers -> here is not)."""
    from vizcore.core.layers import get_layer

    return get_layer(model, name)


def functional_rectifiers(model: nn.Module) -> tuple[str, ...]:
    """Rectifier ops inside graph modules that are not themselves a rectifier module.

    Only graph (exported) models can be inspected this way (a block's graph calls its children
    as modules; its own ``call_function`` nodes are its own ops); for eager models a functional
    ``F.relu`` is found at run time by the gated-gradient methods (see attribution.py).
    """
    found = []
    for name, module in model.named_modules():
        ops = [op for op in graph_ops(module) if op in RECTIFIER_OPS]
        if ops and not is_rectifier(module):
            found.append(f"{name or 'the model'}: {ops[0]}")
    return tuple(found)


def _spread(names: Sequence[str], count: int) -> tuple[str, ...]:
    """``count`` names spread evenly over ``names`` (shallow to deep), the last one included."""
    if len(names) <= count:
        return tuple(names)
    picks = [round(i * (len(names) - 1) / (count - 1)) for i in range(count)] if count > 1 else []
    return tuple(dict.fromkeys(names[p] for p in picks))


def derive_presets(facts: ModelFacts) -> dict[str, tuple[str, ...]]:
    """Starting layers per technique family, derived from the probe alone.

    * ``first_conv``: the first convolution that reads the 3 RGB channels.
    * ``activations``: the outputs of the top-level stages (spatial blocks and activations),
      shallow to deep, at most 16.
    * ``cam`` / ``cam_features``: the map that feeds global pooling, after its activation (the
      GAP head's feature layer), else the last spatial activation or block.
    * ``embedding``: the pooled vector that feeds the classifier (its spatial map, pooled by the
      feature code), else the CAM layer.
    * ``deepdream``: five spatial stage outputs from the first third to the last.
    * ``style``: five spatial outputs from the stem to the middle of the network (Gram
      statistics need resolution); ``content``: one from the middle.
    """
    presets: dict[str, tuple[str, ...]] = {}
    convs = [i for i in facts.layers if i.usable and i.kind == "conv"]
    rgb = [i.name for i in convs if len(i.shape) == 4]
    if rgb:
        presets["first_conv"] = (rgb[0],)
    stages = _stage_outputs(facts)
    if stages:
        presets["activations"] = _spread(stages, 20)
    if facts.head is not None:
        cam = facts.head.feature_layer
    else:
        late = [
            i.name
            for i in sorted(facts.layers, key=lambda i: i.order)
            if i.usable and i.spatial and i.kind in ("activation", "block")
        ]
        cam = late[-1] if late else (stages[-1] if stages else "")
    if cam:
        presets["cam"] = (cam,)
        presets["cam_features"] = (cam,)
        presets["embedding"] = (cam,)
    if stages:
        deep = stages[len(stages) // 3 :] or stages
        presets["deepdream"] = _spread(deep[:-1] or deep, 5)
        half = stages[: max(2, math.ceil(len(stages) * 0.6))]
        presets["style"] = _spread(half, 5)
        presets["content"] = (half[len(half) // 2],) if half else ()
        presets["inversion"] = _spread(stages, 5)
    return presets


def _stage_outputs(facts: ModelFacts) -> list[str]:
    """Spatial outputs of the network's stages, shallow to deep, in execution order.

    Walks the module tree from the top: a list of numbered children (``nn.Sequential``,
    ``nn.ModuleList``: ``blocks.0``, ``blocks.1``, ...; also in exported graphs, whose types are
    gone but whose names are kept) and a container that never runs itself are looked into; any
    other block or activation with a spatial output is a stage. Bare convolutions and norms are
    not stages (their activation follows), nor are pools (a subsampled copy of the stage
    before). A model without such modules falls back to its spatial convolutions.
    """
    children: dict[str, list[LayerInfo]] = {}
    for info in facts.layers:
        parent = info.name.rsplit(".", 1)[0] if "." in info.name else ""
        children.setdefault(parent, []).append(info)
    chosen: list[LayerInfo] = []

    def visit(prefix: str) -> None:
        for child in children.get(prefix, []):
            kids = children.get(child.name, [])
            numbered = bool(kids) and all(k.name.rsplit(".", 1)[-1].isdigit() for k in kids)
            if kids and (numbered or not child.usable or not child.spatial):
                visit(child.name)
            elif child.usable and child.spatial and child.kind in ("block", "activation"):
                chosen.append(child)

    visit("")
    if not chosen:
        chosen = [i for i in facts.layers if i.usable and i.spatial and i.kind == "conv"]
    chosen.sort(key=lambda i: i.order)
    return [i.name for i in chosen]


def describe_model(model: nn.Module, *, input_size: int | tuple[int, int] = 224) -> ModelFacts:
    """Run one probe forward pass and describe ``model`` (results cached per model and size).

    Args:
        model: A classifier taking RGB in [0, 1] of shape ``(N, 3, H, W)`` and returning logits.
        input_size: The probe's side (or ``(height, width)``): the model's own input size.

    Raises:
        ValueError: The model does not return ``(1, classes)`` logits for the probe.
    """
    key = input_size if isinstance(input_size, int) else tuple(input_size)
    with _FACTS_GUARD:
        cached = _FACTS.get(model, {}).get(key)
    if cached is not None:
        return cached
    from vizcore.core.devices import to_model_device

    probe = _run_probe(model, to_model_device(model, _probe_input(input_size)))
    infos = _layer_infos(model, probe)
    head = _find_head(model, probe, infos)
    reason = (
        ""
        if head is not None
        else (
            "its class scores are not a global average over positions of a spatial map followed by "
            "a linear layer or a 1x1 convolution"
        )
    )
    facts = ModelFacts(
        input_size=key if isinstance(key, int) else key[0],
        num_classes=int(probe.logits.shape[1]),
        layers=infos,
        head=head,
        head_reason=reason,
        functional_rectifiers=functional_rectifiers(model),
    )
    facts = ModelFacts(**{**facts.__dict__, "presets": MappingProxyType(derive_presets(facts))})
    with _FACTS_GUARD:
        _FACTS.setdefault(model, {})[key] = facts
    return facts


def facts_for(model: nn.Module, *, input_size: int | tuple[int, int] = 224) -> ModelFacts:
    """The facts already found for ``model`` at any probe size, else a probe at ``input_size``.

    The structure (layer kinds, the head) does not depend on the probe size, so callers that
    only need the structure use this instead of probing again for every new image size.
    """
    with _FACTS_GUARD:
        known = _FACTS.get(model)
        if known:
            return next(iter(known.values()))
    if not isinstance(input_size, int) and input_size[0] == input_size[1]:
        input_size = input_size[0]
    return describe_model(model, input_size=input_size)


def find_gap_head(model: nn.Module, *, input_size: int | tuple[int, int] = 224) -> GapHead:
    """The model's GAP head (see :class:`GapHead`).

    Raises:
        ValueError: The model has no such head; the message says what CAM-style methods need.
    """
    facts = facts_for(model, input_size=input_size)
    if facts.head is None:
        raise ValueError(
            f"This model has no global-average-pooling head: {facts.head_reason}. CAM and the "
            "centre bias need one; Grad-CAM works on any convolutional layer."
        )
    return facts.head


_FACTS: weakref.WeakKeyDictionary[nn.Module, dict[Any, ModelFacts]] = weakref.WeakKeyDictionary()
_FACTS_GUARD = threading.Lock()
