"""Gram statistics: hand-computed values, relative losses, total variation."""

from __future__ import annotations

import pytest
import torch

from vizcore.core.hooks import ModelState, count_hooks, inference_session
from vizcore.core.layers import LayerNotFoundError
from vizcore.style import gram


def test_gram_of_known_tensor_matches_hand_computation() -> None:
    # Two channels over a 1x2 map: F = [[1, 2], [3, 4]]; G = F Fᵀ / 2.
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 2.0
    assert torch.equal(gram.gram_matrix(f), expected)


def test_gram_is_symmetric_and_batched() -> None:
    f = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    g = gram.gram_matrix(f)
    assert g.shape == (3, 4, 4)
    assert torch.allclose(g, g.transpose(1, 2))
    assert torch.allclose(g[1], gram.gram_matrix(f[1:2])[0])


def test_gram_rejects_wrong_rank() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        gram.gram_matrix(torch.zeros(3, 4))


def test_relative_losses_are_scale_invariant(tiny_cnn, tiny_input) -> None:
    """Relative errors do not change when every activation is scaled (the two nets differ ~100x)."""
    feats = {"a": torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))}
    target = gram.GramTargets({"a": gram.gram_matrix(torch.rand(1, 3, 4, 4))}, {"a": 1.0})
    scaled_target = gram.GramTargets({"a": target.grams["a"] * 100.0**2}, {"a": 1.0})
    loss = gram.style_loss(feats, target)
    scaled = gram.style_loss({"a": feats["a"] * 100.0}, scaled_target)
    assert torch.allclose(loss, scaled, rtol=1e-4)
    c = torch.rand(2, 3, 4, 4)
    assert torch.allclose(gram.content_loss(c * 2, c), torch.tensor(1.0))
    assert gram.content_loss(c, c).item() == 0.0


def test_style_loss_zero_on_the_style_image(tiny_cnn, tiny_input) -> None:
    with inference_session(tiny_cnn):
        targets = gram.gram_targets(tiny_cnn, tiny_input, ["relu1", "conv2"])
        feats = gram.extract_features(tiny_cnn, tiny_input, targets.layers)
        assert gram.style_loss(feats, targets).item() == pytest.approx(0.0, abs=1e-10)
    assert count_hooks(tiny_cnn) == 0


def test_wrong_layer_and_weights_are_clear_errors(tiny_cnn, tiny_input) -> None:
    state = ModelState.of(tiny_cnn)
    with pytest.raises(LayerNotFoundError), inference_session(tiny_cnn):
        gram.gram_targets(tiny_cnn, tiny_input, ["conv9"])
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state
    with pytest.raises(ValueError, match="one weight per style layer"):
        gram.layer_weights(["a", "b"], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        gram.layer_weights(["a"], [-1.0])


def test_total_variation_hand_computed() -> None:
    x = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # horizontal steps of 1, no vertical change
    assert gram.total_variation(x).item() == pytest.approx(1.0)
    assert gram.total_variation(torch.ones(1, 3, 5, 5)).item() == 0.0
