"""The bundled sample images and the preprocessing every technique shares (to a tensor in [0, 1],
resize and centre crop, a content digest).

Loading untrusted images lives in :mod:`vizcore.data.loading`; its public names
(:func:`load_image`, :class:`ImageLoadError`, the limits) are re-exported here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vizcore.core.resources import data_dir

if TYPE_CHECKING:
    import torch
from vizcore.data.loading import (
    _MAX_INTERMEDIATE_RATIO,
    MAX_ASPECT,
    MAX_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    SUPPORTED_FORMATS,
    ImageLoadError,
    _to_rgb,
    load_image,
)

__all__ = [
    "DATA_DIR",
    "DEFAULT_SAMPLE",
    "MAX_ASPECT",
    "MAX_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "SAMPLES_DIR",
    "SUPPORTED_FORMATS",
    "ImageLoadError",
    "Sample",
    "image_digest",
    "list_samples",
    "load_image",
    "load_sample",
    "resize_center_crop",
    "to_tensor01",
]


"""Default limit on width × height accepted by :func:`load_image` (40 megapixels)."""
"""Default limit on the encoded file size accepted by :func:`load_image` (50 MiB)."""
"""Default smallest width and height accepted by :func:`load_image`, in pixels.

The bundled models fail inside torch below 32 px (EfficientNet-Lite0's 5x5 depthwise
convolutions, SqueezeNet's max-pools), and a smaller picture upscaled to 224 px is a flat blur:
every page would explain a few blocks of colour.
"""
"""Default largest long-side / short-side ratio accepted by :func:`load_image`.

20:1 admits every panorama a phone or camera takes (a 360° strip is about 8:1 to 12:1) and
refuses the strips that break the app: with at most :data:`MAX_PIXELS` (40 MP) pixels, a 20:1
image is at most 28,284 px long, below the 65,500 px that JPEG (and so ``st.image``) can encode;
and the whole-picture views that resize the short side to 224 px get at most 4,480 px on the
long side (a 100000x10 strip would have become 2,240,000 x 224 px, 3.1 GB).
"""
"""PIL format names :func:`load_image` will try; those missing from this PIL build are skipped."""

DEFAULT_SAMPLE = "chelsea"
"""Name of the sample image shown first."""

DATA_DIR = data_dir()
"""The package's bundled data (``vizcore/data``, see :mod:`vizcore.core.resources`)."""
SAMPLES_DIR = data_dir("samples")
"""The bundled sample images and their ``index.json``."""
SAMPLE_KINDS = ("photo", "texture")


# --------------------------------------------------------------------------------------------
# Digest, tensor, resize
# --------------------------------------------------------------------------------------------


def image_digest(image: Image.Image) -> str:
    """Returns a stable SHA-256 hex digest of an image's mode, size and pixels.

    Equal pixels give equal digests across processes and runs; any changed pixel, size or mode
    changes the digest. Palette images also hash their palette. Metadata (EXIF, ``info``) is
    ignored.

    Args:
        image: Any PIL image.

    Returns:
        64 lowercase hex characters, suitable as a cache key.
    """
    digest = hashlib.sha256()
    digest.update(f"{image.mode}|{image.width}x{image.height}|".encode())
    digest.update(image.tobytes())
    if image.mode in ("P", "PA") and image.palette is not None:
        digest.update(b"|palette|")
        digest.update(image.palette.mode.encode())
        digest.update(bytes(image.getpalette(image.palette.mode) or []))
    return digest.hexdigest()


def to_tensor01(image: Image.Image) -> torch.Tensor:
    """Converts an image to a float32 ``(1, 3, H, W)`` tensor with values in ``[0, 1]``.

    Args:
        image: An RGB image. Other modes go through the same conversion as :func:`load_image`
            (for example, transparency over white).

    Returns:
        A contiguous CPU tensor of dtype ``torch.float32``.
    """
    import torch

    rgb = image if image.mode == "RGB" else _to_rgb(image)
    array = np.array(rgb, dtype=np.uint8)  # a writable copy, (H, W, 3)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous().unsqueeze(0)
    return tensor.to(torch.float32).div_(255.0)


def resize_center_crop(
    image: Image.Image,
    *,
    size: int,
    crop_fraction: float = 1.0,
    resample: int = Image.Resampling.BICUBIC,
) -> Image.Image:
    """Resizes the short side to ``round(size / crop_fraction)``, then centre-crops ``size``².

    Gives the same pixels as torchvision's ``Resize(round(size / crop_fraction))`` followed by
    ``CenterCrop(size)`` on a PIL image: the same integer rounding of sizes and offsets, and the
    same ``Image.resize`` then ``crop`` calls. For very elongated images (an aspect ratio over
    16:1, for example 1×5000), building the resized image would take a huge amount of memory.
    Those are resized with one ``Image.resize(box=...)`` call over the cropped source region
    instead. That result is close to resize-then-crop but not bit-identical: PIL can round
    differently with a box, or run its two filter passes in the other order.

    Args:
        image: The input image (normally the output of :func:`load_image`).
        size: Output width and height in pixels (at least 1).
        crop_fraction: The fraction of the resized short side that the crop keeps, in
            ``(0, 1]``. Use ``S / (S + 32)`` for EfficientNet-style evaluation and
            ``224 / 256`` for the classic ImageNet evaluation. ``1.0`` resizes the short side
            to ``size`` and crops the long side.
        resample: A ``PIL.Image.Resampling`` filter.

    Returns:
        A new ``size`` × ``size`` image in the input's mode.

    Raises:
        ValueError: If ``size`` < 1 or ``crop_fraction`` is not in ``(0, 1]``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"Cannot resize an empty {width}×{height} image.")
    short_target = max(size, round(size / crop_fraction))
    # torchvision's Resize(int): the short side becomes short_target, the long side is truncated.
    if width <= height:
        new_w, new_h = short_target, int(short_target * height / width)
    else:
        new_w, new_h = int(short_target * width / height), short_target
    # torchvision's CenterCrop offsets.
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    filt = Image.Resampling(resample)
    if new_w * new_h <= _MAX_INTERMEDIATE_RATIO * short_target * short_target:
        return image.resize((new_w, new_h), filt).crop((left, top, left + size, top + size))
    # The same crop in source coordinates. PIL's filter still reads source pixels outside the
    # box and only resamples the rows and columns the box needs.
    scale_x, scale_y = width / new_w, height / new_h
    box = (
        min(max(left * scale_x, 0.0), float(width)),
        min(max(top * scale_y, 0.0), float(height)),
        min((left + size) * scale_x, float(width)),
        min((top + size) * scale_y, float(height)),
    )
    return image.resize((size, size), filt, box=box)


# --------------------------------------------------------------------------------------------
# Bundled samples
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A bundled sample image described in ``vizcore/data/samples/index.json``.

    Attributes:
        name: Identifier, the file name without its extension (for example ``"chelsea"``).
        label: Human-readable label (for example ``"Chelsea the cat"``).
        path: Absolute path of the image file.
        kind: ``"photo"`` or ``"texture"``.
        expected: A short note on what an ImageNet classifier should see, or None.
        credit: The attribution that must be shown with the image (CC BY), or None.
    """

    name: str
    label: str
    path: Path
    kind: str
    expected: str | None
    credit: str | None = None


@functools.cache
def _samples() -> tuple[Sample, ...]:
    index_path = SAMPLES_DIR / "index.json"
    try:
        entries = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"Cannot read the sample index {index_path}: {exc}") from exc
    samples = []
    for entry in entries:
        try:
            file_name = str(entry["file"])
            sample = Sample(
                name=Path(file_name).stem,
                label=str(entry["label"]),
                path=SAMPLES_DIR / file_name,
                kind=str(entry["kind"]),
                expected=None if entry.get("expected") is None else str(entry["expected"]),
                credit=None if entry.get("credit") is None else str(entry["credit"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise RuntimeError(f"Malformed entry in {index_path}: {entry!r}") from exc
        samples.append(sample)
    return tuple(samples)


def list_samples(kind: str | None = None) -> list[Sample]:
    """Lists the bundled sample images in index order (the default sample comes first).

    Args:
        kind: ``"photo"`` or ``"texture"`` to keep only that kind, or None for all.

    Returns:
        The samples, as described by ``vizcore/data/samples/index.json``.

    Raises:
        ValueError: If ``kind`` is not None, ``"photo"`` or ``"texture"``.
    """
    if kind is not None and kind not in SAMPLE_KINDS:
        raise ValueError(f"Unknown sample kind {kind!r}; use one of {', '.join(SAMPLE_KINDS)}.")
    return [s for s in _samples() if kind is None or s.kind == kind]


def load_sample(name: str) -> Image.Image:
    """Loads a bundled sample image as RGB.

    Args:
        name: The sample name (for example ``"chelsea"``) or its file name
            (``"chelsea.png"``).

    Returns:
        A new RGB image, loaded with :func:`load_image`.

    Raises:
        ValueError: If no sample has that name. The message lists the available names.
    """
    for sample in _samples():
        if name in (sample.name, sample.path.name):
            return load_image(sample.path)
    available = ", ".join(s.name for s in _samples())
    raise ValueError(f"Unknown sample {name!r}. Available samples: {available}.")
