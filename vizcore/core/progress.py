"""The progress and cancellation convention shared by every long-running technique.

A long function takes ``on_step: OnStep | None = None`` (keyword-only). It calls
``on_step(StepInfo(...))`` after each unit of work. If the callback returns ``False`` the
function stops early, cleans up (hooks removed, model state restored) and returns what it has,
with ``stopped=True`` on its result. A callback may also raise (Streamlit does when the user
presses Stop or changes a widget): the exception propagates after the same clean-up.

While another session has its turn on the shared model, a long function reports the wait through
the same callback (:func:`waiting`): ``StepInfo.waited`` holds the seconds waited and the message
says so. The return value of such a report is ignored; a Stop is honoured at the next step (a
callback that raises leaves the queue at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The one result base of every run that takes optimization steps (and can be stopped).

    The fields are keyword-only, so a subclass's own fields keep their positions in its
    constructor. Subclasses: ``OptimizationResult``, ``SynthesisResult``, ``InversionResult``,
    ``DreamResult``, ``MultifacetedResult``, ``AdversarialResult``, ``StyleResult``.

    Attributes:
        stopped: Whether ``on_step`` stopped the run before its last step.
        seconds: Wall-clock time of the run.
        steps_done: Steps actually taken.
    """

    stopped: bool
    seconds: float
    steps_done: int

    def run_fields(self) -> dict[str, bool | float | int]:
        """``stopped``, ``seconds``, ``steps_done``: for a result built from this one."""
        return {"stopped": self.stopped, "seconds": self.seconds, "steps_done": self.steps_done}


@dataclass(frozen=True)
class StepInfo:
    """One progress report.

    Attributes:
        step: Units of work done so far (1-based).
        total: Units of work in the whole run.
        loss: The objective's current value, when the method has one.
        frame: An intermediate image (uint8 RGB ``(H, W, 3)``), sent every few steps only.
        message: A short human-readable status.
        waited: Seconds this run has been waiting for another session's turn on the model
            (a wait report, see :func:`waiting`), or ``None`` for a report of work done.
    """

    step: int
    total: int
    loss: float | None = None
    frame: np.ndarray | None = None
    message: str = ""
    waited: float | None = None

    @property
    def fraction(self) -> float:
        """Progress in [0, 1]."""
        return min(max(self.step / self.total, 0.0), 1.0) if self.total else 1.0


OnStep = Callable[[StepInfo], bool | None]


def report(on_step: OnStep | None, info: StepInfo) -> bool:
    """Send ``info`` to the callback; return ``True`` to go on, ``False`` to stop."""
    if on_step is None:
        return True
    return on_step(info) is not False


def waiting(on_step: OnStep | None, step: int, total: int) -> Callable[[float], None] | None:
    """An ``on_wait`` for :func:`vizcore.core.hooks.inference_session`, reported via ``on_step``.

    The report keeps the progress (``step`` of ``total``) and says why nothing moves.
    """
    if on_step is None:
        return None

    def on_wait(seconds: float) -> None:
        message = f"waiting for another session's turn on the model ({seconds:.0f} s)"
        on_step(StepInfo(step, total, message=message, waited=seconds))

    return on_wait
