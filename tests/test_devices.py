"""Devices: resolution from VIZCORE_DEVICE, fallback, model loading, and every technique kept on
the model's device.

The device check runs on the CPU: the model and the inputs are on the CPU while
``torch.set_default_device("meta")`` is active around the technique call only. A tensor that a
technique creates without an explicit ``device=`` (or ``*_like``) then lands on ``meta``, and
mixing it with the model's CPU tensors raises, which is exactly the bug that would mix CPU and
CUDA tensors on a GPU. (It does not catch ``torch.from_numpy``, which is always CPU: those sites
are moved with ``.to(device)`` by review.)
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from torch import nn

from vizcore import attribution, optvis
from vizcore.attribution import faithfulness
from vizcore.core import devices
from vizcore.core.cache import layer_activations
from vizcore.data.gallery import Gallery
from vizcore.inside import embedding, filters
from vizcore.models.predict import predict
from vizcore.optvis import adversarial, dream, inversion, multifaceted, synthesis
from vizcore.style import fast_style
from vizcore.style import gatys as style

CATEGORIES = ("a", "b", "c", "d")
TINY = synthesis.SynthesisSettings(size=16, steps=2, pad=2, jitter=1, rotate=5.0)
TINY_PIXEL = dataclasses.replace(TINY, parameterization="pixel", init="noise")


@contextmanager
def meta_default() -> Iterator[None]:
    """Tensors made without a device land on ``meta`` (mixing them with CPU ones raises)."""
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(before)


def test_the_meta_trick_catches_a_tensor_made_without_a_device() -> None:
    x = torch.rand(1, 3, 4, 4)
    with meta_default(), pytest.raises(RuntimeError, match="meta"):
        _ = x + torch.zeros(1, 3, 4, 4)
    with meta_default():
        _ = x + torch.zeros(1, 3, 4, 4, device=x.device)  # the fix: no error


def _gallery(n: int = 6, side: int = 16) -> Gallery:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)
    return Gallery("t", "upload", images, tuple("x" * n), tuple(str(i) for i in range(n)))


@functools.cache
def _sample() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    return torch.stack([0.5 + 0.5 * torch.sin(xx / 2), 0.5 + 0.5 * torch.cos(yy / 3), xx / 32])[
        None
    ]


@functools.cache
def _content() -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@functools.cache
def _preset() -> fast_style.StylePreset:
    torch.manual_seed(0)
    net = fast_style.TransformNet(3, width=4, blocks=1).eval()
    return fast_style.StylePreset("tiny", ("a", "b", "c"), net, {})


def _feats(m: nn.Module) -> np.ndarray:
    from vizcore.data.features import gallery_features

    return gallery_features(
        m, _gallery(), layer="relu2", model_key="t", input_size=16, use_cache=False
    ).features


#: ``(model, x) -> anything``: every technique, small enough for a tiny CNN on 16 px.
TECHNIQUES: dict[str, Callable[[nn.Module, torch.Tensor], object]] = {
    "predict": lambda m, x: predict(m, x, top_k=2, categories=CATEGORIES),
    "layer_activations": lambda m, x: layer_activations(m, x, layers=["conv2"]),
    "saliency": lambda m, x: attribution.saliency(m, x),
    "guided_backprop": lambda m, x: attribution.guided_backprop(m, x),
    "deconvnet": lambda m, x: attribution.deconvnet(m, x),
    "occlusion": lambda m, x: attribution.occlusion(m, x, window=4, stride=4),
    "occlusion_blur": lambda m, x: attribution.occlusion(m, x, window=4, stride=4, fill="blur"),
    "grad_cam": lambda m, x: attribution.grad_cam(m, x, layer="conv2"),
    "grad_cam_pp": lambda m, x: attribution.grad_cam_plus_plus(m, x, layer="conv2"),
    "cam": lambda m, x: attribution.cam(m, x, layer="relu2"),
    "score_cam": lambda m, x: attribution.score_cam(m, x, layer="conv2"),
    "guided_grad_cam": lambda m, x: attribution.guided_grad_cam(m, x, layer="conv2"),
    "smoothgrad": lambda m, x: attribution.smoothgrad(m, x, samples=2),
    "integrated_gradients": lambda m, x: attribution.integrated_gradients(m, x, steps=3),
    "fgsm": lambda m, x: adversarial.fgsm(m, x, categories=CATEGORIES),
    "pgd": lambda m, x: adversarial.pgd(m, x, steps=2, categories=CATEGORIES),
    "pgd_target": lambda m, x: adversarial.pgd(m, x, steps=2, target=2, categories=CATEGORIES),
    "deletion_insertion": lambda m, x: faithfulness.deletion_insertion(
        m, x, np.random.default_rng(0).random((16, 16)), steps=3
    ),
    "randomization_check": lambda m, x: faithfulness.randomization_check(
        m, x, method=attribution.grad_cam, layer="conv2", steps=2
    ),
    "class_visualization": lambda m, x: synthesis.class_visualization(
        m, target=1, settings=TINY, categories=CATEGORIES
    ),
    "class_visualization_pixel": lambda m, x: synthesis.class_visualization(
        m, target=[0, 1], settings=TINY_PIXEL, categories=CATEGORIES
    ),
    "neuron_visualization": lambda m, x: synthesis.neuron_visualization(
        m, layer="conv2", channel=1, mode="neuron", settings=TINY
    ),
    "feature_inversion": lambda m, x: inversion.feature_inversion(
        m, x, layer="conv2", settings=inversion.InversionSettings(steps=2)
    ),
    "deep_dream": lambda m, x: dream.deep_dream(
        m, x, layer="conv2", settings=dream.DreamSettings(octaves=2, steps_per_octave=2)
    ),
    "texture_synthesis": lambda m, x: style.texture_synthesis(
        m, _sample(), layers=["relu1", "relu2"], size=(32, 32), steps=2, seed=0
    ),
    "style_transfer_adam": lambda m, x: style.style_transfer(
        m,
        _content(),
        style=_sample(),
        style_layers=["relu1", "relu2"],
        content_layer="conv2",
        optimizer="adam",
        steps=2,
    ),
    "style_transfer_lbfgs": lambda m, x: style.style_transfer(
        m, _content(), style=_sample(), style_layers=["relu1"], content_layer="conv2", steps=2
    ),
    "fast_style": lambda m, x: fast_style.apply_style(
        _preset(), x, style="b", blend_with="c", blend=0.5
    ),
    "gallery_features": lambda m, x: _feats(m),
    "channel_maxima": lambda m, x: filters.max_activating_patches(
        m,
        _gallery(),
        layer="relu2",
        channel=1,
        model_key="t",
        input_size=16,
        top_k=2,
        patch_size=8,
    ),
    "activation_maps": lambda m, x: filters.activation_maps(m, x, layer="relu2"),
    "first_layer_filters": lambda m, x: filters.first_layer_filters(m),
    "neighbours_and_map": lambda m, x: embedding.feature_map(
        m, x, gallery_features=_feats(m), layer="relu2", method="pca"
    ),
    "gallery_predictions": lambda m, x: multifaceted.gallery_predictions(
        m, _gallery(), input_size=16, top_k=2
    ),
    "multifaceted": lambda m, x: multifaceted.multifaceted_class_visualization(
        m,
        target=1,
        gallery_images=_gallery(9, 24).images,
        gallery_features=np.random.default_rng(0).random((9, 12)).astype(np.float32),
        facets=2,
        settings=dataclasses.replace(TINY, size=24, rotate=0.0, pad=0),
        categories=CATEGORIES,
        compare_plain=True,
        init="mean",
        mean_of=3,
    ),
    "fourier_param": lambda m, x: optvis.optimize(
        m,
        optvis.class_logit(1),
        param=optvis.fourier_image((1, 3, 16, 16), device=x.device),
        steps=2,
        lr=0.1,
        transforms=optvis.compose(optvis.jitter(1), optvis.random_affine()),
    ),
}


@pytest.mark.parametrize("name", list(TECHNIQUES))
def test_every_technique_keeps_its_tensors_on_the_models_device(
    name: str, tiny_cnn: nn.Module, tiny_input: torch.Tensor
) -> None:
    _sample(), _content(), _preset()  # inputs made on the CPU, before the check
    with meta_default():
        TECHNIQUES[name](tiny_cnn, tiny_input)


# --- resolution --------------------------------------------------------------------------------


def test_resolve_cpu_auto_and_bad_values() -> None:
    assert devices.resolve_device("cpu").device == torch.device("cpu")
    assert devices.resolve_device(" CPU ").fallback is None
    auto = devices.resolve_device(None)
    assert auto.requested == "auto" and auto.name == devices.available_devices()[0]
    assert devices.available_devices()[-1] == "cpu"
    for bad in ("gpu", "cuda:x", "tpu", "cuda:-1"):
        with pytest.raises(ValueError, match="cpu, cuda, cuda:N, mps"):
            devices.resolve_device(bad)


def test_an_absent_device_falls_back_to_the_cpu_with_a_reason(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    for asked in ("cuda", "cuda:1", "mps"):
        choice = devices.resolve_device(asked)
        assert choice.device == torch.device("cpu") and choice.requested == asked
        assert "not available" in choice.fallback and "using the CPU" in choice.fallback
    assert devices.available_devices() == ("cpu",)
    assert devices.resolve_device("auto").device == torch.device("cpu")


def test_a_missing_cuda_index_falls_back_to_cuda0(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.resolve_device("cuda").device == torch.device("cuda:0")
    choice = devices.resolve_device("cuda:3")
    assert choice.device == torch.device("cuda:0") and "1 CUDA device" in choice.fallback
    assert devices.available_devices()[0] == "cuda:0"


def test_the_environment_variable_is_read_once_and_warns_on_fallback(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    devices.default_choice.cache_clear()
    try:
        monkeypatch.setenv(devices.ENV_VAR, "cuda")
        with pytest.warns(RuntimeWarning, match="CUDA is not available"):
            assert devices.default_device() == torch.device("cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            devices.default_device()  # cached: no second warning
        devices.default_choice.cache_clear()
        monkeypatch.setenv(devices.ENV_VAR, "gpu")
        with pytest.raises(ValueError, match="VIZCORE_DEVICE"):
            devices.default_device()
        devices.default_choice.cache_clear()
        monkeypatch.setenv(devices.ENV_VAR, "cpu")
        assert devices.default_choice().fallback is None
    finally:
        devices.default_choice.cache_clear()


def test_model_device() -> None:
    assert devices.model_device(nn.ReLU()) == torch.device("cpu")
    assert devices.model_device(nn.Linear(2, 2).to("meta")) == torch.device("meta")
    bn_only = nn.BatchNorm2d(2, affine=False).to("meta")
    assert devices.model_device(bn_only) == torch.device("meta")


def test_load_model_builds_one_model_per_device(monkeypatch) -> None:
    from vizcore.models import registry

    tiny = dataclasses.replace(registry.MODELS["squeezenet1_1"], key="tiny_test",
                               loader=lambda: nn.Sequential(nn.Conv2d(3, 2, 1)))  # fmt: skip
    monkeypatch.setattr(registry, "MODELS", {**registry.MODELS, "tiny_test": tiny})
    # A private cache for this test: the shared one (and the session's models in it) stays.
    fresh = functools.lru_cache(maxsize=3)(registry._load_cached.__wrapped__)
    monkeypatch.setattr(registry, "_load_cached", fresh)
    cpu = registry.load_model("tiny_test", device="cpu")
    meta = registry.load_model("tiny_test", device=torch.device("meta"))
    assert devices.model_device(cpu) == torch.device("cpu")  # never moved in place
    assert devices.model_device(meta) == torch.device("meta") and meta is not cpu
    assert registry.load_model("tiny_test", device="cpu") is cpu
    assert not any(p.requires_grad for p in meta.parameters()) and not meta.training


# --- the app's sidebar -------------------------------------------------------------------------


def _home():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = str(Path(__file__).resolve().parent.parent / "app.py")
    return AppTest.from_file(app, default_timeout=120)


def test_the_sidebar_says_which_device_runs_the_models(monkeypatch) -> None:
    monkeypatch.setattr(devices, "available_devices", lambda: ("cpu",))
    at = _home().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value == "Device: **CPU**" for c in at.sidebar.caption)
    assert not [s for s in at.sidebar.selectbox if s.label == "Device"]


def test_the_sidebar_offers_a_choice_when_there_are_several_devices(monkeypatch) -> None:
    # A second device that is never selected (this machine has no GPU): the choice is offered,
    # the default is the process's device, and the page runs on it.
    monkeypatch.setattr(devices, "available_devices", lambda: ("cuda:0", "cpu"))
    at = _home().run()
    assert not at.exception, [e.value for e in at.exception]
    (picker,) = [s for s in at.sidebar.selectbox if s.label == "Device"]
    assert len(picker.options) == 2 and picker.options[1] == "CPU"
    assert picker.value == str(devices.default_device())
    assert at.session_state["vz_device"] == picker.value
