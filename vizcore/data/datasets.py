"""Downloadable datasets as galleries: torchvision's Imagenette or CIFAR-10, once downloaded.

:func:`dataset_status` says whether a dataset can be used now (never in offline mode, never
without a network answering within ``timeout``), :func:`download_dataset` fetches and checks it
with a progress callback, :func:`dataset_gallery` samples a balanced gallery from it. Split from
:mod:`vizcore.data.gallery`."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vizcore.core.offline import OFFLINE_ENV, is_offline
from vizcore.core.progress import OnStep, StepInfo, report
from vizcore.data import diskcache, images
from vizcore.data.gallery import (
    UPLOAD_SIZE,
    Gallery,
    GalleryError,
    _read_gallery_file,
    _write_gallery_file,
)

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetStatus",
    "dataset_gallery",
    "dataset_status",
    "download_dataset",
    "is_offline",
]


# --------------------------------------------------------------------------------------------
# Downloadable datasets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A downloadable dataset (URL and checksum read from torchvision, not typed here)."""

    key: str
    label: str
    description: str
    size_mb: int


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be used now; ``reason`` says why not."""

    available: bool
    downloaded: bool
    reason: str = ""


DATASETS: dict[str, DatasetInfo] = {
    "imagenette": DatasetInfo(
        "imagenette",
        "Imagenette (160 px, 10 ImageNet classes)",
        "fast.ai's 10 easy ImageNet classes; the validation split, a balanced sample.",
        99,
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        "CIFAR-10 (32 px, 10 classes)",
        "Krizhevsky 2009; the test split, a balanced sample, upsampled for the model.",
        163,
    ),
}

_ONLINE_MEMO: dict[str, tuple[float, bool]] = {}


def _archive(key: str) -> tuple[str, str]:
    import torchvision.datasets as tvd

    if key == "imagenette":
        url, md5 = tvd.Imagenette._ARCHIVES["160px"]
        return url, md5
    if key == "cifar10":
        return tvd.CIFAR10.url, tvd.CIFAR10.tgz_md5
    raise ValueError(f"Unknown dataset {key!r}; choose one of {', '.join(DATASETS)}.")


def _dataset_dir(key: str) -> Path:
    return diskcache.cache_root() / "datasets" / key


def _reachable(url: str, timeout: float) -> bool:
    host = urllib.parse.urlparse(url).hostname or ""
    now = time.monotonic()
    memo = _ONLINE_MEMO.get(host)
    if memo is not None and now - memo[0] < 60:
        return memo[1]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _ONLINE_MEMO[host] = (now, ok)
    return ok


def dataset_status(key: str, *, timeout: float = 1.5) -> DatasetStatus:
    """Whether ``key`` is downloaded, downloadable, or unavailable (offline).

    Never touches the network when ``VIZCORE_OFFLINE`` is set; otherwise one TCP connection
    attempt with ``timeout`` seconds (remembered for a minute), so it cannot hang.
    """
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {key!r}; choose one of {', '.join(DATASETS)}.")
    if (_dataset_dir(key) / "READY").is_file():
        return DatasetStatus(True, True)
    if is_offline():
        return DatasetStatus(
            False, False, f"Offline mode ({OFFLINE_ENV}) is on; downloads are disabled."
        )
    url, _ = _archive(key)
    if not _reachable(url, timeout):
        return DatasetStatus(False, False, "No internet connection: the download server is "
                             "unreachable.")  # fmt: skip
    return DatasetStatus(True, False)


def download_dataset(key: str, *, on_step: OnStep | None = None) -> Path:
    """Download and unpack dataset ``key`` into the cache folder (once), reporting progress.

    The archive is streamed to a temporary file, its MD5 checked against torchvision's, unpacked
    into a temporary folder and renamed into place: an interrupted download leaves nothing.

    Raises:
        ConnectionError: Offline or the download failed.
    """
    final = _dataset_dir(key)
    if (final / "READY").is_file():
        return final
    if is_offline():
        raise ConnectionError(f"Offline mode ({OFFLINE_ENV}) is on; downloads are disabled.")
    url, md5 = _archive(key)
    parent = diskcache.cache_subdir("datasets")
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
    try:
        archive = work / "archive.tgz"
        checksum = hashlib.md5(usedforsecurity=False)
        try:
            with urllib.request.urlopen(url, timeout=30) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    checksum.update(chunk)
                    done += len(chunk)
                    info = StepInfo(done, total or done, message=f"{done / 1e6:.0f} MB")
                    if not report(on_step, info):
                        raise ConnectionError("Download stopped.")
        except OSError as exc:
            raise ConnectionError(f"Download of {url} failed: {exc}") from exc
        if checksum.hexdigest() != md5:
            raise ConnectionError(f"Download of {url} is corrupt (checksum mismatch); try again.")
        unpacked = work / key
        with tarfile.open(archive) as tar:
            tar.extractall(unpacked, filter="data")
        archive.unlink()
        (unpacked / "READY").write_text(url)
        if final.exists():
            shutil.rmtree(final)
        os.replace(unpacked, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def dataset_gallery(key: str, *, max_images: int = 1000, seed: int = 0) -> Gallery:
    """A balanced, seeded sample of a downloaded dataset as a gallery (cached on disk).

    Raises:
        GalleryError: The dataset has not been downloaded.
    """
    if not (_dataset_dir(key) / "READY").is_file():
        raise GalleryError(f"{DATASETS[key].label} has not been downloaded yet.")
    path = diskcache.cache_root() / "galleries" / f"{key}-{max_images}-{seed}.npz"
    cached = _read_gallery_file(path)
    if cached is not None:
        return cached
    rng = np.random.default_rng(seed)
    root = _dataset_dir(key)
    if key == "cifar10":
        import torchvision.datasets as tvd

        data = tvd.CIFAR10(str(root), train=False, download=False)
        arrays_all = np.asarray(data.data)
        labels_all = [data.classes[t] for t in data.targets]
        by_class: dict[str, list[int]] = {}
        for i, label in enumerate(labels_all):
            by_class.setdefault(label, []).append(i)
        per_class = max(max_images // len(by_class), 1)
        chosen = sorted(
            i for idx in by_class.values() for i in rng.permutation(idx)[:per_class].tolist()
        )
        arrays = arrays_all[chosen]
        labels = tuple(labels_all[i] for i in chosen)
        names = tuple(f"cifar10 test #{i}" for i in chosen)
    else:
        import torchvision.datasets as tvd

        wnid_names = {w: n[0] for w, n in tvd.Imagenette._WNID_TO_CLASS.items()}
        val = next(root.glob("*/val"))
        files_by_class = {d.name: sorted(d.glob("*.JPEG")) for d in sorted(val.iterdir())}
        per_class = max(max_images // len(files_by_class), 1)
        arrays_list, labels_list, names_list = [], [], []
        for wnid, files in files_by_class.items():
            for j in rng.permutation(len(files))[:per_class]:
                image = images.load_image(files[j])
                square = images.resize_center_crop(image, size=UPLOAD_SIZE)
                arrays_list.append(np.asarray(square, dtype=np.uint8))
                labels_list.append(wnid_names.get(wnid, wnid))
                names_list.append(files[j].name)
        arrays = np.stack(arrays_list)
        labels, names = tuple(labels_list), tuple(names_list)
    info = DATASETS[key]
    gallery = Gallery(info.label, "dataset", arrays, labels, names, info.description)
    _write_gallery_file(path, gallery)
    return gallery
