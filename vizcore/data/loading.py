"""Robust image loading, preprocessing helpers and the bundled sample images.

:func:`load_image` turns untrusted bytes or a file into an 8-bit RGB :class:`PIL.Image.Image`.
It never lets a PIL error through: every problem becomes an :class:`ImageLoadError` whose message
is a sentence that can be shown to the user as-is. It:

* rejects empty input and input over ``max_bytes``;
* checks the declared pixel count *before* decoding, so an image too large to load is never
  decoded;
* accepts only common raster formats (:data:`SUPPORTED_FORMATS`, no Ghostscript-backed EPS);
* applies the EXIF orientation and keeps only the first frame of animated images;
* converts every PIL mode to RGB correctly: transparency is composited over white, CMYK is
  converted to RGB, and 16-bit or float grayscale is scaled by its real bit depth instead of
  being clipped.

This module never changes the global ``PIL.Image.MAX_IMAGE_PIXELS``. PIL still applies that
limit inside ``Image.open``, and its warning is treated as an error here, so images above it
(about 89 MP by default) are refused even when ``max_pixels`` is higher.

Thread safety: ``load_image`` may be called from several threads (as Streamlit does). Opening
holds a module lock for the short header parse, because warning filters are process-global."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    pass

MAX_PIXELS = 40_000_000

MAX_BYTES = 50 * 1024 * 1024

MIN_SIDE = 32

MAX_ASPECT = 20.0

SUPPORTED_FORMATS: tuple[str, ...] = (
    "PNG",
    "JPEG",
    "MPO",
    "GIF",
    "WEBP",
    "BMP",
    "DIB",
    "TIFF",
    "PPM",
    "TGA",
    "ICO",
    "AVIF",
    "JPEG2000",
    "QOI",
)

# resize_center_crop resizes then crops (exactly like torchvision) when the resized image has at
# most this many times short_target² pixels, and otherwise resizes only the cropped region.
_MAX_INTERMEDIATE_RATIO = 16
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)(?: exceeds limit of (\d+) pixels)?")
# Python 3.11's warnings filters are process-global; this lock stops two of our own loads from
# interleaving their catch_warnings() save/restore.
_OPEN_LOCK = threading.Lock()
# Errors PIL raises while decoding broken data (the C decoders raise OSError; the Python plugins
# also raise these).
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)


class ImageLoadError(ValueError):
    """An image could not be loaded. The message is a user-facing sentence."""


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_BYTES,
    min_side: int = MIN_SIDE,
    max_aspect: float | None = MAX_ASPECT,
) -> Image.Image:
    """Decodes an image from bytes or a file into an 8-bit RGB image.

    Args:
        source: The encoded image (``bytes``, ``bytearray`` or ``memoryview``), or a path to an
            image file (``str`` or path-like).
        max_pixels: Largest accepted width × height. Checked against the size declared in the
            file header, before any pixel is decoded.
        max_bytes: Largest accepted encoded size in bytes.
        min_side: Smallest accepted width and height in pixels (checked on the header too).
        max_aspect: Largest accepted ratio of the long side to the short side, or None for no
            limit (see :data:`MAX_ASPECT`).

    Returns:
        A new, fully loaded ``"RGB"`` image, with the EXIF orientation applied. For an animated
        image this is the first frame. Transparent areas are composited over white.

    Raises:
        ImageLoadError: When the input is empty, too big, too small, too elongated, not a
            supported image, truncated or corrupt, or uses a mode that cannot be converted to
            RGB. The message says what was
            wrong and what to do.
        TypeError: When ``source`` is not bytes or a path.
    """
    limits = _Limits(
        max_pixels=max_pixels,
        min_side=_check_min_side(min_side),
        max_aspect=_check_aspect(max_aspect),
    )
    data = _read_source(source, max_bytes)
    with _open_checked(data, limits) as im:
        try:
            im.load()
            _check_pixels(im.size, limits)  # some formats only know their size after load
            im = _apply_exif_orientation(im)
            return _to_rgb(im)
        except ImageLoadError:
            raise
        except Image.DecompressionBombError as exc:
            raise _too_large_from_pil(exc, max_pixels) from exc
        except MemoryError as exc:
            raise ImageLoadError(
                f"There is not enough memory to decode this {im.width}×{im.height} image. "
                "Resize it and upload again."
            ) from exc
        except _DECODE_ERRORS as exc:
            raise ImageLoadError(
                f"The image file is damaged or incomplete ({_reason(exc)}). "
                "Open it in an image editor, save it again and upload the new file."
            ) from exc


def _read_source(source: object, max_bytes: int) -> bytes:
    """Returns the encoded bytes of ``source`` after checking emptiness and size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        _check_bytes(len(data), max_bytes)
        return data
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"load_image() expects bytes or a file path, not {type(source).__name__}.")
    path = Path(source)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ImageLoadError(
                f"The path {str(path)!r} is a folder, not an image file. Choose an image file."
            )
        _check_bytes(size, max_bytes)
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise ImageLoadError(
            f"There is no file at {str(path)!r}. Check the path and try again."
        ) from exc
    except OSError as exc:
        raise ImageLoadError(
            f"The file {str(path)!r} could not be read ({_reason(exc)}). "
            "Check that it exists and is readable."
        ) from exc
    _check_bytes(len(data), max_bytes)  # the file may have changed since stat()
    return data


def _check_bytes(size: int, max_bytes: int) -> None:
    if size == 0:
        raise ImageLoadError("The file is empty (0 bytes). Choose an image file and try again.")
    if size > max_bytes:
        raise ImageLoadError(
            f"The file is {_format_bytes(size)}; the limit is {_format_bytes(max_bytes)}. "
            "Upload a smaller or more compressed image."
        )


@dataclass(frozen=True)
class _Limits:
    max_pixels: int
    min_side: int
    max_aspect: float | None


def _check_min_side(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"min_side must be a positive integer, got {value!r}.")
    return value


def _check_aspect(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise ValueError(f"max_aspect must be a number >= 1 or None, got {value!r}.")
    if value != value or value == float("inf"):
        raise ValueError(f"max_aspect must be finite (or None for no limit), got {value!r}.")
    return float(value)


def _check_pixels(size: tuple[int, int], limits: _Limits) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageLoadError(
            f"The image declares an impossible size ({width}×{height} pixels), so the file is "
            "damaged. Save it again and upload the new file."
        )
    if width * height > limits.max_pixels:
        raise _too_large(width * height, limits.max_pixels, size)
    short, long = min(width, height), max(width, height)
    if limits.max_aspect is not None and long > limits.max_aspect * short:
        ratio = long / short
        ratio_text = f"{ratio:,.0f}:1" if ratio >= 100 else f"{ratio:.1f}:1".replace(".0:", ":")
        limit_text = f"{limits.max_aspect:g}:1"
        raise ImageLoadError(
            f"The image is {width}×{height} pixels, an aspect ratio of {ratio_text}; the limit "
            f"is {limit_text}. Crop it to a less elongated region and upload again."
        )
    if short < limits.min_side:
        raise ImageLoadError(
            f"The image is {width}×{height} pixels; it must be at least {limits.min_side} "
            "pixels on each side. Upload a larger image."
        )


def _too_large(pixels: int, limit: int, size: tuple[int, int] | None = None) -> ImageLoadError:
    actual, limit_text = _format_mp(pixels), _format_mp(limit)
    if actual == limit_text:  # just over the limit: show exact counts
        actual, limit_text = f"{pixels:,} pixels", f"{limit:,} pixels"
    if size is not None:
        actual = f"{size[0]}×{size[1]} = {actual}"
    return ImageLoadError(
        f"The image is {actual}; the limit is {limit_text}. Resize it and upload again."
    )


@contextlib.contextmanager
def _open_checked(data: bytes, limits: _Limits) -> Iterator[Image.Image]:
    """Opens ``data`` lazily with PIL, checks the declared size, and closes the image on exit.

    Only the header is parsed here; pixels are decoded later by ``load()``.
    """
    formats = _available_formats()
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's "possible format" chatter
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large_from_pil(exc, limits.max_pixels, _declared_size(data, formats)) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            "This file is not an image PIL can read (supported formats: "
            f"{_format_list(formats)}). Choose a PNG or JPEG picture and try again."
        ) from exc
    except MemoryError as exc:
        raise ImageLoadError(
            "There is not enough memory to open this image. Resize it and upload again."
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageLoadError(
            f"The image file is damaged or incomplete ({_reason(exc)}). "
            "Open it in an image editor, save it again and upload the new file."
        ) from exc
    with image:
        _check_pixels(image.size, limits)
        yield image


@functools.cache
def _available_formats() -> tuple[str, ...]:
    Image.init()
    return tuple(name for name in SUPPORTED_FORMATS if name in Image.OPEN)


def _declared_size(data: bytes, formats: tuple[str, ...]) -> tuple[int, int] | None:
    """Best-effort width and height from the header, for images PIL refused as too large.

    PIL's ``Image.open`` raises before returning such an image, so this calls the format
    plugin's header parser directly (no pixels are decoded). Only used to word the message.
    """
    prefix = data[:16]
    for name in formats:
        factory, accept = Image.OPEN.get(name, (None, None))
        if factory is None:
            continue
        accepted = True if accept is None else accept(prefix)
        if not accepted or isinstance(accepted, str):
            continue
        try:
            with factory(io.BytesIO(data), "") as image:
                return image.size
        except (*_DECODE_ERRORS, MemoryError):
            continue
    return None


def _too_large_from_pil(
    exc: Exception, max_pixels: int, size: tuple[int, int] | None = None
) -> ImageLoadError:
    """Turns PIL's decompression-bomb error or warning into a user message.

    PIL raises these from its own global limit, which can be lower than ``max_pixels``. The
    message then names PIL's limit so that it does not contradict itself.
    """
    match = _BOMB_PIXELS.search(str(exc))
    pixels = size[0] * size[1] if size is not None else None
    if pixels is None and match:
        pixels = int(match.group(1))
    if pixels is None:
        return ImageLoadError(
            f"The image is too large to load safely (the limit is {_format_mp(max_pixels)}). "
            "Resize it and upload again."
        )
    limit = max_pixels
    if pixels <= max_pixels and match and match.group(2):
        limit = int(match.group(2))  # PIL's own safety limit is the one that applied
    return _too_large(pixels, limit, size)


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Applies the EXIF orientation tag; a malformed EXIF block is ignored, not fatal."""
    with contextlib.suppress(*_DECODE_ERRORS):  # on failure keep the stored orientation
        ImageOps.exif_transpose(image, in_place=True)
    return image


# --------------------------------------------------------------------------------------------
# Mode conversion
# --------------------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to 8-bit RGB (transparency over white, high depth rescaled)."""
    if image.mode in _HIGH_DEPTH_MODES:
        return _high_depth_to_l(image).convert("RGB")
    if image.has_transparency_data:
        if image.mode == "La":  # premultiplied: PIL converts it only to LA
            image = image.convert("LA")
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(
            f"The image uses the colour mode {image.mode!r}, which cannot be converted to RGB. "
            "Save it as an ordinary RGB PNG or JPEG and upload it again."
        ) from exc


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Scales a 16-bit, 32-bit integer or float grayscale image to 8-bit ``"L"``.

    PIL's own ``convert("L")`` clips these modes (every value above 255 becomes 255), so the
    scale comes from the real bit depth: the file's ``BitsPerSample`` for TIFF, 16 bits for
    PNG and the ``I;16`` modes, and otherwise the value range.
    """
    values = np.asarray(image)
    data = values.astype(np.float32)  # exact for 16-bit values; half the memory of float64
    np.nan_to_num(data, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    full_scale = _full_scale(image, low, high)
    if full_scale is None:  # unknown depth and values outside it: stretch min..max
        span = high - low
        data -= low
        data *= 255.0 / span if span > 0 else 0.0
    else:
        data *= 255.0 / full_scale
    out = np.clip(np.rint(data), 0, 255).astype(np.uint8)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and not isinstance(transparency, bool):
        out[values == transparency] = 255  # transparent key colour -> white
    return Image.fromarray(out)


def _full_scale(image: Image.Image, low: float, high: float) -> float | None:
    """The value that maps to 255 for a high-depth image, or None to stretch min..max."""
    if image.mode == "F":
        if low < 0:
            return None
        for limit in (1.0, 255.0, 65535.0):
            if high <= limit:
                return limit
        return None
    bits = _declared_bits(image)
    if bits is None and image.mode.startswith("I;16"):
        bits = 16
    if bits is not None:
        return float(2**bits - 1)
    if low < 0:
        return None
    for limit in (255.0, 65535.0):
        if high <= limit:
            return limit
    return None


def _declared_bits(image: Image.Image) -> int | None:
    """Bits per sample above 8 declared by the file (TIFF), or implied by its format.

    32-bit TIFF integers return None: their values rarely span 32 bits, so the value range
    decides instead.
    """
    tags = getattr(image, "tag_v2", None)
    if tags is not None:
        bits = tags.get(258)  # BitsPerSample
        if isinstance(bits, tuple):
            bits = bits[0] if bits else None
        if isinstance(bits, int) and 8 < bits <= 16:
            return bits
    if image.format in ("PNG", "PPM") and image.mode != "F":
        return 16  # PNG has no other depth above 8 bits; PIL rescales PGM maxval to 65535
    return None


# --------------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------------


def _format_mp(pixels: int) -> str:
    megapixels = pixels / 1e6
    text = f"{megapixels:.1f}".removesuffix(".0") if megapixels >= 0.1 else f"{megapixels:.2g}"
    return f"{text} MP"


def _format_bytes(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} bytes"


def _format_list(formats: tuple[str, ...]) -> str:
    return ", ".join(dict.fromkeys(f.replace("JPEG2000", "JPEG 2000") for f in formats))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text or type(exc).__name__
