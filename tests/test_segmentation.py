"""GrabCut seeded by an attribution map (Simonyan et al. 2014, section 3.1)."""

from __future__ import annotations

import numpy as np
import pytest

from vizcore.attribution.segmentation import grabcut_from_saliency, mask_iou


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """A textured red disc on a textured grey background, and the disc's true mask."""
    rng = np.random.default_rng(0)
    h, w = 96, 128
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 40) ** 2 + (xx - 70) ** 2 < 22**2
    image = rng.normal(120, 12, (h, w, 3))
    image[disc] = rng.normal((200, 60, 50), 12, (disc.sum(), 3))
    return np.clip(image, 0, 255).astype(np.uint8), disc


def test_a_rough_map_gives_the_object_mask():
    image, disc = _scene()
    yy, xx = np.mgrid[: disc.shape[0], : disc.shape[1]]
    # A blurry, off-centre blob: a saliency map knows roughly where, not the outline.
    rough = np.exp(-((yy - 44) ** 2 + (xx - 66) ** 2) / (2 * 14.0**2)).astype(np.float32)
    result = grabcut_from_saliency(image, rough, iterations=5)
    assert mask_iou(result.mask, disc) > 0.85
    # The map alone, thresholded at the same percentile, is a much worse mask.
    assert mask_iou(rough >= np.percentile(rough, 95), disc) < 0.5


def test_seeds_follow_the_percentiles():
    image, _ = _scene()
    ramp = np.tile(np.linspace(0, 1, image.shape[1], dtype=np.float32), (image.shape[0], 1))
    result = grabcut_from_saliency(
        image, ramp, foreground_percentile=90, background_percentile=20, smooth_sigma=0
    )
    assert (result.seeds[:, -5:] == 1).all()  # cv2.GC_FGD
    assert (result.seeds[:, :5] == 0).all()  # cv2.GC_BGD


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"foreground_percentile": 20, "background_percentile": 30}, "Percentiles"),
        ({"iterations": 0}, "iterations"),
    ],
)
def test_bad_parameters_are_explained(kwargs, message):
    image, disc = _scene()
    with pytest.raises(ValueError, match=message):
        grabcut_from_saliency(image, disc.astype(np.float32), **kwargs)


def test_wrong_map_size_and_flat_map_are_explained():
    image, disc = _scene()
    with pytest.raises(ValueError, match="resize it first"):
        grabcut_from_saliency(image, disc[:10].astype(np.float32))
    with pytest.raises(ValueError, match="flat"):
        grabcut_from_saliency(image, np.zeros(disc.shape, np.float32))


def test_saliency_seeded_grabcut_finds_the_pasted_cat(lite0):
    """Issue 8: the GrabCut mask from the real model's saliency overlaps the pasted box."""
    from PIL import Image

    from vizcore.attribution import saliency
    from vizcore.core import render
    from vizcore.data.images import load_sample, to_tensor01

    left, top, right, bottom = 60, 50, 200, 170
    cat = load_sample("chelsea").crop((30, 0, 390, 300))
    cat = cat.resize((right - left, bottom - top), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    canvas.paste(cat, (left, top))
    x = to_tensor01(canvas)
    result = saliency(lite0, x)
    assert 281 <= result.target <= 287, "the composite should be classified as a cat"
    box = np.zeros((224, 224), bool)
    box[top:bottom, left:right] = True
    mask = grabcut_from_saliency(render.tensor_image(x.numpy()), result.map).mask
    assert mask_iou(mask, box) >= 0.5
