"""One result base for every run that takes steps (issue 14): ``core.progress.RunResult``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vizcore.core.progress import RunResult
from vizcore.optvis import (
    AdversarialResult,
    DreamResult,
    InversionResult,
    MultifacetedResult,
    OptimizationResult,
    SynthesisResult,
)
from vizcore.style import StyleResult

STEP_RESULTS = [
    OptimizationResult,
    SynthesisResult,
    InversionResult,
    DreamResult,
    MultifacetedResult,
    AdversarialResult,
    StyleResult,
]
RUN_FIELDS = ("stopped", "seconds", "steps_done")


@pytest.mark.parametrize("cls", STEP_RESULTS, ids=lambda c: c.__name__)
def test_stepped_results_share_the_base_and_keep_their_own_fields_positional(cls) -> None:
    assert issubclass(cls, RunResult)
    fields = dataclasses.fields(cls)
    assert [f.name for f in fields if f.kw_only] == list(RUN_FIELDS)
    assert all(not f.kw_only for f in fields if f.name not in RUN_FIELDS)


def test_run_fields_pass_on_and_positional_construction_still_works() -> None:
    image, losses = np.zeros((1, 4, 4, 3), np.float32), np.zeros(3, np.float32)
    objective = np.zeros((3, 1), np.float32)
    run = OptimizationResult(image, losses, objective, (), stopped=True, seconds=1.5, steps_done=3)
    assert run.image is image and run.losses is losses and run.frames == ()
    assert run.run_fields() == {"stopped": True, "seconds": 1.5, "steps_done": 3}
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.stopped = False  # type: ignore[misc]
