"""Hooks are always removed, model state is always restored, layers are validated."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from vizcore.core.cache import ActivationCache, layer_activations
from vizcore.core.hooks import (
    ModelState,
    capture_activations,
    count_hooks,
    forward_output_hooks,
    forward_until,
    inference_session,
    model_lock,
    modules_and_parameters,
    preserve_model_state,
)
from vizcore.core.layers import LayerNotFoundError, get_layer, list_layers


def test_get_layer_by_dotted_name(tiny_cnn):
    assert get_layer(tiny_cnn, "conv2") is tiny_cnn.conv2
    assert get_layer(tiny_cnn, "") is tiny_cnn


def test_unknown_layer_lists_close_matches(tiny_cnn):
    with pytest.raises(
        LayerNotFoundError, match=r"no layer named .conv3.\. Close matches: conv2, conv1"
    ):
        get_layer(tiny_cnn, "conv3")
    assert issubclass(LayerNotFoundError, ValueError)


def test_layer_name_is_never_evaluated(tiny_cnn):
    with pytest.raises(LayerNotFoundError):
        get_layer(tiny_cnn, "__class__.__init__")
    with pytest.raises(LayerNotFoundError):
        get_layer(tiny_cnn, 3)  # type: ignore[arg-type]


def test_list_layers_by_kind(tiny_cnn):
    assert list_layers(tiny_cnn, kind="conv") == ["conv1", "conv2"]
    assert list_layers(tiny_cnn, kind="activation") == ["relu1", "relu2"]
    assert "fc" in list_layers(tiny_cnn)
    with pytest.raises(ValueError, match="Unknown layer kind"):
        list_layers(tiny_cnn, kind="bogus")


def test_capture_returns_outputs_and_removes_hooks(tiny_cnn, tiny_input):
    assert count_hooks(tiny_cnn) == 0
    with capture_activations(tiny_cnn, ["conv1", "relu2"]) as acts:
        assert count_hooks(tiny_cnn) == 2
        tiny_cnn(tiny_input)
    assert count_hooks(tiny_cnn) == 0
    assert acts["conv1"].shape == (1, 6, 16, 16)
    assert acts["relu2"].shape == (1, 8, 8, 8)


def test_hooks_removed_when_body_raises(tiny_cnn, tiny_input):
    with pytest.raises(RuntimeError, match="boom"):
        with capture_activations(tiny_cnn, ["conv1", "conv2"]):
            tiny_cnn(tiny_input)
            raise RuntimeError("boom")
    assert count_hooks(tiny_cnn) == 0


def test_hooks_removed_when_a_layer_name_is_wrong(tiny_cnn):
    with pytest.raises(LayerNotFoundError), capture_activations(tiny_cnn, ["conv1", "nope"]):
        pass  # pragma: no cover
    assert count_hooks(tiny_cnn) == 0


def test_output_hooks_removed_on_error(tiny_cnn, tiny_input):
    def double(_m, _i, out):
        return out * 2

    with pytest.raises(ValueError):
        with forward_output_hooks([tiny_cnn.relu1, tiny_cnn.relu2], double):
            assert count_hooks(tiny_cnn) == 2
            raise ValueError
    assert count_hooks(tiny_cnn) == 0


def test_stop_early_skips_the_rest(tiny_cnn, tiny_input):
    with capture_activations(tiny_cnn, ["conv1"], stop_early=True) as acts:
        out = forward_until(tiny_cnn, tiny_input)
    assert out is None
    assert acts.calls("conv1") == 1
    assert count_hooks(tiny_cnn) == 0


def test_layer_that_runs_twice_is_ambiguous(tiny_cnn, tiny_input):
    with capture_activations(tiny_cnn, ["conv1"]) as acts:
        tiny_cnn(tiny_input)
        tiny_cnn(tiny_input)
        with pytest.raises(RuntimeError, match="ran 2 times"):
            acts["conv1"]
        acts.clear()
        tiny_cnn(tiny_input)
        assert acts["conv1"].shape[1] == 6


def test_gradient_via_autograd_grad_on_inplace_relu(tiny_cnn, tiny_input):
    """autograd.grad on a captured in-place ReLU output works (module backward hooks would not)."""
    with inference_session(tiny_cnn), capture_activations(tiny_cnn, ["relu2"]) as acts:
        x = tiny_input.clone().requires_grad_(True)
        logits = tiny_cnn(x)
        (grad,) = torch.autograd.grad(logits[0, 1], acts["relu2"])
    assert grad.shape == (1, 8, 8, 8)
    assert torch.isfinite(grad).all()


def test_inference_session_restores_flags_on_success_and_error(tiny_cnn):
    tiny_cnn.train()
    tiny_cnn.fc.weight.requires_grad_(False)
    before = ModelState.of(tiny_cnn)
    with inference_session(tiny_cnn):
        assert not tiny_cnn.training
        assert not any(p.requires_grad for p in tiny_cnn.parameters())
    assert ModelState.of(tiny_cnn) == before
    with pytest.raises(KeyError), inference_session(tiny_cnn):
        raise KeyError
    assert ModelState.of(tiny_cnn) == before
    assert tiny_cnn.training and tiny_cnn.conv1.weight.requires_grad


def test_preserve_model_state_undoes_changes(tiny_cnn):
    before = ModelState.of(tiny_cnn)
    with preserve_model_state(tiny_cnn):
        tiny_cnn.train()
        tiny_cnn.requires_grad_(False)
    assert ModelState.of(tiny_cnn) == before


def test_model_lock_serializes_threads(tiny_cnn):
    lock = model_lock(tiny_cnn)
    assert model_lock(tiny_cnn) is lock
    order: list[str] = []

    def worker() -> None:
        with inference_session(tiny_cnn):
            order.append("worker")

    with inference_session(tiny_cnn):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=0.2)
        assert thread.is_alive(), "the second session must wait for the lock"
        order.append("main")
    thread.join(timeout=5)
    assert order == ["main", "worker"]


def test_layer_activations_cache_hit_does_not_run_the_model(tiny_cnn, tiny_input):
    cache = ActivationCache(max_bytes=10_000_000)
    calls = []
    handle = tiny_cnn.conv1.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = layer_activations(
            tiny_cnn, tiny_input, layers=["conv1", "relu2"], cache_key=("tiny", "img"), cache=cache
        )
        second = layer_activations(
            tiny_cnn, tiny_input, layers=["conv1", "relu2"], cache_key=("tiny", "img"), cache=cache
        )
    finally:
        handle.remove()
    assert len(calls) == 1
    assert cache.hits == 2
    np.testing.assert_array_equal(first["relu2"], second["relu2"])
    assert not second["relu2"].flags.writeable


def test_activation_cache_is_bounded():
    cache = ActivationCache(max_bytes=1000)
    for i in range(10):
        cache.put(i, np.zeros(50, dtype=np.float32))  # 200 bytes each
    assert cache.nbytes <= 1000
    assert cache.get(0) is None and cache.get(9) is not None


def test_modules_and_parameters_match_the_public_generators(tiny_cnn):
    shared = torch.nn.Linear(2, 2)
    model = torch.nn.Sequential(tiny_cnn, torch.nn.Sequential(shared, torch.nn.ReLU()), shared)
    modules, params = modules_and_parameters(model)
    assert [id(m) for m in modules] == [id(m) for m in model.modules()]
    assert [id(p) for p in params] == [id(p) for p in model.parameters()]


def test_get_layer_follows_children_only(tiny_cnn):
    model = torch.nn.Sequential(tiny_cnn)
    assert get_layer(model, "0.conv2") is tiny_cnn.conv2
    for name in ("0.conv2.weight", "0.training", "0..conv2", "1"):
        with pytest.raises(LayerNotFoundError):
            get_layer(model, name)
