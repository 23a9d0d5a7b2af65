"""vizcore.inside.units: the classes a channel feeds (head weights; forward-mode gradient)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizcore.core.hooks import capture_activations, count_hooks
from vizcore.inside.units import channel_classes, pre_activation_layer, weights_apply
from vizcore.models.discovery import GapHead

HEAD = GapHead("linear", ("relu2", "bn2"), "fc")


def _reverse_mode(model, x, layer, channel):
    """Per logit, the sum over positions of d logit / d A[channel], by one backward per logit."""
    with capture_activations(model, [layer], detach=False) as acts:
        logits = model(x)
    out = []
    for j in range(logits.shape[1]):
        (grad,) = torch.autograd.grad(logits[0, j], acts[layer], retain_graph=True)
        out.append(float(grad[0, channel].sum()))
    return np.array(out)


def test_gradient_equals_the_head_weights_for_the_layer_feeding_it(tiny_cnn, tiny_input):
    for c in range(8):
        grad = channel_classes(tiny_cnn, tiny_input, layer="relu2", channel=c, top=2)
        weights = channel_classes(tiny_cnn, layer="relu2", channel=c, method="weights",
                                  head=HEAD, top=2)  # fmt: skip
        np.testing.assert_allclose(grad.scores, tiny_cnn.fc.weight[:, c].detach(), rtol=1e-5)
        np.testing.assert_allclose(weights.scores, grad.scores, rtol=1e-5, atol=1e-7)
        assert weights.top.tolist() == np.argsort(-weights.scores)[:2].tolist()
    assert count_hooks(tiny_cnn) == 0 and not tiny_cnn.training


def test_gradient_of_an_earlier_layer_equals_reverse_mode(tiny_cnn, tiny_input):
    for c in (0, 3, 5):
        got = channel_classes(tiny_cnn, tiny_input, layer="conv1", channel=c,
                              categories=["a", "b", "c", "d"])  # fmt: skip
        want = _reverse_mode(tiny_cnn, tiny_input, "conv1", c)
        np.testing.assert_allclose(got.scores, want, rtol=1e-4, atol=1e-6)
        assert len(got.names) == 4 and got.bottom[0] == int(np.argmin(want))
    assert count_hooks(tiny_cnn) == 0
    assert all(p.requires_grad for p in tiny_cnn.parameters())  # restored after the turn


def test_pre_activation_layer(tiny_cnn, lite0):
    assert pre_activation_layer(tiny_cnn, "relu1") == "conv1"
    assert pre_activation_layer(tiny_cnn, "relu2") == "bn2"
    assert pre_activation_layer(tiny_cnn, "conv2") is None  # not a rectifier
    assert pre_activation_layer(tiny_cnn, "pool1") is None
    assert pre_activation_layer(lite0, "head.act") == "head.bn"
    assert pre_activation_layer(lite0, "blocks.4") is None


def test_errors(tiny_cnn, tiny_input):
    assert weights_apply(HEAD, "relu2") and not weights_apply(HEAD, "conv1")
    with pytest.raises(ValueError, match="feeding the classifier"):
        channel_classes(tiny_cnn, layer="conv1", channel=0, method="weights", head=HEAD)
    with pytest.raises(ValueError, match="current image"):
        channel_classes(tiny_cnn, layer="conv1", channel=0)
    with pytest.raises(ValueError, match="channel must be in"):
        channel_classes(tiny_cnn, tiny_input, layer="conv1", channel=6)
    with pytest.raises(ValueError, match="method"):
        channel_classes(tiny_cnn, tiny_input, layer="conv1", channel=0, method="cam")
    assert count_hooks(tiny_cnn) == 0


def test_lite0_head_weights_equal_the_gradient_and_squeezenet_has_no_linear_shortcut(
    lite0, squeezenet
):
    from vizcore.models.registry import get_spec

    head = get_spec("efficientnet_lite0").facts().head
    layer = head.feature_layers[0]
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    grad = channel_classes(lite0, x, layer=layer, channel=7)
    weights = channel_classes(lite0, layer=layer, channel=7, method="weights", head=head)
    np.testing.assert_allclose(grad.scores, weights.scores, rtol=1e-4, atol=1e-5)
    assert grad.top.tolist() == weights.top.tolist()
    # SqueezeNet's head is a 1x1 conv, then ReLU: its gradient is the weight gated by the ReLU.
    sq_head = get_spec("squeezenet1_1").facts().head
    sq = channel_classes(squeezenet, x, layer=sq_head.feature_layers[0], channel=3)
    sq_w = channel_classes(squeezenet, layer=sq_head.feature_layers[0], channel=3,
                           method="weights", head=sq_head)  # fmt: skip
    # d logit_j / d shift = W[j, c] * (share of positions where class map j is positive)
    nonzero = sq_w.scores != 0
    share = sq.scores[nonzero] / sq_w.scores[nonzero]
    assert (share > -1e-5).all() and (share < 1 + 1e-4).all() and (share > 0).any()
    assert count_hooks(lite0) == 0 and count_hooks(squeezenet) == 0
