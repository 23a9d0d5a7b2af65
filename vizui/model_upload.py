"""The sidebar's "Your model" section: bring a torchvision / timm / torch.export model.

Everything that loads or checks is :mod:`vizcore.models.sources`; this module only collects the
files and options and keeps the result in the session. A loaded model belongs to the browser
session that loaded it: it lives in that session's state (the registry only holds a weak
reference), it is listed only in that session's model picker, and loading another one frees it.

Server settings (environment variables):

* ``VIZCORE_ALLOW_MODEL_UPLOAD=0`` turns uploads off (for a public share link);
* ``VIZCORE_MODEL_DIR=/path`` lists the model files of that folder for local use, so a big
  checkpoint need not travel through the browser (also when uploads are off);
* ``VIZCORE_MAX_MODEL_MB`` (default 500) caps a model file; Streamlit's own
  ``server.maxUploadSize`` (``.streamlit/config.toml``, 200 MB here) caps any upload on the server,
  so an upload can bring the smaller of the two (:func:`upload_limit_mb`, stated in the form).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from vizcore.models import sources
from vizui import public

logger = logging.getLogger(__name__)

ALLOW_ENV = "VIZCORE_ALLOW_MODEL_UPLOAD"
DIR_ENV = "VIZCORE_MODEL_DIR"
_STORE = "vz_user_model"
_ERROR = "vz_user_model_error"
_WEIGHT_TYPES = ["pt", "pth", "bin", "safetensors"]
_EXPORT_TYPES = ["pt2"]
_MODEL_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".pt2")

# Short enough for the sidebar's selectbox (about 28 characters show).
_SOURCES = {
    "torchvision": "torchvision + weights file",
    "timm": "timm + weights file",
    "export": "torch.export archive (.pt2)",
}
_NORMALIZATIONS = {
    "imagenet": "ImageNet mean/std",
    "none": "None: the model takes RGB in [0, 1]",
    "custom": "Custom mean/std",
}


def uploads_allowed() -> bool:
    """False when the server turned model uploads off (``VIZCORE_ALLOW_MODEL_UPLOAD=0``)."""
    value = os.environ.get(ALLOW_ENV, "1").strip().lower()
    return value not in {"0", "false", "no", "off"} and not public.is_public()


def upload_limit_mb() -> int:
    """The largest model file an upload can bring, in Streamlit's MB (MiB, as its dropzone says).

    The smaller of ``VIZCORE_MAX_MODEL_MB`` and Streamlit's ``server.maxUploadSize``: the server
    refuses any bigger upload before the app sees it, whatever a widget says.
    """
    server = int(st.get_option("server.maxUploadSize"))
    return max(1, min(server, sources.MAX_MODEL_BYTES // 2**20))


def local_model_files() -> list[Path]:
    """Model files in ``VIZCORE_MODEL_DIR`` (sorted; empty when unset or missing)."""
    folder = os.environ.get(DIR_ENV, "").strip()
    if not folder or not Path(folder).is_dir():
        return []
    return sorted(
        p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES
    )


def session_model() -> sources.UserModel | None:
    """The model this session loaded, if any."""
    return st.session_state.get(_STORE)


def session_model_keys() -> list[str]:
    """Registry keys of this session's model (for the model picker)."""
    held = session_model()
    return [held.spec.key] if held is not None else []  # type: ignore[attr-defined]


@dataclass(frozen=True)
class _Request:
    kind: sources.SourceKind
    arch: str | None
    weights: bytes | Path | None
    weights_name: str | None
    class_names: tuple[str, ...] | None
    config: sources.InputConfig | None


def section(select_key: str) -> None:
    """Draw the "Your model" expander; on success the new model becomes the selected one.

    Args:
        select_key: The session-state key that holds the model picker's choice.
    """
    allowed, local = uploads_allowed(), local_model_files()
    held = session_model()
    with st.sidebar.expander("Your model", expanded=False, icon=":material/upload_file:"):
        if held is not None:
            st.caption(f"Loaded: **{held.spec.label}**. Loading another one replaces it.")  # type: ignore[attr-defined]
        if not allowed and not local:
            st.caption(
                f"Model upload is turned off on this server ({ALLOW_ENV}=0). Run the studio "
                "locally to bring your own model."
            )
            return
        try:
            request = _form(allowed, local)
        except sources.ModelFileError as exc:
            st.error(str(exc))
            return
        if request is not None:
            _load(request, select_key)
        if error := st.session_state.get(_ERROR):
            st.error(error)


def _form(allowed: bool, local: list[Path]) -> _Request | None:
    kind = st.selectbox(
        "Source", list(_SOURCES), format_func=_SOURCES.get, key="um_kind",
        help="torchvision or timm: pick the architecture and give its state_dict. torch.export: "
        "the whole model in one .pt2 file. TorchScript is not supported (deprecated in torch "
        "2.15, and it refuses forward hooks).",
    )  # fmt: skip
    arch = _architecture(kind)
    weights, weights_name = _weights_file(kind, allowed, local)
    names_file = (
        st.file_uploader("Class names (.txt, one per line, or .json list)", type=["txt", "json"],
                         key="um_names",
                         help="Optional. Default: ImageNet's 1,000 names for a 1,000-way head, "
                         "else class 0, class 1, ...")
        if allowed else None
    )  # fmt: skip
    config = _input_config(kind, arch)
    if not st.button("Load model", key="um_load", type="primary", width="stretch"):
        return None
    if weights is None and not (kind == "timm" and arch):
        st.session_state[_ERROR] = "Choose a weights file first."
        return None
    class_names = None
    if names_file is not None:
        class_names = sources.parse_class_names(names_file.getvalue(), filename=names_file.name)
    return _Request(kind, arch, weights, weights_name, class_names, config)


def _architecture(kind: str) -> str | None:
    if kind == "export":
        return None
    if kind == "torchvision":
        archs = sources.torchvision_architectures()
        return st.selectbox("Architecture", archs, index=archs.index("resnet18"),
                            key="um_tv_arch")  # fmt: skip
    pattern = st.text_input("Filter timm names", "efficientnet*", key="um_timm_filter",
                            help="A wildcard pattern, e.g. resnet*, *vit*, convnext*")  # fmt: skip
    archs = sources.timm_architectures(pattern)[:500]
    if not archs:
        st.caption("No timm architecture matches that filter.")
        return None
    return st.selectbox("Architecture", archs, key="um_timm_arch")


def _weights_file(
    kind: str, allowed: bool, local: list[Path]
) -> tuple[bytes | Path | None, str | None]:
    types = _EXPORT_TYPES if kind == "export" else _WEIGHT_TYPES
    limit = upload_limit_mb()
    if local:
        options = ["(upload)"] if allowed else []
        options += [p.name for p in local if (p.suffix.lower() == ".pt2") == (kind == "export")]
        chosen = st.selectbox(f"File in {os.environ.get(DIR_ENV)}", options, key="um_local")
        if chosen and chosen != "(upload)":
            return next(p for p in local if p.name == chosen), chosen
    if not allowed:
        return None, None
    label = "Model (.pt2)" if kind == "export" else "Weights (state_dict: .pt, .pth, .safetensors)"
    extra = " Empty for timm's pretrained weights from the local cache." if kind == "timm" else ""
    upload = st.file_uploader(
        label, type=types, key=f"um_file_{kind}", max_upload_size=limit,
        help=f"Up to {limit} MB by upload; a bigger file loads from a folder on the server "
        f"({DIR_ENV}). Read safely: tensors only (torch.load weights_only=True), never "
        f"arbitrary pickled objects.{extra}",
    )  # fmt: skip
    if upload is None:
        return None, None
    return upload.getvalue(), upload.name


def _input_config(kind: str, arch: str | None) -> sources.InputConfig | None:
    """Input options; ``None`` keeps the source's own metadata (timm's pretrained_cfg)."""
    defaults = sources.InputConfig()
    if kind == "timm" and arch:
        defaults = sources.timm_input_config(arch)
    elif kind == "export":
        defaults = sources.InputConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    with st.container(border=True):
        st.caption("Input (defaults from the source's metadata where it has any)")
        size = st.number_input("Input size (px)", 16, 1024, defaults.input_size, 1,
                               key=f"um_size_{kind}_{arch}")  # fmt: skip
        crop = st.number_input("Centre-crop fraction", 0.2, 1.0, float(defaults.crop_fraction),
                               0.005, key=f"um_crop_{kind}_{arch}", format="%.3f")  # fmt: skip
        filters = ["bilinear", "bicubic", "lanczos", "nearest"]
        resample = st.selectbox("Resize filter", filters, index=filters.index(defaults.resample),
                                key=f"um_resample_{kind}_{arch}")  # fmt: skip
        is_imagenet = tuple(defaults.mean) == sources.IMAGENET_MEAN
        default_norm = (
            "imagenet" if is_imagenet else "none" if not defaults.normalizes else "custom"
        )
        norm = st.selectbox("Normalization", list(_NORMALIZATIONS),
                            index=list(_NORMALIZATIONS).index(default_norm),
                            format_func=_NORMALIZATIONS.get, key=f"um_norm_{kind}_{arch}",
                            help="Applied inside the model, so every technique works on RGB "
                            "in [0, 1].")  # fmt: skip
        mean, std = defaults.mean, defaults.std
        if norm == "imagenet":
            mean, std = sources.IMAGENET_MEAN, sources.IMAGENET_STD
        elif norm == "none":
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        else:
            mean = _triple("Mean (R, G, B)", mean, f"um_mean_{kind}_{arch}")
            std = _triple("Std (R, G, B)", std, f"um_std_{kind}_{arch}")
    return sources.InputConfig(int(size), float(crop), resample, mean, std)


def _triple(label: str, default: tuple[float, ...], key: str) -> tuple[float, float, float]:
    text = st.text_input(label, ", ".join(f"{v:.4g}" for v in default), key=key)
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise sources.ModelFileError(f"{label}: give three numbers separated by commas.") from None
    if len(values) != 3:
        raise sources.ModelFileError(f"{label}: give exactly three numbers.")
    return values  # type: ignore[return-value]


def _load(request: _Request, select_key: str) -> None:
    st.session_state.pop(_ERROR, None)
    previous = st.session_state.pop(_STORE, None)  # freed once nothing else holds it
    del previous
    try:
        with st.spinner("Loading and probing the model…"):
            loaded = sources.load_user_model(
                request.kind,
                arch=request.arch,
                weights=request.weights,
                weights_name=request.weights_name,
                class_names=request.class_names,
                input_config=request.config,
            )
    except (sources.ModelFileError, ValueError) as exc:
        st.session_state[_ERROR] = str(exc)
        return
    except Exception as exc:
        logger.exception("Loading a user model failed")
        st.session_state[_ERROR] = f"The model could not be loaded: {type(exc).__name__}: {exc}"
        return
    st.session_state[_STORE] = loaded
    st.session_state[select_key] = loaded.spec.key  # type: ignore[attr-defined]
    st.rerun()
