"""Weakly supervised object segmentation seeded by an attribution map.

Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
Classification Models and Saliency Maps", ICLR workshop 2014, section 3.1: the class saliency map
seeds GrabCut (Rother et al. 2004) — pixels above the 95th percentile of saliency are foreground
seeds, pixels below the 30th are background seeds, and GrabCut's colour models spread the labels.

Deviations, stated: the map is Gaussian-smoothed first (``smooth_sigma``, in pixels of the image;
the paper uses the raw, speckled map), and the pixels between the two thresholds start as
"probably foreground" above the map's median and "probably background" below it (the paper leaves
them to GrabCut without a prior). Both thresholds are parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from vizcore.core.checks import check_finite_array, check_float, check_int


@dataclass(frozen=True)
class Segmentation:
    """A GrabCut mask seeded by an attribution map.

    Attributes:
        mask: ``(H, W)`` bool, True on the object.
        seeds: ``(H, W)`` uint8 initial GrabCut labels (0 bg, 1 fg, 2 probable bg, 3 probable fg).
        foreground_percentile: Percentile above which pixels were sure foreground.
        background_percentile: Percentile below which pixels were sure background.
        seconds: Wall time.
    """

    mask: np.ndarray
    seeds: np.ndarray
    foreground_percentile: float
    background_percentile: float
    seconds: float


def _validate(image: np.ndarray, saliency: np.ndarray, fg: float, bg: float, iters: int) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}.")
    if saliency.shape != image.shape[:2]:
        raise ValueError(
            f"The map {saliency.shape} must have the image's size {image.shape[:2]}; "
            "resize it first (vizcore.core.render.resize_map)."
        )
    check_finite_array("The map", saliency)
    bg = check_float("The background percentile", bg, minimum=0.0, maximum=100.0)
    fg = check_float("The foreground percentile", fg, minimum=0.0, maximum=100.0)
    iters = check_int("iterations", iters, minimum=1, maximum=50)
    if not 0.0 <= bg < fg <= 100.0:
        raise ValueError(
            "Percentiles must satisfy 0 <= background < foreground <= 100, "
            f"got background={bg}, foreground={fg}."
        )
    if not 1 <= iters <= 50:
        raise ValueError(f"iterations must be between 1 and 50, got {iters}.")


def grabcut_from_saliency(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    foreground_percentile: float = 95.0,
    background_percentile: float = 30.0,
    iterations: int = 5,
    smooth_sigma: float = 4.0,
) -> Segmentation:
    """Segment the object that an attribution map points at, with OpenCV's GrabCut.

    Args:
        image: uint8 RGB ``(H, W, 3)``.
        saliency: Non-negative ``(H, W)`` map (saliency, Grad-CAM, ...), same size as the image.
        foreground_percentile: Pixels above this percentile of the map seed the foreground.
        background_percentile: Pixels below this percentile seed the background.
        iterations: GrabCut iterations.
        smooth_sigma: Gaussian smoothing of the map before thresholding (0 to disable).

    Returns:
        The mask and the seeds. If GrabCut labels nothing as foreground, the sure-foreground seeds
        are returned as the mask.

    Raises:
        ValueError: Shapes or parameters out of range, with a message saying what to change.
    """
    start = time.perf_counter()
    saliency = np.asarray(saliency, dtype=np.float32)
    _validate(image, saliency, foreground_percentile, background_percentile, iterations)
    if smooth_sigma > 0:
        saliency = cv2.GaussianBlur(saliency, (0, 0), sigmaX=smooth_sigma)
    high = np.percentile(saliency, foreground_percentile)
    low = np.percentile(saliency, background_percentile)
    median = np.median(saliency)
    seeds = np.where(saliency > median, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    seeds[saliency <= low] = cv2.GC_BGD
    seeds[saliency >= high] = cv2.GC_FGD
    if not (seeds == cv2.GC_FGD).any() or not (seeds == cv2.GC_BGD).any():
        raise ValueError("The map is flat: it gives no foreground or no background seeds.")
    labels = seeds.copy()
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    cv2.grabCut(bgr, labels, None, bgd_model, fgd_model, iterations, cv2.GC_INIT_WITH_MASK)
    mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not mask.any():
        mask = seeds == cv2.GC_FGD
    return Segmentation(
        mask=mask,
        seeds=seeds,
        foreground_percentile=foreground_percentile,
        background_percentile=background_percentile,
        seconds=time.perf_counter() - start,
    )


def mask_iou(mask: np.ndarray, other: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(mask, other).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(mask, other).sum() / union)
