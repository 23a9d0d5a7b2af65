"""One session's long job must not block the others on a shared model (issue 18, item 8).

A long job takes one ``inference_session`` turn per batch or step; the model lock is FIFO, so a
short call from another thread gets the model within about one batch, and the shared model's
invariants (no hooks left, flags restored) still hold after mixed concurrent calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch

from tests.conftest import TinyCNN
from vizcore import attribution, optvis
from vizcore.attribution import faithfulness
from vizcore.core.cache import layer_activations
from vizcore.core.hooks import (
    ModelLock,
    ModelState,
    count_hooks,
    inference_session,
    model_lock,
    wait_notice,
)
from vizcore.core.progress import StepInfo
from vizcore.data.features import gallery_features
from vizcore.data.gallery import Gallery
from vizcore.models.predict import predict
from vizcore.optvis import adversarial
from vizcore.optvis.multifaceted import gallery_predictions

CATEGORIES = ["a", "b", "c", "d"]


class SlowCNN(TinyCNN):
    """TinyCNN whose every forward pass sleeps ``delay`` seconds (an artificial batch time)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return super().forward(x)


def _image(seed: int = 1, size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _gallery(n: int = 12) -> Gallery:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 12, 12, 3), dtype=np.uint8)
    return Gallery("t", "upload", images, ("a",) * n, tuple(f"i{k}" for k in range(n)))


def test_short_call_gets_the_model_within_about_one_batch_of_a_long_job():
    torch.manual_seed(0)
    batch_time = 0.1
    model = SlowCNN(batch_time).eval()
    started = threading.Event()
    box: dict[str, object] = {}

    def on_step(info: StepInfo) -> bool:
        started.set()
        return True

    def long_job() -> None:
        t0 = time.perf_counter()
        # 13 x 13 = 169 positions in batches of 8: 22 batches of 0.1 s.
        box["map"] = attribution.occlusion(
            model, _image(), target=1, window=4, stride=1, batch_size=8, on_step=on_step
        )
        box["seconds"] = time.perf_counter() - t0

    thread = threading.Thread(target=long_job)
    thread.start()
    assert started.wait(10), "the long job never reported a batch"
    t0 = time.perf_counter()
    short = attribution.saliency(model, _image(seed=2), target=0)  # one forward of 0.1 s
    latency = time.perf_counter() - t0
    job_still_running = thread.is_alive()
    thread.join(30)
    assert short.map.shape == (16, 16)
    assert job_still_running, "the short call waited for the whole long job"
    # At most one batch of the long job (0.1 s) plus its own forward (0.1 s), with slack for
    # a loaded machine; before the fix it waited for all 22 batches (about 2.3 s).
    assert latency < 0.7, f"the short call took {latency:.2f} s"
    assert box["seconds"] > 2.0
    assert count_hooks(model) == 0


def _gallery_features(model, on_step):
    return gallery_features(
        model, _gallery(), layer="relu2", model_key="tiny", input_size=16, batch_size=4,
        use_cache=False, on_step=on_step,
    )  # fmt: skip


def _optimize(model, *, steps, on_step=None):
    param = optvis.pixel_image((1, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    return optvis.optimize(
        model, optvis.channel("conv2", 1), param=param, steps=steps, lr=0.05,
        relu6_passthrough=True, on_step=on_step,
    )  # fmt: skip


LONG_JOBS: dict[str, Callable[[torch.nn.Module, Callable[[StepInfo], bool]], object]] = {
    "occlusion": lambda m, cb: attribution.occlusion(
        m, _image(), window=4, stride=4, batch_size=4, on_step=cb
    ),
    "score_cam": lambda m, cb: attribution.score_cam(
        m, _image(), layer="conv2", batch_size=2, on_step=cb
    ),
    "integrated_gradients": lambda m, cb: attribution.integrated_gradients(
        m, _image(), steps=8, batch_size=2, on_step=cb
    ),
    "deletion_insertion": lambda m, cb: faithfulness.deletion_insertion(
        m, _image(), np.random.default_rng(0).random((16, 16)), steps=4, batch_size=2, on_step=cb
    ),
    "pgd": lambda m, cb: adversarial.pgd(m, _image(), steps=4, categories=CATEGORIES, on_step=cb),
    "optimize": lambda m, cb: _optimize(m, steps=4, on_step=cb),
    "gallery_features": _gallery_features,
    "gallery_predictions": lambda m, cb: gallery_predictions(
        m, _gallery(), input_size=16, top_k=2, batch_size=4, on_step=cb
    ),
}


@pytest.mark.parametrize("name", sorted(LONG_JOBS))
def test_long_jobs_release_the_model_between_batches(tiny_cnn, name):
    """Between two batches (where ``on_step`` runs) nobody holds the model and no hook is left."""
    tiny_cnn.train()
    tiny_cnn.fc.weight.requires_grad_(False)
    state = ModelState.of(tiny_cnn)
    lock = model_lock(tiny_cnn)
    seen: list[tuple[bool, int, bool]] = []

    def on_step(info: StepInfo) -> bool:
        seen.append((lock.locked(), count_hooks(tiny_cnn), ModelState.of(tiny_cnn) == state))
        return True

    LONG_JOBS[name](tiny_cnn, on_step)
    assert len(seen) >= 2
    assert seen == [(False, 0, True)] * len(seen)
    assert count_hooks(tiny_cnn) == 0 and ModelState.of(tiny_cnn) == state


def _hold(model: torch.nn.Module, seconds: float, held: threading.Event) -> threading.Thread:
    def run() -> None:
        with inference_session(model):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run)
    thread.start()
    assert held.wait(5)
    return thread


def test_a_waiting_job_says_so_through_on_step(tiny_cnn):
    held = threading.Event()
    thread = _hold(tiny_cnn, 0.8, held)
    reports: list[StepInfo] = []
    attribution.occlusion(
        tiny_cnn, _image(), window=8, stride=8, batch_size=1,
        on_step=lambda i: reports.append(i) or True,
    )  # fmt: skip
    thread.join()
    waits = [r for r in reports if r.waited is not None]
    assert waits, "the 0.8 s wait was never reported"
    assert waits[0].step == 0 and waits[0].total == 4 and waits[0].waited >= 0.2
    assert "waiting for another session" in waits[0].message
    assert [r.step for r in reports if r.waited is None] == [1, 2, 3, 4]


def test_wait_notice_and_the_log_tell_a_short_call_that_waited(tiny_cnn, caplog):
    held = threading.Event()
    thread = _hold(tiny_cnn, 1.2, held)
    waited: list[float] = []
    with caplog.at_level(logging.INFO, logger="vizcore.core.hooks"), wait_notice(waited.append):
        predict(tiny_cnn, _image(), top_k=2, categories=CATEGORIES)
    thread.join()
    assert waited and waited[0] >= 0.2
    assert "Waited" in caplog.text and "another session's turn" in caplog.text
    stats = model_lock(tiny_cnn).stats()
    assert stats.waits == 1 and stats.longest >= 1.0 and stats.turns == 2


def test_smoothgrad_reports_waits_of_the_method_it_wraps(tiny_cnn):
    reports: list[StepInfo] = []

    def on_step(info: StepInfo) -> bool:
        reports.append(info)
        if info.step == 1 and info.waited is None:  # after the first sample, block the model
            holders.append(_hold(tiny_cnn, 0.6, threading.Event()))
        return True

    holders: list[threading.Thread] = []
    attribution.smoothgrad(tiny_cnn, _image(), samples=3, on_step=on_step)
    for thread in holders:
        thread.join()
    waits = [r for r in reports if r.waited is not None]
    assert waits and waits[0].step == 1 and waits[0].total == 3


def test_the_lock_serves_waiting_threads_in_arrival_order():
    lock = ModelLock()
    order: list[int] = []
    lock.acquire()
    threads = []
    for k in range(4):

        def run(k: int = k) -> None:
            with lock:
                order.append(k)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.perf_counter() + 5
        while lock.waiting < k + 1 and time.perf_counter() < deadline:  # queued in order
            time.sleep(0.005)
        threads.append(thread)
    assert lock.waiting == 4
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]
    assert not lock.locked() and lock.waiting == 0


def test_a_releasing_thread_does_not_jump_the_queue():
    """A job that releases and re-acquires at once (one turn per batch) lets the waiter in."""
    lock = ModelLock()
    events: list[str] = []
    lock.acquire()
    waiter = threading.Thread(target=lambda: (lock.acquire(), events.append("short"),
                                              lock.release()))  # fmt: skip
    waiter.start()
    while lock.waiting == 0:
        time.sleep(0.005)
    lock.release()
    lock.acquire()  # the long job's next batch
    events.append("long")
    lock.release()
    waiter.join(5)
    assert events == ["short", "long"]


def test_a_wait_callback_that_raises_leaves_the_queue():
    """Streamlit raises from a callback on Stop: the waiter must not block everyone after it."""
    lock = ModelLock()
    lock.acquire()
    errors: list[BaseException] = []

    def stop(_seconds: float) -> None:
        raise KeyboardInterrupt("stop pressed")

    def leaving() -> None:
        try:
            lock.acquire(on_wait=stop)
        except KeyboardInterrupt as exc:
            errors.append(exc)

    thread = threading.Thread(target=leaving)
    thread.start()
    thread.join(5)
    assert len(errors) == 1 and lock.waiting == 0
    lock.release()
    assert not lock.locked()
    done = threading.Event()
    other = threading.Thread(target=lambda: (lock.acquire(), done.set(), lock.release()))
    other.start()
    assert done.wait(5), "a later thread was blocked by the one that left"
    other.join()


def test_reentrant_turns_and_release_by_another_thread():
    lock = ModelLock()
    lock.acquire()
    assert lock.acquire() == 0.0  # re-entrant
    lock.release()
    assert lock.locked()
    failure: list[BaseException] = []

    def bad_release() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            failure.append(exc)

    thread = threading.Thread(target=bad_release)
    thread.start()
    thread.join()
    assert failure and "another thread" in str(failure[0])
    lock.release()
    assert not lock.locked()
    assert lock.stats().turns == 1


def test_mixed_concurrent_calls_give_serial_results_and_leave_the_model_unchanged(tiny_cnn):
    """Turns interleave batch by batch; no result is crossed and the model ends as it began."""
    tiny_cnn.train()  # dropout and batch norm would change every result outside eval mode
    tiny_cnn.conv1.weight.requires_grad_(False)
    state = ModelState.of(tiny_cnn)
    x = _image()
    calls: dict[str, Callable[[], np.ndarray]] = {
        "occlusion": lambda: (
            attribution.occlusion(tiny_cnn, x, window=4, stride=2, batch_size=4).map
        ),
        "guided": lambda: attribution.guided_backprop(tiny_cnn, x).map,
        "grad_cam": lambda: attribution.grad_cam(tiny_cnn, x, layer="conv2").map,
        "ig": lambda: attribution.integrated_gradients(tiny_cnn, x, steps=8, batch_size=2).map,
        "optimize": lambda: _optimize(tiny_cnn, steps=6).image,
        "acts": lambda: layer_activations(tiny_cnn, x, layers=["relu2"])["relu2"],
    }
    serial = {name: fn() for name, fn in calls.items()}
    assert ModelState.of(tiny_cnn) == state
    results: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(3):
                results[name].append(calls[name]())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(name,)) for name in calls for _ in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    for name, got in results.items():
        assert len(got) == 6
        for value in got:
            np.testing.assert_allclose(value, serial[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert count_hooks(tiny_cnn) == 0
    assert ModelState.of(tiny_cnn) == state and tiny_cnn.training
    assert not model_lock(tiny_cnn).locked()
