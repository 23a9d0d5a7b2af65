"""Safe access to a shared model: locking, state preservation, activation capture.

The Streamlit app hands every session the *same* cached ``nn.Module``. Everything here exists so
that no technique can leave that module changed:

* :func:`model_lock` serializes hook and autograd work on one model across threads (sessions),
  serving waiting threads in arrival order;
* :func:`inference_session` is one *turn* on the model: the lock, eval mode and frozen
  parameters for one forward+backward (or one batch), everything restored on exit. A long job
  takes one turn per batch or optimizer step, never one for the whole run, so another session's
  short request waits at most about one batch (issue 18, item 8);
* :func:`preserve_model_state` saves every module's ``training`` flag and every parameter's
  ``requires_grad`` and restores them in ``finally``, even when the body raises;
* :func:`capture_activations` registers forward hooks and removes every handle in ``finally``.

Gradients with respect to a layer are taken with ``torch.autograd.grad`` on the captured outputs,
never with module backward hooks (they break on in-place activations: pytorch issue 61519).
"""

from __future__ import annotations

import contextvars
import logging
import operator
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from vizcore.core.layers import LayerNotFoundError, get_layer

logger = logging.getLogger(__name__)

#: ``on_wait(seconds)``: told how long a thread has been waiting for another thread's turn.
WaitCallback = Callable[[float], None]

#: A waiting thread's first ``on_wait`` call comes after this many seconds, then one per
#: :data:`WAIT_REPORT_EVERY` (a turn normally lasts one batch: most waits are never reported).
WAIT_REPORT_AFTER = 0.25
WAIT_REPORT_EVERY = 1.0
#: Waits at least this long are logged (INFO), with the seconds waited.
WAIT_LOG_AFTER = 1.0


@dataclass(frozen=True)
class LockStats:
    """How a :class:`ModelLock` has been used since it was made.

    Attributes:
        turns: Outermost acquisitions (re-entrant ones are not counted).
        waits: Acquisitions that had to wait for another thread.
        waited: Total seconds spent waiting.
        longest: The longest single wait, in seconds.
    """

    turns: int = 0
    waits: int = 0
    waited: float = 0.0
    longest: float = 0.0


class _Waiter:
    __slots__ = ("event", "thread")

    def __init__(self, thread: int) -> None:
        self.thread = thread
        self.event = threading.Event()


class ModelLock:
    """A re-entrant lock that hands the model to waiting threads in arrival order (FIFO).

    Python's ``Lock`` and ``RLock`` are not fair: a thread that releases and re-acquires at once
    (a long job taking one turn per batch) usually gets the lock again, so another thread's
    short request could still wait for the whole job. Here a release hands ownership directly
    to the longest-waiting thread, and the releaser queues behind it if it comes back.

    A waiting thread calls ``on_wait(seconds_waited)`` after :data:`WAIT_REPORT_AFTER` s and
    then every :data:`WAIT_REPORT_EVERY` s. If the callback raises (Streamlit does when the
    user presses Stop), the thread leaves the queue and the exception propagates.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._queue: deque[_Waiter] = deque()
        self._turns = self._waits = 0
        self._waited = self._longest = 0.0

    def acquire(self, *, on_wait: WaitCallback | None = None) -> float:
        """Take the lock (re-entrant); return the seconds waited for other threads."""
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return 0.0
            if self._owner is None:  # then nobody is queued either: a release hands over
                self._owner, self._depth = me, 1
                self._count(0.0)
                return 0.0
            waiter = _Waiter(me)
            self._queue.append(waiter)
        start = time.perf_counter()
        try:
            if on_wait is None:
                waiter.event.wait()
            else:
                timeout = WAIT_REPORT_AFTER
                while not waiter.event.wait(timeout):
                    on_wait(time.perf_counter() - start)
                    timeout = WAIT_REPORT_EVERY
        except BaseException:
            with self._mutex:
                if self._owner == me:  # handed over while the callback raised: pass it on
                    self._depth = 1
                    self._release_locked()
                else:
                    self._queue.remove(waiter)
            raise
        waited = time.perf_counter() - start
        with self._mutex:
            self._count(waited)
        if waited >= WAIT_LOG_AFTER:
            logger.info("Waited %.1f s for another session's turn on the shared model.", waited)
        return waited

    def release(self) -> None:
        """Release one level; the outermost release hands the lock to the next waiter."""
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("Cannot release a model lock held by another thread.")
            self._depth -= 1
            if self._depth == 0:
                self._release_locked()

    def _release_locked(self) -> None:
        if self._queue:
            waiter = self._queue.popleft()
            self._owner, self._depth = waiter.thread, 1
            waiter.event.set()
        else:
            self._owner, self._depth = None, 0

    def _count(self, waited: float) -> None:
        self._turns += 1
        if waited > 0:
            self._waits += 1
            self._waited += waited
            self._longest = max(self._longest, waited)

    @property
    def owner(self) -> int | None:
        """Thread identifier of the holder, or ``None`` when the lock is free."""
        return self._owner

    @property
    def waiting(self) -> int:
        """Threads queued for the lock."""
        return len(self._queue)

    def locked(self) -> bool:
        """Whether some thread holds the lock."""
        return self._owner is not None

    def stats(self) -> LockStats:
        """Turns and waits so far."""
        with self._mutex:
            return LockStats(self._turns, self._waits, self._waited, self._longest)

    def __enter__(self) -> ModelLock:
        self.acquire(on_wait=_WAIT_NOTICE.get())
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


_LOCKS: weakref.WeakKeyDictionary[nn.Module, ModelLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()

_WAIT_NOTICE: contextvars.ContextVar[WaitCallback | None] = contextvars.ContextVar(
    "vizcore_wait_notice", default=None
)

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def model_lock(model: nn.Module) -> ModelLock:
    """Return the re-entrant FIFO lock that guards hook and autograd work on ``model``."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = ModelLock()
            _LOCKS[model] = lock
        return lock


@contextmanager
def wait_notice(on_wait: WaitCallback | None) -> Iterator[None]:
    """Inside the block, this thread's waits for the model are told to ``on_wait(seconds)``.

    For calls that take turns without a callback of their own (a wrapper such as SmoothGrad
    around another method, or a page around a short call): an ``on_wait`` passed to
    :func:`inference_session` wins over this one.
    """
    token = _WAIT_NOTICE.set(on_wait)
    try:
        yield
    finally:
        _WAIT_NOTICE.reset(token)


def count_hooks(model: nn.Module) -> int:
    """Number of forward, pre-forward and backward hooks registered on ``model``'s modules."""
    total = 0
    for module in model.modules():
        for attr in _HOOK_DICTS:
            total += len(getattr(module, attr, {}) or {})
    return total


def modules_and_parameters(model: nn.Module) -> tuple[list[nn.Module], list[nn.Parameter]]:
    """Every module and parameter of ``model``, each once, in ``modules()`` order.

    The same sets as ``model.modules()`` / ``model.parameters()``, walked directly: the public
    generators build every qualified name. On EfficientNet-Lite0 this walk takes about 0.3 ms
    right after a forward pass (the public generators 0.6 ms), and every inference session
    takes one.
    """
    modules: list[nn.Module] = []
    params: list[nn.Parameter | None] = []
    seen = {id(model)}

    def visit(module: nn.Module) -> None:
        modules.append(module)
        params.extend(module._parameters.values())
        for child in module._modules.values():
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                visit(child)

    visit(model)
    unique = {id(p): p for p in params if p is not None}  # shared parameters once, in order
    return modules, list(unique.values())


_TRAINING = operator.attrgetter("training")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")


@dataclass(frozen=True)
class ModelState:
    """A snapshot of the flags a technique could change on a model.

    Two snapshots compare equal when every ``training`` flag and every ``requires_grad`` match;
    the module and parameter lists they were read from are kept only to restore them.
    """

    training: tuple[bool, ...]
    requires_grad: tuple[bool, ...]
    _modules: tuple[nn.Module, ...] = field(default=(), compare=False, repr=False)
    _params: tuple[nn.Parameter, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def of(cls, model: nn.Module) -> ModelState:
        """Snapshot ``model``."""
        modules, params = modules_and_parameters(model)
        return cls(
            training=tuple(map(_TRAINING, modules)),
            requires_grad=tuple(map(_REQUIRES_GRAD, params)),
            _modules=tuple(modules),
            _params=tuple(params),
        )

    def restore(self, model: nn.Module) -> None:
        """Write the snapshot back onto ``model`` (touching only the flags that differ).

        The flags go back onto the modules and parameters the snapshot was taken from, so a
        module swapped in meanwhile is not mistaken for the one it replaced.
        """
        modules, params = self._modules, self._params
        if not modules:
            modules_list, params_list = modules_and_parameters(model)
            modules, params = tuple(modules_list), tuple(params_list)
        if tuple(map(_TRAINING, modules)) != self.training:  # C-level compare, the usual case
            for module, flag in zip(modules, self.training, strict=True):
                if module.training != flag:
                    module.training = flag
        if tuple(map(_REQUIRES_GRAD, params)) != self.requires_grad:
            for param, flag in zip(params, self.requires_grad, strict=True):
                if param.requires_grad != flag:
                    param.requires_grad_(flag)


@contextmanager
def preserve_model_state(model: nn.Module) -> Iterator[ModelState]:
    """Restore every ``training`` flag and ``requires_grad`` on exit, even on error."""
    state = ModelState.of(model)
    try:
        yield state
    finally:
        state.restore(model)


@contextmanager
def inference_session(
    model: nn.Module, *, on_wait: WaitCallback | None = None
) -> Iterator[nn.Module]:
    """One turn on ``model``: lock it, eval mode, frozen parameters, everything restored on exit.

    Frozen parameters mean a backward pass stops at the input and the captured layers and never
    computes weight gradients: that is what makes gradient methods cost one forward+backward.

    A turn should cover one forward+backward (one batch, one optimizer step): a long job takes
    a turn per batch, registers its hooks inside each turn, and reports progress between turns,
    so another thread waits at most about one batch (the lock is FIFO, :class:`ModelLock`).
    Re-entrant within a thread.

    Args:
        model: The (shared) model.
        on_wait: Called with the seconds waited while another thread has the model (see
            :class:`ModelLock`); defaults to the one set by :func:`wait_notice`, if any.
    """
    lock = model_lock(model)
    lock.acquire(on_wait=on_wait if on_wait is not None else _WAIT_NOTICE.get())
    try:
        with preserve_model_state(model) as state:
            if any(state.training):
                model.eval()
            if any(state.requires_grad):
                for param, flag in zip(state._params, state.requires_grad, strict=True):
                    if flag:
                        param.requires_grad_(False)
            yield model
    finally:
        lock.release()


class LayerNotCalledError(LayerNotFoundError, KeyError):
    """A hooked layer never ran in the forward pass (a ``ValueError`` and, as before, a
    ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a capture hook to stop a forward pass once the wanted layers have run."""


@dataclass
class Activations:
    """Outputs of hooked layers during a ``with capture_activations(...)`` block."""

    names: tuple[str, ...]
    _outputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        outputs = self._outputs.get(name)
        if not outputs:
            raise LayerNotCalledError(
                f"Layer {name!r} produced no output: the forward pass never calls it (a "
                "container whose children its parent runs one by one, like EfficientNet's "
                f"'blocks', or a module the forward skips), or no forward pass ran. Pick one of "
                f"its children (e.g. '{name}.0') or another layer."
            )
        if len(outputs) > 1:
            raise RuntimeError(
                f"Layer {name!r} ran {len(outputs)} times in one forward pass (a module reused "
                "at several call sites), so its activation is ambiguous. Hook a module that "
                "runs once."
            )
        return outputs[0]

    def clear(self) -> None:
        """Forget the captured outputs (call before another forward in the same block)."""
        self._outputs.clear()

    def calls(self, name: str) -> int:
        """How many times the layer ran since the last :meth:`clear`."""
        return len(self._outputs.get(name, []))


def _output_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Cannot capture a layer whose output is {type(output).__name__}.")


@contextmanager
def capture_activations(
    model: nn.Module,
    layers: Sequence[str],
    *,
    detach: bool = False,
    stop_early: bool = False,
) -> Iterator[Activations]:
    """Record the outputs of the named layers during forward passes inside the block.

    Args:
        model: The model whose submodules to hook.
        layers: Dotted layer names, validated up front.
        detach: Store detached outputs (cheaper when no gradient is needed).
        stop_early: Raise :class:`StopForward` as soon as every named layer has run, so the rest
            of the network is skipped; run the model through :func:`forward_until`, which
            catches it.

    Yields:
        An :class:`Activations` mapping layer name to output tensor.

    Every hook handle is removed in ``finally``, also when the body raises.
    """
    modules = {name: get_layer(model, name) for name in layers}
    acts = Activations(names=tuple(layers))
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def make_hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = _output_tensor(output)
            acts._outputs.setdefault(name, []).append(tensor.detach() if detach else tensor)
            if stop_early and len(acts._outputs) == len(modules):
                raise StopForward

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield acts
    finally:
        for handle in handles:
            handle.remove()


def forward_until(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Run ``model(x)``; return the output, or ``None`` if a ``stop_early`` hook cut it short."""
    try:
        return model(x)
    except StopForward:
        return None


@contextmanager
def forward_output_hooks(
    modules: Sequence[nn.Module],
    hook: Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor | None],
) -> Iterator[None]:
    """Register one output-replacing forward hook on each module; remove all in ``finally``.

    Used for gradient-rule changes that keep the forward value (guided backprop, deconvnet,
    ReLU6 straight-through): the hook returns ``forward_value + (new - new.detach())``-style
    tensors, so no module of the shared model is ever swapped.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
