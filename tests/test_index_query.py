"""vizcore.data.index_query on a tiny index: patches and neighbours equal a brute-force scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TinyCNN
from tests.test_index import LAYERS, SIZE, _brute, _kw, _make_folder
from vizcore.data import index as vindex
from vizcore.data import index_query
from vizcore.inside.embedding import nearest as brute_nearest
from vizcore.inside.receptive_fields import receptive_field, unit_box


@pytest.fixture
def built(tmp_path: Path) -> tuple[TinyCNN, Path, vindex.ImageIndex]:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    root = tmp_path / "images"
    _make_folder(root)
    vindex.build_index(root, model=model, out=tmp_path / "idx", **_kw())
    return model, root, vindex.open_index(tmp_path / "idx")


def test_unit_patches_equal_a_brute_force_scan(built):
    model, root, idx = built
    brute = _brute(model, root, idx.paths)  # one image at a time, ids in index order
    for layer in LAYERS:
        rf = receptive_field(model, layer)
        w = idx.manifest["layer_info"][layer]["shape"][2]
        for channel in range(idx.channels(layer)):
            got = index_query.unit_patches(idx, layer, channel, k=5)
            values, where = brute[f"max:{layer}"][:, channel], brute[f"argmax:{layer}"][:, channel]
            order = sorted(range(len(values)), key=lambda i: (-values[i], i))[:5]
            assert [p.image_id for p in got.patches] == order
            np.testing.assert_allclose(
                [p.value for p in got.patches], values[order], rtol=1e-5, atol=1e-6
            )
            for p, crop in zip(got.patches, got.crops, strict=True):
                row, col = divmod(int(where[p.image_id]), w)
                assert (p.row, p.col) == (row, col)
                top, left, bottom, right = unit_box(rf, row, col, SIZE)
                view, _ = vindex.decode_image(root / p.path, input_size=SIZE, thumb_size=SIZE)
                np.testing.assert_array_equal(crop, view[top:bottom, left:right])
    assert got.images == len(idx) == 37 and got.input_size == SIZE
    assert got.field_size == (float(rf.size[0]), float(rf.size[1]))


def test_neighbours_of_a_new_image_equal_brute_force(built, tmp_path):
    model, root, idx = built
    feats = _brute(model, root, idx.paths)["features"]
    new = tmp_path / "new"
    _make_folder(new, count=2)
    pixels, _ = vindex.decode_image(new / "b/c/img00.png", input_size=SIZE, thumb_size=SIZE)
    query = vindex.index_batch(model, pixels[None], layers=LAYERS, embedding_layer="gap")
    for metric in ("l2", "cosine"):
        got = idx.nearest(query["features"][0], 7, metric=metric, block_size=4)
        want = brute_nearest(query["features"][0], feats, k=7, metric=metric)
        assert got.indices.tolist() == want.indices.tolist()
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-5, atol=1e-6)


def test_sample_and_map(built):
    _, _, idx = built
    ids = index_query.sample_ids(len(idx), cap=10, seed=3)
    assert len(ids) == 10 and len(set(ids.tolist())) == 10 and (np.diff(ids) > 0).all()
    assert ids.tolist() == index_query.sample_ids(len(idx), cap=10, seed=3).tolist()
    assert index_query.sample_ids(5, cap=10).tolist() == [0, 1, 2, 3, 4]
    got_ids, feats = index_query.sample_features(idx, cap=10, seed=3)
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(feats, np.stack([idx.features(int(i)) for i in ids]))
    fmap = index_query.index_map(idx, cap=10, method="pca", seed=3)
    assert fmap.sampled and fmap.total == 37 and fmap.gallery_map.coords.shape == (10, 2)
    whole = index_query.index_map(idx, cap=100, method="pca")
    assert not whole.sampled and len(whole.ids) == 37
    with pytest.raises(ValueError, match="cap"):
        index_query.sample_ids(10, cap=0)


def test_index_of_another_model_is_refused(built):
    _, _, idx = built
    index_query.check_index_model(idx, "tiny")
    with pytest.raises(ValueError, match="built with model 'tiny'"):
        index_query.check_index_model(idx, "efficientnet_lite0")
