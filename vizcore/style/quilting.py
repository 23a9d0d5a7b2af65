"""Non-parametric (non-neural) texture synthesis by image quilting.

Efros & Leung (1999) grow a texture pixel by pixel, copying the pixel whose neighbourhood in the
sample best matches the already synthesized neighbourhood. Efros & Freeman (2001, "Image quilting")
do the same with whole patches: each new ``patch x patch`` block is chosen among the sample blocks
whose overlap with what is already there has a squared error within ``(1 + tolerance)`` of the best,
and is pasted along the minimum-error boundary cut through the overlap. That is the method here.

``E(p) = sum over the overlap of ||out - sample_p||²``; candidates ``{p : E(p) <= (1 + tol)
min E}``. The search is vectorized with ``cv2.matchTemplate`` (``TM_SQDIFF`` over the top strip, the
left strip, minus their shared corner), so 256 px outputs take well under a second on CPU.

Deviation: none in substance; a tiny absolute slack is added to the tolerance so exactly repeating
samples (zero error) still have several candidates. Every output pixel is a copy of a sample pixel;
:attr:`QuiltResult.source` says which one.
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import cv2
import numpy as np

from vizcore.core.checks import check_float, check_int
from vizcore.core.progress import OnStep, StepInfo, report

__all__ = ["MIN_PATCH", "QuiltResult", "max_patch", "quilt_texture"]

MIN_PATCH = 4
"""Smallest quilting block size in pixels."""


@dataclass(frozen=True)
class QuiltResult:
    """A synthesized texture.

    Attributes:
        image: uint8 RGB ``(H, W, 3)``.
        source: int ``(H, W, 2)``: for each output pixel, the ``(row, col)`` of the sample pixel
            it was copied from.
        seconds: Wall-clock time.
        patch: Block size used.
        overlap: Overlap width used.
        stopped: True when ``on_step`` asked to stop (the unfilled part is black).
    """

    image: np.ndarray
    source: np.ndarray
    seconds: float
    patch: int
    overlap: int
    stopped: bool = False


def _vertical_cut(error: np.ndarray) -> np.ndarray:
    """Boolean ``(h, w)`` mask, True right of the minimum-error top-to-bottom path."""
    h, w = error.shape
    cost = error.copy()
    for r in range(1, h):
        prev = cost[r - 1]
        left = np.concatenate(([np.inf], prev[:-1]))
        right = np.concatenate((prev[1:], [np.inf]))
        cost[r] += np.minimum(np.minimum(left, prev), right)
    path = np.empty(h, dtype=int)
    path[-1] = int(np.argmin(cost[-1]))
    for r in range(h - 2, -1, -1):
        c = path[r + 1]
        lo, hi = max(c - 1, 0), min(c + 2, w)
        path[r] = lo + int(np.argmin(cost[r, lo:hi]))
    return np.arange(w)[None, :] >= path[:, None]


def max_patch(sample_shape: tuple[int, ...]) -> int:
    """The largest block size :func:`quilt_texture` accepts for a sample of this shape.

    A block must be smaller than the sample's short side (at least one other position to pick
    from). Returns a value below :data:`MIN_PATCH` when the sample is too small to quilt.

    Args:
        sample_shape: The sample's ``(h, w, ...)`` shape.
    """
    return min(int(sample_shape[0]), int(sample_shape[1])) - 1


def quilt_texture(
    sample: np.ndarray,
    *,
    size: tuple[int, int] = (256, 256),
    patch: int = 32,
    overlap: int | None = None,
    tolerance: float = 0.1,
    seed: int = 0,
    on_step: OnStep | None = None,
) -> QuiltResult:
    """Synthesize a texture of ``size`` (height, width) from ``sample`` by image quilting.

    Args:
        sample: uint8 RGB ``(h, w, 3)`` texture sample (at least ``patch + 1`` pixels per side;
            :func:`max_patch` gives the largest ``patch`` a sample allows).
        size: Output (height, width), 16 to 1024 each.
        patch: Block size: larger blocks keep larger structures (bricks need about one brick).
        overlap: Overlap between neighbouring blocks; default ``patch // 4``.
        tolerance: Relative slack above the best overlap error for the random choice.
        seed: Seed of the local random generator (same seed, same texture).
        on_step: Progress callback, one step per row of blocks; return False to stop.

    Raises:
        ValueError: A sample that is not uint8 RGB or too small for the block (the message
            gives the largest block it allows), a bad output size, a patch under 4, an overlap
            outside ``1 .. patch // 2``, a negative or non-finite tolerance.
    """
    sample, (height, width), patch, overlap, tolerance, seed = _checked_arguments(
        sample, size, patch, overlap, tolerance, seed
    )
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    step = patch - overlap
    rows = max(1, -(-(height - overlap) // step))
    cols = max(1, -(-(width - overlap) // step))
    canvas_h, canvas_w = rows * step + overlap, cols * step + overlap
    out = np.zeros((canvas_h, canvas_w, 3), np.float32)
    src = np.zeros((canvas_h, canvas_w, 2), np.int64)
    ref = sample.astype(np.float32)
    grid_y, grid_x = np.mgrid[0:patch, 0:patch]
    stopped = False
    for i in range(rows):
        for j in range(cols):
            y, x = i * step, j * step
            block = out[y : y + patch, x : x + patch]
            py, px = _choose_block(ref, block, i, j, overlap=overlap, tolerance=tolerance, rng=rng)
            keep_new = _paste_block(ref[py : py + patch, px : px + patch], block, i, j, overlap)
            src_block = src[y : y + patch, x : x + patch]
            src_block[keep_new] = np.stack([grid_y + py, grid_x + px], -1)[keep_new]
        frame = out[:height, :width].astype(np.uint8) if i % 2 == 1 or i == rows - 1 else None
        if not report(on_step, StepInfo(i + 1, rows, frame=frame, message="quilting rows")):
            stopped = i + 1 < rows
            break
    return QuiltResult(
        image=out[:height, :width].astype(np.uint8),
        source=src[:height, :width],
        seconds=time.perf_counter() - start,
        patch=patch,
        overlap=overlap,
        stopped=stopped,
    )


def _checked_arguments(
    sample: object,
    size: object,
    patch: object,
    overlap: object,
    tolerance: object,
    seed: object,
) -> tuple[np.ndarray, tuple[int, int], int, int, float, int]:
    """:func:`quilt_texture`'s arguments, checked (its docstring lists each refusal)."""
    if not isinstance(sample, np.ndarray):
        raise ValueError(
            f"sample must be a uint8 RGB numpy array (h, w, 3), not {type(sample).__name__}."
        )
    sample = np.ascontiguousarray(sample)
    if sample.ndim != 3 or sample.shape[2] != 3 or sample.dtype != np.uint8:
        raise ValueError(
            f"sample must be a uint8 RGB array of shape (h, w, 3), got {sample.dtype} "
            f"{sample.shape}."
        )
    if isinstance(size, str) or not isinstance(size, tuple | list) or len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}.")
    height, width = size
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in size) or not (
        16 <= height <= 1024 and 16 <= width <= 1024
    ):
        raise ValueError(f"Output size must be 16-1024 pixels per side, got {size!r}.")
    patch = check_int("The patch size", patch, minimum=MIN_PATCH)
    overlap = patch // 4 if overlap is None else check_int("The overlap", overlap, minimum=1)
    sh, sw = sample.shape[:2]
    largest = max_patch(sample.shape)
    if largest < MIN_PATCH:
        raise ValueError(
            f"The sample is {sw}×{sh} pixels; image quilting needs at least {MIN_PATCH + 1} "
            "pixels on each side. Use a larger or less elongated sample."
        )
    if patch > largest:
        raise ValueError(
            f"Patch size must be smaller than the sample ({sw}×{sh} pixels): at most "
            f"{largest} px for this sample, got {patch}. Choose a smaller patch or a larger, "
            "less elongated sample."
        )
    if not 1 <= overlap <= patch // 2:
        raise ValueError(f"Overlap must be between 1 and patch/2 = {patch // 2}; got {overlap}.")
    tolerance = check_float("tolerance", tolerance, minimum=0.0)
    seed = check_int("seed", seed)

    return sample, (int(height), int(width)), patch, overlap, tolerance, seed


def _choose_block(
    ref: np.ndarray,
    block: np.ndarray,
    i: int,
    j: int,
    *,
    overlap: int,
    tolerance: float,
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Top-left corner of a sample block whose overlap with the placed ones is within tolerance.

    The overlap error of every candidate position is a sum of squared differences computed with
    ``cv2.matchTemplate`` over the top strip, the left strip, minus their shared corner.
    """
    patch = block.shape[0]
    n_y, n_x = ref.shape[0] - patch + 1, ref.shape[1] - patch + 1
    error = np.zeros((n_y, n_x), np.float32)
    if i > 0:
        error += _ssd(ref, block[:overlap], n_y, n_x)
    if j > 0:
        error += _ssd(ref, block[:, :overlap], n_y, n_x)
    if i > 0 and j > 0:
        error -= _ssd(ref, block[:overlap, :overlap], n_y, n_x)
    error = np.maximum(error, 0.0)
    limit = error.min() * (1.0 + tolerance) + 1e-3 * overlap * patch
    candidates = np.flatnonzero(error <= limit)
    py, px = np.unravel_index(candidates[rng.integers(len(candidates))], error.shape)
    return int(py), int(px)


def _ssd(ref: np.ndarray, template: np.ndarray, n_y: int, n_x: int) -> np.ndarray:
    return cv2.matchTemplate(ref, np.ascontiguousarray(template), cv2.TM_SQDIFF)[:n_y, :n_x]


def _paste_block(new: np.ndarray, block: np.ndarray, i: int, j: int, overlap: int) -> np.ndarray:
    """Paste ``new`` into ``block`` (in place) behind minimum-error boundary cuts; its mask."""
    patch = new.shape[0]
    keep_new = np.ones((patch, patch), bool)
    if j > 0:
        diff = ((new[:, :overlap] - block[:, :overlap]) ** 2).sum(-1)
        keep_new[:, :overlap] &= _vertical_cut(diff)
    if i > 0:
        diff = ((new[:overlap] - block[:overlap]) ** 2).sum(-1)
        keep_new[:overlap] &= _vertical_cut(diff.T).T
    block[keep_new] = new[keep_new]
    return keep_new
