"""CAM decomposition: the listed channels and weights are the map's own weighted sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import TinyCNN
from vizcore import attribution
from vizcore.attribution.decomposition import DECOMPOSABLE, cam_parts

_METHOD_FN = {
    "cam": attribution.cam,
    "grad_cam": attribution.grad_cam,
    "grad_cam_plus_plus": attribution.grad_cam_plus_plus,
}


@pytest.mark.parametrize("method", DECOMPOSABLE)
def test_parts_rebuild_the_methods_own_map(
    method: str, tiny_cnn: TinyCNN, tiny_input: torch.Tensor
) -> None:
    parts = cam_parts(tiny_cnn, tiny_input, layer="relu2", method=method, target=1, top_k=8)
    reference = _METHOD_FN[method](tiny_cnn, tiny_input, layer="relu2", target=1)
    np.testing.assert_allclose(parts.total, reference.raw, rtol=1e-5, atol=1e-6)
    # All 8 channels listed: their weighted maps sum (through the ReLU) to the map.
    rebuilt = np.maximum(
        (parts.weights[parts.channels, None, None] * parts.activations).sum(0) + parts.bias, 0
    )
    np.testing.assert_allclose(rebuilt, reference.raw, rtol=1e-5, atol=1e-6)
    assert parts.top_share == pytest.approx(1.0)
    assert np.all(np.diff(parts.contributions) <= 0), "top contributions first"


def test_grad_cam_weights_are_pooled_gradients(tiny_cnn: TinyCNN, tiny_input: torch.Tensor) -> None:
    acts: dict[str, torch.Tensor] = {}
    handle = tiny_cnn.relu2.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        x = tiny_input.clone()
        logits = tiny_cnn(x)
        (grads,) = torch.autograd.grad(logits[0, 2], acts["a"])
    finally:
        handle.remove()
    parts = cam_parts(tiny_cnn, tiny_input, layer="relu2", method="grad_cam", target=2, top_k=3)
    np.testing.assert_allclose(parts.weights, grads[0].mean(dim=(1, 2)).numpy(), atol=1e-6)
    assert len(parts.channels) == 3 and parts.activations.shape[0] == 3
    assert 0.0 <= parts.top_share <= 1.0


def test_bad_options_are_refused(tiny_cnn: TinyCNN, tiny_input: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        cam_parts(tiny_cnn, tiny_input, layer="relu2", method="score_cam")
    with pytest.raises(ValueError, match="top_k"):
        cam_parts(tiny_cnn, tiny_input, layer="relu2", top_k=0)
    with pytest.raises(ValueError, match="CAM needs the layer"):
        cam_parts(tiny_cnn, tiny_input, layer="relu1", method="cam")


@pytest.mark.parametrize("key", ["efficientnet_lite0", "squeezenet1_1"])
def test_bundled_model_grad_cam_panel_numbers(key: str, request: pytest.FixtureRequest) -> None:
    from vizcore.data import images
    from vizcore.models.registry import get_spec, preprocess

    model: nn.Module = request.getfixturevalue("lite0" if key.startswith("eff") else "squeezenet")
    spec = get_spec(key)
    x = preprocess(images.load_sample("chelsea"), spec)
    layer = spec.preset("cam")[0]
    for method in DECOMPOSABLE:
        parts = cam_parts(model, x, layer=layer, method=method, top_k=6)
        reference = _METHOD_FN[method](model, x, layer=layer)
        assert parts.target == reference.target
        np.testing.assert_allclose(parts.total, reference.raw, rtol=1e-4, atol=1e-5)
        assert parts.contributions[0] > 0
