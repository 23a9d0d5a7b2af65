"""Tests for vizcore.data.images: robust loading, mode conversion, resizing, digests and samples.

Every bad or unusual input is built in memory by the test itself, so no test files are committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from vizcore.data import images
from vizcore.data.images import ImageLoadError, load_image

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)


def _encode(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _png_with_declared_size(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` × ``height`` but whose pixel data is 1×1.

    Building it costs microseconds and a few hundred bytes. A loader that decodes before checking
    the size would fail with a "damaged" error instead of a "too large" one.
    """
    data = _encode(Image.new("1", (1, 1)))
    assert data[12:16] == b"IHDR"
    body = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    ihdr = struct.pack(">I", 13) + body + struct.pack(">I", zlib.crc32(body))
    return data[:8] + ihdr + data[33:]


def _load_any_size(source: object) -> Image.Image:
    """``load_image`` without the size and aspect limits: these tests check decoding on tiny
    pictures (the limits have their own tests)."""
    return load_image(source, min_side=1, max_aspect=None)  # type: ignore[arg-type]


def _assert_rgb(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8
    assert array.shape == (size[1], size[0], 3)
    return array


def _assert_message(exc: pytest.ExceptionInfo[ImageLoadError], *keywords: str) -> None:
    message = str(exc.value)
    assert message[:1].isupper()
    assert message.endswith(".")
    assert "Traceback" not in message
    for keyword in keywords:
        assert keyword.lower() in message.lower(), message


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_image_load_error_is_a_value_error() -> None:
    assert issubclass(ImageLoadError, ValueError)


def test_empty_bytes() -> None:
    with pytest.raises(ImageLoadError) as exc:
        load_image(b"")
    _assert_message(exc, "empty")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as exc:
        load_image(path)
    _assert_message(exc, "empty")


def test_random_bytes() -> None:
    data = np.random.default_rng(0).bytes(4096)
    with pytest.raises(ImageLoadError) as exc:
        load_image(data)
    _assert_message(exc, "not an image")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("This is a text file, not a JPEG.\n" * 20, encoding="utf-8")
    with pytest.raises(ImageLoadError) as exc:
        load_image(str(path))
    _assert_message(exc, "not an image", "PNG", "JPEG")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(fmt: str) -> None:
    data = _encode(_noise(96, 64), fmt)
    with pytest.raises(ImageLoadError) as exc:
        load_image(data[: len(data) // 2])
    _assert_message(exc, "damaged or incomplete")


def test_corrupt_png_data() -> None:
    data = bytearray(_encode(_noise(64, 64)))
    start = data.index(b"IDAT") + 200
    data[start : start + 64] = bytes(64)
    with pytest.raises(ImageLoadError) as exc:
        load_image(bytes(data))
    _assert_message(exc, "damaged")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as exc:
        load_image(tmp_path / "nope.png")
    _assert_message(exc, "no file")


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError) as exc:
        load_image(tmp_path)
    _assert_message(exc, "folder")


def test_too_many_bytes_bytes_and_file(tmp_path: Path) -> None:
    data = _encode(_noise(32, 32))
    with pytest.raises(ImageLoadError) as exc:
        load_image(data, max_bytes=len(data) - 1)
    _assert_message(exc, "limit")
    path = tmp_path / "big.png"
    path.write_bytes(data)
    with pytest.raises(ImageLoadError) as exc:
        load_image(path, max_bytes=100)
    _assert_message(exc, "limit", "smaller")
    assert load_image(path, max_bytes=len(data)).size == (32, 32)


def test_wrong_source_type() -> None:
    with pytest.raises(TypeError):
        load_image(12345)  # type: ignore[arg-type]


def test_20000_square_png_rejected_by_declared_size(monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.perf_counter()
    data = _png_with_declared_size(20_000, 20_000)
    assert time.perf_counter() - start < 2.0
    assert len(data) < 1000  # cheap to build: no 400 MP buffer ever exists
    global_limit = Image.MAX_IMAGE_PIXELS

    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageLoadError) as exc:
        load_image(data)
    _assert_message(exc, "20000×20000", "400 MP", "limit is 40 MP", "resize")
    assert global_limit == Image.MAX_IMAGE_PIXELS


def test_over_our_limit_but_under_pils(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(ImageLoadError) as exc:
        load_image(_png_with_declared_size(8000, 6000))
    _assert_message(exc, "8000×6000", "48 MP", "40 MP")


def test_pils_own_limit_is_reported_without_warnings() -> None:
    data = _png_with_declared_size(10_000, 10_000)  # over PIL's default ~89.5 MP warning level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageLoadError) as exc:
            load_image(data, max_pixels=150_000_000)
    _assert_message(exc, "10000×10000", "100 MP", "limit")
    assert "150 MP" not in str(exc.value)  # the limit that applied is PIL's, not ours
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_concurrent_loads_leave_warning_filters_alone() -> None:
    before = list(warnings.filters)
    payloads = [_encode(_noise(16 + i, 8, seed=i)) for i in range(12)]
    payloads += [_png_with_declared_size(20_000, 20_000), b"not an image"] * 4

    def load(data: bytes) -> str:
        try:
            return images.image_digest(_load_any_size(data))
        except ImageLoadError:
            return "error"

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(load, payloads))
    assert results.count("error") == 8
    assert results[:12] == [load(data) for data in payloads[:12]]
    assert list(warnings.filters) == before


def test_custom_max_pixels() -> None:
    data = _encode(Image.new("L", (100, 100)))
    with pytest.raises(ImageLoadError) as exc:
        load_image(data, max_pixels=9_999)
    _assert_message(exc, "100×100")
    assert load_image(data, max_pixels=10_000).size == (100, 100)


# --------------------------------------------------------------------------------------------
# Mode conversion and odd images
# --------------------------------------------------------------------------------------------


def _colour_bars() -> Image.Image:
    bars = np.zeros((32, 64, 3), np.uint8)
    for index, colour in enumerate((RED, GREEN, BLUE, YELLOW)):
        bars[:, index * 16 : (index + 1) * 16] = colour
    return Image.fromarray(bars)


def test_cmyk_jpeg_colours() -> None:
    data = _encode(_colour_bars().convert("CMYK"), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "CMYK"
        assert "adobe" in raw.info  # PIL writes Adobe (inverted) CMYK
    array = _assert_rgb(_load_any_size(data), (64, 32))
    for index, colour in enumerate((RED, GREEN, BLUE, YELLOW)):
        centre = array[16, index * 16 + 8].astype(int)
        assert np.abs(centre - colour).max() <= 12, (colour, centre)


def test_16bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 32768, 65535, 1000]], dtype=np.uint16)
    data = _encode(Image.fromarray(values))
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "I;16"
    array = _assert_rgb(_load_any_size(data), (4, 1))
    assert array[0, :, 0].tolist() == [0, 128, 255, 4]
    assert (array == array[..., :1]).all()  # gray stays gray


def test_16bit_big_endian_and_pgm() -> None:
    values = np.array([[0, 32768, 65535, 1000]], dtype=">u2")
    big_endian = Image.frombytes("I;16B", (4, 1), values.tobytes())
    assert np.asarray(_load_any_size(_encode(big_endian)))[0, :, 0].tolist() == [0, 128, 255, 4]
    pgm = b"P5\n4 1\n65535\n" + values.tobytes()
    with Image.open(io.BytesIO(pgm)) as raw:
        assert raw.mode == "I"  # PIL opens 16-bit PGM as 32-bit "I"
    assert np.asarray(_load_any_size(pgm))[0, :, 0].tolist() == [0, 128, 255, 4]


def test_16bit_transparent_key_becomes_white() -> None:
    values = np.array([[0, 1000]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), transparency=1000)
    assert np.asarray(_load_any_size(data))[0, :, 0].tolist() == [0, 255]


def test_float_tiff_is_scaled() -> None:
    values = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    data = _encode(Image.fromarray(values), "TIFF")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == "F"
    assert np.asarray(_load_any_size(data))[0, :, 0].tolist() == [0, 128, 255, 64]


def test_rgba_transparent_area_becomes_white() -> None:
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[:, :10] = (200, 10, 10, 255)  # opaque left half
    rgba[:, 10:15] = (0, 0, 0, 0)  # transparent black
    rgba[:, 15:] = (255, 0, 0, 128)  # half-transparent red
    array = _assert_rgb(_load_any_size(_encode(Image.fromarray(rgba))), (20, 10))
    assert array[5, 2].tolist() == [200, 10, 10]
    assert array[5, 12].tolist() == [255, 255, 255]
    assert array[5, 17, 0] == 255
    assert 120 <= array[5, 17, 1] <= 135


def test_la_transparent_area_becomes_white() -> None:
    la = Image.new("LA", (4, 2), (50, 255))
    la.putpixel((3, 1), (0, 0))
    array = _assert_rgb(_load_any_size(_encode(la)), (4, 2))
    assert array[0, 0].tolist() == [50, 50, 50]
    assert array[1, 3].tolist() == [255, 255, 255]


def test_palette_with_transparency_becomes_white() -> None:
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([0, 0, 0, 0, 0, 255] + [0] * (254 * 3))
    palette_image.putpixel((0, 0), 1)
    data = _encode(palette_image, transparency=0)  # index 0 (black) is transparent
    array = _assert_rgb(_load_any_size(data), (4, 4))
    assert array[0, 0].tolist() == list(BLUE)
    assert array[3, 3].tolist() == [255, 255, 255]  # white, not black


def test_one_by_one_image() -> None:
    array = _assert_rgb(_load_any_size(_encode(Image.new("RGB", (1, 1), (1, 2, 3)))), (1, 1))
    assert array[0, 0].tolist() == [1, 2, 3]


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), RED)
    image.paste(BLUE, (0, 0, 10, 20))  # blue on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    data = _encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    array = _assert_rgb(_load_any_size(data), (20, 40))
    assert array[2, 10, 2] > 200 and array[2, 10, 0] < 60  # the left edge is now on top
    assert array[37, 10, 0] > 200 and array[37, 10, 2] < 60


def test_animated_gif_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.n_frames == 3
    array = _assert_rgb(_load_any_size(data), (8, 8))
    assert (array == RED).all()


def test_grayscale_png() -> None:
    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (3, 1))
    array = _assert_rgb(_load_any_size(_encode(Image.fromarray(gradient))), (16, 3))
    for channel in range(3):
        assert (array[..., channel] == gradient).all()


def test_one_bit_png() -> None:
    bits = Image.new("1", (3, 1), 0)
    bits.putpixel((1, 0), 1)
    array = _assert_rgb(_load_any_size(_encode(bits)), (3, 1))
    assert array[0, :, 0].tolist() == [0, 255, 0]


@pytest.mark.parametrize("mode", ["YCbCr", "LAB"])
def test_tiff_colour_spaces(mode: str) -> None:
    data = _encode(Image.new("RGB", (4, 4), (10, 200, 30)).convert(mode), "TIFF")
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.mode == mode
    array = _assert_rgb(_load_any_size(data), (4, 4))
    assert np.abs(array[0, 0].astype(int) - (10, 200, 30)).max() <= 12  # 8-bit LAB is lossy


def test_hsv_and_other_modes_via_to_tensor() -> None:
    hsv = Image.new("RGB", (2, 2), RED).convert("HSV")
    assert images.to_tensor01(hsv)[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    la_premultiplied = Image.new("La", (2, 2), (0, 0))
    assert images.to_tensor01(la_premultiplied).min().item() == 1.0  # transparent -> white


def test_path_str_and_bytes_agree(tmp_path: Path) -> None:
    data = _encode(_noise(17, 9))
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    digests = {images.image_digest(_load_any_size(s)) for s in (data, str(path), path)}
    assert len(digests) == 1


# --------------------------------------------------------------------------------------------
# resize_center_crop
# --------------------------------------------------------------------------------------------


def test_resize_center_crop_one_pixel() -> None:
    out = images.resize_center_crop(Image.new("RGB", (1, 1), (9, 8, 7)), size=224)
    assert out.size == (224, 224)
    assert (np.asarray(out) == (9, 8, 7)).all()


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1)])
def test_resize_center_crop_extreme_aspect(shape: tuple[int, int]) -> None:
    image = Image.new("RGB", shape, (30, 60, 90))
    start = time.perf_counter()
    out = images.resize_center_crop(image, size=224, crop_fraction=224 / 256)
    assert time.perf_counter() - start < 1.0  # no 224 × 1,120,000 intermediate image
    assert out.size == (224, 224)
    assert np.abs(np.asarray(out).astype(int) - (30, 60, 90)).max() <= 1


def test_resize_center_crop_matches_resize_then_crop() -> None:
    image = _noise(451, 300, seed=3)
    out = images.resize_center_crop(image, size=224, crop_fraction=224 / 256)
    assert out.size == (224, 224)
    # torchvision: Resize(256) -> 384×256 (long side truncated), CenterCrop(224) at (80, 16).
    reference = image.resize((384, 256), Image.Resampling.BICUBIC).crop((80, 16, 304, 240))
    assert np.array_equal(np.asarray(out), np.asarray(reference))


def test_resize_center_crop_portrait_no_margin() -> None:
    image = _noise(300, 451, seed=4)
    out = images.resize_center_crop(image, size=224, resample=Image.Resampling.BILINEAR)
    reference = image.resize((224, 336), Image.Resampling.BILINEAR).crop((0, 56, 224, 280))
    assert np.array_equal(np.asarray(out), np.asarray(reference))


def test_resize_center_crop_elongated_uses_region_resize() -> None:
    ramp = np.linspace(0, 255, 1000)[:, None, None] * np.ones((1, 40, 3))
    image = Image.fromarray(ramp.astype(np.uint8))  # 40×1000: 25:1, over the 16:1 threshold
    out = images.resize_center_crop(image, size=32, crop_fraction=0.5)
    # Resize(64) -> 64×1600, CenterCrop(32) at (16, 784).
    reference = image.resize((64, 1600), Image.Resampling.BICUBIC).crop((16, 784, 48, 816))
    diff = np.abs(np.asarray(out).astype(int) - np.asarray(reference).astype(int))
    assert diff.max() <= 1


def test_resize_center_crop_rejects_bad_arguments() -> None:
    image = Image.new("RGB", (10, 10))
    bad: list[dict[str, float]] = [
        {"size": 0},
        {"size": 8, "crop_fraction": 0.0},
        {"size": 8, "crop_fraction": 1.5},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            images.resize_center_crop(image, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# image_digest and to_tensor01
# --------------------------------------------------------------------------------------------


def test_image_digest_is_stable_and_documented() -> None:
    image = Image.new("RGB", (2, 1), (1, 2, 3))
    expected = hashlib.sha256(b"RGB|2x1|" + bytes([1, 2, 3, 1, 2, 3])).hexdigest()
    assert images.image_digest(image) == expected
    assert images.image_digest(image.copy()) == expected
    assert images.image_digest(Image.frombytes("RGB", (2, 1), image.tobytes())) == expected


def test_image_digest_is_sensitive() -> None:
    base = _noise(8, 4, seed=5)
    digest = images.image_digest(base)
    assert len(digest) == 64 and int(digest, 16) >= 0
    changed = base.copy()
    r, g, b = changed.getpixel((3, 2))
    changed.putpixel((3, 2), (r ^ 1, g, b))
    same_bytes_other_shape = Image.frombytes("RGB", (4, 8), base.tobytes())
    gray = Image.new("L", (6, 4))
    others = {
        images.image_digest(changed),
        images.image_digest(same_bytes_other_shape),
        images.image_digest(Image.frombytes("L", (24, 4), base.tobytes())),
        images.image_digest(gray),
    }
    assert digest not in others and len(others) == 4


def test_to_tensor01() -> None:
    import torch

    image = Image.new("RGB", (3, 2), (255, 0, 128))
    image.putpixel((2, 1), (0, 51, 255))
    tensor = images.to_tensor01(image)
    assert tensor.shape == (1, 3, 2, 3)
    assert tensor.dtype == torch.float32
    assert tensor.is_contiguous()
    assert tensor[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 128 / 255])
    assert tensor[0, :, 1, 2].tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert tensor.min().item() >= 0.0
    assert tensor.max().item() <= 1.0


# --------------------------------------------------------------------------------------------
# Bundled samples
# --------------------------------------------------------------------------------------------


def test_sample_index_files_exist_and_are_credited() -> None:
    index = json.loads((images.SAMPLES_DIR / "index.json").read_text(encoding="utf-8"))
    credits = (images.DATA_DIR / "CREDITS.md").read_text(encoding="utf-8")
    assert index[0]["file"] == "chelsea.png"
    total = 0
    for entry in index:
        assert set(entry) == {"file", "label", "kind", "expected", "credit"}
        assert entry["kind"] in ("photo", "texture")
        path = images.SAMPLES_DIR / entry["file"]
        assert path.is_file(), path
        assert f"`{entry['file']}`" in credits
        total += path.stat().st_size
    assert total < 3_000_000


def test_default_sample_is_chelsea_and_first() -> None:
    samples = images.list_samples()
    assert images.DEFAULT_SAMPLE == "chelsea"
    assert samples[0].name == images.DEFAULT_SAMPLE
    assert samples[0].label == "Chelsea the cat"
    assert len({s.name for s in samples}) == len(samples)
    assert images.load_sample(images.DEFAULT_SAMPLE).size == (451, 300)


def test_every_sample_loads_as_rgb() -> None:
    for sample in images.list_samples():
        assert sample.path.is_absolute()
        image = images.load_sample(sample.name)
        assert image.mode == "RGB"
        assert min(image.size) >= 256


def test_list_samples_by_kind() -> None:
    textures = images.list_samples("texture")
    photos = images.list_samples("photo")
    assert {s.name for s in textures} == {"brick", "grass", "gravel"}
    assert all(s.expected is None for s in textures)
    assert len(photos) + len(textures) == len(images.list_samples())
    with pytest.raises(ValueError):
        images.list_samples("video")


def test_unknown_sample_lists_the_names() -> None:
    with pytest.raises(ValueError, match="chelsea"):
        images.load_sample("dog")
    assert images.load_sample("chelsea.png").size == (451, 300)


def test_cc_by_samples_carry_their_attribution() -> None:
    by_name = {s.name: s for s in images.list_samples()}
    for name in ("china", "flower"):
        assert by_name[name].credit and "CC BY 2.0" in by_name[name].credit
    assert by_name["chelsea"].credit is None
