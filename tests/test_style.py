"""Gatys texture synthesis and style transfer on the shared runner."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from vizcore.core.hooks import ModelState, count_hooks
from vizcore.core.layers import LayerNotFoundError
from vizcore.style import gatys as style


@pytest.fixture
def sample() -> torch.Tensor:
    # A striped, coloured texture: strong, learnable second-order statistics.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    r = 0.5 + 0.5 * torch.sin(xx / 2.0)
    g = 0.5 + 0.5 * torch.cos((xx + yy) / 3.0)
    b = 0.5 + 0.4 * torch.sin(yy / 1.5)
    return torch.stack([r, g, b])[None]


def test_texture_synthesis_reduces_gram_distance_by_a_large_factor(tiny_cnn, sample) -> None:
    result = style.texture_synthesis(
        tiny_cnn,
        sample,
        layers=["relu1", "relu2"],
        size=(32, 32),
        optimizer="lbfgs",
        steps=60,
        lr=1.0,
        tv_weight=0.0,
        seed=0,
    )
    assert result.style_loss_end < result.style_loss_start / 10
    assert result.image.shape == (32, 32, 3) and result.image.dtype == np.uint8
    assert result.steps_done == 60 and not result.stopped
    assert len(result.frames) >= 2


def test_style_loss_decreases_over_steps(tiny_cnn, tiny_input, sample) -> None:
    content = torch.nn.functional.interpolate(tiny_input, size=(32, 32))
    result = style.style_transfer(
        tiny_cnn,
        content,
        style=sample,
        style_layers=["relu1", "relu2"],
        content_layer="conv2",
        optimizer="adam",
        lr=0.05,
        steps=30,
        tv_weight=0.0,
    )
    assert result.style_loss_end < 0.5 * result.style_loss_start
    assert result.losses[-1] < result.losses[0]
    assert result.image.shape == (32, 32, 3)


def test_stop_midway_leaves_no_hook_and_model_unchanged(tiny_cnn, sample) -> None:
    state = ModelState.of(tiny_cnn)
    seen = []

    def stop_at_3(info):
        seen.append(info.step)
        return info.step < 3

    result = style.texture_synthesis(
        tiny_cnn,
        sample,
        layers=["relu1"],
        size=(32, 32),
        optimizer="adam",
        lr=0.05,
        steps=50,
        on_step=stop_at_3,
    )
    assert result.stopped and result.steps_done == 3 and seen == [1, 2, 3]
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state


def test_failure_midway_leaves_no_hook_and_model_unchanged(tiny_cnn, tiny_input, sample) -> None:
    tiny_cnn.train()  # an unusual state that must come back exactly
    state = ModelState.of(tiny_cnn)

    def boom(info):
        raise RuntimeError("user pressed stop")

    content = torch.nn.functional.interpolate(tiny_input, size=(32, 32))
    with pytest.raises(RuntimeError, match="user pressed stop"):
        style.style_transfer(
            tiny_cnn,
            content,
            style=sample,
            style_layers=["relu1"],
            content_layer="conv2",
            steps=10,
            on_step=boom,
        )
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state
    with pytest.raises(LayerNotFoundError):
        style.texture_synthesis(tiny_cnn, sample, layers=["nope"], size=(32, 32), steps=2)
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state


def test_bad_sizes_and_weights_are_explained(tiny_cnn, sample) -> None:
    with pytest.raises(ValueError, match="32-1024"):
        style.texture_synthesis(tiny_cnn, sample, layers=["relu1"], size=(8, 8))
    with pytest.raises(ValueError, match="not both 0"):
        style.style_transfer(
            tiny_cnn,
            sample,
            style=sample,
            style_layers=["relu1"],
            content_layer="conv2",
            style_weight=0.0,
            content_weight=0.0,
        )


def test_real_model_style_transfer_moves_toward_the_style(squeezenet) -> None:
    from vizcore.data.images import load_sample, to_tensor01
    from vizcore.models.registry import get_spec
    from vizcore.style.patterns import marble

    spec = get_spec("squeezenet1_1")
    settings = style.style_settings(spec)
    content = style.resize_long_side(to_tensor01(load_sample("chelsea")), 96)
    state = ModelState.of(squeezenet)
    result = style.style_transfer(
        squeezenet,
        content,
        style=to_tensor01(marble(96)),
        style_layers=spec.preset("style"),
        content_layer=spec.preset("content")[0],
        optimizer=settings.optimizer,
        lr=settings.lr,
        steps=15,
        tv_weight=settings.tv_weight,
    )
    assert result.style_loss_end < 0.5 * result.style_loss_start
    assert count_hooks(squeezenet) == 0 and ModelState.of(squeezenet) == state


def test_real_model_style_weight_trades_style_for_content_over_its_range(squeezenet) -> None:
    """Each tenfold step of the style weight (content weight 1) takes the result visibly further
    from the photo: less style distance left, more content error; both reported in the result."""
    from vizcore.data.images import load_sample, to_tensor01
    from vizcore.models.registry import get_spec
    from vizcore.style.patterns import marble

    spec = get_spec("squeezenet1_1")
    content = style.resize_long_side(to_tensor01(load_sample("chelsea")), 96)
    ratios, contents, images = [], [], []
    for weight in (0.1, 1.0, 10.0, 100.0):
        result = style.style_transfer(
            squeezenet,
            content,
            style=to_tensor01(marble(96)),
            style_layers=spec.preset("style"),
            content_layer=spec.preset("content")[0],
            style_weight=weight,
            optimizer="lbfgs",
            lr=1.0,
            steps=20,
            tv_weight=0.0,
        )
        assert result.content_loss_end is not None
        assert result.style_ratio == pytest.approx(result.style_loss_end / result.style_loss_start)
        ratios.append(result.style_ratio)
        contents.append(result.content_loss_end)
        images.append(result.image.astype(float))
    assert all(a > 1.1 * b for a, b in itertools.pairwise(ratios)), ratios
    assert ratios[0] > 0.9 and ratios[-1] < 0.15, ratios  # from the photo to the style
    assert all(a < b for a, b in itertools.pairwise(contents)), contents
    steps = [np.abs(a - b).mean() for a, b in itertools.pairwise(images)]
    assert min(steps) > 3.0, steps  # mean change over 0-255 between neighbouring weights
