"""Procedurally generated, colourful style images (seeded, so they need no files or licences).

The bundled CC0 textures (brick, grass, gravel) are grey-green; style transfer is easiest to see
with strong colours and clear strokes, so these patterns complete the set:

* :func:`marble`: marbled paint, smooth noise folded into sharp bands of a four-colour palette
  (the pattern used in ``shared/research/synthesis-feasibility.md``);
* :func:`mosaic`: stained glass, Voronoi cells of saturated colours with dark lead lines;
* :func:`waves`: interfering sine waves through a warm-to-cold palette, Op-art-like stripes.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

__all__ = ["STYLE_PATTERNS", "marble", "mosaic", "waves"]

_MARBLE_PALETTE = np.array(
    [[252, 246, 228], [244, 160, 30], [200, 80, 20], [30, 60, 150], [20, 30, 70], [90, 150, 200]],
    dtype=np.float32,
)


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Periodic (tileable) Gaussian-filtered white noise, standardized."""
    white = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    field = np.fft.ifft2(np.fft.fft2(white) * transfer).real.astype(np.float32)
    field -= field.mean()
    return field / (field.std() + 1e-8)


def _palette_lookup(t: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Map values in [0, 1) cyclically onto a palette, with short blends between colours."""
    k = len(palette)
    pos = (t % 1.0) * k
    i = np.floor(pos).astype(int) % k
    frac = pos - np.floor(pos)
    blend = np.clip((frac - 0.8) / 0.2, 0.0, 1.0)[..., None]  # sharp edges, thin transitions
    return palette[i] * (1 - blend) + palette[(i + 1) % k] * blend


def _check(size: int) -> None:
    if not 32 <= size <= 2048:
        raise ValueError(f"size must be between 32 and 2048 pixels, got {size}.")


def marble(size: int = 256, *, seed: int = 0) -> Image.Image:
    """Marbled paint: domain-warped smooth noise through a banded cream/orange/blue palette."""
    _check(size)
    rng = np.random.default_rng(seed)
    scale = size / 256
    warp_x = _smooth_noise(rng, size, 18 * scale) * 14 * scale
    warp_y = _smooth_noise(rng, size, 18 * scale) * 14 * scale
    base = _smooth_noise(rng, size, 16 * scale)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    warped = cv2.remap(
        base, grid_x + warp_x, grid_y + warp_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
    )
    rgb = _palette_lookup(warped * 0.7 + 0.5, _MARBLE_PALETTE)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def mosaic(size: int = 256, *, seed: int = 0, cells: int = 60) -> Image.Image:
    """Stained glass: Voronoi cells in saturated colours, separated by dark lead lines."""
    _check(size)
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (cells, 2)).astype(np.float32)
    hues = rng.uniform(0, 180, cells)
    colours = cv2.cvtColor(
        np.stack([hues, rng.uniform(170, 255, cells), rng.uniform(170, 255, cells)], -1).astype(
            np.uint8
        )[None],
        cv2.COLOR_HSV2RGB,
    )[0].astype(np.float32)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    d = (grid_x[..., None] - points[:, 0]) ** 2 + (grid_y[..., None] - points[:, 1]) ** 2
    order = np.argsort(d, axis=-1)[..., :2]
    nearest = np.take_along_axis(d, order, -1)
    rgb = colours[order[..., 0]]
    edge = np.sqrt(nearest[..., 1]) - np.sqrt(nearest[..., 0]) < 2.5 * size / 256
    rgb[edge] = (25, 20, 20)
    shade = 0.85 + 0.15 * _smooth_noise(rng, size, 6 * size / 256)[..., None].clip(-1, 1)
    return Image.fromarray(np.clip(rgb * shade, 0, 255).astype(np.uint8))


def waves(size: int = 256, *, seed: int = 0) -> Image.Image:
    """Interfering sine waves through a warm-to-cold palette (bold, regular stripes)."""
    _check(size)
    rng = np.random.default_rng(seed)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size), np.float32)
    for _ in range(3):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(3, 7), rng.uniform(0, 2 * np.pi)
        along = grid_x * np.cos(angle) + grid_y * np.sin(angle)
        field += np.sin(2 * np.pi * freq * along + phase)
    palette = np.array(
        [[250, 220, 60], [240, 90, 40], [170, 20, 90], [40, 20, 110], [20, 140, 170]],
        dtype=np.float32,
    )
    rgb = _palette_lookup(field / 6 + 0.5, palette)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


#: Generated style images offered by the UI and the trainer: name -> generator(size, seed=...).
STYLE_PATTERNS: dict[str, Callable[..., Image.Image]] = {
    "marble": marble,
    "mosaic": mosaic,
    "waves": waves,
}
