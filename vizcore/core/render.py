"""Turn arrays into displayable images: normalization, colormaps, overlays, grids, PNG/GIF bytes.

Pure numpy + OpenCV + PIL; no Streamlit. Every function returns ``uint8`` RGB arrays
``(H, W, 3)`` or encoded bytes, ready for ``st.image`` or a download button.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

#: Colormaps offered in the UI, mapped to OpenCV's constants.
COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
    "turbo": cv2.COLORMAP_TURBO,
    "hot": cv2.COLORMAP_HOT,
    "bone": cv2.COLORMAP_BONE,
}


def normalize01(array: np.ndarray, *, percentile: float | None = None) -> np.ndarray:
    """Scale to [0, 1] by min and max (or by the given upper percentile, clipping above it).

    A constant array becomes all zeros.
    """
    a = np.asarray(array, dtype=np.float32)
    low = float(a.min()) if a.size else 0.0
    high = float(np.percentile(a, percentile)) if percentile is not None else float(a.max())
    if not np.isfinite(high - low) or high - low <= 1e-12:
        return np.zeros_like(a)
    return np.clip((a - low) / (high - low), 0.0, 1.0)


def symmetric01(array: np.ndarray) -> np.ndarray:
    """Map a signed array to [0, 1] with 0 at 0.5 (for filters and signed gradients)."""
    a = np.asarray(array, dtype=np.float32)
    scale = float(np.abs(a).max()) if a.size else 0.0
    if scale <= 1e-12:
        return np.full_like(a, 0.5)
    return 0.5 + 0.5 * a / scale


def to_uint8(image01: np.ndarray) -> np.ndarray:
    """[0, 1] float to uint8, channels-last; accepts (H, W), (H, W, 3) or (3, H, W)."""
    a = np.asarray(image01, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize(map01: np.ndarray, *, colormap: str = "jet") -> np.ndarray:
    """Apply a colormap to a 2-D map in [0, 1]; returns uint8 RGB ``(H, W, 3)``."""
    if colormap not in COLORMAPS:
        raise ValueError(f"Unknown colormap {colormap!r}; choose one of {sorted(COLORMAPS)}.")
    if map01.ndim != 2:
        raise ValueError(f"A heatmap must be 2-D, got shape {map01.shape}.")
    bgr = cv2.applyColorMap(to_uint8(map01), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def resize_map(map2d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``(height, width)``."""
    height, width = size
    return cv2.resize(
        np.asarray(map2d, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR
    )


def overlay(
    image: np.ndarray, map01: np.ndarray, *, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a colorized heatmap over an RGB image (uint8 or [0, 1] float); uint8 RGB out.

    The map is resized to the image if needed. ``alpha`` is the heatmap's opacity in [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    base = np.asarray(image)
    base = to_uint8(base) if base.dtype != np.uint8 else base
    if base.ndim == 2:
        base = np.repeat(base[..., None], 3, axis=2)
    if map01.shape != base.shape[:2]:
        map01 = resize_map(map01, base.shape[:2])
    heat = colorize(map01, colormap=colormap).astype(np.float32)
    mixed = (1.0 - alpha) * base.astype(np.float32) + alpha * heat
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def tensor_image(x: np.ndarray) -> np.ndarray:
    """A ``(1, 3, H, W)`` or ``(3, H, W)`` array in [0, 1] as uint8 ``(H, W, 3)``."""
    a = np.asarray(x)
    if a.ndim == 4:
        a = a[0]
    return to_uint8(a)


def grid(
    tiles: Sequence[np.ndarray], *, columns: int, pad: int = 1, pad_value: int = 255
) -> np.ndarray:
    """Arrange equally sized uint8 tiles (H, W) or (H, W, 3) into one image."""
    if not tiles:
        raise ValueError("grid() needs at least one tile.")
    first = np.asarray(tiles[0])
    height, width = first.shape[:2]
    channels = 1 if first.ndim == 2 else first.shape[2]
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    canvas = np.full(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels),
        pad_value,
        dtype=np.uint8,
    )
    for i, tile in enumerate(tiles):
        t = np.asarray(tile)
        t = t[..., None] if t.ndim == 2 else t
        r, c = divmod(i, columns)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        canvas[y : y + height, x : x + width] = t
    return canvas[..., 0] if channels == 1 else canvas


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, 3) array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """Pack named arrays into a compressed ``.npz`` file in memory."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def gif_bytes(frames: Sequence[np.ndarray], *, duration_ms: int = 80) -> bytes:
    """Encode uint8 RGB frames as a looping animated GIF."""
    if not frames:
        raise ValueError("gif_bytes() needs at least one frame.")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=duration_ms,
        loop=0,
    )
    return buffer.getvalue()
