"""Image quilting: every output pixel is a sample pixel, patches match the sample, seeded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vizcore.data.images import load_sample
from vizcore.style.quilting import quilt_texture


@pytest.fixture(scope="module")
def gravel() -> np.ndarray:
    image = load_sample("gravel")
    image.thumbnail((96, 96))
    return np.array(image)


def test_every_pixel_is_copied_from_the_sample(gravel) -> None:
    result = quilt_texture(gravel, size=(80, 100), patch=16, seed=0)
    assert result.image.shape == (80, 100, 3)
    assert result.image.dtype == np.uint8
    copied = gravel[result.source[..., 0], result.source[..., 1]]
    np.testing.assert_array_equal(copied, result.image)


def _nearest_patch_errors(sample: np.ndarray, image: np.ndarray, tile: int = 8) -> np.ndarray:
    ref = sample.astype(np.float32)
    errors = []
    for y in range(0, image.shape[0] - tile + 1, tile):
        for x in range(0, image.shape[1] - tile + 1, tile):
            patch = image[y : y + tile, x : x + tile].astype(np.float32)
            errors.append(cv2.matchTemplate(ref, patch, cv2.TM_SQDIFF).min() / patch.size)
    return np.array(errors)


def test_output_patches_have_near_exact_matches_in_the_sample(gravel) -> None:
    result = quilt_texture(gravel, size=(96, 96), patch=24, seed=1)
    errors = _nearest_patch_errors(gravel, result.image)
    # Baseline: patches of another grey texture (grass) matched against the gravel sample.
    grass = load_sample("grass")
    grass.thumbnail((96, 96))
    baseline = _nearest_patch_errors(gravel, np.array(grass)[:96, :96])
    # Most 8x8 patches lie inside one block (exact copies); the rest straddle a seam cut where
    # the two blocks agree, so they are near-exact on average.
    assert (errors == 0).mean() > 0.6
    assert np.quantile(errors, 0.75) < 1.0
    assert errors.mean() < 0.25 * baseline.mean()


def test_deterministic_under_a_seed(gravel) -> None:
    a = quilt_texture(gravel, size=(64, 64), patch=16, seed=3)
    b = quilt_texture(gravel, size=(64, 64), patch=16, seed=3)
    c = quilt_texture(gravel, size=(64, 64), patch=16, seed=4)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_stop_returns_partial_result(gravel) -> None:
    calls = []

    def on_step(info):
        calls.append(info.step)
        return False

    result = quilt_texture(gravel, size=(64, 64), patch=16, on_step=on_step)
    assert result.stopped and calls == [1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch": 200}, "smaller than the sample"),
        ({"patch": 16, "overlap": 12}, "Overlap"),
        ({"size": (8, 8)}, "16-1024"),
    ],
)
def test_bad_parameters_are_explained(gravel, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        quilt_texture(gravel, **kwargs)
