"""vizcore.core.precision: bf16 autocast for batched forward-only work only where it is fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TinyCNN
from vizcore.attribution import faithfulness, grad_cam, occlusion, score_cam
from vizcore.core import precision
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data import features
from vizcore.data.gallery import Gallery


class RecordingCNN(TinyCNN):
    """TinyCNN that records, per forward, whether bf16 autocast was on and the output dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return super().forward(x)


@pytest.fixture
def net() -> RecordingCNN:
    torch.manual_seed(0)
    return RecordingCNN().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU has AMX: bf16 is 'fast' (the tiny net runs fine in emulated bf16)."""
    monkeypatch.delenv(precision.ENV_EXACT, raising=False)
    monkeypatch.delenv(precision.ENV_BF16, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: True)


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this CPU has no bf16 hardware."""
    monkeypatch.delenv(precision.ENV_EXACT, raising=False)
    monkeypatch.delenv(precision.ENV_BF16, raising=False)
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: False)


def _same(a: object, b: object) -> None:
    for name in ("map", "raw"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ------------------------------------------------------------------------------ detection


def test_detection_follows_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    precision.cpu_bf16_fast.cache_clear()
    try:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
        assert precision.cpu_bf16_fast() is False
        precision.cpu_bf16_fast.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
        assert precision.cpu_bf16_fast() is True
        precision.cpu_bf16_fast.cache_clear()
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
        assert precision.cpu_bf16_fast() is False  # no oneDNN: no fast bf16 kernels
    finally:
        precision.cpu_bf16_fast.cache_clear()


def test_devices_and_bad_input(fast: None) -> None:
    assert precision.bf16_fast("cpu")
    assert not precision.bf16_fast("mps")  # not measured: float32
    assert not precision.use_bf16(exact=False, device="mps")
    if not torch.cuda.is_available():
        assert not precision.bf16_fast("cuda")
    with pytest.raises(ValueError, match="Unknown device"):
        precision.bf16_fast("tpu-ish")
    with pytest.raises(ValueError, match="exact must be True"):
        precision.use_bf16(exact="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exact must be True"):
        occlusion(RecordingCNN().eval(), torch.rand(1, 3, 16, 16), window=4, exact=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exact must be True"):
        score_cam(RecordingCNN().eval(), torch.rand(1, 3, 16, 16), layer="relu2", exact=None)  # type: ignore[arg-type]


def test_env_overrides(fast: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision.precision_of(exact=False) == "bf16"
    assert precision.precision_of(exact=True) == "fp32"
    monkeypatch.setenv(precision.ENV_EXACT, "1")
    assert precision.precision_of(exact=False) == "fp32"
    monkeypatch.delenv(precision.ENV_EXACT)
    monkeypatch.setattr(precision, "cpu_bf16_fast", lambda: False)
    assert precision.precision_of(exact=False) == "fp32"
    monkeypatch.setenv(precision.ENV_BF16, "force")
    assert precision.precision_of(exact=False) == "bf16"
    assert precision.precision_of(exact=True) == "fp32"


def test_fast_forward_is_a_no_op_where_bf16_is_slow(slow: None, net: RecordingCNN) -> None:
    x = torch.rand(2, 3, 16, 16)
    with precision.fast_forward(exact=False) as on:
        out = net(x)
    assert on is False and net.autocast == [False] and out.dtype == torch.float32
    torch.testing.assert_close(precision.forward_float(net, x, exact=False), net(x), rtol=0, atol=0)


def test_forward_float_runs_bf16_and_returns_float32(fast: None, net: RecordingCNN) -> None:
    x = torch.rand(2, 3, 16, 16)
    out = precision.forward_float(net, x, exact=False)
    assert net.autocast == [True] and out.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")  # restored
    torch.testing.assert_close(out, net(x), rtol=0.05, atol=0.05)
    net.autocast.clear()
    precision.forward_float(net, x, exact=True)
    assert net.autocast == [False]


# ------------------------------------------------------------------------------ techniques


@pytest.mark.parametrize("mode", ["slow", "fast"])
def test_exact_true_is_bit_identical_to_float32(
    mode: str, request: pytest.FixtureRequest, net: RecordingCNN, x: torch.Tensor
) -> None:
    request.getfixturevalue(mode)
    kw = {"window": 4, "stride": 2}
    exact = occlusion(net, x, exact=True, **kw)
    assert not any(net.autocast) and exact.info["bf16"] == 0.0
    net.autocast.clear()
    score = score_cam(net, x, layer="relu2", exact=True)
    assert not any(net.autocast) and score.info["bf16"] == 0.0
    # The float32 path is the plain one: with bf16 unavailable, exact=False is the same call.
    precision_fast = precision.cpu_bf16_fast
    try:
        precision.cpu_bf16_fast = lambda: False  # type: ignore[method-assign]
        _same(exact, occlusion(net, x, exact=False, **kw))
        _same(score, score_cam(net, x, layer="relu2", exact=False))
    finally:
        precision.cpu_bf16_fast = precision_fast  # type: ignore[method-assign]


def test_occlusion_runs_its_batches_in_bf16_where_fast(
    fast: None, net: RecordingCNN, x: torch.Tensor
) -> None:
    before = ModelState.of(net)
    fp32 = occlusion(net, x, window=4, stride=2, exact=True)
    net.autocast.clear()
    bf16 = occlusion(net, x, window=4, stride=2, exact=False)
    # The target forward in float32; the reference and the 49 positions (4 batches) in bf16.
    assert net.autocast == [False, True, True, True, True, True]
    assert bf16.info["bf16"] == 1.0 and bf16.map.dtype == np.float32
    assert bf16.target == fp32.target
    np.testing.assert_allclose(bf16.map, fp32.map, atol=0.01)  # probabilities, bf16 noise
    assert count_hooks(net) == 0 and ModelState.of(net) == before


def test_score_cam_masked_forwards_in_bf16_where_fast(
    fast: None, net: RecordingCNN, x: torch.Tensor
) -> None:
    fp32 = score_cam(net, x, layer="relu2", exact=True)
    net.autocast.clear()
    bf16 = score_cam(net, x, layer="relu2", exact=False, batch_size=4)
    assert net.autocast == [False, True, True]  # activations in float32, 8 channels in 2 batches
    assert bf16.info["bf16"] == 1.0 and bf16.raw.dtype == np.float32
    assert np.corrcoef(fp32.map.ravel(), bf16.map.ravel())[0, 1] > 0.9


def test_deletion_insertion_curves_in_bf16_where_fast(
    fast: None, net: RecordingCNN, x: torch.Tensor
) -> None:
    cam = grad_cam(net, x, layer="relu2")
    net.autocast.clear()
    fp32 = faithfulness.deletion_insertion(net, x, cam, steps=4, exact=True)
    assert not any(net.autocast)
    net.autocast.clear()
    bf16 = faithfulness.deletion_insertion(net, x, cam, steps=4, exact=False)
    assert net.autocast == [False, True]  # target in float32; 10 images in one batch
    assert bf16.deletion.dtype == np.float64 and bf16.target == fp32.target
    np.testing.assert_allclose(bf16.deletion, fp32.deletion, atol=0.05)


def test_randomization_check_passes_exact_to_the_method(
    fast: None, net: RecordingCNN, x: torch.Tensor
) -> None:
    seen: list[bool] = []

    def method(model: torch.nn.Module, x: torch.Tensor, **kw: object) -> object:
        seen.append(bool(kw["exact"]))
        return occlusion(model, x, window=8, stride=8, **kw)  # type: ignore[arg-type]

    faithfulness.randomization_check(net, x, method=method, steps=1, layers=["fc"], exact=False)
    assert seen == [False, False]


# ------------------------------------------------------------------------------ features


def _gallery(n: int = 20) -> Gallery:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
    return Gallery("test", "upload", images, ("a",) * n, tuple(f"img{i}" for i in range(n)))


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_gallery_features_bf16_are_cached_apart(
    fast: None, cache_dir: Path, net: RecordingCNN
) -> None:
    g = _gallery()
    kw = {"layer": "relu2", "model_key": "tiny", "input_size": 16}
    fp32 = features.gallery_features(net, g, exact=True, **kw)
    assert not any(net.autocast) and fp32.features.dtype == np.float32
    assert features.lookup_features(g, precision="bf16", **kw) is None
    net.autocast.clear()
    bf16 = features.gallery_features(net, g, exact=False, **kw)
    assert net.autocast == [True, True] and not bf16.from_cache  # not the float32 entry
    assert bf16.features.dtype == np.float32
    cos = (fp32.features * bf16.features).sum(1) / (
        np.linalg.norm(fp32.features, axis=1) * np.linalg.norm(bf16.features, axis=1)
    )
    assert cos.min() > 0.99
    hit = features.lookup_features(g, precision="bf16", **kw)
    assert hit is not None
    np.testing.assert_array_equal(hit.features, bf16.features)
    np.testing.assert_array_equal(features.lookup_features(g, **kw).features, fp32.features)
    with pytest.raises(ValueError, match="precision must be"):
        features.lookup_features(g, precision="fp16", **kw)  # type: ignore[arg-type]


def test_gallery_features_exact_true_is_bit_identical(slow: None, net: RecordingCNN) -> None:
    g = _gallery()
    kw = {"layer": "relu2", "model_key": "tiny", "input_size": 16, "use_cache": False}
    a = features.gallery_features(net, g, exact=True, **kw)
    b = features.gallery_features(net, g, exact=False, **kw)  # no bf16 here: the same path
    np.testing.assert_array_equal(a.features, b.features)
    assert not any(net.autocast)
