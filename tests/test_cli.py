"""The ``vizcore`` command line, run in-process on the bundled models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vizcore_cli as cli
from tests import model_files as mf
from vizcore.data import images

CHELSEA = images.SAMPLES_DIR / "chelsea.png"
COFFEE = images.SAMPLES_DIR / "coffee.png"
CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _top1(stdout: str, path: Path) -> int:
    lines = stdout.splitlines()
    start = lines.index(str(path))
    return int(lines[start + 1].split()[0])


def test_grad_cam_on_chelsea_writes_maps_and_npz(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["attribute", "--method", "grad-cam", "--model", "efficientnet_lite0"]
    code = cli.main([*argv, str(CHELSEA), "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "chelsea_grad-cam.npz",
        "chelsea_grad-cam_map.png",
        "chelsea_grad-cam_overlay.png",
    ]
    with np.load(out / "chelsea_grad-cam.npz", allow_pickle=False) as npz:
        assert int(npz["target"]) in CATS
        assert npz["map"].shape == (224, 224)
        assert npz["raw"].ndim == 2
        assert str(npz["layer"]) == "head.act"  # the spec's CAM preset
        assert float(npz["seconds"]) > 0
        assert float(npz["map"].max()) > 0
    with Image.open(out / "chelsea_grad-cam_overlay.png") as overlay:
        assert overlay.size == (224, 224) and overlay.mode == "RGB"
    assert "[1/1]" in capsys.readouterr().err


def test_attribute_takes_a_target_and_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in (CHELSEA, COFFEE):
        (folder / sample.name).write_bytes(sample.read_bytes())
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")  # skipped: suffix
    out = tmp_path / "out"
    args = ["attribute", "--method", "saliency", "--target", "967", str(folder), "--out", str(out)]
    assert cli.main(args) == 0
    for stem in ("chelsea", "coffee"):
        with np.load(out / f"{stem}_saliency.npz") as npz:
            assert int(npz["target"]) == 967
            assert str(npz["layer"]) == ""


def test_predict_prints_top5(capsys) -> None:
    assert cli.main(["predict", "--model", "efficientnet_lite0", str(CHELSEA), str(COFFEE)]) == 0
    stdout = capsys.readouterr().out
    assert _top1(stdout, CHELSEA) in CATS
    assert _top1(stdout, COFFEE) == 967  # espresso
    assert len(stdout.splitlines()) == 2 * 6


def test_a_corrupt_file_is_reported_and_the_others_still_run(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    out = tmp_path / "out"
    argv = ["attribute", "--method", "grad-cam", str(bad), str(CHELSEA)]
    code = cli.main([*argv, "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    bad_lines = [line for line in err.splitlines() if str(bad) in line]
    assert len(bad_lines) == 1 and bad_lines[0].startswith("vizcore: ")
    assert (out / "chelsea_grad-cam.npz").is_file()
    assert not list(out.glob("broken*"))
    assert cli.main(["predict", str(bad)]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["attribute", "--method", "nope", str(CHELSEA), "--out", "x"],
        ["attribute", "--method", "grad-cam", str(CHELSEA)],  # no --out
        ["predict", "--model", "no_such_model", str(CHELSEA)],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_options_after_parsing_exit_2(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "out")
    base = ["attribute", str(CHELSEA), "--out", out]
    assert cli.main([*base, "--method", "grad-cam", "--layer", "no.such.layer"]) == 2
    assert cli.main([*base, "--method", "saliency", "--layer", "head.act"]) == 2
    assert cli.main([*base, "--method", "grad-cam", "--target", "1000"]) == 2
    assert cli.main(["predict", "--arch", "resnet18", str(CHELSEA)]) == 2  # needs --source
    err = capsys.readouterr().err
    assert "no.such.layer" in err and "out of range" in err and "--source" in err
    assert not Path(out).exists() or not list(Path(out).iterdir())


def test_help_for_each_subcommand(capsys) -> None:
    for command in ([], ["predict"], ["attribute"], ["visualize-class"], ["train-style"]):
        assert cli.main([*command, "--help"]) == 0
        assert "usage: vizcore" in capsys.readouterr().out


def test_method_ids_cover_the_library(capsys) -> None:
    wanted = {"grad-cam", "grad-cam++", "score-cam", "cam", "saliency", "guided-backprop"}
    wanted |= {"integrated-gradients", "occlusion"}
    assert wanted <= set(cli.ATTRIBUTION_METHODS)


def test_a_user_model_through_the_command_line(tmp_path: Path, capsys) -> None:
    weights = mf.write_squeezenet_pth(tmp_path)
    argv = ["predict", "--source", "torchvision", "--arch", "squeezenet1_1"]
    assert cli.main([*argv, "--weights", str(weights), str(CHELSEA)]) == 0
    assert _top1(capsys.readouterr().out, CHELSEA) in CATS
    missing = tmp_path / "missing.pth"
    assert cli.main([*argv, "--weights", str(missing), str(CHELSEA)]) == 1
    assert str(missing) in capsys.readouterr().err


def test_visualize_class_writes_a_png_per_class_and_the_gif(tmp_path: Path, capsys) -> None:
    out = tmp_path / "vis"
    argv = ["visualize-class", "--model", "squeezenet1_1", "--class", "130", "--class", "281"]
    code = cli.main([*argv, "--steps", "3", "--size", "64", "--gif", "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["class_visualization.gif", "flamingo_130.png", "tabby_281.png"]
    with Image.open(out / "flamingo_130.png") as png:
        assert png.size == (64, 64) and png.mode == "RGB"
        assert np.asarray(png).std() > 0  # not the grey start image
    stdout = capsys.readouterr().out
    assert "flamingo (130)" in stdout and "3 steps" in stdout


@pytest.mark.parametrize(
    "extra",
    [["--class", "1000"], ["--class", "1", "--steps", "0"], ["--class", "1", "--size", "4096"]],
)
def test_visualize_class_bad_options_exit_2_before_running(
    extra: list[str], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "vis"
    code = cli.main(["visualize-class", "--model", "squeezenet1_1", *extra, "--out", str(out)])
    assert code == 2
    assert "visualize-class: error:" in capsys.readouterr().err
    assert not out.exists()
