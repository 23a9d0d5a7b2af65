"""FGSM and PGD: the epsilon ball, the pixel range, the 1/255 grid, targets, stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vizcore.core.hooks import ModelState, count_hooks
from vizcore.data.images import load_sample
from vizcore.models.registry import get_spec, imagenet_categories, preprocess
from vizcore.optvis import adversarial

CATEGORIES = ("a", "b", "c", "d")
GOLDFISH = 1


def _image(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, 16, 16), generator=generator) / 255.0


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize("target", [None, 2])
@pytest.mark.parametrize("eps_units", [1, 4, 16])
@pytest.mark.parametrize("random_start", [False, True])
def test_stays_in_the_ball_the_range_and_the_grid(
    tiny_cnn, method, target, eps_units, random_start
):
    x = _image()
    x[..., :4, :] = 0.0  # pixels at the bounds must stay inside [0, 1]
    x[..., -4:, :] = 1.0
    eps = eps_units / 255
    if method == "fgsm":
        result = adversarial.fgsm(tiny_cnn, x, target=target, epsilon=eps, categories=CATEGORIES)
    else:
        result = adversarial.pgd(
            tiny_cnn, x, target=target, epsilon=eps, step_size=1 / 255, steps=8,
            random_start=random_start, categories=CATEGORIES, seed=3,
        )  # fmt: skip
    assert np.abs(result.perturbation).max() <= eps + 1e-6
    assert result.linf <= eps + 1e-6
    assert result.adversarial.min() >= 0.0 and result.adversarial.max() <= 1.0
    np.testing.assert_allclose(result.adversarial - result.original, result.perturbation)
    levels = result.adversarial * 255
    assert result.on_grid
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert result.magnified_perturbation.min() >= 0 and result.magnified_perturbation.max() <= 1


def test_off_grid_step_is_reported(tiny_cnn):
    result = adversarial.pgd(
        tiny_cnn, _image(), epsilon=0.01, step_size=0.003, steps=3, categories=CATEGORIES
    )
    assert not result.on_grid
    assert result.linf <= 0.01 + 1e-6


def test_pgd_moves_the_loss_the_right_way(tiny_cnn):
    x = _image(1)
    untargeted = adversarial.pgd(
        tiny_cnn, x, epsilon=32 / 255, step_size=2 / 255, steps=15, categories=CATEGORIES
    )
    assert untargeted.losses[-1] > untargeted.losses[0]  # away from the clean class
    target = int(untargeted.before.indices[-1])  # the least likely class
    targeted = adversarial.pgd(
        tiny_cnn, x, target=target, epsilon=32 / 255, step_size=2 / 255, steps=15,
        categories=CATEGORIES,
    )  # fmt: skip
    assert targeted.losses[-1] < targeted.losses[0]  # toward the target
    assert targeted.source == int(targeted.before.indices[0])


def test_random_start_is_reproducible(tiny_cnn):
    def run(seed: int) -> np.ndarray:
        return adversarial.pgd(
            tiny_cnn, _image(), epsilon=8 / 255, steps=2, random_start=True, seed=seed,
            categories=CATEGORIES,
        ).adversarial  # fmt: skip

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_stop_and_failure_leave_the_model_unchanged(tiny_cnn):
    tiny_cnn.train()
    state = ModelState.of(tiny_cnn)
    result = adversarial.pgd(
        tiny_cnn, _image(), steps=20, categories=CATEGORIES, on_step=lambda info: info.step < 4
    )
    assert result.stopped and result.steps_done == 4
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state

    def explode(_info: object) -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        adversarial.pgd(tiny_cnn, _image(), steps=5, categories=CATEGORIES, on_step=explode)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state
    assert tiny_cnn.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": 2.0}, "epsilon"),
        ({"steps": 0}, "steps"),
        ({"target": 9}, "outside"),
        ({"step_size": 0.0}, "step size"),
    ],
)
def test_bad_arguments(tiny_cnn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        adversarial.pgd(tiny_cnn, _image(), categories=CATEGORIES, **kwargs)


def test_targeted_attack_on_lite0_reaches_goldfish_at_4_over_255(lite0):
    x = preprocess(load_sample("chelsea"), get_spec("efficientnet_lite0"))
    state = ModelState.of(lite0)
    result = adversarial.pgd(
        lite0, x, target=GOLDFISH, epsilon=4 / 255, step_size=1 / 255, steps=10
    )
    assert result.before.labels[0] != "goldfish"
    assert result.success and result.after.labels[0] == "goldfish"
    assert result.after.indices[0] == GOLDFISH == imagenet_categories().index("goldfish")
    assert result.linf <= 4 / 255 + 1e-6
    assert count_hooks(lite0) == 0 and ModelState.of(lite0) == state


def test_untargeted_fgsm_on_lite0_changes_the_prediction(lite0):
    x = preprocess(load_sample("chelsea"), get_spec("efficientnet_lite0"))
    result = adversarial.fgsm(lite0, x, epsilon=8 / 255)
    assert result.method == "fgsm" and result.steps_done == 1
    assert result.after.probabilities[0] < 0.9 or result.success
    top_before = dict(zip(result.before.labels, result.before.probabilities, strict=True))
    top_after = dict(zip(result.after.labels, result.after.probabilities, strict=True))
    source = result.before.labels[0]
    assert top_after.get(source, 0.0) < top_before[source]


def test_least_likely_target_is_chosen_on_the_clean_image(tiny_cnn):
    x = _image(1)
    result = adversarial.pgd(
        tiny_cnn, x, target="least_likely", epsilon=32 / 255, step_size=2 / 255, steps=15,
        categories=CATEGORIES,
    )  # fmt: skip
    assert result.least_likely
    assert result.target == int(np.argmin(result.probs_before))
    assert result.target == int(result.before.indices[-1])  # 4 classes: the top-5 holds all
    assert result.losses[-1] < result.losses[0]  # toward it
    fgsm = adversarial.fgsm(tiny_cnn, x, target="least_likely", categories=CATEGORIES)
    assert fgsm.least_likely and fgsm.target == result.target
    with pytest.raises(ValueError, match="least_likely"):
        adversarial.pgd(tiny_cnn, x, target="most_likely", categories=CATEGORIES)


def test_standing_gives_rank_and_probability_of_any_class(tiny_cnn):
    result = adversarial.pgd(tiny_cnn, _image(2), target=3, steps=2, categories=CATEGORIES)
    for probs, adversarial_side in ((result.probs_after, True), (result.probs_before, False)):
        assert probs.shape == (4,)
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-5)
        order = np.argsort(-probs)
        for rank, cls in enumerate(order, start=1):
            assert result.standing(int(cls), adversarial=adversarial_side) == (
                rank,
                pytest.approx(float(probs[cls])),
            )
    top = result.after
    np.testing.assert_allclose(top.probabilities, result.probs_after[top.indices])
    with pytest.raises(ValueError, match="outside"):
        result.standing(4)


def test_each_step_reports_the_iterate_and_evaluate_rebuilds_a_stopped_run(tiny_cnn):
    x = _image(3)
    frames: list[np.ndarray] = []
    losses: list[float] = []

    def keep(info) -> bool:
        frames.append(info.frame)
        losses.append(info.loss)
        return info.step < 3

    stopped = adversarial.pgd(
        tiny_cnn, x, target=2, epsilon=8 / 255, steps=10, categories=CATEGORIES, on_step=keep
    )
    assert stopped.stopped and len(frames) == 3
    assert frames[-1].dtype == np.uint8 and frames[-1].shape == (16, 16, 3)
    np.testing.assert_array_equal(frames[-1], np.round(stopped.adversarial * 255))
    rebuilt = adversarial.evaluate(
        tiny_cnn, x, frames[-1], epsilon=8 / 255, target=2, categories=CATEGORIES, losses=losses
    )
    np.testing.assert_array_equal(rebuilt.adversarial, stopped.adversarial)
    np.testing.assert_allclose(rebuilt.probs_after, stopped.probs_after, rtol=1e-6)
    assert rebuilt.success == stopped.success and rebuilt.stopped
    assert rebuilt.steps_done == 3 and rebuilt.on_grid and rebuilt.target == 2
    # An image outside the ball is projected back into it.
    far = adversarial.evaluate(tiny_cnn, x, np.zeros((16, 16, 3), np.uint8), epsilon=2 / 255,
                               categories=CATEGORIES)  # fmt: skip
    assert far.linf <= 2 / 255 + 1e-6
    chosen = adversarial.evaluate(tiny_cnn, x, frames[-1], epsilon=8 / 255, target="least_likely",
                                  categories=CATEGORIES)  # fmt: skip
    assert chosen.least_likely and chosen.target == int(np.argmin(chosen.probs_before))


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((8, 8, 3), np.uint8), {}, "shape"),
        (np.zeros((16, 16), np.uint8), {}, r"\(H, W, 3\)"),
        (np.zeros((16, 16, 3), np.uint8), {"method": "cw"}, "method"),
        (np.zeros((16, 16, 3), np.uint8), {"target": "least likely"}, "least_likely"),
        (np.zeros((16, 16, 3), np.uint8), {"epsilon": 0.0}, "epsilon"),
    ],
)
def test_evaluate_bad_arguments(tiny_cnn, image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        adversarial.evaluate(
            tiny_cnn, _image(), image, categories=CATEGORIES, **{"epsilon": 4 / 255, **kwargs}
        )
