"""The library's input checks (issue 18): image form, sizes, non-finite values, numeric options.

Each case here failed before the checks existed: a raw torch/numpy error, a wrong class, a NaN
result, or a silent no-op.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from vizcore import attribution, optvis
from vizcore.attribution import faithfulness
from vizcore.attribution.segmentation import grabcut_from_saliency
from vizcore.core import checks
from vizcore.core.cache import DecodedImageCache, layer_activations
from vizcore.data.images import MAX_ASPECT, ImageLoadError, load_image
from vizcore.models.predict import predict
from vizcore.models.registry import get_spec, preprocess
from vizcore.optvis import adversarial, dream, inversion, synthesis
from vizcore.style import quilting as texture_nn

CATEGORIES = [f"class {i}" for i in range(4)]


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 0).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# check_image_batch


def test_a_good_image_passes_unchanged(tiny_input):
    assert checks.check_image_batch(tiny_input) is tiny_input


@pytest.mark.parametrize(
    ("x", "fragment"),
    [
        (np.zeros((16, 16, 3), np.uint8), "numpy array"),
        ([1, 2, 3], "torch tensor"),
        (torch.rand(3, 16, 16), r"x\[None\]"),
        (torch.rand(1, 16, 16, 3), "channels-last"),
        (torch.rand(2, 3, 16, 16), r"\(1, 3, H, W\)"),
        ((torch.rand(1, 3, 16, 16) * 255).to(torch.uint8), r"x.float\(\) / 255"),
        (torch.rand(1, 3, 16, 16) * 255, "divide by 255"),
        (torch.rand(1, 3, 16, 16) - 0.5, r"clamp\(0, 1\)"),
        (torch.rand(1, 3, 0, 0), "is empty"),
    ],
)
def test_bad_images_are_explained(x, fragment):
    with pytest.raises(ValueError, match=fragment):
        checks.check_image_batch(x)


def test_non_finite_values_are_counted():
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, :2, :5] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="10 NaN and 1 infinite values"):
        checks.check_image_batch(x)


def test_range_tolerance_and_relaxed_block():
    x = torch.rand(1, 3, 16, 16)
    x[0, 0, 0, 0] = 1 + 1e-7  # rounding is fine
    checks.check_image_batch(x)
    noisy = x + 0.5
    with pytest.raises(ValueError, match="values from"):
        checks.check_image_batch(noisy)
    with checks.relaxed_range():
        checks.check_image_batch(noisy)
    with pytest.raises(ValueError, match="values from"):
        checks.check_image_batch(noisy)  # the relaxation ended with the block


@pytest.mark.parametrize("side", [1, 8, 31])
@pytest.mark.parametrize("key", ["efficientnet_lite0", "squeezenet1_1"])
def test_bundled_models_refuse_tiny_inputs_with_a_message(side, key, lite0, squeezenet):
    model = lite0 if key == "efficientnet_lite0" else squeezenet
    x = torch.rand(1, 3, side, side)
    with pytest.raises(ValueError, match="at least 32 pixels on each side"):
        predict(model, x)
    with pytest.raises(ValueError, match="at least 32 pixels on each side"):
        attribution.saliency(model, x)


# --------------------------------------------------------------------------------------------
# Every technique refuses NaN, 0..255 and uint8 inputs (issue 18 items 5 and 6)


def _nan_image() -> torch.Tensor:
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x[..., 3:7, 3:7] = float("nan")
    return x


TECHNIQUES = {
    "predict": lambda m, x: predict(m, x, categories=CATEGORIES),
    "saliency": lambda m, x: attribution.saliency(m, x),
    "occlusion": lambda m, x: attribution.occlusion(m, x, window=4, stride=4),
    "grad_cam": lambda m, x: attribution.grad_cam(m, x, layer="conv2"),
    "cam": lambda m, x: attribution.cam(m, x, layer="relu2"),
    "score_cam": lambda m, x: attribution.score_cam(m, x, layer="conv2"),
    "guided_grad_cam": lambda m, x: attribution.guided_grad_cam(m, x, layer="conv2"),
    "smoothgrad": lambda m, x: attribution.smoothgrad(m, x, samples=2),
    "integrated_gradients": lambda m, x: attribution.integrated_gradients(m, x, steps=2),
    "fgsm": lambda m, x: adversarial.fgsm(m, x, categories=CATEGORIES),
    "pgd": lambda m, x: adversarial.pgd(m, x, steps=1, categories=CATEGORIES),
    "deletion_insertion": lambda m, x: faithfulness.deletion_insertion(
        m, x, np.ones((16, 16)), steps=2
    ),
    "randomization_check": lambda m, x: faithfulness.randomization_check(
        m, x, method=attribution.saliency, steps=1
    ),
    "layer_activations": lambda m, x: layer_activations(m, x, layers=["conv2"]),
    "feature_inversion": lambda m, x: inversion.feature_inversion(
        m, x, layer="conv2", settings=inversion.InversionSettings(steps=1)
    ),
    "deep_dream": lambda m, x: dream.deep_dream(
        m, x, layer="conv2", settings=dream.DreamSettings(octaves=1, steps_per_octave=1)
    ),
}


@pytest.mark.parametrize("name", list(TECHNIQUES))
@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_nan_image, "48 NaN"),
        (lambda: torch.rand(1, 3, 16, 16) * 255, "divide by 255"),
        (lambda: (torch.rand(1, 3, 16, 16) * 255).to(torch.uint8), r"x.float\(\) / 255"),
    ],
    ids=["nan", "0-255", "uint8"],
)
def test_every_technique_refuses_bad_images(tiny_cnn, name, make, fragment):
    with pytest.raises(ValueError, match=fragment):
        TECHNIQUES[name](tiny_cnn, make())


# --------------------------------------------------------------------------------------------
# Numeric options: NaN, inf, negative, zero, float-for-int, bool-for-int (issue 18 item 7)

BAD_OPTIONS = [
    # (function, kwargs, message fragment)
    ("deletion_insertion", {"batch_size": 0}, "batch_size must be a positive integer"),
    ("deletion_insertion", {"batch_size": -1}, "batch_size must be a positive integer"),
    ("deletion_insertion", {"steps": 2.5}, "steps must be a positive integer"),
    ("fgsm", {"epsilon": -1}, "epsilon"),
    ("fgsm", {"epsilon": float("nan")}, "epsilon .* finite"),
    ("fgsm", {"target": 1.5}, "class index"),
    ("fgsm", {"target": True}, "class index"),
    ("fgsm", {"target": 7}, "it has 4 classes, numbered 0 to 3"),
    ("pgd", {"steps": 2.5}, "steps must be a positive integer"),
    ("pgd", {"steps": True}, "steps must be a positive integer"),
    ("pgd", {"step_size": float("inf")}, "step size must be a finite"),
    ("pgd", {"target": 1.5}, "class index"),
    ("pgd", {"seed": 0.5}, "seed must be a whole number"),
    ("randomization_check", {"layers": []}, "layers is empty"),
    ("randomization_check", {"layers": [""]}, "non-empty strings"),
    ("randomization_check", {"layers": "conv1"}, "list of layer names"),
    ("randomization_check", {"steps": 1.0}, "steps must be"),
    ("smoothgrad", {"sigma": float("inf")}, "sigma .* finite"),
    ("smoothgrad", {"sigma": float("nan")}, "sigma .* finite"),
    ("smoothgrad", {"sigma": -0.1}, "sigma .* >= 0"),
    ("smoothgrad", {"samples": 2.0}, "samples must be a positive integer"),
    ("occlusion", {"window": True}, "window must be a positive integer"),
    ("occlusion", {"stride": 4.0}, "stride must be a positive integer"),
    ("occlusion", {"batch_size": 0}, "batch_size must be a positive integer"),
    ("integrated_gradients", {"steps": float("nan")}, "steps must be a positive integer"),
    ("predict", {"top_k": 2.5}, "top_k must be a positive integer"),
    ("predict", {"top_k": 0}, "top_k must be a positive integer"),
]

CALLS = {
    "deletion_insertion": lambda m, x, kw: faithfulness.deletion_insertion(
        m, x, np.ones((16, 16)), **{"steps": 2, **kw}
    ),
    "fgsm": lambda m, x, kw: adversarial.fgsm(m, x, categories=CATEGORIES, **kw),
    "pgd": lambda m, x, kw: adversarial.pgd(m, x, categories=CATEGORIES, **{"steps": 1, **kw}),
    "randomization_check": lambda m, x, kw: faithfulness.randomization_check(
        m, x, method=attribution.saliency, **kw
    ),
    "smoothgrad": lambda m, x, kw: attribution.smoothgrad(m, x, **{"samples": 2, **kw}),
    "occlusion": lambda m, x, kw: attribution.occlusion(m, x, **{"window": 4, **kw}),
    "integrated_gradients": lambda m, x, kw: attribution.integrated_gradients(m, x, **kw),
    "predict": lambda m, x, kw: predict(m, x, categories=CATEGORIES, **kw),
}


@pytest.mark.parametrize(("name", "kwargs", "fragment"), BAD_OPTIONS)
def test_bad_options_are_explained(tiny_cnn, tiny_input, name, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        CALLS[name](tiny_cnn, tiny_input, kwargs)


def test_an_all_nan_map_has_no_auc(tiny_cnn, tiny_input):
    with pytest.raises(ValueError, match="256 NaN or infinite values"):
        faithfulness.deletion_insertion(tiny_cnn, tiny_input, np.full((16, 16), np.nan))


def test_a_nan_map_is_refused_by_grabcut():
    image = np.zeros((32, 32, 3), np.uint8)
    saliency = np.zeros((32, 32), np.float32)
    saliency[0, 0] = np.nan
    with pytest.raises(ValueError, match="The map has 1 NaN"):
        grabcut_from_saliency(image, saliency)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: optvis.gaussian_blur(torch.rand(1, 3, 8, 8), float("nan")), "finite"),
        (lambda: optvis.gaussian_blur(torch.rand(1, 3, 8, 8), -1.0), ">= 0"),
        (lambda: optvis.gaussian_blur(torch.rand(1, 3, 8, 8), True), "must be a number"),
        (lambda: optvis.jitter(2.5), "whole number"),
        (lambda: optvis.pad(-1), "at least 0"),
        (lambda: optvis.random_scale(float("nan"), 1.0), "finite"),
        (lambda: optvis.random_rotate(float("inf")), "finite"),
        (lambda: optvis.random_affine(translate=1.5), "whole number"),
        (lambda: optvis.fft_size(2.5), "positive integer"),
        (lambda: optvis.class_logit(1.5), "whole number"),
        (lambda: optvis.class_logit([0, True]), "whole number"),
        (lambda: optvis.channel("conv1", 1.5), "whole number"),
        (lambda: optvis.neuron("conv1", 0, y=-1), "at least 0"),
        (lambda: optvis.PixelRegularizers(blur_sigma=float("nan")), "finite"),
        (lambda: optvis.PixelRegularizers(blur_every=2.5), "positive integer"),
        (lambda: optvis.pixel_image((1, 3, 8, 8), noise=float("inf")), "finite"),
        (lambda: optvis.pixel_image((1, 3, 8, 8), init=torch.rand(1, 3, 8, 8) * 255), "255"),
        (lambda: optvis.pixel_image((1, 3, 8.0, 8), init="zeros"), "positive sizes"),
        (lambda: optvis.clip_small_norm(torch.rand(1, 3, 4, 4), float("nan")), "finite"),
        (
            lambda: synthesis.class_visualization(
                nn.Identity(), None, target=1.5, categories=CATEGORIES
            ),
            "class index",
        ),
        (
            lambda: synthesis.class_visualization(
                nn.Identity(), None, target=9, categories=CATEGORIES
            ),
            "4 classes",
        ),
        (
            lambda: texture_nn.quilt_texture(np.zeros((64, 64, 3), np.uint8), tolerance=np.nan),
            "finite",
        ),
        (
            lambda: texture_nn.quilt_texture(np.zeros((64, 64, 3), np.uint8), patch=16.0),
            "patch size must be",
        ),
    ],
)
def test_library_options_are_explained(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


def test_optimize_refuses_non_finite_and_float_steps(tiny_cnn):
    param = optvis.pixel_image((1, 3, 16, 16))
    objective = optvis.class_logit(0)
    for kwargs, fragment in (
        ({"steps": 2.5, "lr": 0.1}, "steps must be a positive integer"),
        ({"steps": 2, "lr": float("nan")}, "finite"),
        ({"steps": 2, "lr": 0.1, "tv_weight": float("nan")}, "tv_weight must be finite"),
        ({"steps": 2, "lr": 0.1, "l2_weight": float("inf")}, "finite"),
        ({"steps": 2, "lr": 0.1, "frame_every": 0}, "frame_every must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=fragment):
            optvis.optimize(tiny_cnn, objective, param=param, **kwargs)


# --------------------------------------------------------------------------------------------
# Load-time limits (issue 18 items 1 and 4)


@pytest.mark.parametrize(
    ("size", "fragment"),
    [
        ((100_000, 10), "100000×10 pixels, an aspect ratio of 10,000:1; the limit is 20:1"),
        ((70_000, 20), "aspect ratio of 3,500:1"),
        ((4_000_000, 10), "aspect ratio of 400,000:1"),
        ((3, 3000), "aspect ratio of 1,000:1"),
        ((640, 31), "aspect ratio of 20.6:1"),
    ],
)
def test_elongated_images_are_refused_before_decoding(size, fragment):
    data = _png(*size, mode="1")
    assert len(data) < 600_000  # a few hundred bytes to a few hundred KB of PNG
    with pytest.raises(ImageLoadError, match=fragment):
        load_image(data)


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (31, 400), (400, 31)])
def test_tiny_images_are_refused(size):
    with pytest.raises(ImageLoadError, match="at least 32 pixels on each side"):
        load_image(_png(*size))


def test_the_limits_allow_normal_and_panorama_images():
    assert load_image(_png(32, 32)).size == (32, 32)
    assert load_image(_png(640, 32)).size == (640, 32)  # exactly 20:1
    assert load_image(_png(1, 1), min_side=1).size == (1, 1)
    assert load_image(_png(2000, 10), min_side=1, max_aspect=None).size == (2000, 10)


def test_any_loaded_image_fits_a_jpeg_side():
    # The longest side a loaded image can have: 40 MP at the aspect limit.
    from vizcore.data.images import MAX_PIXELS

    assert (MAX_PIXELS * MAX_ASPECT) ** 0.5 < 65_500


def test_full_view_of_a_strip_stays_small():
    strip = Image.new("RGB", (100_000, 10), (10, 20, 30))
    x = preprocess(strip, get_spec("efficientnet_lite0"), crop=False)
    assert tuple(x.shape) == (1, 3, 224, 448)
    assert torch.allclose(x[0, :, 100, 200], torch.tensor([10, 20, 30]) / 255, atol=1 / 255)


def test_full_view_unchanged_for_ordinary_images():
    image = Image.effect_noise((300, 200), 60).convert("RGB")
    spec = get_spec("squeezenet1_1")
    x = preprocess(image, spec, crop=False)
    expected = image.resize((340, 227), spec.preprocessing.resample)
    np.testing.assert_array_equal((x[0].permute(1, 2, 0).numpy() * 255).round(), expected)


# --------------------------------------------------------------------------------------------
# Quilting with an elongated sample (issue 18 item 2)


def test_quilting_an_elongated_sample_says_the_largest_patch():
    sample = np.random.default_rng(0).integers(0, 255, (43, 128, 3), dtype=np.uint8)
    assert texture_nn.max_patch(sample.shape) == 42
    with pytest.raises(ValueError, match="at most 42 px for this sample, got 64"):
        texture_nn.quilt_texture(sample, size=(128, 128), patch=64)
    result = texture_nn.quilt_texture(sample, size=(64, 64), patch=42)
    assert result.patch == 42


def test_quilting_a_sample_too_thin_for_any_patch():
    with pytest.raises(ValueError, match="at least 5 pixels on each side"):
        texture_nn.quilt_texture(np.zeros((3, 3000, 3), np.uint8), size=(64, 64), patch=4)


# --------------------------------------------------------------------------------------------
# The decoded-upload cache is bounded by bytes (issue 18 item 9)


def test_decoded_image_cache_is_bounded_by_decoded_bytes():
    one = 600 * 600 * 3
    cache = DecodedImageCache(max_bytes=3 * one, max_entries=64)
    uploads = [_png(600, 600 + i, mode="1") for i in range(8)]  # 8 different small PNGs
    for data in uploads:
        image = cache.get_or_load(data, load_image)
        assert image.mode == "RGB"
        assert cache.nbytes <= 3 * one + 8 * 600 * 3
    assert len(cache) == 2  # the last uploads that fit, least recently used evicted
    first_again = cache.get_or_load(uploads[-1], load_image)
    assert cache.hits == 1
    first_again.putpixel((0, 0), (1, 2, 3))  # a copy: the cached image is unchanged
    assert cache.get_or_load(uploads[-1], load_image).getpixel((0, 0)) == (0, 0, 0)


def test_decoded_image_cache_skips_oversized_and_failed_loads():
    cache = DecodedImageCache(max_bytes=1000)
    assert cache.get_or_load(_png(64, 64), load_image).size == (64, 64)
    assert len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ImageLoadError):
        cache.get_or_load(b"not an image", load_image)
    assert len(cache) == 0


def test_the_app_decodes_uploads_through_the_bounded_cache():
    from vizui import cached

    assert isinstance(cached.DECODED_IMAGES, DecodedImageCache)
    assert cached.DECODED_IMAGES.max_bytes <= 256 * 1024 * 1024
    cached.DECODED_IMAGES.clear()
    for i in range(4):  # the 6000x6000 1-bit PNGs: 108 MB each once decoded
        cached.decoded_image(_png(6000, 6000 + i, mode="1"))
    assert cached.DECODED_IMAGES.nbytes <= cached.DECODED_IMAGES.max_bytes
    cached.DECODED_IMAGES.clear()
