"""Filters, activation maps and maximally activating patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vizcore.core.cache import ActivationCache
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data.gallery import Gallery
from vizcore.inside import filters
from vizcore.inside.receptive_fields import receptive_field


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_first_layer_filters_are_normalized_rgb_tiles(tiny_cnn: nn.Module) -> None:
    result = filters.first_layer_filters(tiny_cnn)
    assert result.layer == "conv1" and result.weight_shape == (6, 3, 3, 3)
    assert result.tiles.shape == (6, 3, 3, 3)
    flat = result.tiles.reshape(6, -1)
    np.testing.assert_allclose(flat.min(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(flat.max(axis=1), 1.0, atol=1e-6)
    # Tile = weight (C, kh, kw) moved to (kh, kw, C), min-max scaled.
    w = tiny_cnn.conv1.weight.detach()[2].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(result.tiles[2], (w - w.min()) / (w.max() - w.min()), atol=1e-6)
    with pytest.raises(ValueError, match=r"3 input channels|reads 6"):
        filters.first_layer_filters(tiny_cnn, layer="conv2")
    with pytest.raises(ValueError, match="not a convolution"):
        filters.first_layer_filters(tiny_cnn, layer="relu1")


def test_filter_kernels_plain_and_depthwise(tiny_cnn: nn.Module, lite0: nn.Module) -> None:
    k = filters.filter_kernels(tiny_cnn, layer="conv2", filter_index=5)
    assert k.kernels.shape == (6, 3, 3) and not k.depthwise and k.depthwise_kernels01 is None
    np.testing.assert_array_equal(k.kernels, tiny_cnn.conv2.weight.detach()[5].numpy())
    assert k.kernels01.min() >= 0 and k.kernels01.max() <= 1
    assert np.isclose(np.abs(k.kernels01 - 0.5).max(), 0.5)
    dw = filters.filter_kernels(lite0, layer="blocks.3.depthwise.conv", filter_index=7)
    assert dw.depthwise and dw.kernels.shape == (1, 5, 5) and dw.input_channels == (7,)
    assert dw.depthwise_kernels01 is not None and dw.depthwise_kernels01.shape == (144, 5, 5)
    with pytest.raises(ValueError, match=r"filter_index must be in \[0, 7\]"):
        filters.filter_kernels(tiny_cnn, layer="conv2", filter_index=8)


def test_activation_maps_sorted_and_cached(tiny_cnn: nn.Module, tiny_input: torch.Tensor) -> None:
    state = ModelState.of(tiny_cnn)
    by_mean = filters.activation_maps(tiny_cnn, tiny_input, layer="relu1", sort="mean",
                                      cache_key=("tiny", "img"))  # fmt: skip
    assert by_mean.maps.shape == (6, 16, 16)
    assert np.all(np.diff(by_mean.means[by_mean.order]) <= 0)
    by_max = filters.activation_maps(tiny_cnn, tiny_input, layer="relu1", sort="max",
                                     cache_key=("tiny", "img"))  # fmt: skip
    assert np.all(np.diff(by_max.maxes[by_max.order]) <= 0)
    np.testing.assert_array_equal(by_mean.maps, by_max.maps)
    with torch.no_grad():
        expected = tiny_cnn.relu1(tiny_cnn.conv1(tiny_input))[0].numpy()
    np.testing.assert_allclose(by_mean.maps, expected, rtol=1e-6)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state
    thresholded = filters.apply_threshold(by_mean.maps, 0.2)
    assert np.all((thresholded == 0) | (thresholded >= 0.2))
    with pytest.raises(ValueError, match="sort must be"):
        filters.activation_maps(tiny_cnn, tiny_input, layer="relu1", sort="median")
    with pytest.raises(ValueError, match="not channel maps"):
        filters.activation_maps(tiny_cnn, tiny_input, layer="fc")


def test_activation_maps_do_not_recompute_for_display_changes(
    tiny_cnn: nn.Module, tiny_input: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vizcore.core.cache

    cache = ActivationCache()
    monkeypatch.setattr(vizcore.core.cache, "DEFAULT_CACHE", cache)
    monkeypatch.setattr(vizcore.core.cache.layer_activations, "__kwdefaults__", {"cache": cache})
    for sort in ("mean", "max", "index", "mean"):
        filters.activation_maps(tiny_cnn, tiny_input, layer="conv2", sort=sort,
                                cache_key=("tiny", "x"))  # fmt: skip
    assert cache.misses == 1 and cache.hits == 3


class SpotNet(nn.Module):
    """One conv whose channel 0 is the brightness of the red channel in a 3x3 window."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0] = 1.0
            self.conv.weight[1, 2] = 1.0
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv2.weight.zero_()
            self.conv2.weight[0, 0, 1, 1] = 1.0
            self.conv2.weight[1, 1, 1, 1] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.pool(self.conv(x)))


def test_max_activating_patches_find_the_bright_spots() -> None:
    model = SpotNet().eval()
    rng = np.random.default_rng(0)
    n, size = 12, 32
    images = rng.integers(0, 40, size=(n, size, size, 3), dtype=np.uint8)
    spots = {}
    for i in range(n):
        r, c = rng.integers(4, size - 4, size=2)
        images[i, r - 1 : r + 2, c - 1 : c + 2, 0] = 40 + 18 * i  # brighter for larger i
        spots[i] = (int(r), int(c))
    g = Gallery("spots", "upload", images, tuple("s" for _ in range(n)),
                tuple(f"i{i}" for i in range(n)))  # fmt: skip
    state = ModelState.of(model)
    result = filters.max_activating_patches(model, g, layer="conv2", channel=0, model_key="spot",
                                            input_size=size, top_k=4, patch_size=24)  # fmt: skip
    assert list(result.indices) == [11, 10, 9, 8]  # ordered by activation value
    assert np.all(np.diff(result.values) <= 0)
    assert result.patches.shape == (4, 24, 24, 3)
    rf = receptive_field(model, "conv2")
    assert rf.size == (8.0, 8.0) and rf.jump == (2.0, 2.0)  # 3, then +1 (pool), then +2*2
    for idx, (top, left, bottom, right) in zip(result.indices, result.boxes, strict=True):
        r, c = spots[int(idx)]
        assert top <= r < bottom and left <= c < right  # the spot is inside its patch
        assert 0 <= top < bottom <= size and 0 <= left < right <= size
    assert count_hooks(model) == 0 and ModelState.of(model) == state
    with pytest.raises(ValueError, match=r"channel must be in \[0, 1\]"):
        filters.max_activating_patches(model, g, layer="conv2", channel=2, model_key="spot",
                                       input_size=size)  # fmt: skip


def test_max_activating_patches_on_lite0_builtin_subset(lite0: nn.Module) -> None:
    from vizcore.data.gallery import builtin_gallery

    g = builtin_gallery(per_photo=2, size=64, use_disk_cache=False)
    result = filters.max_activating_patches(lite0, g, layer="blocks.2", channel=3,
                                            model_key="efficientnet_lite0", input_size=224,
                                            top_k=5)  # fmt: skip
    assert result.patches.shape == (5, 96, 96, 3)
    assert result.receptive_field.size == (19.0, 19.0)
    heights = result.boxes[:, 2] - result.boxes[:, 0]
    assert np.all(heights <= 19) and np.all(heights >= 10)  # clipped only at the border
