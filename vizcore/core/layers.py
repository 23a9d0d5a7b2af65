"""Address a model's layers by dotted name, validated.

Layers are named exactly as ``model.named_modules()`` names them (``"_blocks.4"``,
``"fire5.expand3x3"``). Names are never evaluated as code. An unknown name raises a
:class:`LayerNotFoundError` (a ``ValueError``) whose message lists the closest valid names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from torch import nn

#: Module kinds offered by :func:`list_layers`.
LAYER_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv2d,),
    "activation": (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish),
    "norm": (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm),
    "pool": (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
    "linear": (nn.Linear,),
}


class LayerNotFoundError(ValueError):
    """Raised when a layer name does not name a module of the model."""


def _closest(name: str, candidates: Iterable[str], limit: int = 6) -> list[str]:
    names = list(candidates)
    close = difflib.get_close_matches(name, names, n=limit, cutoff=0.5)
    if not close:
        close = [n for n in names if name and name.split(".")[-1] in n][:limit]
    return close


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name``.

    Args:
        model: Any module.
        name: A dotted name from ``model.named_modules()``. The empty string is the model itself.

    Raises:
        LayerNotFoundError: The name is not a module of ``model``; the message lists close matches.
    """
    if not isinstance(name, str):
        raise LayerNotFoundError(f"A layer name must be a string, not {type(name).__name__}.")
    found = _walk_path(model, name)
    if found is not None:
        return found
    modules = dict(model.named_modules())
    suggestions = _closest(name, (n for n in modules if n))
    hint = f" Close matches: {', '.join(suggestions)}." if suggestions else ""
    raise LayerNotFoundError(
        f"{type(model).__name__} has no layer named {name!r}.{hint} "
        "Use list_layers(model) to see every valid name."
    )


def _walk_path(model: nn.Module, name: str) -> nn.Module | None:
    """Follow a dotted name through the child dictionaries only (no ``getattr``: a name is
    never evaluated); about 0.3 ms faster on Lite0 than building every qualified name."""
    module: nn.Module | None = model
    for atom in name.split(".") if name else ():
        module = module._modules.get(atom) if module is not None else None
    return module


def list_layers(model: nn.Module, *, kind: str | None = None) -> list[str]:
    """List the dotted names of a model's layers, in forward-definition order.

    Args:
        model: Any module.
        kind: One of :data:`LAYER_KINDS` (``"conv"``, ``"activation"``, ...) to keep only those
            module types, or ``None`` for every named submodule (containers included).

    Raises:
        ValueError: ``kind`` is not known.
    """
    if kind is not None and kind not in LAYER_KINDS:
        raise ValueError(f"Unknown layer kind {kind!r}; choose one of {sorted(LAYER_KINDS)}.")
    from vizcore.models.discovery import layer_kind  # discovery imports hooks, which import us

    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        # By type for ordinary modules; by their graph's operators for exported submodules.
        if kind is None or isinstance(module, LAYER_KINDS[kind]) or layer_kind(module) == kind:
            names.append(name)
    return names
