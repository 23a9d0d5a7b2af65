"""``vizcore index build`` end to end on the bundled EfficientNet-Lite0 over 16 sample crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import vizcore_cli as cli
from vizcore.core.hooks import capture_activations, inference_session
from vizcore.data import images
from vizcore.data import index as vindex
from vizcore.models.registry import get_spec, preprocess


def _crops(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` random crops (40-100% of the short side) of the bundled photos, as JPEG."""
    rng = np.random.default_rng(seed)
    photos = images.list_samples("photo")
    folder.mkdir(parents=True)
    for i in range(count):
        photo = images.load_sample(photos[i % len(photos)].name)
        photo = photo.resize((photo.width // 2, photo.height // 2))
        side = int(min(photo.size) * rng.uniform(0.4, 1.0))
        left = int(rng.integers(0, photo.width - side + 1))
        top = int(rng.integers(0, photo.height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((160, 160))
        sub = folder / ("even" if i % 2 == 0 else "odd")
        sub.mkdir(exist_ok=True)
        crop.save(sub / f"crop{i:02d}.jpg", quality=90)
    (folder / "odd" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")


def test_cli_builds_a_lite0_index_that_opens(tmp_path: Path, capsys, lite0) -> None:
    folder, out = tmp_path / "photos", tmp_path / "index"
    _crops(folder, 16)
    argv = ["index", "build", str(folder), "--model", "efficientnet_lite0", "--layers",
            "blocks.4,blocks.10", "--out", str(out), "--shard-size", "6", "--workers", "0",
            "--top-k", "4"]  # fmt: skip
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 1  # one corrupt file: listed, the others indexed
    assert "broken.jpg" in captured.err and "indexing 17/17 images" in captured.err
    assert "16 images" in captured.out and "skipped 1" in captured.out
    assert "images/s" in captured.out

    idx = vindex.open_index(out)
    assert len(idx) == 16 and idx.manifest["feature_dim"] == 1280
    assert idx.manifest["embedding_layer"] == "pool"
    spec = get_spec("efficientnet_lite0")
    path = folder / idx.paths[5]
    x = preprocess(images.load_image(path), spec)
    with torch.inference_mode(), inference_session(lite0):
        with capture_activations(lite0, ["pool", "blocks.10"], detach=True) as acts:
            lite0(x)
    pooled = acts["pool"].flatten(1)[0].numpy()
    np.testing.assert_allclose(idx.features(5), pooled, rtol=1e-4, atol=1e-5)
    near = idx.nearest(pooled, 3)
    assert near.indices[0] == 5 and near.distances[0] < 1e-3

    channel_max = acts["blocks.10"][0].flatten(1).max(dim=1).values.numpy()
    channel = int(np.argmax(channel_max))
    best = idx.top_patches("blocks.10", channel)
    assert len(best) == 4 and best[0].value >= float(channel_max[channel]) - 1e-4
    assert best[0].box is not None
    crop = idx.patch(best[0])
    assert crop.ndim == 3 and 0 < crop.shape[0] <= 224

    again = cli.main(argv)  # nothing new: every file is known (the broken one too)
    assert again == 0
    assert "0 new" in capsys.readouterr().out
