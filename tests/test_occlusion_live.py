"""Coarse-to-fine occlusion (occlusion_progressive) and the per-method cost functions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from tests.conftest import TinyCNN
from vizcore import attribution
from vizcore.attribution import (
    Cost,
    PassTimes,
    occlusion,
    occlusion_grid,
    occlusion_progressive,
    occlusion_schedule,
)
from vizcore.attribution.faithfulness import deletion_insertion_cost, randomization_check_cost
from vizcore.core.hooks import ModelState, count_hooks, model_lock
from vizui import method_labels


@pytest.fixture
def relu_net() -> TinyCNN:
    torch.manual_seed(3)
    net = TinyCNN(num_classes=5, inplace=False).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        net.bn2.running_mean.uniform_(-0.2, 0.2)
        net.bn2.running_var.uniform_(0.5, 1.5)
    return net


@pytest.mark.parametrize(
    ("size", "window", "stride"),
    [((16, 16), 4, 2), ((16, 16), 4, 1), ((16, 16), 2, 4), ((224, 224), 32, 8), ((224, 224), 8, 4)],
)
def test_schedule_levels_partition_the_grid_and_start_small(size, window, stride):
    rows, cols = occlusion_grid(size, window, stride)
    levels = occlusion_schedule(size, window=window, stride=stride, first_positions=64)
    flat = [p for level in levels for p in level]
    assert sorted(flat) == list(range(rows * cols))  # every position once
    assert len(levels[0]) <= 64 or len(levels) == 1
    # each level is finer: a coarse level keeps the grid's corners, so the border is covered
    corners = {0, cols - 1, (rows - 1) * cols, rows * cols - 1}
    assert corners <= set(levels[0])


def test_schedule_at_224_first_level_is_small():
    levels = occlusion_schedule((224, 224), window=32, stride=8)
    assert [len(level) for level in levels] == [49, 169 - 49, 625 - 169]
    with pytest.raises(ValueError, match="first_positions"):
        occlusion_schedule((224, 224), window=32, stride=8, first_positions=0)


def test_occlusion_indices_run_only_those_positions(relu_net, tiny_input):
    full = occlusion(relu_net, tiny_input, window=4, stride=2, batch_size=1)
    part = occlusion(relu_net, tiny_input, window=4, stride=2, batch_size=1, indices=[5, 0, 48])
    assert part.info["positions"] == 3 and part.info["done"] == 3
    raw = part.raw.ravel()
    assert np.isnan(raw).sum() == 49 - 3
    np.testing.assert_array_equal(raw[[0, 5, 48]], full.raw.ravel()[[0, 5, 48]])
    for bad, message in (([], "empty"), ([0, 0], "repeats"), ([49], "window position")):
        with pytest.raises(ValueError, match=message):
            occlusion(relu_net, tiny_input, window=4, stride=2, indices=bad)


@pytest.mark.parametrize(("window", "stride"), [(4, 2), (4, 1), (3, 5)])
def test_progressive_ends_with_the_plain_occlusion(relu_net, tiny_input, window, stride):
    maps = list(
        occlusion_progressive(
            relu_net, tiny_input, window=window, stride=stride, batch_size=1, first_positions=9
        )
    )
    plain = occlusion(relu_net, tiny_input, window=window, stride=stride, batch_size=1)
    assert len(maps) >= 2
    final = maps[-1]
    np.testing.assert_array_equal(final.map, plain.map)  # same drops, same sum order
    np.testing.assert_array_equal(final.raw, plain.raw)
    assert final.info["preview"] == 0.0 and not final.stopped
    assert all(m.info["preview"] == 1.0 for m in maps[:-1])
    done = [m.info["done"] for m in maps]
    assert done == sorted(done) and done[-1] == plain.info["positions"]
    assert final.target == plain.target
    # previews have no holes even where the coarse stride leaves pixels uncovered
    assert np.isfinite(maps[0].map).all()


def test_progressive_batched_matches_plain_within_rounding(relu_net, tiny_input):
    *_, final = occlusion_progressive(relu_net, tiny_input, window=4, stride=2, first_positions=9)
    plain = occlusion(relu_net, tiny_input, window=4, stride=2)
    np.testing.assert_allclose(final.map, plain.map, rtol=1e-5, atol=1e-7)


def test_progressive_reports_overall_progress_and_stops(relu_net, tiny_input):
    seen = []

    def stop_after_coarse(info):
        seen.append(info)
        return info.step < 9

    maps = list(
        occlusion_progressive(
            relu_net,
            tiny_input,
            window=4,
            stride=2,
            batch_size=4,
            first_positions=9,
            on_step=stop_after_coarse,
        )
    )
    assert all(info.total == 49 for info in seen)
    assert seen[-1].message == f"{seen[-1].step}/49 window positions"
    assert not maps[0].stopped and maps[-1].stopped and len(maps) == 2
    assert maps[-1].info["done"] == seen[-1].step < 49
    assert np.isnan(maps[-1].raw).sum() == 49 - maps[-1].info["done"]


def test_progressive_checks_its_input_on_the_call(relu_net, tiny_input):
    with pytest.raises(ValueError, match="larger than the image"):
        occlusion_progressive(relu_net, tiny_input, window=32)
    with pytest.raises(ValueError, match="Unknown fill"):
        occlusion_progressive(relu_net, tiny_input, window=4, fill="pink")  # type: ignore[arg-type]


def test_progressive_leaves_no_lock_held_when_closed_early(relu_net, tiny_input):
    before = ModelState.of(relu_net)
    maps = occlusion_progressive(relu_net, tiny_input, window=4, stride=1, first_positions=4)
    first = next(maps)
    assert first.info["preview"] == 1.0 and first.info["done"] == 4
    maps.close()
    lock = model_lock(relu_net)
    taken = threading.Event()

    def other_session() -> None:
        lock.acquire()
        lock.release()
        taken.set()

    thread = threading.Thread(target=other_session)
    thread.start()
    thread.join(timeout=5)
    assert taken.is_set(), "another thread could not take the model lock"
    assert count_hooks(relu_net) == 0 and ModelState.of(relu_net) == before


# --------------------------------------------------------------------------------------------
# Cost functions


def test_every_registered_method_has_a_cost(tiny_cnn):
    for label, info in method_labels.METHODS.items():
        options = {"layer": "conv2"} if info.uses_layer else {}
        if label == "Occlusion":
            options = {"window": 4, "stride": 2}
        cost = info.cost(tiny_cnn, (16, 16), target=3, **options)
        assert cost.passes >= 1, label
    with pytest.raises(ValueError, match="No cost function"):
        attribution.method_cost(len)
    # precision/device/progress options do not change the count of passes
    occ = attribution.method_cost(occlusion)
    assert occ(tiny_cnn, (16, 16), window=4, stride=2, exact=True, device="cpu") == occ(
        tiny_cnn, (16, 16), window=4, stride=2
    )
    with pytest.raises(TypeError):
        occ(tiny_cnn, (16, 16), windw=4)


def test_costs_scale_with_their_options(tiny_cnn):
    size = (224, 224)
    occ = attribution.occlusion_cost(tiny_cnn, size, window=32, stride=8)
    assert occ == Cost(forwards=1, batched_forwards=625)
    half = attribution.occlusion_cost(tiny_cnn, size, window=32, stride=16)
    assert half.batched_forwards == 13 * 13  # about a quarter of the positions
    sg = attribution.smoothgrad_cost(tiny_cnn, size, samples=10)
    assert sg == Cost(forwards=1, backwards=10)
    assert attribution.smoothgrad_cost(tiny_cnn, size, samples=20).backwards == 20
    ig = attribution.integrated_gradients_cost(tiny_cnn, size, steps=32)
    assert ig.batched_backwards == 32 and ig.forwards == 2
    assert attribution.score_cam_cost(tiny_cnn, (16, 16), layer="conv2").batched_forwards == (
        tiny_cnn.conv2.out_channels
    )
    prog = attribution.occlusion_progressive_cost(tiny_cnn, size, window=32, stride=8)
    assert prog.batched_forwards == 625 and prog.forwards == 3  # a reference forward per level
    first = attribution.occlusion_progressive_cost(tiny_cnn, size, window=32, stride=8, levels=1)
    assert first == Cost(forwards=1, batched_forwards=49)
    assert deletion_insertion_cost(steps=20) == Cost(forwards=1, batched_forwards=42)
    check = randomization_check_cost(tiny_cnn, size, method=attribution.grad_cam, steps=3)
    assert check == 4 * attribution.grad_cam_cost(tiny_cnn, size)
    with pytest.raises(ValueError, match="steps"):
        deletion_insertion_cost(steps=0)
    with pytest.raises(ValueError, match="conv9"):
        attribution.score_cam_cost(tiny_cnn, (16, 16), layer="conv9")


def test_cost_seconds_weighs_each_kind_of_pass():
    times = PassTimes(forward=0.05, batched_forward=0.01, backward=0.15, batched_backward=0.03)
    cost = Cost(forwards=2, batched_forwards=100, backwards=1, batched_backwards=10)
    assert cost.seconds(times) == pytest.approx(2 * 0.05 + 100 * 0.01 + 0.15 + 10 * 0.03)
    assert (cost + cost).seconds(times) == pytest.approx(2 * cost.seconds(times))
    with pytest.raises(ValueError, match="finite"):
        PassTimes(forward=-1.0, batched_forward=0.0, backward=0.0, batched_backward=0.0)


def test_measure_pass_times(tiny_cnn):
    before = ModelState.of(tiny_cnn)
    times = attribution.measure_pass_times(tiny_cnn, size=(16, 16), batch_size=4, repeats=1)
    assert min(times.forward, times.batched_forward, times.backward) > 0
    assert times.batched_backward == pytest.approx(
        times.batched_forward * times.backward / times.forward
    )
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == before
    with pytest.raises(ValueError, match="repeats"):
        attribution.measure_pass_times(tiny_cnn, size=(16, 16), repeats=0)


def test_progressive_passes_other_options_to_occlusion(relu_net, tiny_input):
    with pytest.raises(TypeError, match="no_such_option"):
        next(occlusion_progressive(relu_net, tiny_input, window=4, no_such_option=1))
