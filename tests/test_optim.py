"""The optimization runner: objectives, parameterizations, transforms, regularizers, optimize()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizcore import optvis
from vizcore.core.hooks import ModelState, count_hooks, model_lock
from vizcore.core.progress import StepInfo


class Relu6Net(nn.Module):
    """conv -> ReLU6 -> GAP -> linear, with a bias that saturates the ReLU6 at the start."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU6()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.bias.fill_(10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.gap(self.act(self.conv(x))).flatten(1))


def _objectives() -> list[optvis.Objective]:
    return [
        optvis.class_logit(1),
        optvis.channel("conv2", 3),
        optvis.neuron("conv2", 2),
        optvis.layer_l2("relu2"),
        optvis.class_logit(0) - 0.5 * optvis.channel("conv1", 0),
    ]


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("parameterization", ["pixel", "fourier"])
def test_objective_improves(tiny_cnn, index, parameterization):
    objective = _objectives()[index]
    generator = torch.Generator().manual_seed(0)
    make = optvis.pixel_image if parameterization == "pixel" else optvis.fourier_image
    init = {"init": "noise"} if parameterization == "pixel" else {}
    param = make((2, 3, 16, 16), generator=generator, **init)
    result = optvis.optimize(tiny_cnn, objective, param=param, steps=30, lr=0.05)
    assert result.steps_done == 30
    assert result.objective.shape == (30, 2)
    assert result.objective[-1].mean() > result.objective[0].mean() + 1e-3
    assert result.image.shape == (2, 16, 16, 3)
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0


@pytest.mark.parametrize("optimizer", ["sgd", "normalized", "lbfgs"])
def test_every_optimizer_improves(tiny_cnn, optimizer):
    param = optvis.pixel_image((1, 3, 16, 16), init="noise", generator=torch.Generator())
    lr = {"sgd": 0.05, "normalized": 0.01, "lbfgs": 0.1}[optimizer]
    result = optvis.optimize(
        tiny_cnn, optvis.class_logit(2), param=param, steps=20, lr=lr, optimizer=optimizer
    )
    assert result.objective[-1, 0] > result.objective[0, 0]


def test_feature_match_with_jittered_reference_converges(tiny_cnn, tiny_input):
    # The target comes from the equally shifted photo, so the photo itself scores exactly 0.
    param = optvis.pixel_image((1, 3, 16, 16), init=tiny_input)
    result = optvis.optimize(
        tiny_cnn,
        optvis.feature_match("conv1"),
        param=param,
        steps=3,
        lr=1e-9,
        optimizer="sgd",
        transforms=optvis.jitter(3),
        reference=tiny_input,
    )
    np.testing.assert_allclose(result.objective, 0.0, atol=1e-6)
    # From noise, the relative error falls.
    param = optvis.pixel_image((1, 3, 16, 16), init="noise", generator=torch.Generator())
    result = optvis.optimize(
        tiny_cnn,
        optvis.feature_match("conv1"),
        param=param,
        steps=40,
        lr=0.05,
        transforms=optvis.jitter(2),
        reference=tiny_input,
    )
    assert result.objective[-1, 0] > 0.5 * result.objective[0, 0]


def test_feature_match_fixed_target_and_missing_reference(tiny_cnn, tiny_input):
    with torch.no_grad():
        target = tiny_cnn.conv1(tiny_input)
    param = optvis.pixel_image((1, 3, 16, 16), init="noise", generator=torch.Generator())
    result = optvis.optimize(
        tiny_cnn, optvis.feature_match("conv1", target), param=param, steps=20, lr=0.05
    )
    assert result.objective[-1, 0] > result.objective[0, 0]
    with pytest.raises(ValueError, match="reference"):
        optvis.optimize(tiny_cnn, optvis.feature_match("conv1"), param=param, steps=1, lr=0.1)


def test_objective_algebra(tiny_cnn, tiny_input):
    a, b = optvis.class_logit(0), optvis.channel("conv2", 1)
    combined = 2 * a - b + (-a)
    assert combined.layers == frozenset({"conv2"})
    assert combined.needs_logits
    assert sum([a, b]).layers == frozenset({"conv2"})
    acts = {"conv2": torch.ones(1, 8, 8, 8) * 3}
    logits = torch.tensor([[5.0, 1.0, 0.0, 0.0]])
    assert float(combined(acts, logits)[0]) == pytest.approx(2 * 5 - 3 - 5)
    several = optvis.class_logit([0, 1])
    assert several({}, torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match="channels"):
        optvis.channel("conv2", 99)(acts, None)


def test_deterministic_under_seed(tiny_cnn):
    def run(seed: int) -> optvis.OptimizationResult:
        generator = torch.Generator().manual_seed(seed)
        param = optvis.fourier_image((1, 3, 16, 16), generator=generator)
        transforms = optvis.compose(
            optvis.pad(2), optvis.jitter(2), optvis.random_scale(0.9, 1.1), optvis.random_rotate(10)
        )
        return optvis.optimize(
            tiny_cnn, optvis.class_logit(1), param=param, steps=8, lr=0.05,
            transforms=transforms, seed=seed,
        )  # fmt: skip

    first, again, other = run(3), run(3), run(4)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.losses, again.losses)
    assert not np.array_equal(first.image, other.image)


def test_stop_mid_run_leaves_model_unchanged(tiny_cnn):
    tiny_cnn.train()
    state = ModelState.of(tiny_cnn)
    seen: list[StepInfo] = []

    def on_step(info: StepInfo) -> bool:
        seen.append(info)
        # Between steps the model is free: hooks live only inside a step's turn (issue 18.8).
        assert count_hooks(tiny_cnn) == 0 and not model_lock(tiny_cnn).locked()
        assert tiny_cnn.training  # eval mode only inside a turn, restored after each
        return info.step < 5

    param = optvis.pixel_image((1, 3, 16, 16), generator=torch.Generator())
    result = optvis.optimize(
        tiny_cnn, optvis.channel("conv2", 0), param=param, steps=50, lr=0.1,
        frame_every=2, on_step=on_step, relu6_passthrough=True,
    )  # fmt: skip
    assert result.stopped and result.steps_done == 5
    assert [info.step for info in seen] == [1, 2, 3, 4, 5]
    assert seen[1].frame is not None and seen[1].frame.dtype == np.uint8
    assert seen[0].frame is None
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state
    assert tiny_cnn.training


def test_exception_in_callback_cleans_up(tiny_cnn):
    state = ModelState.of(tiny_cnn)

    def on_step(info: StepInfo) -> bool:
        raise KeyboardInterrupt

    param = optvis.pixel_image((1, 3, 16, 16))
    with pytest.raises(KeyboardInterrupt):
        optvis.optimize(tiny_cnn, optvis.class_logit(0), param=param, steps=5, lr=0.1,
                       on_step=on_step)  # fmt: skip
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state
    assert all(p.requires_grad for p in tiny_cnn.parameters())


def test_relu6_passthrough_keeps_forward_and_passes_gradient():
    torch.manual_seed(0)
    net = Relu6Net().eval()
    x = torch.rand(1, 3, 8, 8)
    plain = net(x)
    with optvis.relu6_passthrough(net):
        assert count_hooks(net) == 1
        xg = x.clone().requires_grad_(True)
        out = net(xg)
        (grad,) = torch.autograd.grad(out[0, 1], xg)
    torch.testing.assert_close(out, plain)
    assert grad.abs().sum() > 0  # saturated ReLU6 would give exactly zero
    xg = x.clone().requires_grad_(True)
    (blocked,) = torch.autograd.grad(net(xg)[0, 1], xg)
    assert blocked.abs().sum() == 0
    assert count_hooks(net) == 0
    assert isinstance(net.act, nn.ReLU6)


def test_clip_small_norm_zeroes_exactly_the_small_pixels():
    pixels = torch.zeros(1, 3, 2, 5)
    norms = torch.arange(1.0, 11.0).view(1, 2, 5)  # pixel norms 1..10
    pixels[:, 0] = norms
    out = optvis.clip_small_norm(pixels, 30)  # 30th percentile of 1..10 = 3.7
    kept = out.norm(dim=1)[0].flatten()
    assert kept.tolist() == [0, 0, 0, 4, 5, 6, 7, 8, 9, 10]
    assert optvis.clip_small_norm(pixels, 0) is pixels


def test_clip_small_contribution_uses_x_times_grad():
    pixels = torch.ones(2, 3, 1, 4)
    grad = torch.zeros(2, 3, 1, 4)
    grad[0, 0, 0] = torch.tensor([4.0, -1.0, 3.0, -2.0])  # |contribution| 4, 1, 3, 2
    grad[1, 1, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = optvis.clip_small_contribution(pixels, grad, 50)  # median per image: 2.5
    assert out[0, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out[1, 2, 0].tolist() == [0.0, 0.0, 1.0, 1.0]  # per image, all channels
    with pytest.raises(ValueError, match="percentile"):
        optvis.clip_small_contribution(pixels, grad, 101)


def test_regularizers_in_the_runner(tiny_cnn):
    regs = optvis.PixelRegularizers(norm_percentile=50)
    param = optvis.pixel_image((1, 3, 16, 16), init="noise", generator=torch.Generator())
    result = optvis.optimize(tiny_cnn, optvis.class_logit(0), param=param, steps=3, lr=0.05,
                            regularizers=regs)  # fmt: skip
    centred = result.image[0] - 0.5
    zero = np.linalg.norm(centred, axis=-1) < 1e-6
    assert zero.mean() == pytest.approx(0.5, abs=0.01)
    blurred = optvis.PixelRegularizers(blur_sigma=1.0, blur_every=1)
    x = torch.zeros(1, 3, 9, 9)
    x[..., 4, 4] = 1.0
    out = blurred.apply(x, None, 1)
    assert out[0, 0, 4, 4] < 0.2 and out.sum() == pytest.approx(3.0, rel=1e-4)
    decayed = optvis.PixelRegularizers(l2_decay=0.1).apply(torch.ones(1, 3, 2, 2), None, 1)
    assert torch.allclose(decayed, torch.full((1, 3, 2, 2), 0.9))
    with pytest.raises(ValueError, match="pixel parameterization"):
        optvis.optimize(tiny_cnn, optvis.class_logit(0),
                       param=optvis.fourier_image((1, 3, 16, 16)), steps=1, lr=0.1,
                       regularizers=regs)  # fmt: skip


def test_l2_and_tv_penalties_shrink_the_image(tiny_cnn):
    def run(**kwargs) -> np.ndarray:
        param = optvis.pixel_image((1, 3, 16, 16), init="noise", generator=torch.Generator())
        return optvis.optimize(
            tiny_cnn, optvis.class_logit(0), param=param, steps=30, lr=0.02, **kwargs
        ).image[0]

    free, l2 = run(), run(l2_weight=5.0)
    assert np.abs(l2 - 0.5).sum() < np.abs(free - 0.5).sum()
    tv = run(tv_weight=50.0)
    assert np.abs(np.diff(tv, axis=0)).mean() < np.abs(np.diff(free, axis=0)).mean()


def test_parameterizations_are_leaves_in_range():
    for params, image_fn in (
        optvis.pixel_image((2, 3, 8, 10), init="noise", generator=torch.Generator()),
        optvis.fourier_image((2, 3, 8, 11), generator=torch.Generator()),
    ):
        assert all(p.is_leaf and p.is_contiguous() and p.requires_grad for p in params)
        image = image_fn().detach()
        assert image.shape == (2, 3, 8, 10) or image.shape == (2, 3, 8, 11)
        assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_transforms_keep_shape_and_validate():
    x = torch.rand(2, 3, 12, 12)
    generator = torch.Generator().manual_seed(0)
    for transform in (
        optvis.jitter(3),
        optvis.random_scale(0.75, 1.25),
        optvis.random_rotate(10),
        optvis.random_affine((0.75, 1.25), 10, translate=2),
    ):
        assert transform(x, generator).shape == x.shape
    assert optvis.pad(4)(x, generator).shape == (2, 3, 20, 20)
    rolled = optvis.jitter(2)(x, torch.Generator().manual_seed(5))
    assert sorted(rolled.flatten().tolist()) == sorted(x.flatten().tolist())
    with pytest.raises(ValueError):
        optvis.random_scale(1.2, 0.8)
    with pytest.raises(ValueError):
        optvis.jitter(-1)
    identity = optvis.random_affine()(x, generator)
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 0}, "steps"), ({"lr": 0.0}, "lr"), ({"optimizer": "rmsprop"}, "optimizer")],
)
def test_bad_arguments(tiny_cnn, kwargs, match):
    base = {"steps": 2, "lr": 0.1}
    with pytest.raises(ValueError, match=match):
        optvis.optimize(tiny_cnn, optvis.class_logit(0), param=optvis.pixel_image((1, 3, 8, 8)),
                       **(base | kwargs))  # fmt: skip


def test_fft_size_is_the_next_5_smooth_length() -> None:
    from vizcore.optvis import fft_size

    assert [fft_size(n) for n in (1, 7, 16, 97, 227, 259)] == [1, 8, 16, 100, 240, 270]
    with pytest.raises(ValueError):
        fft_size(0)
