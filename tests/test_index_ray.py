"""vizcore.data.index_ray: the Ray engine of the index build writes the local engine's index."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import vizcore_cli as cli
from tests.conftest import TinyCNN
from vizcore.data import index as vindex
from vizcore.data import index_ray
from vizcore.data.images import SAMPLES_DIR

LAYERS = ["fire3", "fire9"]
KW = {"model_key": "squeezenet1_1", "layers": LAYERS, "shard_size": 5, "top_k": 4,
      "batch_size": 4, "num_workers": 0, "thumb_size": 16}  # fmt: skip
needs_ray = pytest.mark.skipif(
    not index_ray.ray_available(), reason="Ray is not installed (pip install '.[scale]')"
)


def _folder(root: Path) -> list[str]:
    """The bundled sample photos plus two corrupt files, named so that one forward batch of the
    build is a lone corrupt file (file 4: shard 0's last batch) and one is mixed (file 10)."""
    photos = sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix in (".jpg", ".png"))
    names = [f"{i if i < 4 else i + 1 if i < 9 else i + 2:02d}_{p.name}" for i, p in
             enumerate(photos)]  # fmt: skip
    for name, photo in zip(names, photos, strict=True):
        sub = root / ("a" if int(name[:2]) < 7 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, sub / name)
    (root / "a" / "04_broken.jpg").write_bytes(photos[0].read_bytes()[:2000])  # truncated
    (root / "b" / "10_empty.png").write_bytes(b"")
    return names


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray instance of 2 CPUs for this module, shut down at the end whatever happens."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install '.[scale]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _local_build(model: torch.nn.Module, folder: Path, out: Path) -> vindex.IndexSummary:
    """The local engine with one torch thread, as each Ray actor (1 CPU) runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return vindex.build_index(folder, model=model, out=out, **KW)
    finally:
        torch.set_num_threads(threads)


def _assert_same_index(a: Path, b: Path) -> None:
    """Equal indexes: the same files; manifests and shard.json equal; thumbnails, ids,
    positions, paths, skipped files exactly equal; float arrays equal within rtol 1e-5 (see
    the test's docstring)."""
    files_a = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for name in files_a:
        if name.endswith(".json"):
            assert json.loads((a / name).read_text()) == json.loads((b / name).read_text()), name
            continue
        if name.endswith(".npy"):
            pairs = [(np.load(a / name), np.load(b / name), name)]
        else:
            with np.load(a / name) as da, np.load(b / name) as db:
                assert sorted(da.files) == sorted(db.files)
                pairs = [(da[k], db[k], f"{name}:{k}") for k in da.files]
        for x, y, what in pairs:
            assert x.dtype == y.dtype and x.shape == y.shape, what
            if x.dtype.kind == "f":
                scale = float(np.abs(x).max()) if x.size else 0.0
                np.testing.assert_allclose(y, x, rtol=1e-5, atol=1e-6 * scale, err_msg=what)
            else:
                np.testing.assert_array_equal(y, x, err_msg=what)


@needs_ray
def test_ray_engine_writes_the_local_index(local_ray, squeezenet, tmp_path):
    """Indexed locally and by a local Ray instance of 2 CPUs (2 actors), the index is the same.

    Tolerance: the Ray actors forward the same images in the same batches as the local engine
    (the local plan's batches are shipped to Ray), so the floats are bit-identical when both
    sides run the same kernels; both run one torch thread here (measured max difference 0.0).
    rtol 1e-5 (about 80 float32 ulps) only allows a different kernel choice between the driver
    process and an actor (a summation order: Lite0 with 2 driver threads against 1-thread actors
    differed by 1.2e-6 relative, bench/results/index_ray.md); ids, positions and thumbnails must
    be exact.
    """
    folder = tmp_path / "photos"
    _folder(folder)
    local = _local_build(squeezenet, folder, tmp_path / "local")
    ray_sum = vindex.build_index(folder, model=squeezenet, out=tmp_path / "ray",
                                 engine="ray", **KW)  # fmt: skip
    assert ray_sum.images == local.images == 12 and ray_sum.shards_written == 3
    assert ray_sum.skipped == local.skipped
    assert [p for p, _ in ray_sum.skipped] == ["a/04_broken.jpg", "b/10_empty.png"]
    _assert_same_index(tmp_path / "local", tmp_path / "ray")
    idx = vindex.open_index(tmp_path / "ray")
    assert idx.top_patches("fire9", 3)[0].path == vindex.open_index(
        tmp_path / "local").top_patches("fire9", 3)[0].path  # fmt: skip
    again = vindex.build_index(folder, model=squeezenet, out=tmp_path / "ray", engine="ray", **KW)
    assert (again.added, again.shards_written, again.shards_kept) == (0, 0, 3)  # nothing to do


@needs_ray
@pytest.mark.slow
def test_ray_build_stopped_halfway_resumes_to_the_local_index(local_ray, squeezenet, tmp_path):
    """Stopped through ``on_step`` after the first shard, the Ray job ends (closing the
    generator) with that shard written; the same call resumes it on Ray to the local index."""
    folder = tmp_path / "photos"
    _folder(folder)
    _local_build(squeezenet, folder, tmp_path / "local")
    out = tmp_path / "ray"
    stopped = vindex.build_index(folder, model=squeezenet, out=out, engine="ray",
                                 on_step=lambda info: info.step < 5, **KW)  # fmt: skip
    assert stopped.stopped and stopped.shards_written == 1
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    resumed = vindex.build_index(folder, model=squeezenet, out=out, engine="ray", **KW)
    assert not resumed.stopped and (resumed.shards_kept, resumed.shards_written) == (1, 2)
    _assert_same_index(tmp_path / "local", out)


def test_ray_engine_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    assert not index_ray.ray_available()
    folder, out = tmp_path / "photos", tmp_path / "index"
    _folder(folder)
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match=r"pip install '.*\[scale\]'"):
        vindex.build_index(folder, model=TinyCNN().eval(), model_key="tiny",
                           layers=["relu1"], embedding_layer="gap", out=out,
                           engine="ray")  # fmt: skip
    assert not out.exists()  # nothing written
    argv = ["index", "build", str(folder), "--model", "squeezenet1_1", "--layers", "fire3",
            "--out", str(out), "--engine", "ray"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "Ray" in capsys.readouterr().err and not out.exists()


def test_engine_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="engine must be"):
        vindex.build_index(tmp_path, model=TinyCNN(), model_key="tiny", layers=["relu1"],
                           embedding_layer="gap", out=tmp_path / "i", engine="spark")  # fmt: skip
    for bad in ({"actors": 0}, {"num_cpus": 1.5}, {"cpus_per_actor": 0}, {"gpus_per_actor": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            index_ray.RayEngine(**bad)


def test_scale_extra_matches_requirements_scale():
    """``pip install '.[scale]'`` and the test setup (requirements-dev.txt -> -scale) agree."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["scale"]  # fmt: skip
    lines = [ln.strip() for ln in (root / "requirements-scale.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]  # fmt: skip
    assert extra == lines == ["ray[data]>=2.60,<3"]
    assert "-r requirements-scale.txt" in (root / "requirements-dev.txt").read_text()
