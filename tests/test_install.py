"""``pip install`` of the repository gives a working ``vizcore`` with its data, away from the repo.

Offline: ``--no-deps --no-build-isolation --no-index`` build with the venv's setuptools; the
installed copy runs with the venv's python (for torch and the other dependencies) and
``PYTHONPATH`` set to the install folder only, from a working folder outside the repository.
The repository is copied first, so the build's ``build/`` and ``*.egg-info`` never land in the
checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CATS = range(281, 286)
IGNORED = (".git", ".venv", ".venv-*", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
IGNORED += ("build", "*.egg-info", ".cache", "test-artifacts", "shots")

pytestmark = pytest.mark.slow


def readme_example() -> str:
    """The README's "vizcore in one screen" code block, as written there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### vizcore in one screen", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, "README has no python block under 'vizcore in one screen'"
    return match.group(1)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("install")
    source, target = base / "src", base / "site"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*IGNORED), symlinks=False)
    offline = [
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "-q",
    ]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "--target", str(target), str(source)],
        check=True,
        cwd=base,
        timeout=300,
    )
    return target


def run_outside(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), VIZCORE_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_only_the_library_and_its_data_are_installed(installed: Path) -> None:
    package = installed / "vizcore"
    for name in ("samples/index.json", "samples/chelsea.png", "CREDITS.md", "styles/README.md"):
        assert (package / "data" / name).is_file(), name
    assert (package / "data/styles/fast_styles.pt").stat().st_size > 1_000_000
    assert (package / "data/styles/fast_styles.json").is_file()
    for app_part in ("vizui", "pages", "app.py", "tests", "bench"):
        assert not (installed / app_part).exists(), app_part
    assert (installed / "vizcore_cli" / "__init__.py").is_file()  # the command line, beside it
    entry_points = next(installed.glob("*.dist-info")) / "entry_points.txt"
    assert "vizcore = vizcore_cli:main" in entry_points.read_text(encoding="utf-8")


def test_readme_example_runs_from_outside_the_repo(installed: Path, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(
        "import vizcore\nprint('FROM', vizcore.__file__)\n" + readme_example(), encoding="utf-8"
    )
    done = run_outside(installed, tmp_path, str(script))
    assert done.returncode == 0, done.stderr
    assert f"FROM {installed / 'vizcore'}" in done.stdout
    top1 = re.search(r"^\((\d+), '([^']+)', ([0-9.]+)\)$", done.stdout, flags=re.MULTILINE)
    assert top1 and int(top1.group(1)) in CATS, done.stdout
    assert "torch.Size([1, 112, 14, 14])" in done.stdout


def test_command_line_runs_from_outside_the_repo(installed: Path, tmp_path: Path) -> None:
    done = run_outside(installed, tmp_path, "-m", "vizcore", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: vizcore" in done.stdout and "attribute" in done.stdout
    chelsea = installed / "vizcore/data/samples/chelsea.png"
    script = installed / "bin" / "vizcore"  # the console script pip wrote
    args = ["attribute", "--method", "grad-cam", str(chelsea), "--out", "maps"]
    done = run_outside(installed, tmp_path, str(script), *args)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "maps/chelsea_grad-cam_overlay.png").is_file()
    assert (tmp_path / "maps/chelsea_grad-cam.npz").is_file()
