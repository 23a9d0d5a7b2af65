"""Inside the network: filters, activation maps and maximally activating patches.

* First-layer filters as RGB tiles and later filters as per-input-channel kernels (Krizhevsky et
  al. 2012, Fig. 3; Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
  2014).
* Activation maps of any layer for one image (Yosinski et al., "Understanding Neural Networks
  Through Deep Visualization", ICML DL workshop 2015).
* Maximally activating patches: for one channel, the gallery image regions that excite it most
  (Girshick et al., "Rich feature hierarchies...", CVPR 2014, Fig. 4; Zeiler & Fergus 2014),
  cropped to the unit's receptive field computed from the layer geometry
  (:mod:`vizcore.inside.receptive_fields`).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from vizcore.core.cache import layer_activations
from vizcore.core.layers import get_layer
from vizcore.core.progress import OnStep
from vizcore.data.features import gallery_batches, gallery_channel_maxima
from vizcore.data.gallery import Gallery
from vizcore.inside.receptive_fields import ReceptiveField, receptive_field, unit_box
from vizcore.models.discovery import ConvGeometry, conv_geometry

__all__ = [
    "SORT_ORDERS",
    "ActivationMaps",
    "FilterKernels",
    "FilterTiles",
    "PatchSet",
    "activation_maps",
    "apply_threshold",
    "filter_kernels",
    "first_conv_layer",
    "first_layer_filters",
    "max_activating_patches",
]

SORT_ORDERS = ("mean", "max", "index")


@dataclass(frozen=True)
class FilterTiles:
    """First-layer filters as RGB tiles.

    Attributes:
        tiles: ``(F, kh, kw, 3)`` float32 in [0, 1]; each filter min-max normalized on its own.
        weight_shape: The layer's weight shape ``(F, 3, kh, kw)``.
        stride: The layer's stride.
        layer: The layer name.
    """

    tiles: np.ndarray
    weight_shape: tuple[int, ...]
    stride: tuple[int, int]
    layer: str


@dataclass(frozen=True)
class FilterKernels:
    """The per-input-channel kernels of one filter of a conv layer.

    Attributes:
        kernels: ``(C_in / groups, kh, kw)`` float32 raw weights of filter ``filter_index``.
        kernels01: The same mapped to [0, 1] with 0 at 0.5, one scale for the whole filter (so
            strong and weak input channels can be compared).
        input_channels: Which input channels of the layer those kernels read.
        depthwise: True for a depthwise conv (each filter reads exactly one input channel).
        depthwise_kernels01: For depthwise convs, every filter's single kernel ``(F, kh, kw)`` in
            [0, 1] (the meaningful picture for such a layer); else ``None``.
        weight_shape, groups, stride, layer, filter_index: the layer's description.
    """

    kernels: np.ndarray
    kernels01: np.ndarray
    input_channels: tuple[int, ...]
    depthwise: bool
    depthwise_kernels01: np.ndarray | None
    weight_shape: tuple[int, ...]
    groups: int
    stride: tuple[int, int]
    layer: str
    filter_index: int


@dataclass(frozen=True)
class ActivationMaps:
    """The channel maps of one layer for one image.

    Attributes:
        maps: ``(C, h, w)`` float32 activations (batch item 0).
        order: Channel indices sorted as requested (descending mean or max, or by index).
        means: ``(C,)`` mean of each map.
        maxes: ``(C,)`` max of each map.
        layer: The layer name.
        sort: The sort order used.
    """

    maps: np.ndarray
    order: np.ndarray
    means: np.ndarray
    maxes: np.ndarray
    layer: str
    sort: str


@dataclass(frozen=True)
class PatchSet:
    """Top-k gallery patches for one channel.

    Attributes:
        patches: ``(k, P, P, 3)`` uint8 crops around each maximum, resized to ``P``.
        values: ``(k,)`` the channel's maximum activation in each image, descending.
        indices: ``(k,)`` gallery indices.
        boxes: ``(k, 4)`` ``(top, left, bottom, right)`` crop boxes in model-input pixels.
        positions: ``(k, 2)`` ``(row, col)`` of the maximal unit in the layer's map.
        labels, names: of the chosen gallery images.
        receptive_field: The layer's receptive field.
        input_size: Side of the model input the boxes refer to.
        map_shape: ``(h, w)`` of the layer's maps.
        layer, channel: what was asked.
        stopped: The scan was stopped before it finished.
    """

    patches: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    boxes: np.ndarray
    positions: np.ndarray
    labels: tuple[str, ...]
    names: tuple[str, ...]
    receptive_field: ReceptiveField
    input_size: int
    map_shape: tuple[int, int]
    layer: str
    channel: int
    stopped: bool = False


def first_conv_layer(model: nn.Module) -> str:
    """Name of the first convolution that reads 3 input channels (the RGB-facing conv)."""
    for name, module in model.named_modules():
        conv = conv_geometry(module)
        if conv is not None and conv.in_channels == 3:
            return name
    raise ValueError(f"{type(model).__name__} has no convolution reading the 3 RGB channels.")


def _conv(model: nn.Module, layer: str) -> ConvGeometry:
    module = get_layer(model, layer)
    conv = conv_geometry(module)
    if conv is None:
        raise ValueError(
            f"Layer {layer!r} is a {type(module).__name__}, not a convolution; pick a layer "
            "from list_layers(model, kind='conv')."
        )
    return conv


def _pair(value: object) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))  # type: ignore[call-overload]


def first_layer_filters(
    model: nn.Module, x: torch.Tensor | None = None, *, layer: str | None = None
) -> FilterTiles:
    """The RGB filters of the first convolution as tiles (Krizhevsky et al. 2012, Fig. 3).

    Formula: ``tile_f = (W_f - min W_f) / (max W_f - min W_f)`` per filter, channels as RGB.
    Deviation: the weights act on the model's *normalized* input (normalization is inside each
    model), so colours are shown in that space, as in the papers.

    Args:
        model: The model (only read).
        x: Unused; accepted for the common technique signature.
        layer: A conv layer with 3 input channels; default: the first such layer.
    """
    del x
    name = layer or first_conv_layer(model)
    conv = _conv(model, name)
    if conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(
            f"Layer {name!r} reads {conv.in_channels} channels; RGB tiles need the first "
            "convolution (3 input channels). Use filter_kernels() for later layers."
        )
    weight = conv.weight.detach().float().cpu().numpy()
    flat = weight.reshape(weight.shape[0], -1)
    low = flat.min(axis=1)[:, None, None, None]
    span = np.maximum(flat.max(axis=1) - flat.min(axis=1), 1e-12)[:, None, None, None]
    tiles = ((weight - low) / span).transpose(0, 2, 3, 1).astype(np.float32)
    return FilterTiles(tiles, tuple(weight.shape), _pair(conv.stride), name)


def filter_kernels(
    model: nn.Module, x: torch.Tensor | None = None, *, layer: str, filter_index: int
) -> FilterKernels:
    """The kernels of filter ``filter_index`` of conv ``layer``, one per input channel it reads.

    Formula: ``K_{f,c} = W[f, c]`` for each input channel ``c`` of filter ``f``'s group, shown
    with one symmetric scale ``0.5 + 0.5 K / max|W_f|``. For a depthwise conv (``groups ==
    in_channels``), each filter has a single kernel, so all filters' kernels are returned too.

    Raises:
        ValueError: Not a conv layer, or ``filter_index`` out of range.
    """
    del x
    conv = _conv(model, layer)
    weight = conv.weight.detach().float().cpu().numpy()
    n_filters = weight.shape[0]
    if not 0 <= filter_index < n_filters:
        raise ValueError(f"filter_index must be in [0, {n_filters - 1}] for {layer!r}.")
    kernels = weight[filter_index]
    scale = float(np.abs(kernels).max()) or 1.0
    kernels01 = (0.5 + 0.5 * kernels / scale).astype(np.float32)
    per_group_in = conv.in_channels // conv.groups
    per_group_out = conv.out_channels // conv.groups
    group = filter_index // per_group_out
    inputs = tuple(range(group * per_group_in, (group + 1) * per_group_in))
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    depthwise01 = None
    if depthwise:
        all_k = weight[:, 0]
        scales = np.maximum(np.abs(all_k).reshape(n_filters, -1).max(axis=1), 1e-12)
        depthwise01 = (0.5 + 0.5 * all_k / scales[:, None, None]).astype(np.float32)
    return FilterKernels(kernels.astype(np.float32), kernels01, inputs, depthwise, depthwise01,
                         tuple(weight.shape), conv.groups, _pair(conv.stride), layer,
                         filter_index)  # fmt: skip


def activation_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str,
    sort: str = "mean",
    cache_key: Hashable | None = None,
) -> ActivationMaps:
    """The channel maps ``A_c = layer(x)[0, c]`` of one image, sorted by mean or max activation.

    Uses :func:`vizcore.core.cache.layer_activations`, so with a ``cache_key`` a changed display
    option (sort order, threshold, channel) re-uses the forward pass.

    Raises:
        ValueError: Unknown sort order, or the layer does not output ``(C, h, w)`` maps.
    """
    if sort not in SORT_ORDERS:
        raise ValueError(f"sort must be one of {', '.join(SORT_ORDERS)}, not {sort!r}.")
    act = layer_activations(model, x, layers=[layer], cache_key=cache_key)[layer]
    if act.ndim != 4:
        raise ValueError(
            f"Layer {layer!r} outputs shape {act.shape[1:]}, not channel maps; pick a "
            "convolutional layer, activation or block."
        )
    maps = act[0]
    flat = maps.reshape(maps.shape[0], -1)
    means, maxes = flat.mean(axis=1), flat.max(axis=1)
    if sort == "index":
        order = np.arange(maps.shape[0])
    else:
        key = means if sort == "mean" else maxes
        order = np.argsort(-key, kind="stable")
    return ActivationMaps(maps, order, means, maxes, layer, sort)


def apply_threshold(maps: np.ndarray, threshold: float | None) -> np.ndarray:
    """Zero every activation below ``threshold`` (display helper; ``None`` keeps all)."""
    if threshold is None:
        return maps
    return np.where(maps >= threshold, maps, 0.0).astype(np.float32)


def max_activating_patches(
    model: nn.Module,
    gallery: Gallery,
    *,
    layer: str,
    channel: int,
    model_key: str,
    input_size: int,
    top_k: int = 9,
    patch_size: int = 96,
    on_step: OnStep | None = None,
) -> PatchSet:
    """The ``top_k`` gallery patches that most activate channel ``channel`` of ``layer``.

    Formula: image ``i`` scores ``m_i = max_{h,w} A_{layer,channel}(x_i)[h, w]``; the patch is the
    receptive field of the arg-max unit, clipped to the image. Deviation from Girshick et al.: one
    patch per image (the image's best unit), so the top-k are k different images rather than
    overlapping windows of one image.

    The per-image maxima of every channel are computed in one pass over the gallery and cached on
    disk (:func:`vizcore.data.features.gallery_channel_maxima`), so changing the channel is instant.

    Raises:
        ValueError: ``channel`` or ``top_k`` out of range, or a layer without channel maps.
    """
    if top_k < 1:
        raise ValueError("top_k must be at least 1.")
    rf = receptive_field(model, layer)
    stats = gallery_channel_maxima(model, gallery, layer=layer, model_key=model_key,
                                   input_size=input_size, on_step=on_step)  # fmt: skip
    n_channels = stats.maxima.shape[1]
    if not 0 <= channel < n_channels:
        raise ValueError(f"channel must be in [0, {n_channels - 1}] for layer {layer!r}.")
    values_all = stats.maxima[:, channel]
    k = min(top_k, len(values_all))
    order = np.argsort(-values_all, kind="stable")[:k]
    h, w = stats.map_shape
    positions = np.array([divmod(int(stats.argmax[i, channel]), w) for i in order]).reshape(-1, 2)
    boxes = np.array([unit_box(rf, int(r), int(c), input_size) for r, c in positions])
    inputs = torch.cat(list(gallery_batches(gallery, input_size, indices=order.tolist(),
                                            channels_last=False)))  # fmt: skip
    patches = []
    for x, (top, left, bottom, right) in zip(inputs, boxes, strict=True):
        crop = x[:, top:bottom, left:right].permute(1, 2, 0).numpy()
        image = Image.fromarray((crop * 255.0 + 0.5).clip(0, 255).astype(np.uint8))
        patches.append(np.asarray(image.resize((patch_size, patch_size), Image.Resampling.BICUBIC)))
    return PatchSet(
        patches=np.stack(patches),
        values=values_all[order].astype(np.float32),
        indices=order.astype(np.int64),
        boxes=boxes.astype(np.int64).reshape(-1, 4),
        positions=positions.astype(np.int64),
        labels=tuple(gallery.labels[i] for i in order),
        names=tuple(gallery.names[i] for i in order),
        receptive_field=rf,
        input_size=input_size,
        map_shape=(h, w),
        layer=layer,
        channel=channel,
        stopped=stats.stopped,
    )
