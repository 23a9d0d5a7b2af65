"""Class and neuron visualization, feature inversion and DeepDream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vizcore import optvis
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.core.layers import LayerNotFoundError
from vizcore.core.progress import StepInfo
from vizcore.models.registry import get_spec
from vizcore.optvis import dream, inversion, synthesis

CATEGORIES = ("a", "b", "c", "d")
TINY = synthesis.SynthesisSettings(size=16, steps=25, pad=2, jitter=1, rotate=5.0)
TINY_PIXEL = dataclasses.replace(
    TINY,
    parameterization="pixel",
    lr=0.02,
    init="noise",
    regularizers=optvis.PixelRegularizers(l2_decay=1e-3, blur_sigma=0.5, blur_every=4),
)


@pytest.mark.parametrize("settings", [TINY, TINY_PIXEL], ids=["fourier", "pixel"])
def test_class_visualization_raises_the_class_scores(tiny_cnn, settings):
    result = synthesis.class_visualization(
        tiny_cnn, target=[0, 3], settings=settings, categories=CATEGORIES
    )
    assert result.images.shape == (2, 16, 16, 3)
    assert result.titles == ("a", "d")
    assert result.steps_done == 25 and not result.stopped
    first = -result.losses[0]
    assert -result.losses[-1] > first  # the mean score went up
    assert result.probabilities.shape == (2,)
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
    assert len(result.frames) >= 2


def test_class_visualization_raises_the_class_probability(tiny_cnn):
    def probabilities(steps: int) -> np.ndarray:
        settings = dataclasses.replace(TINY, steps=steps, lr=0.1)
        return synthesis.class_visualization(
            tiny_cnn, target=[1, 2], settings=settings, categories=CATEGORIES
        ).probabilities

    assert np.all(probabilities(40) > probabilities(1))


def test_class_visualization_is_reproducible(tiny_cnn):
    def run(seed: int) -> np.ndarray:
        return synthesis.class_visualization(
            tiny_cnn, target=1, settings=TINY_PIXEL, categories=CATEGORIES, seed=seed
        ).images

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))


def test_bad_class_and_settings(tiny_cnn):
    with pytest.raises(ValueError, match="outside"):
        synthesis.class_visualization(tiny_cnn, target=7, settings=TINY, categories=CATEGORIES)
    with pytest.raises(ValueError, match="pixel parameterization"):
        dataclasses.replace(TINY, regularizers=optvis.PixelRegularizers(blur_sigma=1.0))
    with pytest.raises(ValueError, match="size"):
        dataclasses.replace(TINY, size=4)


@pytest.mark.parametrize("mode", ["channel", "neuron"])
def test_neuron_visualization_raises_the_activation(tiny_cnn, mode):
    result = synthesis.neuron_visualization(
        tiny_cnn, layer="conv2", channel=[1, 5], mode=mode, settings=TINY
    )
    assert result.images.shape == (2, 16, 16, 3)
    assert result.titles == ("conv2 #1", "conv2 #5")
    assert -result.losses[-1] > -result.losses[0]


def test_neuron_visualization_bad_layer(tiny_cnn):
    with pytest.raises(LayerNotFoundError):
        synthesis.neuron_visualization(tiny_cnn, layer="conv9", channel=0, settings=TINY)


def test_neuron_visualization_refuses_a_missing_channel_before_any_step(tiny_cnn):
    assert synthesis.layer_channels(tiny_cnn, "conv2") == 8
    assert synthesis.layer_channels(tiny_cnn, "relu1") == 6
    steps: list[StepInfo] = []
    with pytest.raises(ValueError, match=r"'conv2' has 8 channels \(0 to 7\); channels 8, 9 do"):
        synthesis.neuron_visualization(
            tiny_cnn, layer="conv2", channel=[7, 8, 9], settings=TINY, on_step=steps.append
        )
    assert steps == []  # refused before the first step
    with pytest.raises(ValueError, match="channel 6 does not exist"):
        synthesis.neuron_visualization(
            tiny_cnn, layer="relu1", channel=6, mode="neuron", settings=TINY, on_step=steps.append
        )
    assert steps == []
    with pytest.raises(LayerNotFoundError):
        synthesis.layer_channels(tiny_cnn, "conv9")


def test_feature_inversion_reduces_the_feature_error(tiny_cnn, tiny_input):
    settings = inversion.InversionSettings(steps=60, lr=0.05, jitter=1)
    result = inversion.feature_inversion(
        tiny_cnn, tiny_input, layer=["conv1", "relu2"], settings=settings
    )
    assert result.images.shape == (2, 16, 16, 3)
    assert result.layers == ("conv1", "relu2")
    # TV weights grow with depth when not given.
    assert result.tv_weights[0] < result.tv_weights[1]
    assert np.all(result.relative_errors < -result.losses[0] / 1.0 + 1.0)
    assert result.relative_errors[0] < 0.5
    assert result.losses[-1] < result.losses[0]
    # From the same noise, without optimizing, the error is larger.
    quick = inversion.feature_inversion(
        tiny_cnn, tiny_input, layer="conv1", settings=dataclasses.replace(settings, steps=1)
    )
    assert result.relative_errors[0] < quick.relative_errors[0]


def test_feature_inversion_validates(tiny_cnn, tiny_input):
    with pytest.raises(ValueError, match="duplicates"):
        inversion.feature_inversion(tiny_cnn, tiny_input, layer=["conv1", "conv1"])
    with pytest.raises(ValueError, match="RGB"):
        inversion.feature_inversion(tiny_cnn, tiny_input[0], layer="conv1")
    with pytest.raises(LayerNotFoundError):
        inversion.feature_inversion(tiny_cnn, tiny_input, layer="nope")


def test_depth_tv_weight_grows(tiny_cnn):
    weights = [inversion.depth_tv_weight(tiny_cnn, name) for name in ("conv1", "conv2", "fc")]
    assert weights == sorted(weights)
    assert weights[0] >= 5.0 and weights[-1] <= 200.0


def test_deep_dream_amplifies_the_layer(tiny_cnn):
    photo = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    settings = dream.DreamSettings(
        octaves=2, octave_scale=1.4, steps_per_octave=6, jitter=2, max_size=32
    )
    seen: list[StepInfo] = []
    result = dream.deep_dream(
        tiny_cnn, photo, layer="relu2", settings=settings, on_step=seen.append
    )
    assert result.image.shape == (24, 32, 3) == result.original.shape
    assert [info.step for info in seen] == list(range(1, 13))
    assert all(info.total == 12 for info in seen)
    frames = [info.frame for info in seen if info.frame is not None]
    assert frames and all(f.shape == (24, 32, 3) for f in frames)
    # Within each octave the layer's energy rises.
    assert result.losses[5] < result.losses[0]
    assert result.losses[11] < result.losses[6]
    assert not np.allclose(result.image, result.original)


def test_deep_dream_stop_and_cleanup(tiny_cnn):
    tiny_cnn.train()
    state = ModelState.of(tiny_cnn)
    photo = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    settings = dream.DreamSettings(octaves=3, steps_per_octave=4, jitter=2, max_size=24)
    result = dream.deep_dream(
        tiny_cnn, photo, layer="relu2", settings=settings, on_step=lambda info: info.step < 6
    )
    assert result.stopped and result.steps_done == 6
    assert result.image.shape == (24, 24, 3)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state


@pytest.mark.parametrize("method", ["class", "neuron", "inversion"])
def test_stop_mid_run_and_failure_leave_model_unchanged(tiny_cnn, tiny_input, method):
    state = ModelState.of(tiny_cnn)
    run = {
        "class": lambda cb: synthesis.class_visualization(
            tiny_cnn, target=0, settings=TINY, categories=CATEGORIES, on_step=cb
        ),
        "neuron": lambda cb: synthesis.neuron_visualization(
            tiny_cnn, layer="conv2", channel=0, settings=TINY, on_step=cb
        ),
        "inversion": lambda cb: inversion.feature_inversion(
            tiny_cnn, tiny_input, layer="conv2", on_step=cb
        ),
    }[method]
    result = run(lambda info: info.step < 3)
    assert result.stopped and result.steps_done == 3
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state

    def explode(info: StepInfo) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run(explode)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state


def test_presets_cover_the_bundled_models():
    from vizcore.models.registry import get_spec

    lite = synthesis.synthesis_preset(get_spec("efficientnet_lite0"), "fourier")
    assert lite.relu6_passthrough and lite.scale == (0.75, 1.25)
    squeeze = synthesis.synthesis_preset(get_spec("squeezenet1_1"), "pixel")
    assert squeeze.regularizers.active and squeeze.parameterization == "pixel"
    generic = synthesis.synthesis_preset(get_spec("resnet50"), "fourier")
    assert generic.parameterization == "fourier" and generic.size == 224
    layers, settings = inversion.inversion_preset(get_spec("efficientnet_lite0"))
    weights = dict(settings.tv_weights)
    assert [weights[name] for name in layers] == sorted(weights[name] for name in layers)


# ------------------------------------------------------------------ the real bundled model


def test_lite0_class_visualization_reaches_its_class(lite0):
    settings = dataclasses.replace(
        synthesis.synthesis_preset(get_spec("efficientnet_lite0"), "fourier"), size=96, steps=25
    )
    state = ModelState.of(lite0)
    result = synthesis.class_visualization(lite0, target=1, settings=settings)  # goldfish
    assert result.titles == ("goldfish",)
    assert result.probabilities[0] > 0.5
    assert count_hooks(lite0) == 0 and ModelState.of(lite0) == state


def test_lite0_deep_dream_layers_differ(lite0):
    photo = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    settings = dream.DreamSettings(octaves=2, steps_per_octave=3, max_size=96, jitter=8)
    a = dream.deep_dream(lite0, photo, layer="blocks.2", settings=settings)
    b = dream.deep_dream(lite0, photo, layer="blocks.10", settings=settings)
    assert a.image.shape == (96, 96, 3)
    assert np.abs(a.image - b.image).mean() > 0.01
    assert dream.deepdream_layers(get_spec("efficientnet_lite0"), lite0)[0] == "blocks.2"
