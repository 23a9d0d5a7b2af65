"""What kind of layer a module is, from its type or, for ``torch.export`` submodules, its graph.

Plain ``nn.Module`` s are classified by type; the submodules of an unflattened ``torch.export``
archive are ``InterpreterModule`` s, so they are classified by the ATen operators of their own graph
(``aten.conv2d`` -> ``conv``, ...). Also a conv's geometry (kernel, stride, padding, dilation),
which the receptive-field arithmetic needs. Split from :mod:`vizcore.models.discovery`, which
re-exports the public names."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

LayerKind = Literal["conv", "activation", "norm", "pool", "linear", "dropout", "block", "other"]

_TYPE_KINDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], LayerKind], ...] = (
    (nn.Conv2d, "conv"),
    (
        (
            nn.ReLU,
            nn.ReLU6,
            nn.LeakyReLU,
            nn.ELU,
            nn.GELU,
            nn.SiLU,
            nn.Hardswish,
            nn.Hardsigmoid,
            nn.Mish,
            nn.PReLU,
            nn.Sigmoid,
            nn.Tanh,
        ),
        "activation",
    ),
    ((nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm), "norm"),
    (
        (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
        "pool",
    ),
    (nn.Linear, "linear"),
    ((nn.Dropout, nn.Dropout2d, nn.Identity), "dropout"),
)

#: ATen operator names (``torch.ops.aten.<name>.<overload>``) by the kind they make a module.
_OP_KINDS: Mapping[str, LayerKind] = MappingProxyType(
    {
        **dict.fromkeys(("conv2d", "convolution", "_convolution", "conv_transpose2d"), "conv"),
        **dict.fromkeys(("linear", "addmm"), "linear"),
        **dict.fromkeys(
            (
                "batch_norm",
                "_native_batch_norm_legit_no_training",
                "_native_batch_norm_legit_functional",
                "native_batch_norm",
                "group_norm",
                "layer_norm",
                "instance_norm",
            ),
            "norm",
        ),
        **dict.fromkeys(
            (
                "max_pool2d",
                "max_pool2d_with_indices",
                "avg_pool2d",
                "adaptive_avg_pool2d",
                "_adaptive_avg_pool2d",
                "adaptive_max_pool2d",
            ),
            "pool",
        ),
        **dict.fromkeys(
            (
                "relu",
                "relu_",
                "relu6",
                "hardtanh",
                "hardtanh_",
                "leaky_relu",
                "elu",
                "gelu",
                "silu",
                "silu_",
                "hardswish",
                "hardswish_",
                "hardsigmoid",
                "mish",
                "sigmoid",
                "tanh",
                "prelu",
            ),
            "activation",
        ),
        **dict.fromkeys(("dropout", "alpha_dropout", "feature_dropout"), "dropout"),
    }
)
#: Operators that only move or reshape data; a graph made of these and one kind is that kind.
_NEUTRAL_OPS = frozenset(
    {
        "clone",
        "contiguous",
        "view",
        "reshape",
        "_unsafe_view",
        "flatten",
        "t",
        "permute",
        "transpose",
        "expand",
        "detach",
        "alias",
        "to",
        "_to_copy",
        "getitem",
        "size",
        "sym_size",
    }
)
#: Activation operators a guided backprop / deconvnet gate is defined for (rectifiers).
RECTIFIER_OPS = frozenset({"relu", "relu_", "relu6", "hardtanh", "hardtanh_"})


def _op_name(target: Any) -> str:
    """``torch.ops.aten.conv2d.default`` -> ``conv2d``; ``operator.getitem`` -> ``getitem``."""
    name = getattr(target, "__name__", None) or str(target)
    if hasattr(target, "_schema"):
        name = target._schema.name.split("::")[-1]
    return name.split(".")[0]


def graph_ops(module: nn.Module) -> list[str]:
    """The operator names a module's own ``torch.fx`` graph calls (empty for plain modules)."""
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return []
    return [_op_name(node.target) for node in graph.nodes if node.op == "call_function"]


def layer_kind(module: nn.Module) -> LayerKind:
    """What a module is: by type for ordinary modules, by its graph for exported submodules.

    A module with children is a ``block`` (unless its own graph calls the convolution, as an
    exported TF-"same" conv with a padding child does). A graph module without children takes the
    kind of the only kind of operator it calls besides data movement (``aten.conv2d`` ->
    ``conv``); a graph that mixes kinds is ``other``.
    """
    for types, kind in _TYPE_KINDS:
        if isinstance(module, types):
            return kind
    kinds = {_OP_KINDS.get(op, "other") for op in graph_ops(module) if op not in _NEUTRAL_OPS}
    if any(True for _ in module.children()):
        # An exported conv with a padding child (TF "same" padding) calls the conv itself.
        own = kinds & {"conv", "linear"}
        return next(iter(own)) if len(own) == 1 else "block"
    if len(kinds) == 1:
        return next(iter(kinds))
    if kinds == {"conv", "other"} or kinds == {"linear", "other"}:
        # e.g. an exported conv whose bias add is a separate node
        return "conv" if "conv" in kinds else "linear"
    return "other"


def is_rectifier(module: nn.Module) -> bool:
    """True for ReLU / ReLU6 modules, and exported submodules whose only operator is one."""
    if isinstance(module, nn.ReLU | nn.ReLU6):
        return True
    if isinstance(module, nn.Hardtanh):
        return module.min_val == 0.0
    if any(True for _ in module.children()):
        return False
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return False
    calls = [n for n in graph.nodes if n.op == "call_function"]
    calls = [n for n in calls if _op_name(n.target) not in _NEUTRAL_OPS]
    if len(calls) != 1 or _op_name(calls[0].target) not in RECTIFIER_OPS:
        return False
    node = calls[0]
    if _op_name(node.target).startswith("hardtanh"):  # a rectifier only when clipped at 0
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        return low == 0
    return True


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D convolution's weight and geometry, for ``nn.Conv2d`` and exported conv modules.

    Attribute names follow ``nn.Conv2d`` so callers can treat both alike.
    """

    weight: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int] | str
    dilation: tuple[int, int]
    groups: int

    @property
    def out_channels(self) -> int:
        """Number of filters."""
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        """Channels read (all groups)."""
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel_size(self) -> tuple[int, int]:
        """``(kh, kw)``."""
        return (int(self.weight.shape[2]), int(self.weight.shape[3]))


def _pair_of(value: object, default: int) -> tuple[int, int]:
    if value is None:
        return (default, default)
    if isinstance(value, list | tuple):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))  # type: ignore[call-overload]


def conv_geometry(module: nn.Module) -> ConvGeometry | None:
    """The convolution of an ``nn.Conv2d`` or of an exported conv module (from its graph's
    ``aten.conv2d`` node: weight, stride, padding, dilation, groups); ``None`` otherwise."""
    if isinstance(module, nn.Conv2d):
        padding = module.padding if isinstance(module.padding, str) else _pair_of(module.padding, 0)
        return ConvGeometry(module.weight, _pair_of(module.stride, 1), padding,
                            _pair_of(module.dilation, 1), int(module.groups))  # fmt: skip
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return None
    convs = [n for n in graph.nodes if n.op == "call_function" and _op_name(n.target) == "conv2d"]
    if len(convs) != 1:
        return None
    args = list(convs[0].args) + [None] * 7
    weight_node = args[1]
    if getattr(weight_node, "op", None) != "get_attr":
        return None
    weight = module
    for atom in str(weight_node.target).split("."):
        weight = getattr(weight, atom, None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        return None
    padding = args[4] if isinstance(args[4], str) else _pair_of(args[4], 0)
    return ConvGeometry(weight, _pair_of(args[3], 1), padding, _pair_of(args[5], 1),
                        int(args[6]) if args[6] is not None else 1)  # fmt: skip
