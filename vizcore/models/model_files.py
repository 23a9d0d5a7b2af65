"""Reading a stranger's model files safely: size limits, weights-only state dicts, class-name lists,
and the checks a ``torch.export`` archive passes before it is loaded.

Split from :mod:`vizcore.models.sources` (which re-exports the public names): nothing here builds a
model; everything here refuses a file with a :class:`ModelFileError` that says why."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

#: Largest model file accepted (bytes); ``VIZCORE_MAX_MODEL_MB`` changes it.
MAX_MODEL_BYTES = int(float(os.environ.get("VIZCORE_MAX_MODEL_MB", "500")) * 1e6)
#: Longest class-names file accepted (bytes).
MAX_CLASS_NAMES_BYTES = 2_000_000
MAX_CLASSES = 100_000


class ModelFileError(ValueError):
    """A model or weights file cannot be used; the message says why and what to do."""


class UnsafeModelFileError(ModelFileError):
    """The file holds pickled objects (a module, code) rather than plain tensors: refused."""


class WeightsMismatchError(ModelFileError):
    """The weights do not fit the architecture (missing, unexpected or wrongly shaped keys)."""

    def __init__(
        self,
        arch: str,
        missing: Sequence[str],
        unexpected: Sequence[str],
        shapes: Sequence[str],
    ) -> None:
        self.missing, self.unexpected, self.shapes = (
            tuple(missing),
            tuple(unexpected),
            tuple(shapes),
        )
        parts = [f"The weights do not fit {arch}."]
        for title, keys in (
            ("Missing keys", missing),
            ("Unexpected keys", unexpected),
            ("Wrong shapes", shapes),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (
                    f" … (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                )
                parts.append(f"{title} ({len(keys)}): {shown}.")
        parts.append("Check that the file is a state_dict of this architecture.")
        super().__init__(" ".join(parts))


# ------------------------------------------------------------------------------ reading files


def read_model_bytes(source: bytes | str | os.PathLike[str], what: str) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelFileError(f"No {what} file at {path}.")
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(_too_big(size, what))
        data = path.read_bytes()
    if len(data) > MAX_MODEL_BYTES:
        raise ModelFileError(_too_big(len(data), what))
    if not data:
        raise ModelFileError(f"The {what} file is empty.")
    return data


def _too_big(size: int, what: str) -> str:
    return (
        f"The {what} file is {size / 1e6:.0f} MB; the limit is {MAX_MODEL_BYTES / 1e6:.0f} MB "
        "(set VIZCORE_MAX_MODEL_MB to change it, or load it from a local folder)."
    )


def read_state_dict(
    source: bytes | str | os.PathLike[str], *, filename: str | None = None
) -> dict[str, torch.Tensor]:
    """Read a ``state_dict`` from a ``.pt``/``.pth``/``.bin`` or ``.safetensors`` file, safely.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers
    only; anything else (a pickled ``nn.Module``, a ``__reduce__`` payload) is refused before it
    runs. Common wrappers are unwrapped: ``{"state_dict": ...}``, ``{"model": ...}``,
    ``{"model_state_dict": ...}`` and a ``module.`` prefix (DataParallel); non-tensor entries
    (an epoch counter) are dropped.

    Args:
        source: File bytes or a path.
        filename: The file's name, for its extension when ``source`` is bytes.

    Raises:
        UnsafeModelFileError: The file holds pickled objects other than tensors.
        ModelFileError: Not a weights file, empty, too large, or holds no tensors.
    """
    name = (filename or (str(source) if not isinstance(source, bytes) else "")).lower()
    data = read_model_bytes(source, "weights")
    if name.endswith(".safetensors") or (not name and data[8:9] == b"{"):
        state = _read_safetensors(data)
    else:
        state = _torch_load_weights(data)
    return _unwrap_state_dict(state)


def _read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"Not a readable .safetensors file ({exc}).") from exc


def _torch_load_weights(data: bytes) -> object:
    if data[:2] != b"PK" and data[:1] != b"\x80":
        raise ModelFileError(
            "Not a PyTorch weights file (expected a torch.save zip archive or a pickle of "
            "tensors, or a .safetensors file)."
        )
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeModelFileError(
            "Refused: this file holds pickled Python objects, not only tensors (for example a "
            "whole nn.Module saved with torch.save(model), or code). Nothing in it was run. "
            "Save the weights with torch.save(model.state_dict(), path), or export the whole "
            f"model with torch.export. (torch said: {first_line(exc)})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ModelFileError(f"Cannot read this weights file ({first_line(exc)}).") from exc


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next(
                (obj[k] for k in ("state_dict", "model_state_dict", "model", "module", "net")
                 if isinstance(obj.get(k), Mapping)),
                None,
            )  # fmt: skip
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise ModelFileError(
            f"The file holds a {type(obj).__name__}, not a state_dict (a mapping of parameter "
            "names to tensors)."
        )
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError("The file holds no tensors; is it a state_dict?")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return tensors


def parse_class_names(data: bytes, *, filename: str = "classes.txt") -> tuple[str, ...]:
    """Class names from a ``.txt`` (one per line) or ``.json`` file (a list, or an index map).

    Raises:
        ModelFileError: Not UTF-8 text, empty, too long, or an unsupported JSON shape.
    """
    if len(data) > MAX_CLASS_NAMES_BYTES:
        raise ModelFileError(f"The class-names file is over {MAX_CLASS_NAMES_BYTES // 1000} kB.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ModelFileError("The class-names file is not UTF-8 text.") from exc
    if filename.lower().endswith(".json"):
        names = _names_from_json(text)
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
    if not names:
        raise ModelFileError("The class-names file lists no classes.")
    if len(names) > MAX_CLASSES:
        raise ModelFileError(f"The class-names file lists over {MAX_CLASSES} classes.")
    return tuple(name if name else f"class {i}" for i, name in enumerate(names))


def _names_from_json(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"The class-names file is not valid JSON ({exc.msg}).") from exc
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value]
    if isinstance(value, dict) and all(str(k).isdigit() for k in value):
        # {"0": "cat", "1": "dog"} or {"0": ["n01440764", "tench"]} (the Keras index file)
        items = sorted(((int(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelFileError("The JSON class index must number the classes 0, 1, 2, ...")
        return [str(v[-1] if isinstance(v, list) else v).strip() for _, v in items]
    raise ModelFileError(
        'A JSON class-names file must be a list of names ["cat", "dog"] or an index map '
        '{"0": "cat", "1": "dog"}.'
    )


_UNSAFE_EXPORT = (
    "Refused: this .pt2 archive {what}, which torch.export.load would run or unpickle as "
    "Python objects (it uses pickle with weights_only=False for such entries). Nothing in it was "
    "run. Re-export the model with torch.export.save from plain tensors."
)
#: Members of torch's old export zip format, read through the weights_only=False fallback.
_LEGACY_EXPORT_NAMES = frozenset(
    {
        "version",
        "serialized_exported_program.json",
        "serialized_state_dict.pt",
        "serialized_constants.pt",
        "serialized_example_inputs.pt",
    }
)


def check_export_archive(data: bytes) -> None:
    """Refuse a ``.pt2`` whose loading could run code, before torch reads any of it.

    ``torch.export.load`` (torch 2.15) unpickles with ``weights_only=False`` in several places
    (``tests/MODEL_FILES.md`` lists them with file and line): weights and constants marked
    ``use_pickle``, ``custom_obj_*`` / ``opaque_obj_*`` constants, the saved example inputs
    (after a failed ``weights_only=True`` attempt), the legacy zip format; and it loads compiled
    libraries from ``data/aotinductor/``. Each is refused here, except the example inputs, which
    must load with ``torch.load(weights_only=True)`` (then the same pickle stream, unpickled
    again by torch, can only build what the safe unpickler allowed).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ModelFileError(f"Not a readable .pt2 archive ({first_line(exc)}).") from exc
    if sum(info.file_size for info in infos) > 4 * MAX_MODEL_BYTES:
        raise ModelFileError("The archive unpacks to more than 4x the model size limit.")
    names = [info.filename for info in infos]
    for name in names:
        parts = name.split("/")
        base = parts[-1]
        if name in _LEGACY_EXPORT_NAMES:  # the old format keeps them at the zip root
            raise UnsafeModelFileError(_UNSAFE_EXPORT.format(what="uses the legacy zip format"))
        if "aotinductor" in parts or base.endswith((".so", ".dll", ".dylib", ".pyd")):
            raise UnsafeModelFileError(_UNSAFE_EXPORT.format(what="contains compiled code"))
        if base.startswith(("custom_obj", "opaque_obj")):
            raise UnsafeModelFileError(_UNSAFE_EXPORT.format(what="holds custom objects"))
    if not any(n.endswith("/archive_format") or n == "archive_format" for n in names):
        raise ModelFileError("Not a torch.export archive (no archive_format entry).")
    for name in names:
        parts = name.split("/")
        if name.endswith(("_weights_config.json", "_constants_config.json")):
            _check_payload_config(archive.read(name), name)
        elif len(parts) >= 3 and parts[-3:-1] in (["data", "weights"], ["data", "constants"]):
            if parts[-1].endswith(".pt"):
                raise UnsafeModelFileError(
                    _UNSAFE_EXPORT.format(what="stores pickled legacy weights")
                )
        elif "sample_inputs" in parts and not name.endswith("/"):
            _check_tensor_pickle(archive.read(name))


def _check_payload_config(raw: bytes, name: str) -> None:
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"Broken archive entry {name} ({exc}).") from exc
    entries = config.get("config", {}) if isinstance(config, dict) else {}
    for meta in entries.values() if isinstance(entries, dict) else ():
        if not isinstance(meta, dict):
            continue
        path_name = str(meta.get("path_name", ""))
        if meta.get("use_pickle") or path_name.startswith(("custom_obj", "opaque_obj")):
            raise UnsafeModelFileError(_UNSAFE_EXPORT.format(what="marks weights as pickled"))


def _check_tensor_pickle(raw: bytes) -> None:
    try:
        torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UnsafeModelFileError(
            _UNSAFE_EXPORT.format(what="stores example inputs that are not plain tensors")
        ) from exc


def check_graph_ops(graph: torch.fx.Graph) -> None:
    """Every call in the exported graph must be a torch operator (no arbitrary Python)."""
    import operator

    from torch._ops import HigherOrderOperator, OpOverload, OpOverloadPacket

    for node in graph.nodes:
        if node.op != "call_function":
            continue
        target = node.target
        if isinstance(target, OpOverload | OpOverloadPacket | HigherOrderOperator):
            continue
        if target is operator.getitem:
            continue
        raise UnsafeModelFileError(
            _UNSAFE_EXPORT.format(what=f"calls {getattr(target, '__name__', target)!r}")
        )
