"""vizcore.data.index: exact top-k merge, resume, increments, corrupt files, reading an index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TinyCNN
from vizcore.core.hooks import count_hooks
from vizcore.data import index as vindex
from vizcore.inside.embedding import nearest as brute_nearest
from vizcore.models.registry import Preprocessing

SIZE = 32
PREP = Preprocessing(SIZE, 1.0, Image.Resampling.BICUBIC, "none")
LAYERS = ["relu1", "conv2"]
CORRUPT = {"b/broken.jpg", "b/c/empty.png", "notes.png"}


def _kw(**extra: object) -> dict:
    kw = {"model_key": "tiny", "layers": LAYERS, "embedding_layer": "gap",
          "preprocessing": PREP, "shard_size": 7, "top_k": 5, "batch_size": 4,
          "num_workers": 0, "thumb_size": 8}  # fmt: skip
    kw.update(extra)
    return kw


def _write_images(root: Path, names: list[str], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(32, 60, size=2))
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, **({"quality": 95} if name.endswith(".jpg") else {}))


def _make_folder(root: Path, count: int = 37) -> list[str]:
    """``count`` good images in nested folders, plus three corrupt files and a non-image."""
    names = [
        f"{'a' if i % 3 else 'b/c'}/img{i:02d}.{'jpg' if i % 2 else 'png'}" for i in range(count)
    ]
    _write_images(root, names)
    (root / "b").mkdir(exist_ok=True)
    good = (root / names[1]).read_bytes()
    (root / "b/broken.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (root / "b/c/empty.png").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    (root / "readme.txt").write_text("ignored: not an image suffix")
    return names


@pytest.fixture
def model() -> TinyCNN:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _make_folder(root)
    return root


def _brute(model: TinyCNN, root: Path, paths: list[str]) -> dict[str, np.ndarray]:
    """Every image's columns, computed one image at a time (no batches, no shards)."""
    rows = []
    for p in paths:
        pixels, _ = vindex.decode_image(root / p, input_size=SIZE, thumb_size=SIZE)
        rows.append(vindex.index_batch(model, pixels[None], layers=LAYERS, embedding_layer="gap"))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0] if not k.startswith("shape")}


def _brute_top(values: np.ndarray, where: np.ndarray, k: int):
    """Per channel, sorted by value descending then id ascending, in plain Python."""
    out = []
    for c in range(values.shape[1]):
        order = sorted(range(len(values)), key=lambda i: (-values[i, c], i))[:k]
        out.append((values[order, c], np.array(order), where[order, c]))
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_build_stores_features_thumbs_and_exact_top_k(model, folder, tmp_path):
    summary = vindex.build_index(folder, model=model, out=tmp_path / "idx", **_kw())
    assert summary.images == 37 and summary.added == 37 and not summary.stopped
    assert {p for p, _ in summary.skipped} == CORRUPT
    assert all(reason for _, reason in summary.skipped)
    assert summary.shards_written == 6  # 40 files in shards of 7
    assert count_hooks(model) == 0 and not model.training
    idx = vindex.open_index(tmp_path / "idx")
    assert len(idx) == 37 and set(idx.paths).isdisjoint(CORRUPT)
    assert idx.paths == sorted(idx.paths)
    brute = _brute(model, folder, idx.paths)
    feats = np.concatenate([b for _, b in idx.feature_blocks()])
    np.testing.assert_allclose(feats, brute["features"], rtol=1e-5, atol=1e-6)
    for layer in LAYERS:
        assert idx.channels(layer) == brute[f"max:{layer}"].shape[1]
        expected = _brute_top(brute[f"max:{layer}"], brute[f"argmax:{layer}"], 5)
        for c, (values, ids, where) in enumerate(expected):
            patches = idx.top_patches(layer, c)
            assert [p.image_id for p in patches] == ids.tolist()
            np.testing.assert_allclose([p.value for p in patches], values, rtol=1e-5, atol=1e-6)
            w = idx.manifest["layer_info"][layer]["shape"][2]
            assert [p.row * w + p.col for p in patches] == where.tolist()
    thumb = idx.thumbnail(3)
    assert thumb.shape == (8, 8, 3) and thumb.dtype == np.uint8
    _, expect_thumb = vindex.decode_image(folder / idx.paths[3], input_size=SIZE, thumb_size=8)
    np.testing.assert_array_equal(thumb, expect_thumb)
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["images"] == 37 and len(manifest["skipped"]) == 3


def test_merge_of_shard_lists_equals_brute_force_with_ties():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 4, size=(50, 6)).astype(np.float32)  # many ties
    where = rng.integers(0, 100, size=(50, 6)).astype(np.int32)
    parts = [vindex.shard_top_k(values[s : s + 9], where[s : s + 9], np.arange(s, min(s + 9, 50)),
                                k=4) for s in range(0, 50, 9)]  # fmt: skip
    merged = vindex.merge_top_k(parts, k=4)
    for c, (v, ids, w) in enumerate(_brute_top(values, where, 4)):
        np.testing.assert_array_equal(merged[0][c], v)
        np.testing.assert_array_equal(merged[1][c], ids)
        np.testing.assert_array_equal(merged[2][c], w)


def test_stopped_build_resumes_to_the_uninterrupted_result(model, folder, tmp_path):
    full = tmp_path / "full"
    vindex.build_index(folder, model=model, out=full, **_kw())

    part = tmp_path / "part"
    summary = vindex.build_index(
        folder, model=model, out=part, on_step=lambda info: info.step < 16, **_kw()
    )
    assert (
        summary.stopped and summary.shards_written == 2
    )  # 18 files: the third shard (4 of 7) dropped
    assert not any(p.name.startswith(".tmp") for p in (part / "shards").iterdir())
    assert len(vindex.open_index(part)) == summary.images  # a stopped index is readable

    seen = []
    hook = model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        resumed = vindex.build_index(folder, model=model, out=part, **_kw())
    finally:
        hook.remove()
    assert resumed.shards_kept == 2 and resumed.shards_written == 4
    kept = sum(len(json.loads((part / f"shards/shard-0000{n}/shard.json").read_text())["paths"])
               for n in (0, 1))  # fmt: skip
    assert sum(seen) == 37 - kept  # only the images of the unfinished shards ran
    assert _snapshot(part) == _snapshot(full)


def test_killed_build_leaves_temporary_shard_that_is_discarded(model, folder, tmp_path):
    out = tmp_path / "idx"
    first = vindex.build_index(folder, model=model, out=out, on_step=lambda i: i.step < 8, **_kw())
    stray = out / "shards" / ".tmp-shard-00001"  # what a kill in the middle of a write leaves
    stray.mkdir()
    (stray / "features.npy").write_bytes(b"half")
    assert len(vindex.open_index(out)) == first.images and stray.exists()  # readers leave it alone
    summary = vindex.build_index(folder, model=model, out=out, **_kw())
    assert not stray.exists() and summary.images == 37 and summary.shards_kept == 1


def test_adding_images_updates_the_top_k_exactly(model, tmp_path):
    root = tmp_path / "images"
    names = _make_folder(root, count=30)
    out = tmp_path / "idx"
    first = vindex.build_index(root, model=model, out=out, **_kw())
    assert first.images == 30
    new = [f"new/n{i}.png" for i in range(9)]
    _write_images(root, new, seed=5)
    seen = []
    hook = model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    try:
        second = vindex.build_index(root, model=model, out=out, **_kw())
    finally:
        hook.remove()
    assert sum(seen) == 9 and second.added == 9 and second.images == 39
    assert second.shards_kept == first.shards_written and not second.skipped
    idx = vindex.open_index(out)
    assert idx.paths[:30] == sorted(names) and idx.paths[30:] == sorted(new)
    brute = _brute(model, root, idx.paths)
    for layer in LAYERS:
        expected = _brute_top(brute[f"max:{layer}"], brute[f"argmax:{layer}"], 5)
        for c, (_, ids, _) in enumerate(expected):
            assert [p.image_id for p in idx.top_patches(layer, c)] == ids.tolist()
    nothing = vindex.build_index(root, model=model, out=out, **_kw())
    assert nothing.added == 0 and nothing.shards_written == 0 and nothing.images == 39


def test_nearest_by_blocks_equals_brute_force(model, folder, tmp_path):
    vindex.build_index(folder, model=model, out=tmp_path / "idx", **_kw())
    idx = vindex.open_index(tmp_path / "idx")
    feats = np.stack([idx.features(i) for i in range(len(idx))])
    query = feats[4] + 0.01
    for metric in ("l2", "cosine"):
        got = idx.nearest(query, 6, metric=metric, block_size=3)
        want = brute_nearest(query, feats, k=6, metric=metric)
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-6, atol=1e-7)
    own = idx.nearest(feats[4], 3, exclude=4, block_size=5)
    assert (
        4 not in own.indices
        and own.indices.tolist() == brute_nearest(feats[4], feats, k=3, exclude=4).indices.tolist()
    )
    with pytest.raises(ValueError, match="dims"):
        idx.nearest(np.zeros(3), 2)
    with pytest.raises(ValueError, match="metric"):
        idx.nearest(query, 2, metric="manhattan")


def test_top_patch_boxes_and_crops(model, folder, tmp_path):
    vindex.build_index(folder, model=model, out=tmp_path / "idx", **_kw())
    idx = vindex.open_index(tmp_path / "idx")
    best = idx.top_patches("conv2", 1, 2)
    assert len(best) == 2 and best[0].value >= best[1].value
    top, left, bottom, right = best[0].box
    assert 0 <= top < bottom <= SIZE and 0 <= left < right <= SIZE
    crop = idx.patch(best[0])
    assert crop.shape == (bottom - top, right - left, 3)
    (folder / best[0].path).unlink()  # gone: the crop comes from the thumbnail
    small = idx.patch(best[0])
    assert small.ndim == 3 and small.shape[0] <= 8
    with pytest.raises(ValueError, match="not indexed"):
        idx.top_patches("relu2", 0)
    with pytest.raises(ValueError, match="channel"):
        idx.top_patches("conv2", 99)


def test_decode_workers_give_the_same_index(model, folder, tmp_path):
    vindex.build_index(folder, model=model, out=tmp_path / "w0", **_kw())
    vindex.build_index(folder, model=model, out=tmp_path / "w2", **_kw(num_workers=2))
    a, b = _snapshot(tmp_path / "w0"), _snapshot(tmp_path / "w2")
    a.pop("manifest.json"), b.pop("manifest.json")
    assert a == b


def test_all_corrupt_shard_and_errors(model, tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "0a.png").write_bytes(b"x")
    (root / "0b.jpg").write_bytes(b"y")
    _write_images(root, ["1.png", "2.png", "3.jpg"])
    out = tmp_path / "idx"
    summary = vindex.build_index(root, model=model, out=out, **_kw(shard_size=2))
    assert summary.images == 3 and len(summary.skipped) == 2
    idx = vindex.open_index(out)
    assert json.loads((out / "shards/shard-00000/shard.json").read_text())["paths"] == []
    values = [p.value for p in idx.top_patches("relu1", 0)]
    assert len(values) == 3 and values == sorted(values, reverse=True)
    with pytest.raises(ValueError, match=r"other settings.*top_k"):
        vindex.build_index(root, model=model, out=out, **_kw(top_k=3))
    with pytest.raises(ValueError, match="not a folder"):
        vindex.build_index(root / "1.png", model=model, out=tmp_path / "x", **_kw())
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ValueError, match="not channel maps"):
        vindex.build_index(root, model=model, out=tmp_path / "y", **_kw(layers=["fc"]))
    fixed = vindex.build_index(root, model=model, out=tmp_path / "y", **_kw())  # same folder
    assert fixed.images == 3
    with pytest.raises(ValueError, match="No image files"):
        vindex.build_index(tmp_path / "busy", model=model, out=tmp_path / "w", **_kw())
    with pytest.raises(ValueError, match="shard_size"):
        vindex.build_index(root, model=model, out=tmp_path / "z", **_kw(shard_size=0))
    with pytest.raises(ValueError, match="not an index"):
        vindex.build_index(root, model=model, out=tmp_path / "busy", **_kw())
    with pytest.raises(ValueError, match="not an index"):
        vindex.open_index(tmp_path / "busy")


def test_index_inside_the_source_folder_is_not_indexed(model, folder):
    out = folder / "the-index"
    vindex.build_index(folder, model=model, out=out, **_kw(thumb_size=SIZE))
    again = vindex.build_index(folder, model=model, out=out, **_kw(thumb_size=SIZE))
    assert again.added == 0 and again.images == 37
