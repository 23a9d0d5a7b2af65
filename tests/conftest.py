"""Shared fixtures: tiny CNNs with known structure, and the real bundled models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

# Never reach for the network from the test suite.
os.environ.setdefault("VIZCORE_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


class TinyCNN(nn.Module):
    """conv-relu-conv-relu(-inplace)-GAP-linear: a GAP + linear head, so CAM applies."""

    def __init__(self, num_classes: int = 4, inplace: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.dropout(self.gap(x).flatten(1)))


@pytest.fixture
def tiny_cnn() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(1, 3, 16, 16, generator=generator)


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    from vizcore.models.registry import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def squeezenet() -> nn.Module:
    from vizcore.models.registry import load_model

    return load_model("squeezenet1_1")


@pytest.fixture
def small_cold_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder and a small built-in gallery (2 crops per photo) for one test.

    Some older test files still define their own copy (autouse); theirs wins there.
    """
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VIZCORE_GALLERY_PER_PHOTO", "2")
    from vizui import gallery_view

    gallery_view.builtin.clear()
    return tmp_path / "cache"
