"""Galleries: the seeded built-in gallery, uploads and zips (edge cases), datasets offline."""

from __future__ import annotations

import io
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vizcore.data import datasets, gallery
from vizcore.data.gallery import GalleryError, UploadLimits, gallery_from_uploads


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("VIZCORE_CACHE_DIR", str(path))
    gallery._BUILTIN_MEMO.clear()
    return path


def _png(color: tuple[int, int, int], size: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_builtin_gallery_is_seeded_labelled_and_cached(cache_dir: Path) -> None:
    first = gallery.builtin_gallery(per_photo=3, size=32, seed=1)
    photos = gallery.images.list_samples(kind="photo")
    assert len(first) == 3 * len(photos)
    assert first.images.shape[1:] == (32, 32, 3)
    assert set(first.labels) == {s.label for s in photos}
    assert not first.images.flags.writeable
    files = _files(cache_dir)
    assert len(files) == 1 and files[0].suffix == ".npz"  # one complete file, no temp files
    gallery._BUILTIN_MEMO.clear()
    again = gallery.builtin_gallery(per_photo=3, size=32, seed=1)  # from disk
    regenerated = gallery.builtin_gallery(per_photo=3, size=32, seed=1, use_disk_cache=False)
    other_seed = gallery.builtin_gallery(per_photo=3, size=32, seed=2, use_disk_cache=False)
    assert again.digest == first.digest == regenerated.digest
    assert other_seed.digest != first.digest
    # The crops really differ (not the same picture repeated).
    assert not np.array_equal(first.images[1], first.images[2])


def test_builtin_gallery_corrupt_cache_file_is_regenerated(cache_dir: Path) -> None:
    first = gallery.builtin_gallery(per_photo=2, size=32)
    (path,) = _files(cache_dir)
    path.write_bytes(b"garbage")
    gallery._BUILTIN_MEMO.clear()
    assert gallery.builtin_gallery(per_photo=2, size=32).digest == first.digest


def test_zip_with_class_folders_gives_labels_and_skips_non_images() -> None:
    data = _zip(
        {
            "animals/cats/a.png": _png((255, 0, 0)),
            "animals/cats/b.png": _png((250, 5, 0)),
            "animals/dogs/c.png": _png((0, 0, 255)),
            "animals/dogs/notes.txt": b"not an image",
            "__MACOSX/animals/cats/._a.png": b"resource fork",
            "animals/.DS_Store": b"junk",
        }
    )
    g = gallery_from_uploads([("animals.zip", data)])
    assert len(g) == 3
    assert g.labels == ("cats", "cats", "dogs")
    assert g.classes == ("cats", "dogs")
    assert g.kind == "upload"
    assert len(g.skipped) == 1 and "notes.txt" in g.skipped[0]


def test_loose_images_are_unlabelled_and_broken_ones_reported() -> None:
    g = gallery_from_uploads(
        [("a.png", _png((1, 2, 3))), ("b.png", _png((9, 9, 9))), ("c.jpg", b"\xff\xd8broken")]
    )
    assert len(g) == 2 and set(g.labels) == {gallery.UNLABELLED}
    assert len(g.skipped) == 1 and g.skipped[0].startswith("c.jpg")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ([("x.zip", b"PK\x03\x04 this is not really a zip")], "not a valid zip"),
        ([("x.zip", b"hello")], "not a valid zip"),
        ([("x.zip", _zip({"a/1.png": _png((1, 1, 1)), "a/inner.zip": b"PK\x03\x04"}))], "nested"),
        (
            [("x.zip", _zip({"a/1.png": _png((1, 1, 1)), "a/2.bin": _zip({"z.png": b"1"})}))],
            "nested",
        ),
        ([("x.zip", _zip({"a/1.png": _png((1, 1, 1)), "a/b.tar.gz": b"\x1f\x8b"}))], "nested"),
        ([("x.zip", _zip({"a/bomb.png": b"\0" * (4 * 1024 * 1024)}))], "zip bomb"),
        ([("x.tar.gz", b"\x1f\x8b\x08")], "not supported"),
        ([("x.zip", _zip({"a/readme.txt": b"text only"}))], "needs at least 2"),
        ([], "No files"),
    ],
)
def test_bad_uploads_give_clear_messages_and_write_nothing(
    files: list[tuple[str, bytes]], message: str, cache_dir: Path
) -> None:
    with pytest.raises(GalleryError, match=message):
        gallery_from_uploads(files)
    assert _files(cache_dir) == []


def test_limits_on_count_and_total_size() -> None:
    images = {f"c/{i}.png": _png((i, i, i)) for i in range(5)}
    with pytest.raises(GalleryError, match="more than 3 images"):
        gallery_from_uploads([("x.zip", _zip(images))], limits=UploadLimits(max_images=3))
    total = sum(len(v) for v in images.values())
    with pytest.raises(GalleryError, match=r"more than"):
        gallery_from_uploads(
            [("x.zip", _zip(images, zipfile.ZIP_STORED))],
            limits=UploadLimits(max_total_bytes=total // 2),
        )
    big = _png((5, 5, 5), size=200)
    g = gallery_from_uploads(
        [("x.zip", _zip({"c/big.png": big, **images}, zipfile.ZIP_STORED))],
        limits=UploadLimits(max_file_bytes=len(big) - 1),
    )
    assert len(g) == 5 and any("big.png" in s and "larger than" in s for s in g.skipped)


def test_digest_changes_with_content_and_labels() -> None:
    a = gallery_from_uploads([("a.png", _png((1, 2, 3))), ("b.png", _png((4, 5, 6)))])
    b = gallery_from_uploads([("a.png", _png((1, 2, 3))), ("b.png", _png((4, 5, 7)))])
    c = gallery_from_uploads([("x.zip", _zip({"k/a.png": _png((1, 2, 3)),
                                               "k/b.png": _png((4, 5, 6))}))])  # fmt: skip
    assert len({a.digest, b.digest, c.digest}) == 3


def test_datasets_offline_are_unavailable_without_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the network must not be touched offline")

    monkeypatch.setenv("VIZCORE_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", no_network)
    for key in datasets.DATASETS:
        status = datasets.dataset_status(key)
        assert not status.available and not status.downloaded
        assert "Offline" in status.reason
    with pytest.raises(ConnectionError, match="Offline"):
        datasets.download_dataset("cifar10")
    with pytest.raises(GalleryError, match="not been downloaded"):
        datasets.dataset_gallery("cifar10")


def test_dataset_status_unreachable_does_not_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("unreachable")

    monkeypatch.delenv("VIZCORE_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    datasets._ONLINE_MEMO.clear()
    status = datasets.dataset_status("imagenette", timeout=0.1)
    assert not status.available and "unreachable" in status.reason
    datasets._ONLINE_MEMO.clear()
