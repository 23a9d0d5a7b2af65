"""The lecture's classic ImageNet CNNs through torchvision's weights API, loaded only if present.

AlexNet (Krizhevsky et al. 2012), VGG-16 (Simonyan & Zisserman 2015), GoogLeNet (Szegedy et al.
2015) and ResNet-50 (He et al. 2016). Their weight files are not in any installed package, so they
are used only when the file already sits in torch's hub cache (``torch.hub.get_dir()/checkpoints``)
or when the user explicitly asks to download it. Checking availability never touches the network;
a download has a short socket timeout, and is never attempted when ``VIZCORE_OFFLINE`` is set.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vizcore.core.offline import OFFLINE_ENV, is_offline
from vizcore.models.efficientnet_lite import Normalize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WeightsInfo:
    """Where a torchvision weights file comes from and where it is cached."""

    url: str
    file_name: str
    cache_path: Path
    size_mb: float | None
    hash_prefix: str | None


def weights_info(arch: str) -> WeightsInfo:
    """Describe the default ImageNet weights of a torchvision architecture (no network)."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    file_name = os.path.basename(weights.url)
    match = re.search(r"-([a-f0-9]+)\.", file_name)
    size_mb = weights.meta.get("_file_size")
    return WeightsInfo(
        url=weights.url,
        file_name=file_name,
        cache_path=Path(torch.hub.get_dir()) / "checkpoints" / file_name,
        size_mb=float(size_mb) if size_mb is not None else None,
        hash_prefix=match.group(1) if match else None,
    )


def download_weights(
    arch: str,
    *,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download a torchvision weights file into torch's hub cache, atomically.

    Args:
        arch: torchvision architecture name, e.g. ``"vgg16"``.
        timeout: Socket timeout in seconds for connecting and for each read.
        on_progress: Called with ``(bytes_done, bytes_total_or_None)`` per chunk.

    Raises:
        ConnectionError: Offline mode is on, or the download failed or timed out.
        ValueError: The file's SHA-256 does not start with the prefix in its name.
    """
    info = weights_info(arch)
    if is_offline():
        raise ConnectionError(f"{OFFLINE_ENV} is set, so no download was attempted.")
    info.cache_path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=info.cache_path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(info.url, timeout=timeout) as resp:
            total = resp.length
            done = 0
            while chunk := resp.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        if info.hash_prefix and not digest.hexdigest().startswith(info.hash_prefix):
            raise ValueError(f"Downloaded {info.file_name} is corrupt (hash mismatch).")
        os.replace(tmp_name, info.cache_path)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise ConnectionError(f"Could not download {info.url}: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.remove(tmp_name)
    return info.cache_path


#: Smallest input side per architecture (measured with random weights: AlexNet's last max-pool
#: needs 63 px; GoogLeNet runs from 15 px and ResNet-50 from 8 px, so the library floor applies).
MIN_INPUT_SIDE: dict[str, int] = {"alexnet": 63, "vgg16": 32, "googlenet": 16, "resnet50": 16}


class NormalizedClassifier(nn.Module):
    """A classifier that takes RGB in [0, 1]: ``net(input_norm(x))``."""

    #: Smallest input side (see :data:`MIN_INPUT_SIDE`); set per architecture by the loader.
    min_input_side = 32

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.input_norm = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


def load_torchvision(arch: str) -> NormalizedClassifier:
    """Build a torchvision classifier from its cached weights file; never downloads.

    Raises:
        FileNotFoundError: The weights file is not in torch's hub cache.
    """
    import torchvision

    info = weights_info(arch)
    if not info.cache_path.is_file():
        raise FileNotFoundError(f"{info.file_name} is not in {info.cache_path.parent}.")
    state = torch.load(info.cache_path, map_location="cpu", weights_only=True)
    if arch == "googlenet":
        # As torchvision does for these weights: no auxiliary heads at inference, and the
        # network's own input transform on (its weights expect it).
        net = torchvision.models.get_model(
            arch, weights=None, aux_logits=False, init_weights=False, transform_input=True
        )
        state = {k: v for k, v in state.items() if not k.startswith("aux")}
    else:
        net = torchvision.models.get_model(arch, weights=None)
    net.load_state_dict(state)
    model = NormalizedClassifier(net, IMAGENET_MEAN, IMAGENET_STD)
    model.min_input_side = MIN_INPUT_SIDE.get(arch, NormalizedClassifier.min_input_side)
    return model.eval()
