"""Receptive fields from layer geometry, checked against a gradient-based measurement.

The measurement: the input pixels whose gradient of one unit is non-zero. On networks made linear
(ReLUs -> identity, max pools -> average pools with the same geometry, which changes no receptive
field) every pixel of the theoretical field has a non-zero gradient, so the measured bounding box
must equal the computed window clipped to the image.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from vizcore.core.hooks import capture_activations, forward_until
from vizcore.inside.receptive_fields import receptive_field, unit_box


def _linearize(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.ReLU, nn.ReLU6)):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   ceil_mode=child.ceil_mode))  # fmt: skip
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def _check(measured: tuple[int, ...], rf: object, row: int, col: int, size: int) -> None:
    """Interior units: the measured box IS the computed window. Units whose window crosses the
    border: the measured box lies inside the clipped window (padding inside the network removes
    some border paths, so the arithmetic is an upper bound there)."""
    computed = unit_box(rf, row, col, size)  # type: ignore[arg-type]
    top, left, bottom, right = rf.window(row, col)  # type: ignore[attr-defined]
    interior = top >= 0 and left >= 0 and bottom <= size - 1 and right <= size - 1
    if interior:
        assert measured == computed, (row, col, rf)
    else:
        assert computed[0] <= measured[0] and computed[1] <= measured[1], (row, col, rf)
        assert measured[2] <= computed[2] and measured[3] <= computed[3], (row, col, rf)


def _measured_box(
    model: nn.Module, layer: str, size: int, row: int, col: int
) -> tuple[tuple[int, int, int, int], tuple[int, ...]]:
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    with capture_activations(model, [layer]) as acts:
        forward_until(model, x)
        act = acts[layer]
    (grad,) = torch.autograd.grad(act[0, :, row, col].sum(), x)
    nonzero = (grad[0].abs().sum(0) > 0).nonzero()
    box = (
        int(nonzero[:, 0].min()), int(nonzero[:, 1].min()),
        int(nonzero[:, 0].max()) + 1, int(nonzero[:, 1].max()) + 1,
    )  # fmt: skip
    return box, tuple(act.shape[2:])


class Branchy(nn.Module):
    """Stride, dilation, asymmetric explicit padding, a concat of two branches and a residual."""

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.conv1 = nn.Conv2d(3, 4, 3, stride=2)
        self.relu = nn.ReLU()
        self.left = nn.Conv2d(4, 4, 1)
        self.right = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 5, padding="same")
        self.conv3 = nn.Conv2d(8, 6, (3, 1), stride=(1, 2), padding=(1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(self.pad(x)))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.pool(x)
        x = x + self.conv2(x)
        return self.conv3(x)


@pytest.mark.parametrize("layer", ["conv1", "right", "pool", "conv2", "conv3"])
def test_branchy_net_matches_gradient(layer: str) -> None:
    torch.manual_seed(0)
    model = _linearize(Branchy())
    rf = receptive_field(model, layer)
    interior = 0
    for row, col in [(0, 0), (2, 3), (5, 1), (4, 4), (6, 5)]:
        measured, shape = _measured_box(model, layer, 64, row, col)
        assert row < shape[0] and col < shape[1]
        _check(measured, rf, row, col, 64)
        top, left, bottom, right = rf.window(row, col)
        interior += top >= 0 and left >= 0 and bottom <= 63 and right <= 63
    assert interior >= 1  # the exact-equality case is exercised


def test_tiny_cnn_matches_gradient(tiny_cnn: nn.Module) -> None:
    model = _linearize(tiny_cnn)
    expected_sizes = {"conv1": 3, "pool1": 4, "conv2": 8}
    for layer, size in expected_sizes.items():
        rf = receptive_field(model, layer)
        assert rf.size == (size, size)
        for row, col in [(0, 0), (3, 4)]:
            measured, _ = _measured_box(model, layer, 32, row, col)
            _check(measured, rf, row, col, 32)
    assert receptive_field(model, "gap").is_global
    assert receptive_field(model, "fc").is_global


def test_lite0_static_same_padding_matches_gradient(lite0: nn.Module) -> None:
    model = _linearize(lite0)
    for layer, size in [("stem.conv", 3), ("blocks.1", 11), ("blocks.3.depthwise.act", 35)]:
        rf = receptive_field(model, layer)
        assert rf.size == (size, size), layer
        for row, col in [(0, 0), (3, 5), (9, 12)]:
            measured, _ = _measured_box(model, layer, 224, row, col)
            _check(measured, rf, row, col, 224)
    # The TF "same" padding pads bottom/right only, so unit (0, 0) starts at pixel 0, not -1.
    assert receptive_field(model, "stem.conv").start == (1.0, 1.0)


def test_squeezenet_fire_modules_match_gradient(squeezenet: nn.Module) -> None:
    model = _linearize(squeezenet)
    for layer in ["pool1", "fire3", "fire5"]:
        rf = receptive_field(model, layer)
        for row, col in [(0, 0), (3, 5), (12, 10)]:
            measured, _ = _measured_box(model, layer, 227, row, col)
            _check(measured, rf, row, col, 227)
    assert receptive_field(model, "fire5").size == (63.0, 63.0)


def test_unknown_layer_is_a_clear_error(tiny_cnn: nn.Module) -> None:
    with pytest.raises(ValueError, match="no layer named"):
        receptive_field(tiny_cnn, "conv9")
