"""Receptive fields computed from the layer geometry (kernel, stride, padding, dilation).

For a unit ``(i, j)`` of a layer's map, the input pixels that can influence it form a window of
``size`` pixels centred at ``start + i * jump`` (per axis; pixel centres at integer coordinates,
which may be negative or past the image where the padding is). Araujo et al., "Computing Receptive
Fields of Convolutional Neural Networks", Distill 2019, give the recurrences used here; per layer
with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d``:
``size' = size + (k - 1) d jump``, ``start' = start + ((k - 1) d / 2 - p) jump``,
``jump' = jump s``.

The network is walked as a graph (``torch.fx`` symbolic trace), not as a list of modules, so
branches (SqueezeNet's fire modules, residual additions) merge correctly: where several paths meet
(``add``, ``cat``) the receptive field is the union of the incoming windows. Explicit padding
modules (``nn.ZeroPad2d`` and friends, and the static "same" padding of EfficientNet-Lite's
``Conv2dStaticSamePadding``) shift the window. Global pooling and linear layers make every later
unit see the whole input (``is_global``).

The window is the *theoretical* receptive field: every pixel in it has a path to the unit. The
effective receptive field (where the gradient is large) is smaller (Luo et al. 2016).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from vizcore.core.layers import get_layer

__all__ = ["ReceptiveField", "receptive_field", "unit_box"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
_PADS = (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d)
_GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)
_GLOBAL_FUNCS = {
    torch.flatten, torch.nn.functional.adaptive_avg_pool2d,
    torch.nn.functional.adaptive_max_pool2d, torch.nn.functional.linear,
}  # fmt: skip
_GLOBAL_METHODS = {"flatten", "view", "reshape", "mean", "sum", "amax", "max"}


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of a layer's units, per axis ``(rows, cols)``.

    Attributes:
        size: Window side in input pixels.
        jump: Distance in input pixels between neighbouring units (the cumulative stride).
        start: Centre of unit ``(0, 0)`` in input pixel coordinates (may be fractional/negative).
        is_global: Every unit sees the whole input (after global pooling or a linear layer).
    """

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    is_global: bool = False

    def center(self, row: int, col: int) -> tuple[float, float]:
        """Centre of unit ``(row, col)`` in input pixel coordinates."""
        return (self.start[0] + row * self.jump[0], self.start[1] + col * self.jump[1])

    def window(self, row: int, col: int) -> tuple[float, float, float, float]:
        """``(top, left, bottom, right)`` pixel-centre bounds (inclusive) of unit ``(row, col)``."""
        cy, cx = self.center(row, col)
        hy, hx = (self.size[0] - 1) / 2, (self.size[1] - 1) / 2
        return (cy - hy, cx - hx, cy + hy, cx + hx)


_IDENTITY = ReceptiveField((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
_GLOBAL = ReceptiveField((math.inf, math.inf), (1.0, 1.0), (0.0, 0.0), is_global=True)


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))  # type: ignore[call-overload]


def _apply_window(
    rf: ReceptiveField,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad_before: tuple[float, float],
    dilation: tuple[int, int],
) -> ReceptiveField:
    if rf.is_global:
        return rf
    size = tuple(rf.size[a] + (kernel[a] - 1) * dilation[a] * rf.jump[a] for a in range(2))
    start = tuple(
        rf.start[a] + ((kernel[a] - 1) * dilation[a] / 2 - pad_before[a]) * rf.jump[a]
        for a in range(2)
    )
    jump = tuple(rf.jump[a] * stride[a] for a in range(2))
    return ReceptiveField(size, jump, start)  # type: ignore[arg-type]


def _shift(rf: ReceptiveField, pad_before: tuple[float, float]) -> ReceptiveField:
    if rf.is_global:
        return rf
    start = (rf.start[0] - pad_before[0] * rf.jump[0], rf.start[1] - pad_before[1] * rf.jump[1])
    return ReceptiveField(rf.size, rf.jump, start)


def _union(fields: list[ReceptiveField]) -> ReceptiveField:
    if not fields:
        return _IDENTITY
    if any(f.is_global for f in fields):
        return _GLOBAL
    if len(fields) == 1:
        return fields[0]
    size, start, jump = [], [], []
    for a in range(2):
        lo = min(f.start[a] - (f.size[a] - 1) / 2 for f in fields)
        hi = max(f.start[a] + (f.size[a] - 1) / 2 for f in fields)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
        jump.append(max(f.jump[a] for f in fields))
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))  # type: ignore[arg-type]


def _conv_padding(module: nn.Conv2d) -> tuple[float, float]:
    kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            return (0.0, 0.0)
        return tuple(float((dilation[a] * (kernel[a] - 1)) // 2) for a in range(2))  # type: ignore[return-value]
    pad = _pair(padding)
    extra = _static_padding(module)
    return (pad[0] + extra[0], pad[1] + extra[1])


def _static_padding(module: nn.Module) -> tuple[float, float]:
    """Top and left padding of a ``static_padding`` child (EfficientNet's TF-"same" convs)."""
    static = getattr(module, "static_padding", None)
    if isinstance(static, _PADS):
        left, _right, top, _bottom = _pad4(static.padding)
        return (float(top), float(left))
    return (0.0, 0.0)


def _pad4(padding: object) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        return (padding, padding, padding, padding)
    values = tuple(int(v) for v in padding)  # type: ignore[attr-defined]
    if len(values) == 2:  # (left/right, top/bottom) is not a torch convention; be safe
        return (values[0], values[0], values[1], values[1])
    return values  # type: ignore[return-value]


def _module_rf(module: nn.Module, rf: ReceptiveField) -> ReceptiveField:
    if isinstance(module, nn.Conv2d):
        return _apply_window(rf, _pair(module.kernel_size), _pair(module.stride),
                             _conv_padding(module), _pair(module.dilation))  # fmt: skip
    if isinstance(module, _POOLS):
        kernel = _pair(module.kernel_size)
        stride = _pair(module.stride if module.stride else module.kernel_size)
        pad = _pair(module.padding)
        dilation = _pair(getattr(module, "dilation", 1))
        return _apply_window(rf, kernel, stride, (float(pad[0]), float(pad[1])), dilation)
    if isinstance(module, _PADS):
        left, _right, top, _bottom = _pad4(module.padding)
        return _shift(rf, (float(top), float(left)))
    if isinstance(module, _GLOBAL_MODULES):
        return _GLOBAL
    if isinstance(module, (nn.Upsample, nn.ConvTranspose2d)):
        raise ValueError(f"Receptive fields through {type(module).__name__} are not supported.")
    return rf


class _Tracer(fx.Tracer):
    """Treats every conv/pool/pad module as a leaf and records each module's output node."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[str, fx.Node] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (nn.Conv2d, *_POOLS, *_PADS, *_GLOBAL_MODULES)):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[no-untyped-def]
        result = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        if isinstance(result, fx.Proxy):
            self.outputs[name] = result.node
        return result


def _node_inputs(node: fx.Node) -> list[fx.Node]:
    return [n for n in node.all_input_nodes]


def _graph_fields(model: nn.Module) -> tuple[dict[str, ReceptiveField], dict[str, fx.Node]]:
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as exc:
        raise ValueError(
            f"Cannot trace {type(model).__name__} to compute receptive fields ({exc})."
        ) from exc
    modules = dict(model.named_modules())
    fields: dict[str, ReceptiveField] = {}
    for node in graph.nodes:
        inputs = [fields[n.name] for n in _node_inputs(node) if n.name in fields]
        if node.op == "placeholder":
            fields[node.name] = _IDENTITY
        elif node.op == "get_attr":
            continue  # parameters and buffers carry no spatial position
        elif node.op == "call_module":
            fields[node.name] = _module_rf(modules[str(node.target)], _union(inputs))
        elif (node.op == "call_function" and node.target in _GLOBAL_FUNCS) or (
            node.op == "call_method" and node.target in _GLOBAL_METHODS
        ):
            fields[node.name] = _GLOBAL
        elif node.op == "call_function" and node.target is torch.nn.functional.pad:
            pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", (0, 0, 0, 0))
            left, _right, top, _bottom = _pad4(list(pad) + [0] * (4 - len(pad)))  # type: ignore[arg-type]
            fields[node.name] = _shift(_union(inputs), (float(top), float(left)))
        elif (node.op == "call_function" and node.target is operator.getitem) or inputs:
            fields[node.name] = _union(inputs)
    return fields, tracer.outputs


# ------------------------------------------------------------- exported (unflattened) graphs

_ATEN_GLOBAL = {"adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d", "mean",
                "sum", "amax", "linear", "addmm", "flatten", "view", "reshape", "mm"}  # fmt: skip


def _aten_name(target: object) -> str:
    schema = getattr(target, "_schema", None)
    name = schema.name.split("::")[-1] if schema is not None else getattr(target, "__name__", "")
    return str(name).split(".")[0]


def _aten_rf(module: nn.Module, node: fx.Node, rf: ReceptiveField) -> ReceptiveField:
    """One ATen node of an exported graph: convolutions, pools, pads and global reductions."""
    name, args = _aten_name(node.target), list(node.args) + [None] * 7
    if name == "conv2d":
        weight = module
        for atom in str(getattr(args[1], "target", "")).split("."):
            weight = getattr(weight, atom, None)
        if not isinstance(weight, torch.Tensor):
            raise ValueError("An exported convolution's weight is not a module attribute.")
        kernel = (int(weight.shape[2]), int(weight.shape[3]))
        stride, dilation = _pair(args[3] or 1), _pair(args[5] or 1)
        if isinstance(args[4], str):
            pad = (0.0, 0.0) if args[4] == "valid" else tuple(
                float((dilation[a] * (kernel[a] - 1)) // 2) for a in range(2))  # fmt: skip
        else:
            p = _pair(args[4] or 0)
            pad = (float(p[0]), float(p[1]))
        return _apply_window(rf, kernel, stride, pad, dilation)  # type: ignore[arg-type]
    if name in ("max_pool2d", "max_pool2d_with_indices", "avg_pool2d"):
        kernel = _pair(args[1])
        stride = _pair(args[2]) if args[2] else kernel
        p = _pair(args[3] or 0)
        dilation = _pair(args[4] or 1) if name != "avg_pool2d" else (1, 1)
        return _apply_window(rf, kernel, stride, (float(p[0]), float(p[1])), dilation)
    if name in ("constant_pad_nd", "pad"):
        pad = list(args[1] or []) + [0] * 4
        return _shift(rf, (float(pad[2]), float(pad[0])))
    if name in _ATEN_GLOBAL:
        return _GLOBAL
    if name in ("upsample_nearest2d", "upsample_bilinear2d", "conv_transpose2d"):
        raise ValueError(f"Receptive fields through {name} are not supported.")
    return rf


def _exported_fields(
    module: nn.Module, inputs: list[ReceptiveField], prefix: str, out: dict[str, ReceptiveField]
) -> ReceptiveField:
    """Propagate fields through an unflattened module's own graph, recursing into children;
    record each called module's output field under its dotted name in ``out``."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return _union(inputs)
    fields: dict[str, ReceptiveField] = {}
    placeholders = iter(inputs)
    result = _union(inputs)
    for node in graph.nodes:
        arg_fields = [fields[n.name] for n in node.all_input_nodes if n.name in fields]
        if node.op == "placeholder":
            fields[node.name] = next(placeholders, _IDENTITY)
        elif node.op == "call_module":
            child = module.get_submodule(str(node.target))
            name = f"{prefix}{node.target}"
            fields[node.name] = _exported_fields(child, arg_fields, f"{name}.", out)
            out[name] = fields[node.name]
        elif node.op == "call_function":
            fields[node.name] = _aten_rf(module, node, _union(arg_fields))
        elif node.op == "output":
            result = _union(arg_fields)
        elif arg_fields:
            fields[node.name] = _union(arg_fields)
    return result


def _is_exported(model: nn.Module) -> bool:
    return type(model).__name__ == "UnflattenedModule" or any(
        type(m).__name__ == "InterpreterModule" for m in model.children()
    )


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """The receptive field of the units of ``layer`` (a leaf module or a container).

    Eager models are traced with ``torch.fx``; unflattened ``torch.export`` models are walked
    through their own graphs (their submodules call ATen operators).

    Raises:
        LayerNotFoundError: Unknown layer.
        ValueError: The model cannot be traced or has layers whose geometry is not supported.
    """
    get_layer(model, layer)  # validates the name with a helpful message
    if _is_exported(model):
        found: dict[str, ReceptiveField] = {}
        _exported_fields(model, [_IDENTITY], "", found)
        if layer not in found:
            raise ValueError(f"Layer {layer!r} does not appear in the exported graph.")
        return found[layer]
    fields, outputs = _graph_fields(model)
    node = outputs.get(layer)
    if node is None or node.name not in fields:
        raise ValueError(f"Layer {layer!r} does not appear in the traced forward pass.")
    return fields[node.name]


def unit_box(rf: ReceptiveField, row: int, col: int, input_size: int) -> tuple[int, int, int, int]:
    """Pixel box ``(top, left, bottom, right)`` (exclusive end) of a unit, clipped to the input."""
    if rf.is_global:
        return (0, 0, input_size, input_size)
    top, left, bottom, right = rf.window(row, col)
    clip = lambda v: int(min(max(v, 0), input_size))  # noqa: E731
    return (clip(math.floor(top)), clip(math.floor(left)), clip(math.floor(bottom) + 1),
            clip(math.floor(right) + 1))  # fmt: skip
