"""vizcore.data.index_tsne and ``vizcore index tsne`` on a tiny index: shape, ids, determinism,
atomic storage and clear errors."""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vizcore_cli as cli
from tests.conftest import TinyCNN
from tests.test_index import _kw, _make_folder
from vizcore.data import index as vindex
from vizcore.data import index_tsne


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("tsne")
    torch.manual_seed(0)
    root = tmp / "images"
    _make_folder(root)
    vindex.build_index(root, model=TinyCNN().eval(), out=tmp / "idx", **_kw())
    return tmp / "idx"


@pytest.fixture
def idx(built: Path, tmp_path: Path) -> vindex.ImageIndex:
    """A private copy of the module's index (each test writes its own map)."""
    import shutil

    shutil.copytree(built, tmp_path / "idx")
    return vindex.open_index(tmp_path / "idx")


def _fast(**kw: object) -> dict:
    return {"n_iter": 50, "early_exaggeration_iter": 25, "n_jobs": 1, **kw}


def test_map_of_every_image_is_stored_and_read_back(idx) -> None:
    assert index_tsne.read_tsne(idx) is None
    got = index_tsne.index_tsne(idx, perplexity=5, **_fast())
    assert got.coords.shape == (37, 2) and got.coords.dtype == np.float32
    assert got.ids.tolist() == list(range(37)) and not got.sampled
    assert np.isfinite(got.coords).all() and got.coords.std(axis=0).min() > 0
    p = got.params
    assert (p["gradient"], p["neighbors"], p["points"], p["index_images"]) == (
        "bh",
        "exact",
        37,
        37,
    )
    assert p["layer"] == "gap" and p["model_key"] == "tiny" and p["perplexity"] == 5
    assert got.path == idx.path / "maps" / "tsne"
    assert sorted(f.name for f in got.path.iterdir()) == ["coords.npy", "ids.npy", "map.json"]
    assert not [f for f in got.path.parent.iterdir() if f.name.startswith(".")]  # no temp left
    back = index_tsne.read_tsne(idx)
    np.testing.assert_array_equal(back.coords, got.coords)
    np.testing.assert_array_equal(back.ids, got.ids)
    assert back.params == json.loads((got.path / "map.json").read_text())
    assert not back.coords.flags.writeable


def test_same_seed_same_map_other_seed_other_map(idx) -> None:
    a = index_tsne.index_tsne(idx, sample=20, seed=3, write=False, **_fast())
    b = index_tsne.index_tsne(idx, sample=20, seed=3, write=False, **_fast())
    c = index_tsne.index_tsne(idx, sample=20, seed=4, write=False, **_fast())
    assert a.path is None and a.sampled and len(a.ids) == 20 and (np.diff(a.ids) > 0).all()
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.ids.tolist() != c.ids.tolist()
    assert not (idx.path / "maps").exists()


def test_rerun_replaces_the_map_atomically(idx) -> None:
    index_tsne.index_tsne(idx, sample=10, **_fast())
    second = index_tsne.index_tsne(idx, **_fast())
    assert len(index_tsne.read_tsne(idx).ids) == 37 == len(second.ids)
    assert [f.name for f in (idx.path / "maps").iterdir()] == ["tsne"]


def test_a_stopped_map_is_not_written(idx) -> None:
    seen = []
    got = index_tsne.index_tsne(idx, on_step=lambda info: seen.append(info.step) or False,
                                **_fast())  # fmt: skip
    assert got.params["stopped"] and seen == [25] and got.path is None
    assert index_tsne.read_tsne(idx) is None


def test_placing_a_query_lands_near_its_neighbours(idx) -> None:
    got = index_tsne.index_tsne(idx, **_fast())
    where = index_tsne.place_on_map(idx, got, idx.features(5), k=1)
    np.testing.assert_array_equal(where, got.coords[5])  # itself is its nearest image
    three = index_tsne.place_on_map(idx, got, idx.features(5), k=3)
    near = idx.nearest(idx.features(5), 3).indices
    np.testing.assert_allclose(three, np.median(got.coords[near], axis=0))


def test_above_the_threshold_fft_gradient_and_annoy_neighbours_still_deterministic(
    idx, monkeypatch
) -> None:
    monkeypatch.setattr(index_tsne, "FFT_ABOVE", 30)
    a = index_tsne.index_tsne(idx, perplexity=5, write=False, **_fast(n_jobs=2))
    b = index_tsne.index_tsne(idx, perplexity=5, write=False, **_fast(n_jobs=2))
    assert (a.params["gradient"], a.params["neighbors"]) == ("fft", "annoy")
    np.testing.assert_array_equal(a.coords, b.coords)
    small = index_tsne.index_tsne(idx, sample=30, perplexity=5, write=False, **_fast())
    assert small.params["gradient"] == "bh"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"layer": "conv2"}, "no per-image features.*indexed top-k layer.*'gap'"),
        ({"layer": "nope"}, "not in the index"),
        ({"sample": 38}, "more than the index's 37 images"),
        ({"sample": 2}, "at least 3"),
        ({"perplexity": 1.0}, "perplexity"),
        ({"n_iter": 10}, "n_iter"),
    ],
)
def test_bad_arguments_say_what_is_wrong(idx, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        index_tsne.index_tsne(idx, **kw)


def test_a_map_that_does_not_fit_the_index_is_refused(idx) -> None:
    got = index_tsne.index_tsne(idx, **_fast())
    params = dict(got.params, layer="other")
    (got.path / "map.json").write_text(json.dumps(params))
    with pytest.raises(ValueError, match="does not fit this index"):
        index_tsne.read_tsne(idx)
    (got.path / "coords.npy").write_bytes(b"broken")
    with pytest.raises(ValueError, match="cannot be read"):
        index_tsne.read_tsne(idx)


def test_without_opentsne_small_maps_fall_back_and_large_ones_say_so(idx, monkeypatch) -> None:
    real_import = builtins.__import__

    def no_opentsne(name, *args, **kwargs):
        if name == "openTSNE":
            raise ImportError("no openTSNE")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_opentsne)
    got = index_tsne.index_tsne(idx, write=False, **_fast(n_iter=250))
    assert got.coords.shape == (37, 2) and got.params["library"].startswith("scikit-learn")
    monkeypatch.setattr(index_tsne, "FALLBACK_MAX", 10)
    with pytest.raises(RuntimeError, match=r"openTSNE is not installed.*--sample"):
        index_tsne.index_tsne(idx, write=False, **_fast())


def test_cli_writes_the_map_and_reports_it(idx, capsys) -> None:
    argv = ["index", "tsne", str(idx.path), "--sample", "30", "--seed", "2", "--iterations", "50",
            "--perplexity", "5", "--jobs", "1"]  # fmt: skip
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "t-SNE of 30 of 37 images (Barnes-Hut gradient)" in err
    assert "t-SNE iteration 300/300" in err  # the progress line reaches the end
    assert "30 points" in out and "gradient bh" in out
    stored = index_tsne.read_tsne(vindex.open_index(idx.path))
    assert len(stored.ids) == 30 and stored.params["seed"] == 2


@pytest.mark.parametrize(
    ("extra", "code", "match"),
    [
        (["--layer", "nope"], 2, "not in the index"),
        (["--sample", "99"], 2, "more than the index's 37 images"),
        (["--sample", "5", "--all"], 2, "not allowed with"),
    ],
)
def test_cli_bad_arguments_exit_2_with_a_message(idx, capsys, extra, code, match) -> None:
    assert cli.main(["index", "tsne", str(idx.path), *extra]) == code
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert "Traceback" not in err


def test_cli_on_a_folder_that_is_not_an_index(tmp_path, capsys) -> None:
    assert cli.main(["index", "tsne", str(tmp_path)]) == 2
    assert "is not an index" in capsys.readouterr().err
