"""Deletion/insertion curves and the cascading randomization sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizcore.attribution import grad_cam, guided_backprop, saliency
from vizcore.attribution.faithfulness import (
    cascade_layers,
    deletion_insertion,
    randomization_check,
    spearman,
)
from vizcore.core.hooks import ModelState, count_hooks


class CornerNet(nn.Module):
    """Class 0's logit is 40 x (mean brightness of the top-left 8x8 corner) - 20; class 1's is 0."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(40.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([self.scale * corner - 20, torch.zeros_like(corner)], dim=1)


def test_a_faithful_map_beats_its_inverse():
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, :8, :8] = 1.0  # a bright corner on black: blurring it dims the corner
    good = np.zeros((16, 16), np.float32)
    good[:8, :8] = 1.0
    faithful = deletion_insertion(CornerNet(), x, good, target=0, steps=8)
    inverse = deletion_insertion(CornerNet(), x, 1 - good, target=0, steps=8)
    assert faithful.deletion_auc < inverse.deletion_auc
    assert faithful.insertion_auc > inverse.insertion_auc
    p_full = torch.softmax(torch.tensor([20.0, 0.0]), 0)[0].item()
    p_black = torch.softmax(torch.tensor([-20.0, 0.0]), 0)[0].item()
    assert faithful.deletion[0] == pytest.approx(p_full)
    assert faithful.deletion[-1] == pytest.approx(p_black, abs=1e-6)
    assert faithful.insertion[-1] == pytest.approx(p_full)
    assert faithful.insertion[0] < 0.5 * p_full
    # the top quarter of the pixels is the whole corner: deleting it is already the end point
    assert faithful.deletion[2] == pytest.approx(p_black, abs=1e-6)
    assert faithful.fractions[0] == 0 and faithful.fractions[-1] == 1


def test_curves_batched_equal_unbatched_and_stop(tiny_cnn, tiny_input):
    result = grad_cam(tiny_cnn, tiny_input, layer="relu2")
    a = deletion_insertion(tiny_cnn, tiny_input, result, steps=6, batch_size=1)
    b = deletion_insertion(tiny_cnn, tiny_input, result, steps=6, batch_size=16)
    np.testing.assert_allclose(a.deletion, b.deletion, rtol=1e-5)
    np.testing.assert_allclose(a.insertion, b.insertion, rtol=1e-5)
    assert a.target == result.target
    part = deletion_insertion(
        tiny_cnn, tiny_input, result, steps=6, batch_size=4, on_step=lambda _: False
    )
    assert part.stopped and np.isnan(part.insertion).all()
    assert count_hooks(tiny_cnn) == 0


def test_curves_reject_a_map_of_the_wrong_size(tiny_cnn, tiny_input):
    with pytest.raises(ValueError, match=r"map has shape \(8, 8\), the image 16x16"):
        deletion_insertion(tiny_cnn, tiny_input, np.zeros((8, 8)))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        deletion_insertion(tiny_cnn, tiny_input, np.zeros((16, 16)), steps=0)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    b[:20] = 0.0  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, np.zeros_like(a)) == 0.0


def test_cascade_layers_go_from_the_logits_down(tiny_cnn, lite0, squeezenet):
    assert cascade_layers(tiny_cnn) == ["fc", "conv2", "conv1"]
    assert cascade_layers(lite0)[:4] == ["fc", "head", "blocks.15", "blocks.14"]
    assert cascade_layers(squeezenet)[:3] == ["conv10", "fire9", "fire8"]


def test_randomization_never_touches_the_shared_model(tiny_cnn, tiny_input):
    before = ModelState.of(tiny_cnn)
    params = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    check = randomization_check(tiny_cnn, tiny_input, method=grad_cam, layer="relu2", steps=3)
    assert check.layers == ("fc", "conv2", "conv1")
    assert check.maps.shape == (4, 16, 16) and check.correlations.shape == (3,)
    assert check.correlations[-1] < 0.9  # a model-dependent method changes
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == before
    for key, value in tiny_cnn.state_dict().items():
        assert torch.equal(value, params[key]), key
    again = randomization_check(tiny_cnn, tiny_input, method=grad_cam, layer="relu2", steps=3)
    np.testing.assert_array_equal(again.maps, check.maps)  # seeded
    with pytest.raises(ValueError, match="steps must be between 1 and 3"):
        randomization_check(tiny_cnn, tiny_input, method=saliency, steps=9)
    stopped = randomization_check(
        tiny_cnn, tiny_input, method=saliency, steps=3, on_step=lambda _: False
    )
    assert stopped.stopped and stopped.correlations.shape == (1,)


def test_guided_backprop_barely_changes_while_grad_cam_does(lite0):
    """Adebayo et al.'s finding, on the real model: guided backprop ignores the top layers."""
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    guided = randomization_check(lite0, x, method=guided_backprop, steps=2)
    gradcam = randomization_check(lite0, x, method=grad_cam, layer="head.bn", steps=2)
    assert guided.correlations[-1] > gradcam.correlations[-1]
    assert guided.correlations[-1] > 0.5
