"""Gallery feature cache: batched extraction, disk cache hit (no forward), invalidation, bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TinyCNN
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.core.progress import StepInfo
from vizcore.data import features
from vizcore.data.gallery import Gallery


class CountingCNN(TinyCNN):
    """TinyCNN that counts its forward calls (no hooks needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(path))
    return path


@pytest.fixture
def model() -> CountingCNN:
    torch.manual_seed(0)
    return CountingCNN().eval()


def _gallery(n: int = 20, seed: int = 0, size: int = 12) -> Gallery:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = tuple("ab"[i % 2] for i in range(n))
    return Gallery("test", "upload", images, labels, tuple(f"img{i}" for i in range(n)))


def _extract(model: nn.Module, g: Gallery, **kwargs: object) -> features.GalleryFeatures:
    return features.gallery_features(
        model, g, layer="relu2", model_key="tiny", input_size=16, **kwargs
    )


def test_features_are_pooled_batched_and_match_unbatched(model: CountingCNN) -> None:
    g = _gallery(20)
    result = _extract(model, g, use_cache=False)
    assert result.features.shape == (20, 8) and result.pooled and not result.from_cache
    assert model.calls == 2  # batches of 16: 16 + 4
    one_by_one = _extract(model, g, use_cache=False, batch_size=1)
    np.testing.assert_allclose(result.features, one_by_one.features, rtol=1e-5, atol=1e-6)
    # Equal to GAP of the layer computed by hand.
    x = next(features.gallery_batches(g, 16, batch_size=20, channels_last=False))
    with torch.no_grad():
        a = model.relu2(model.bn2(model.conv2(model.pool1(model.relu1(model.conv1(x))))))
    np.testing.assert_allclose(result.features, a.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_second_call_is_a_cache_hit_without_forward(model: CountingCNN, cache_dir: Path) -> None:
    g = _gallery(20)
    first = _extract(model, g)
    calls = model.calls
    second = _extract(model, g)
    assert second.from_cache and model.calls == calls
    np.testing.assert_array_equal(first.features, second.features)
    looked_up = features.lookup_features(g, layer="relu2", model_key="tiny", input_size=16)
    assert looked_up is not None and looked_up.from_cache
    assert features.lookup_features(g, layer="conv2", model_key="tiny", input_size=16) is None
    files = list((cache_dir / "features").iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".tmp")


def test_changed_gallery_layer_or_model_key_invalidates(model: CountingCNN) -> None:
    g = _gallery(20)
    _extract(model, g)
    changed = g.images.copy()
    changed[3, 0, 0, 0] ^= 1  # one pixel
    g2 = Gallery("test", "upload", changed, g.labels, g.names)
    assert not _extract(model, g2).from_cache
    relabelled = Gallery("test", "upload", g.images, tuple("c" for _ in g.labels), g.names)
    assert not _extract(model, relabelled).from_cache
    assert not features.gallery_features(
        model, g, layer="relu2", model_key="other", input_size=16
    ).from_cache
    assert not features.gallery_features(
        model, g, layer="conv1", model_key="tiny", input_size=16
    ).from_cache


def test_stop_and_failure_leave_no_cache_and_a_clean_model(
    model: CountingCNN, cache_dir: Path
) -> None:
    g = _gallery(40)
    state = ModelState.of(model)
    steps: list[StepInfo] = []

    def stop_after_first(info: StepInfo) -> bool:
        steps.append(info)
        return False

    stopped = _extract(model, g, on_step=stop_after_first)
    assert stopped.stopped and stopped.features.shape == (16, 8)
    assert steps[0].step == 16 and steps[0].total == 40
    assert count_hooks(model) == 0 and ModelState.of(model) == state

    def boom(info: StepInfo) -> bool:
        raise KeyboardInterrupt  # like Streamlit's StopException: not an Exception subclass

    with pytest.raises(KeyboardInterrupt):
        _extract(model, g, on_step=boom)
    assert count_hooks(model) == 0 and ModelState.of(model) == state
    assert not (cache_dir / "features").exists() or not any((cache_dir / "features").iterdir())
    # After all that, a full run caches normally.
    assert not _extract(model, g).from_cache and _extract(model, g).from_cache


def test_cache_is_bounded_oldest_evicted(model: CountingCNN, cache_dir: Path) -> None:
    galleries = [_gallery(8, seed=s) for s in range(4)]
    bound = 2500  # a little more than two small entries
    for g in galleries:
        _extract(model, g, max_cache_bytes=bound)
    folder = cache_dir / "features"
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= bound
    assert _extract(model, galleries[-1], max_cache_bytes=bound).from_cache  # newest kept
    assert not _extract(model, galleries[0], max_cache_bytes=bound).from_cache  # oldest evicted


def test_channel_maxima_match_brute_force(model: CountingCNN) -> None:
    g = _gallery(10)
    stats = features.gallery_channel_maxima(model, g, layer="conv2", model_key="tiny",
                                            input_size=16)  # fmt: skip
    x = next(features.gallery_batches(g, 16, batch_size=10, channels_last=False))
    with torch.no_grad():
        a = model.conv2(model.pool1(model.relu1(model.conv1(x))))
    flat = a.flatten(2)
    # atol: a maximum near zero differs by ~1e-8 between the channels-last and contiguous kernels
    np.testing.assert_allclose(stats.maxima, flat.max(dim=2).values.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(stats.argmax, flat.argmax(dim=2).numpy())
    assert stats.map_shape == (8, 8)
    calls = model.calls
    again = features.gallery_channel_maxima(model, g, layer="conv2", model_key="tiny",
                                            input_size=16)  # fmt: skip
    assert again.from_cache and model.calls == calls
    with pytest.raises(ValueError, match="not channel maps"):
        features.gallery_channel_maxima(model, g, layer="fc", model_key="tiny", input_size=16)
