"""Galleries: sets of small labelled images that the feature-space pages search, map and mine.

Three sources:

* :func:`builtin_gallery`, offline: varied crops and flips of the bundled photos, the photo being
  the label. It is generated deterministically (seeded) at first use and cached on disk. Be honest
  about it: crops of one photo share colours and textures, so they are trivially separable and
  every map of this gallery shows clean clusters. It demonstrates the tools, not generalization.
* :func:`gallery_from_uploads`: several images and/or a zip (one folder per class gives labels),
  with limits on count, per-file size, total uncompressed size and compression ratio, every image
  validated through :func:`vizcore.data.images.load_image`.
* :func:`vizcore.data.datasets.dataset_gallery`: torchvision's Imagenette or CIFAR-10 once
  downloaded (:mod:`vizcore.data.datasets`); offered only when online.

A gallery is immutable; its ``digest`` identifies its content (pixels, labels and names), so the
feature cache is keyed by it and invalidated when the content changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from vizcore.core.offline import OFFLINE_ENV
from vizcore.data import diskcache, images

__all__ = [
    "OFFLINE_ENV",
    "Gallery",
    "GalleryError",
    "UploadLimits",
    "builtin_gallery",
    "gallery_from_uploads",
    "thumbnail",
]


BUILTIN_SIZE = 128
UPLOAD_SIZE = 160
#: Smallest side of an uploaded gallery image. Gallery images become ``UPLOAD_SIZE`` squares for
#: neighbour search; 16 px thumbnails are still pictures (CIFAR's are 32), a 1x1 is not. The
#: aspect-ratio limit of :func:`vizcore.data.images.load_image` applies as for every upload.
GALLERY_MIN_SIDE = 16
_BUILTIN_VERSION = 1
UNLABELLED = "unlabelled"


class GalleryError(ValueError):
    """A gallery could not be built; the message is a user-facing sentence with the fix."""


@dataclass(frozen=True, eq=False)
class Gallery:
    """An immutable set of same-sized RGB images with labels.

    Attributes:
        name: Short display name.
        kind: ``"builtin"``, ``"upload"`` or ``"dataset"``.
        images: ``(N, S, S, 3)`` uint8, read-only.
        labels: One label per image (``"unlabelled"`` when none was given).
        names: One display name per image (file name or crop id).
        description: What the gallery is, for the page.
        skipped: Files that were skipped and why (uploads only).
        digest: SHA-256 of pixels, labels and names.
    """

    name: str
    kind: str
    images: np.ndarray
    labels: tuple[str, ...]
    names: tuple[str, ...]
    description: str = ""
    skipped: tuple[str, ...] = ()
    digest: str = field(default="")

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError("Gallery images must be a (N, S, S, 3) uint8 array.")
        if len(self.labels) != n or len(self.names) != n:
            raise ValueError("A gallery needs exactly one label and one name per image.")
        if self.images.flags.writeable:
            array = np.ascontiguousarray(self.images).copy()
            array.setflags(write=False)
            object.__setattr__(self, "images", array)
        if not self.digest:
            object.__setattr__(
                self, "digest", _content_digest(self.images, self.labels, self.names)
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        """Side of the square images in pixels."""
        return int(self.images.shape[1])

    @property
    def classes(self) -> tuple[str, ...]:
        """Distinct labels, in order of first appearance."""
        return tuple(dict.fromkeys(self.labels))

    def subset(self, indices: Sequence[int]) -> Gallery:
        """A new gallery with the chosen images (for tests and quick previews)."""
        idx = [int(i) for i in indices]
        return Gallery(
            name=f"{self.name} (subset of {len(idx)})",
            kind=self.kind,
            images=self.images[idx],
            labels=tuple(self.labels[i] for i in idx),
            names=tuple(self.names[i] for i in idx),
            description=self.description,
        )


def _content_digest(array: np.ndarray, labels: Sequence[str], names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"{array.shape}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([list(labels), list(names)]).encode())
    return digest.hexdigest()


def thumbnail(gallery: Gallery, index: int, size: int = 64) -> Image.Image:
    """Image ``index`` of the gallery as a small PIL image (for hover thumbnails)."""
    image = Image.fromarray(gallery.images[index])
    return image if image.width == size else image.resize((size, size), Image.Resampling.BILINEAR)


# --------------------------------------------------------------------------------------------
# Built-in gallery
# --------------------------------------------------------------------------------------------

_BUILTIN_LOCK = threading.Lock()
_BUILTIN_MEMO: dict[tuple, Gallery] = {}

BUILTIN_DESCRIPTION = (
    "Built-in demo gallery: {n} random crops (30-100% of the short side) and mirror images of "
    "the {p} bundled photos, {s}×{s} px, labelled by the photo they come from. Honest caveat: "
    "crops of one photo share colours, textures and objects, so they are trivially separable — "
    "expect clean clusters here. This demonstrates the tools, not how well features "
    "generalize; upload a zip of your own labelled folders (or download a dataset when "
    "online) for a real test."
)


def _samples_digest(samples: Sequence[images.Sample]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.name.encode())
        digest.update(sample.path.read_bytes())
    return digest.hexdigest()[:16]


def _random_crops(
    photo: Image.Image, count: int, size: int, rng: np.random.Generator
) -> list[Image.Image]:
    # Shrink once so that the many crops resample a small image (fast), keeping enough detail
    # for the smallest crop (30% of the short side -> size px).
    short = min(photo.size)
    target_short = max(size * 4, 1)
    if short > target_short:
        scale = target_short / short
        photo = photo.resize(
            (round(photo.width * scale), round(photo.height * scale)), Image.Resampling.LANCZOS
        )
        short = min(photo.size)
    crops = []
    for i in range(count):
        # The first crop of every photo is the centre square: the "whole photo" reference.
        fraction = 1.0 if i == 0 else float(rng.uniform(0.3, 1.0))
        side = max(round(short * fraction), 8)
        left = (photo.width - side) // 2 if i == 0 else int(rng.integers(0, photo.width - side + 1))
        top = (
            (photo.height - side) // 2 if i == 0 else int(rng.integers(0, photo.height - side + 1))
        )
        crop = photo.resize(
            (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
        )
        if i > 0 and rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crops.append(crop)
    return crops


PER_PHOTO_ENV = "VIZCORE_GALLERY_PER_PHOTO"


def builtin_gallery(
    *,
    per_photo: int | None = None,
    size: int = BUILTIN_SIZE,
    seed: int = 0,
    use_disk_cache: bool = True,
) -> Gallery:
    """The built-in demo gallery, generated once (seeded) from the bundled photos.

    Args:
        per_photo: Crops per photo (the first is the centre square); default 36, or the
            ``VIZCORE_GALLERY_PER_PHOTO`` environment variable (tests use a small gallery).
        size: Side of every crop in pixels.
        seed: Seed of the crop positions, sizes and flips (same seed, same gallery).
        use_disk_cache: Read/write the generated gallery under the cache folder.

    Returns:
        A gallery of ``per_photo`` × (number of bundled photos) images.
    """
    if per_photo is None:
        per_photo = int(os.environ.get(PER_PHOTO_ENV, "36"))
    if not 1 <= per_photo <= 200:
        raise ValueError("per_photo must be between 1 and 200.")
    if not 16 <= size <= 512:
        raise ValueError("size must be between 16 and 512 pixels.")
    samples = images.list_samples(kind="photo")
    key = (per_photo, size, seed, _samples_digest(samples), _BUILTIN_VERSION)
    with _BUILTIN_LOCK:
        if key in _BUILTIN_MEMO:
            return _BUILTIN_MEMO[key]
        path = diskcache.cache_root() / "galleries" / "builtin-{}-{}-{}-{}-v{}.npz".format(*key)
        gallery = _read_gallery_file(path) if use_disk_cache else None
        if gallery is None:
            gallery = _generate_builtin(samples, per_photo, size, seed)
            if use_disk_cache:
                _write_gallery_file(path, gallery)
        _BUILTIN_MEMO.clear()
        _BUILTIN_MEMO[key] = gallery
        return gallery


def _generate_builtin(
    samples: Sequence[images.Sample], per_photo: int, size: int, seed: int
) -> Gallery:
    rng = np.random.default_rng(seed)
    arrays: list[np.ndarray] = []
    labels: list[str] = []
    names: list[str] = []
    for sample in samples:
        photo = images.load_sample(sample.name)
        for i, crop in enumerate(_random_crops(photo, per_photo, size, rng)):
            arrays.append(np.asarray(crop, dtype=np.uint8))
            labels.append(sample.label)
            names.append(f"{sample.name} #{i}")
    description = BUILTIN_DESCRIPTION.format(n=len(arrays), p=len(samples), s=size)
    return Gallery("Built-in demo gallery", "builtin", np.stack(arrays), tuple(labels),
                   tuple(names), description)  # fmt: skip


def _write_gallery_file(path: Path, gallery: Gallery) -> None:
    meta = {
        "name": gallery.name,
        "kind": gallery.kind,
        "labels": list(gallery.labels),
        "names": list(gallery.names),
        "description": gallery.description,
        "digest": gallery.digest,
    }

    def write(handle: io.BufferedIOBase) -> None:
        np.savez(handle, images=gallery.images, meta=np.array(json.dumps(meta)))

    diskcache.atomic_write(path, write)


def _read_gallery_file(path: Path) -> Gallery | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            array = data["images"]
        gallery = Gallery(
            meta["name"], meta["kind"], array, tuple(meta["labels"]), tuple(meta["names"]),
            meta["description"],
        )  # fmt: skip
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a corrupt or foreign file: regenerate
    if gallery.digest != meta.get("digest"):
        return None
    diskcache.touch(path)
    return gallery


# --------------------------------------------------------------------------------------------
# User galleries: uploads and zips
# --------------------------------------------------------------------------------------------

_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".zst", ".tbz2")
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"Rar!")
_IGNORED_PARTS = ("__MACOSX",)


@dataclass(frozen=True)
class UploadLimits:
    """Limits on user galleries (uploads and zips).

    Attributes:
        max_images: Most images in one gallery.
        max_file_bytes: Largest single file (after decompression).
        max_total_bytes: Largest total of all files after decompression.
        max_ratio: Largest compression ratio of a zip member (a zip bomb has thousands).
        min_images: Fewest images that make a gallery.
    """

    max_images: int = 2000
    max_file_bytes: int = 20 * 1024 * 1024
    max_total_bytes: int = 500 * 1024 * 1024
    max_ratio: float = 200.0
    min_images: int = 2


def _mb(size: float) -> str:
    return f"{size / 1024 / 1024:.0f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


def _is_archive(name: str, head: bytes) -> bool:
    lower = name.lower()
    return lower.endswith(_ARCHIVE_SUFFIXES) or head.startswith(_ARCHIVE_MAGIC)


@dataclass
class _Collector:
    limits: UploadLimits
    size: int
    arrays: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total: int = 0

    def add_bytes(self, name: str, data: bytes, label: str) -> None:
        self.total += len(data)
        if self.total > self.limits.max_total_bytes:
            raise GalleryError(
                f"The upload holds more than {_mb(self.limits.max_total_bytes)} of data once "
                "uncompressed. Upload fewer or smaller images."
            )
        if len(data) > self.limits.max_file_bytes:
            self.skipped.append(f"{name}: larger than {_mb(self.limits.max_file_bytes)}")
            return
        try:
            image = images.load_image(
                data, max_bytes=self.limits.max_file_bytes, min_side=GALLERY_MIN_SIDE
            )
        except images.ImageLoadError as exc:
            self.skipped.append(f"{name}: not a usable image ({exc})")
            return
        if len(self.arrays) >= self.limits.max_images:
            raise GalleryError(
                f"The upload has more than {self.limits.max_images} images, the limit for one "
                "gallery. Upload a smaller selection."
            )
        square = images.resize_center_crop(image, size=self.size)
        self.arrays.append(np.asarray(square, dtype=np.uint8))
        self.labels.append(label or UNLABELLED)
        self.names.append(name)


def _zip_label(member: str) -> str:
    parts = [p for p in member.split("/") if p]
    return parts[-2] if len(parts) >= 2 else ""


def _add_zip(collector: _Collector, name: str, data: bytes) -> None:
    limits = collector.limits
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise GalleryError(
            f"{name} is not a valid zip file ({exc}). Create it with your system's "
            "'Compress' command or `zip -r gallery.zip folder/`."
        ) from None
    with archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir() and not any(part in info.filename for part in _IGNORED_PARTS)
        ]
        declared_total = 0
        for info in members:
            base = info.filename.rsplit("/", 1)[-1]
            if base.startswith("."):
                continue
            if _is_archive(info.filename, b""):
                raise GalleryError(
                    f"{name} contains another archive ({info.filename}); nested archives are "
                    "not accepted. Unpack it and zip the image folders directly."
                )
            if info.flag_bits & 0x1:
                raise GalleryError(f"{name} is encrypted ({info.filename}); upload it unencrypted.")
            if info.file_size > 0 and info.compress_size >= 0:
                ratio = info.file_size / max(info.compress_size, 1)
                if ratio > limits.max_ratio:
                    raise GalleryError(
                        f"{name} looks like a zip bomb: {info.filename} expands {ratio:,.0f}-fold "
                        f"(the limit is {limits.max_ratio:.0f}). Images are already compressed, "
                        "so a real image gallery never expands like this."
                    )
            declared_total += info.file_size
            if declared_total > limits.max_total_bytes:
                raise GalleryError(
                    f"{name} expands to more than {_mb(limits.max_total_bytes)}. Upload fewer or "
                    "smaller images."
                )
        for info in members:
            base = info.filename.rsplit("/", 1)[-1]
            if base.startswith("."):
                continue
            if info.file_size > limits.max_file_bytes:
                collector.skipped.append(
                    f"{info.filename}: larger than {_mb(limits.max_file_bytes)}"
                )
                continue
            try:
                with archive.open(info) as handle:
                    # Never trust the declared size: read at most the limit plus one byte.
                    content = handle.read(limits.max_file_bytes + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                collector.skipped.append(f"{info.filename}: cannot be read ({exc})")
                continue
            if len(content) > limits.max_file_bytes or (
                len(content) / max(info.compress_size, 1) > limits.max_ratio
            ):
                raise GalleryError(
                    f"{name}: {info.filename} expands beyond what its zip entry declares; the "
                    "archive is malformed or a zip bomb."
                )
            if _is_archive(info.filename, content[:8]):
                raise GalleryError(
                    f"{name} contains another archive ({info.filename}); nested archives are "
                    "not accepted."
                )
            collector.add_bytes(info.filename, content, _zip_label(info.filename))


def gallery_from_uploads(
    files: Sequence[tuple[str, bytes]],
    *,
    name: str = "Your gallery",
    limits: UploadLimits | None = None,
    size: int = UPLOAD_SIZE,
) -> Gallery:
    """Build a gallery from uploaded images and/or zip files.

    A zip with one folder per class labels each image by its folder name (``cats/a.jpg`` ->
    ``cats``); loose images and files at a zip's top level are ``"unlabelled"``. Files that are not
    images are skipped and listed in ``Gallery.skipped``. Images are centre-cropped square and
    resized to ``size``.

    Raises:
        GalleryError: Not a zip, a nested archive, a zip bomb (compression ratio), over the limits,
            or fewer than ``limits.min_images`` usable images. Nothing is written anywhere.
    """
    limits = limits or UploadLimits()
    collector = _Collector(limits, size)
    if not files:
        raise GalleryError("No files were uploaded.")
    for file_name, data in files:
        if not data:
            collector.skipped.append(f"{file_name}: empty file")
            continue
        lower = file_name.lower()
        if lower.endswith(".zip") or data[:4] == b"PK\x03\x04":
            _add_zip(collector, file_name, data)
        elif _is_archive(file_name, data[:8]):
            raise GalleryError(
                f"{file_name} is an archive type that is not supported; upload a .zip of image "
                "folders instead."
            )
        else:
            collector.add_bytes(file_name, data, "")
    if len(collector.arrays) < limits.min_images:
        reasons = "; ".join(collector.skipped[:5])
        raise GalleryError(
            f"Found {len(collector.arrays)} usable image(s); a gallery needs at least "
            f"{limits.min_images}." + (f" Skipped: {reasons}." if reasons else "")
        )
    classes = dict.fromkeys(collector.labels)
    labelled = f"{len(classes)} labels from folder names" if len(classes) > 1 else "no labels"
    description = (
        f"{len(collector.arrays)} uploaded images ({labelled}), centre-cropped to {size}×{size} px."
    )
    return Gallery(
        name=name,
        kind="upload",
        images=np.stack(collector.arrays),
        labels=tuple(collector.labels),
        names=tuple(collector.names),
        description=description,
        skipped=tuple(collector.skipped),
    )
