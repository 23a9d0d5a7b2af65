"""Attribution methods: hand-computed maps, reference cross-checks, traps, state and errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from torch import nn

from tests.conftest import TinyCNN
from vizcore import attribution
from vizcore.attribution import (
    AttributionMap,
    FunctionalActivationError,
    cam,
    deconvnet,
    grad_cam,
    grad_cam_plus_plus,
    guided_backprop,
    guided_grad_cam,
    integrated_gradients,
    occlusion,
    resolve_target,
    saliency,
    score_cam,
    smoothgrad,
)
from vizcore.core.blur import gaussian_blur
from vizcore.core.hooks import ModelState, count_hooks
from vizcore.core.layers import LayerNotFoundError

# --------------------------------------------------------------------------------------------
# A hand-weighted net with hand-computed CAM and Grad-CAM maps


class HandNet(nn.Module):
    """1x1 conv copying R and G into two channels, ReLU, GAP, linear ``W = [[1, 2], [3, -1]]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.relu(self.conv(x))).flatten(1))


def _hand_input() -> torch.Tensor:
    red = [[1.0, 0.0], [0.0, 0.5]]
    green = [[0.0, 1.0], [0.25, 0.0]]
    blue = [[0.3, 0.3], [0.3, 0.3]]
    return torch.tensor([red, green, blue]).unsqueeze(0)


def test_cam_on_hand_weighted_net():
    net, x = HandNet().eval(), _hand_input()
    # class 0: relu(1 R + 2 G); class 1: relu(3 R - G)
    np.testing.assert_allclose(cam(net, x, target=0, layer="relu").raw, [[1, 2], [0.5, 0.5]])
    np.testing.assert_allclose(cam(net, x, target=1, layer="relu").raw, [[3, 0], [0, 1.5]])


def test_grad_cam_on_hand_weighted_net():
    net, x = HandNet().eval(), _hand_input()
    # After the ReLU, dS/dA_k = W[c, k] / 4 everywhere (GAP over 2x2): Grad-CAM = CAM / 4.
    np.testing.assert_allclose(
        grad_cam(net, x, target=0, layer="relu").raw, [[0.25, 0.5], [0.125, 0.125]], rtol=1e-6
    )
    # Before the ReLU, each channel is positive on 2 of 4 pixels: weights W / 8, Grad-CAM = CAM / 8.
    np.testing.assert_allclose(
        grad_cam(net, x, target=1, layer="conv").raw, [[3 / 8, 0], [0, 1.5 / 8]], rtol=1e-6
    )
    # The logits are (mean(R + 2G), mean(3R - G)) = (1.0, 0.8125): top-1 is class 0.
    assert grad_cam(net, x, layer="relu").target == 0


def test_a_cam_whose_weighted_sum_is_negative_everywhere_is_blank():
    net = HandNet().eval()
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1] = torch.tensor([[1.0, 0.5], [0.25, 0.0]])  # G only: class 1's 3R - G <= 0
    blank = grad_cam(net, x, target=1, layer="relu")
    assert blank.is_blank and not blank.map.any()
    assert cam(net, x, target=1, layer="relu").is_blank
    assert not grad_cam(net, x, target=0, layer="relu").is_blank  # 2G > 0


def test_is_blank_means_constant():
    def result(values: np.ndarray) -> AttributionMap:
        return AttributionMap("saliency", 0, values.astype(np.float32), values, None, 0.0)

    assert result(np.zeros((4, 4))).is_blank
    assert result(np.full((4, 4), 0.5)).is_blank
    ramp = np.zeros((4, 4))
    ramp[1, 2] = 1e-6
    assert not result(ramp).is_blank


# --------------------------------------------------------------------------------------------
# Targets and bad inputs


def test_resolve_target():
    logits = torch.tensor([[0.1, 3.0, -1.0]])
    assert resolve_target(logits, None).index == 1
    assert resolve_target(logits, np.int64(2)).index == 2
    custom = resolve_target(logits, lambda out: out[:, 0] - out[:, 1])
    assert custom.index is None
    assert torch.allclose(custom.score(logits), torch.tensor([-2.9]))
    for bad in (3, -1):
        with pytest.raises(
            ValueError, match=rf"Class {bad} is out of range: .*3 classes, numbered 0 to 2"
        ):
            resolve_target(logits, bad)
    with pytest.raises(ValueError, match="class index or a callable"):
        resolve_target(logits, "cat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one score per image"):
        resolve_target(logits, lambda out: out).score(logits)


@pytest.mark.parametrize("target", [1000, -1])
def test_class_out_of_range_on_real_model(lite0, target):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"out of range: this model has 1000 classes"):
        grad_cam(lite0, x, target=target, layer="head.bn")


def test_bad_inputs_have_clear_messages(tiny_cnn, tiny_input):
    with pytest.raises(LayerNotFoundError, match=r"no layer named 'conv3'.*Close matches"):
        grad_cam(tiny_cnn, tiny_input, layer="conv3")
    with pytest.raises(ValueError, match=r"window \(32 px\) is larger than the image \(16x16"):
        occlusion(tiny_cnn, tiny_input, window=32)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        occlusion(tiny_cnn, tiny_input, window=4, stride=0)
    with pytest.raises(ValueError, match="Unknown fill 'pink'"):
        occlusion(tiny_cnn, tiny_input, window=4, fill="pink")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape \(1, 3, H, W\)"):
        saliency(tiny_cnn, tiny_input[0])
    with pytest.raises(ValueError, match="CAM methods need a convolutional layer"):
        grad_cam(tiny_cnn, tiny_input, layer="fc")
    with pytest.raises(ValueError, match="use Grad-CAM"):
        cam(tiny_cnn, tiny_input, layer="conv1")


# --------------------------------------------------------------------------------------------
# Cross-checks against captum


@pytest.fixture
def relu_net() -> TinyCNN:
    torch.manual_seed(3)
    net = TinyCNN(num_classes=5, inplace=False).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.bn2.running_mean.uniform_(-0.2, 0.2)
        net.bn2.running_var.uniform_(0.5, 1.5)
    return net


def test_saliency_matches_captum(relu_net, tiny_input):
    from captum.attr import Saliency

    ours = saliency(relu_net, tiny_input, target=2)
    ref = Saliency(copy.deepcopy(relu_net)).attribute(tiny_input, target=2, abs=True)[0]
    np.testing.assert_allclose(np.abs(ours.raw), ref.detach().numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(ours.map, ref.amax(0).numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    ("ours", "name"), [(guided_backprop, "GuidedBackprop"), (deconvnet, "Deconvolution")]
)
def test_guided_and_deconvnet_match_captum_on_relu_nets(relu_net, tiny_input, ours, name):
    import captum.attr

    ref = getattr(captum.attr, name)(copy.deepcopy(relu_net)).attribute(tiny_input, target=1)
    result = ours(relu_net, tiny_input, target=1)
    np.testing.assert_allclose(result.raw, ref[0].detach().numpy(), rtol=1e-5, atol=1e-7)
    # and they are not the plain gradient
    assert not np.allclose(result.raw, saliency(relu_net, tiny_input, target=1).raw, atol=1e-7)


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_in_place_relu_gives_the_same_map(relu_net, tiny_input, method):
    inplace = TinyCNN(num_classes=5, inplace=True).eval()
    inplace.load_state_dict(relu_net.state_dict())
    np.testing.assert_allclose(
        method(inplace, tiny_input, target=1).raw,
        method(relu_net, tiny_input, target=1).raw,
        rtol=1e-6,
        atol=1e-9,
    )


@pytest.mark.parametrize(
    ("window", "stride", "fill", "baseline"), [(4, 2, "gray", 0.5), (5, 3, "zero", 0.0)]
)
def test_occlusion_matches_captum(relu_net, tiny_input, window, stride, fill, baseline):
    from captum.attr import Occlusion

    def prob(inp: torch.Tensor) -> torch.Tensor:
        return torch.softmax(relu_net(inp), dim=1)

    ref = Occlusion(prob).attribute(
        tiny_input,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        baselines=baseline,
        target=3,
    )[0]
    ours = occlusion(relu_net, tiny_input, target=3, window=window, stride=stride, fill=fill)
    np.testing.assert_allclose(ours.map, ref[0].detach().numpy(), rtol=1e-4, atol=1e-7)
    rows = -(-(16 - window) // stride) + 1
    assert ours.raw.shape == (rows, rows)


def test_layer_grad_cam_and_guided_grad_cam_match_captum(relu_net, tiny_input):
    from captum.attr import GuidedGradCam, LayerGradCam

    net = copy.deepcopy(relu_net)
    ref = LayerGradCam(net, net.conv2).attribute(tiny_input, target=4, relu_attributions=True)
    np.testing.assert_allclose(
        grad_cam(relu_net, tiny_input, target=4, layer="conv2").raw,
        ref[0, 0].detach().numpy(),
        rtol=1e-5,
        atol=1e-8,
    )
    ref = GuidedGradCam(net, net.relu2).attribute(tiny_input, target=4, interpolate_mode="bilinear")
    ours = guided_grad_cam(relu_net, tiny_input, target=4, layer="relu2")
    np.testing.assert_allclose(ours.raw, ref[0].detach().numpy(), rtol=1e-4, atol=1e-9)


def test_integrated_gradients_matches_captum(relu_net, tiny_input):
    from captum.attr import IntegratedGradients

    ref, delta = IntegratedGradients(copy.deepcopy(relu_net)).attribute(
        tiny_input,
        baselines=0.0,
        target=0,
        n_steps=50,
        method="gausslegendre",
        return_convergence_delta=True,
    )
    ours = integrated_gradients(relu_net, tiny_input, target=0, steps=50)
    np.testing.assert_allclose(ours.raw, ref[0].detach().numpy(), rtol=1e-4, atol=1e-7)
    assert ours.info["delta"] == pytest.approx(float(delta), abs=1e-5)


def test_squeezenet_matches_captum(squeezenet):
    from captum.attr import Deconvolution, GuidedBackprop, LayerGradCam

    x = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(5))
    net = copy.deepcopy(squeezenet).requires_grad_(True)  # pytorch-grad-cam needs it
    for ours, ref_cls in ((guided_backprop, GuidedBackprop), (deconvnet, Deconvolution)):
        ref = ref_cls(net).attribute(x, target=281)[0].detach().numpy()
        got = ours(squeezenet, x, target=281).raw
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * np.abs(ref).max())
    ref = LayerGradCam(net, net.fire9).attribute(x, target=281, relu_attributions=True)[0, 0]
    got = grad_cam(squeezenet, x, target=281, layer="fire9").raw
    np.testing.assert_allclose(
        got, ref.detach().numpy(), rtol=1e-4, atol=1e-5 * float(ref.abs().max())
    )


# --------------------------------------------------------------------------------------------
# Cross-checks against pytorch-grad-cam


def _pgc_style(raw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pytorch-grad-cam's post-processing: min-max scale, then cv2 bilinear resize."""
    import cv2

    def scale(img: np.ndarray) -> np.ndarray:
        img = img - img.min()
        return img / (1e-7 + img.max())

    # scaled before and after the resize, as BaseCAM does (aggregate_multi_layers rescales)
    return scale(cv2.resize(np.float32(scale(raw)), size[::-1]))


def _pgc(
    cls_name: str, net: nn.Module, layer: nn.Module, x: torch.Tensor, target: int
) -> np.ndarray:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with getattr(pytorch_grad_cam, cls_name)(model=net, target_layers=[layer]) as method:
        return method(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]


@pytest.mark.parametrize(
    ("ours", "cls_name"),
    [(grad_cam, "GradCAM"), (grad_cam_plus_plus, "GradCAMPlusPlus"), (score_cam, "ScoreCAM")],
)
def test_cam_variants_match_pytorch_grad_cam(relu_net, tiny_input, ours, cls_name):
    net = copy.deepcopy(relu_net)
    ref = _pgc(cls_name, net, net.relu2, tiny_input, 2)
    got = ours(relu_net, tiny_input, target=2, layer="relu2")
    np.testing.assert_allclose(_pgc_style(got.raw, (16, 16)), ref, atol=1e-4)


@pytest.mark.parametrize(
    ("ours", "cls_name"), [(grad_cam, "GradCAM"), (grad_cam_plus_plus, "GradCAMPlusPlus")]
)
def test_cam_variants_match_pytorch_grad_cam_on_squeezenet(squeezenet, ours, cls_name):
    x = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(6))
    net = copy.deepcopy(squeezenet).requires_grad_(True)  # pytorch-grad-cam needs it
    ref = _pgc(cls_name, net, net.fire9, x, 281)
    got = ours(squeezenet, x, target=281, layer="fire9")
    np.testing.assert_allclose(_pgc_style(got.raw, (227, 227)), ref, atol=1e-3)


# --------------------------------------------------------------------------------------------
# CAM heads


def test_cam_is_grad_cam_times_area_on_a_gap_linear_head(lite0):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    c = cam(lite0, x, layer="head.act")
    g = grad_cam(lite0, x, layer="head.act")
    assert c.target == g.target and c.raw.shape == (7, 7)
    np.testing.assert_allclose(c.raw, g.raw * 49, rtol=1e-3, atol=1e-4 * c.raw.max())
    with pytest.raises(ValueError, match=r"that is 'head.act', not 'head.bn'.*use Grad-CAM"):
        cam(lite0, x, layer="head.bn")


def test_squeezenet_cam_is_the_conv10_class_channel(squeezenet):
    x = torch.rand(1, 3, 227, 227, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        feats = {}
        handle = squeezenet.conv10.register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
        try:
            squeezenet(x)
        finally:
            handle.remove()
    expected = torch.relu(feats["o"][0, 281]).numpy()
    for layer in ("fire9", "relu10"):
        got = cam(squeezenet, x, target=281, layer=layer)
        np.testing.assert_allclose(got.raw, expected, rtol=1e-4, atol=1e-4)
        assert got.map.shape == (227, 227)


# --------------------------------------------------------------------------------------------
# The ReLU6 trap and functional activations


def test_guided_backprop_handles_relu6_on_lite0(lite0):
    from captum.attr import GuidedBackprop

    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    plain = saliency(lite0, x).raw
    guided = guided_backprop(lite0, x).raw
    assert not np.allclose(guided, plain, rtol=1e-3, atol=1e-3 * np.abs(plain).max())
    # captum only hooks nn.ReLU: on Lite0 (nn.ReLU6) its "guided backprop" is the gradient.
    ref = GuidedBackprop(copy.deepcopy(lite0)).attribute(
        x, target=int(guided_backprop(lite0, x).target)
    )
    np.testing.assert_allclose(
        ref[0].detach().numpy(), plain, rtol=1e-3, atol=1e-4 * np.abs(plain).max()
    )


class FunctionalReluNet(nn.Module):
    """Has an nn.ReLU module, but also calls F.relu inside forward (like torchvision GoogLeNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class NoActivationModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet, guided_grad_cam])
def test_functional_relu_raises_a_clear_error(tiny_input, method):
    net = FunctionalReluNet().eval()
    kwargs = {"layer": "conv2"} if method is guided_grad_cam else {}
    for _ in range(2):  # the first call detects, the second uses the cached verdict
        with pytest.raises(FunctionalActivationError, match=r"function calls \(relu x1\)"):
            method(net, tiny_input, **kwargs)
        assert count_hooks(net) == 0
    kwargs = {"layer": "conv"} if method is guided_grad_cam else {}
    with pytest.raises(FunctionalActivationError, match=r"no nn\.ReLU or nn\.ReLU6 modules"):
        method(NoActivationModules().eval(), tiny_input, **kwargs)
    # other methods still work on such models
    assert saliency(net, tiny_input).map.shape == (16, 16)


# --------------------------------------------------------------------------------------------
# Shared-model safety: hooks and flags, on success and on failure


def _all_calls(layer: str = "relu2") -> list[tuple[str, object, dict]]:
    return [
        ("occlusion", occlusion, {"window": 4, "stride": 4}),
        ("saliency", saliency, {}),
        ("smoothgrad", smoothgrad, {"samples": 2}),
        ("deconvnet", deconvnet, {}),
        ("guided_backprop", guided_backprop, {}),
        ("cam", cam, {"layer": layer}),
        ("grad_cam", grad_cam, {"layer": layer}),
        ("grad_cam_plus_plus", grad_cam_plus_plus, {"layer": layer}),
        ("score_cam", score_cam, {"layer": layer}),
        ("guided_grad_cam", guided_grad_cam, {"layer": layer}),
        ("integrated_gradients", integrated_gradients, {"steps": 4}),
    ]


@pytest.mark.parametrize(("name", "fn", "kwargs"), _all_calls(), ids=[c[0] for c in _all_calls()])
def test_model_is_left_unchanged_on_success_and_failure(tiny_cnn, tiny_input, name, fn, kwargs):
    tiny_cnn.train()  # a state the session must restore, not merely "eval"
    tiny_cnn.fc.weight.requires_grad_(False)
    before = ModelState.of(tiny_cnn)
    params = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    result = fn(tiny_cnn, tiny_input, **kwargs)
    assert result.method.startswith(name) and result.map.shape == (16, 16)
    assert result.map.dtype == np.float32 and np.isfinite(result.map).all()
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == before

    def boom(_logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("forced failure")

    with pytest.raises((RuntimeError, ValueError), match=r"forced failure|explains one class"):
        fn(tiny_cnn, tiny_input, target=boom, **kwargs, **_explode(name))
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == before
    for key, value in tiny_cnn.state_dict().items():
        assert torch.equal(value, params[key]), key


def _explode(name: str) -> dict:
    if name in {"occlusion", "score_cam", "integrated_gradients", "smoothgrad"}:

        def on_step(_info: object) -> bool:
            raise RuntimeError("forced failure")

        return {"on_step": on_step}
    return {}


class ExplodingCNN(TinyCNN):
    """Raises after its second ReLU has run (hooks are live at that moment)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.relu2(self.bn2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
        raise RuntimeError("forced failure")


@pytest.mark.parametrize(("name", "fn", "kwargs"), _all_calls(), ids=[c[0] for c in _all_calls()])
def test_hooks_are_removed_when_the_forward_raises(name, fn, kwargs, tiny_input):
    net = ExplodingCNN().eval()
    before = ModelState.of(net)
    with pytest.raises(RuntimeError, match="forced failure"):
        fn(net, tiny_input, **kwargs)
    assert count_hooks(net) == 0 and ModelState.of(net) == before


# --------------------------------------------------------------------------------------------
# Properties: batching, stopping, seeds, completeness


def test_occlusion_batched_equals_unbatched_and_can_stop(relu_net, tiny_input):
    one = occlusion(relu_net, tiny_input, window=4, stride=2, batch_size=1)
    many = occlusion(relu_net, tiny_input, window=4, stride=2, batch_size=16)
    np.testing.assert_allclose(one.map, many.map, rtol=1e-5, atol=1e-7)
    seen = []
    part = occlusion(
        relu_net,
        tiny_input,
        window=4,
        stride=2,
        batch_size=16,
        on_step=lambda i: seen.append(i) or False,
    )
    assert part.stopped and part.info["done"] == 16 and seen[0].total == 49
    assert not many.stopped and many.info["done"] == 49


def test_occlusion_fills(relu_net, tiny_input):
    maps = {
        fill: occlusion(relu_net, tiny_input, window=4, stride=4, fill=fill).map
        for fill in attribution.FILLS
    }
    assert len({m.tobytes() for m in maps.values()}) == 4
    blurred = attribution.fill_image(tiny_input, "blur", window=8)
    assert blurred.shape == tiny_input.shape and blurred.std() < tiny_input.std()


def test_the_blur_fill_is_the_one_gaussian_blur(tiny_input):
    # One blur in the library (issue 14): the fill is gaussian_blur at sigma window / 4, also
    # where 3 sigma is not a whole number of pixels (window 10, 30).
    for window in (8, 10, 30):
        np.testing.assert_array_equal(
            attribution.fill_image(tiny_input, "blur", window=window).numpy(),
            gaussian_blur(tiny_input, window / 4).numpy(),
        )


def test_smoothgrad_is_seeded_and_reduces_to_saliency(relu_net, tiny_input):
    a = smoothgrad(relu_net, tiny_input, samples=3, seed=1)
    b = smoothgrad(relu_net, tiny_input, samples=3, seed=1)
    c = smoothgrad(relu_net, tiny_input, samples=3, seed=2)
    np.testing.assert_array_equal(a.map, b.map)
    assert not np.array_equal(a.map, c.map)
    zero = smoothgrad(relu_net, tiny_input, samples=2, sigma=0.0)
    np.testing.assert_allclose(zero.map, saliency(relu_net, tiny_input).map, rtol=1e-6)
    guided = smoothgrad(relu_net, tiny_input, method=guided_backprop, samples=2)
    assert guided.method == "smoothgrad_guided_backprop"


def test_integrated_gradients_completeness(relu_net, tiny_input):
    result = integrated_gradients(relu_net, tiny_input, steps=32)
    assert abs(result.info["delta"]) < 1e-3
    trapezoid = integrated_gradients(relu_net, tiny_input, steps=256, method="riemann_trapezoid")
    # same integral by another rule (ReLU kinks make pointwise agreement slow; compare in L1)
    assert np.abs(trapezoid.raw - result.raw).sum() < 0.05 * np.abs(result.raw).sum()
    assert abs(trapezoid.info["delta"]) < 1e-3


def test_registry_lists_every_method():
    assert set(attribution.DEFAULT_METHODS) <= set(attribution.METHODS)
    assert {info.key for info in attribution.METHODS.values()} >= {
        "occlusion",
        "saliency",
        "deconvnet",
        "guided_backprop",
        "cam",
        "grad_cam",
        "guided_grad_cam",
        "grad_cam_plus_plus",
        "score_cam",
        "integrated_gradients",
    }


# --------------------------------------------------------------------------------------------
# Localization on the real model: a cat pasted on a gray background


CAT_BOX = (100, 110, 210, 202)  # left, top, right, bottom in the 224 x 224 composite


@pytest.fixture(scope="module")
def cat_composite() -> torch.Tensor:
    from vizcore.data.images import load_sample, to_tensor01

    left, top, right, bottom = CAT_BOX
    cat = load_sample("chelsea").crop((30, 0, 390, 300))
    cat = cat.resize((right - left, bottom - top), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    canvas.paste(cat, (left, top))
    return to_tensor01(canvas)


def _peak_in_box(attribution_map: np.ndarray) -> bool:
    y, x = np.unravel_index(int(np.argmax(attribution_map)), attribution_map.shape)
    left, top, right, bottom = CAT_BOX
    return left <= x < right and top <= y < bottom


def test_grad_cam_and_occlusion_find_the_pasted_cat(lite0, cat_composite):
    gc = grad_cam(lite0, cat_composite, layer="head.bn")
    assert 281 <= gc.target <= 285, "the composite should be classified as a cat"
    assert _peak_in_box(gc.map)
    occ = occlusion(lite0, cat_composite, window=48, stride=24)
    assert occ.target == gc.target and occ.info["positions"] == 81
    assert _peak_in_box(occ.map)


def test_grad_cam_leaves_the_grad_mode_as_it_found_it(tiny_cnn, tiny_input):
    """Grad-CAM switches autograd on only from the CAM layer; the caller's mode comes back."""
    grad_cam(tiny_cnn, tiny_input, layer="conv2")
    assert torch.is_grad_enabled()
    with torch.no_grad():
        result = grad_cam(tiny_cnn, tiny_input, layer="conv2")
        assert not torch.is_grad_enabled()
    assert result.map.shape == (16, 16)
    with pytest.raises(ValueError):
        grad_cam(tiny_cnn, tiny_input, layer="conv2", target=99)
    assert torch.is_grad_enabled()


class GatedNet(nn.Module):
    """``fc(gap(conv2(h) * h))`` with ``h = relu(conv1(x))``: the gate saves ``h`` for backward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv1(x))
        return self.fc((self.conv2(h) * h).mean(dim=(2, 3)))


def test_grad_cam_when_a_tensor_from_before_the_layer_is_saved_after_it(tiny_input):
    """Grad-CAM runs the early layers in inference mode; a gate that must save an early tensor
    for backward cannot take an inference tensor, so it falls back and still matches autograd."""
    net = GatedNet().eval()
    result = grad_cam(net, tiny_input, target=2, layer="conv2")
    acts = {}
    handle = net.conv2.register_forward_hook(lambda _m, _i, out: acts.setdefault("a", out))
    try:
        score = net(tiny_input)[0, 2]
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(score, acts["a"])
    expected = torch.relu((acts["a"][0] * grads[0].mean(dim=(1, 2))[:, None, None]).sum(0))
    np.testing.assert_allclose(result.raw, expected.detach().numpy(), rtol=1e-5, atol=1e-7)
    assert count_hooks(net) == 0 and torch.is_grad_enabled()
    assert not torch.is_inference_mode_enabled()
    assert attribution.cams._NO_INFERENCE_PREFIX[net] == {"conv2"}  # the next call goes straight on
    np.testing.assert_allclose(grad_cam(net, tiny_input, target=2, layer="conv2").raw, result.raw)


def test_registry_is_keyed_by_method_id_and_labels_live_in_the_app():
    """Issue 14: no library module names a UI label; vizui maps every id to one label."""
    from vizui import method_labels

    assert all(key == info.key for key, info in attribution.METHODS.items())
    assert all(key.isidentifier() and key.islower() for key in attribution.METHODS)
    assert set(method_labels.LABELS) == set(attribution.METHODS)
    assert list(method_labels.METHODS.values()) == list(attribution.METHODS.values())
    assert method_labels.DEFAULT_METHODS[:2] == ("Occlusion", "Saliency")
