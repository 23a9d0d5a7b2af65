"""The deploy recipe (issue 16 item 5) does not drift from the app.

* ``requirements-cpu.txt`` is ``requirements.txt`` with the same torch/torchvision pair as CPU
  wheels: every other requirement with the same bounds, self-contained (it must be able to stand
  in for requirements.txt on Streamlit Community Cloud), and pip accepts its syntax;
* ``deploy/streamlit-public.toml`` parses as Streamlit parses it (tomllib), names only Streamlit
  options and sets the public-server keys; its look ([client], [theme]) is the developer config's;
* the ``Dockerfile`` copies files that exist (and are not in ``.dockerignore``), every local
  package the app imports, the CPU requirements and the public config, and runs ``app.py``.

Docker cannot run on the machine these tests were written on (no daemon), so the image itself is
not built here.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from vizcore.data import images

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PAIR = ("torch", "torchvision")


def requirement_lines(path: Path) -> tuple[list[str], dict[str, Requirement]]:
    """(option lines, requirements by canonical name) of a pip requirements file."""
    options: list[str] = []
    reqs: dict[str, Requirement] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{path.name}: {req.name} is listed twice"
        reqs[name] = req
    return options, reqs


def test_cpu_requirements_match_requirements_txt() -> None:
    base_options, base = requirement_lines(ROOT / "requirements.txt")
    cpu_options, cpu = requirement_lines(ROOT / "requirements-cpu.txt")
    assert not base_options
    # self-contained: on Community Cloud this file becomes requirements.txt, so a
    # `-r requirements.txt` would include itself
    assert cpu_options == [f"--extra-index-url {CPU_INDEX}"]
    assert set(cpu) == set(base), "requirements-cpu.txt lists other packages than requirements.txt"
    for name, req in base.items():
        if name in TORCH_PAIR:
            continue
        assert str(cpu[name]) == str(req), f"{name}: {cpu[name]} in the CPU file, {req} in base"


@pytest.mark.parametrize("name", TORCH_PAIR)
def test_cpu_torch_pair_is_the_pinned_pair(name: str) -> None:
    _, base = requirement_lines(ROOT / "requirements.txt")
    _, cpu = requirement_lines(ROOT / "requirements-cpu.txt")
    specs = list(cpu[name].specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{name}: pin one CPU wheel"
    version = Version(specs[0].version)
    assert version.local == "cpu", f"{name}=={version}: the CPU wheel's local label is +cpu"
    # the same pair as requirements.txt (torchvision is built against one torch minor version)
    assert SpecifierSet(str(base[name].specifier)).contains(version), (
        f"{name}=={version} is outside requirements.txt's {base[name].specifier}"
    )


def test_pip_accepts_the_cpu_requirements_file(tmp_path: Path) -> None:
    """pip parses every line (the index option, the +cpu pins) and fails only at resolution:
    offline, nothing can be found, and the first package it asks for is the torch CPU wheel."""
    pip = [sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--no-index"]
    result = subprocess.run(
        [*pip, "--find-links", str(tmp_path), "-r", str(ROOT / "requirements-cpu.txt")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    _, cpu = requirement_lines(ROOT / "requirements-cpu.txt")
    torch_pin = str(cpu["torch"].specifier)
    assert f"satisfies the requirement torch{torch_pin}" in result.stderr, result.stderr


# --------------------------------------------------------------------------------------------
# Public Streamlit config
# --------------------------------------------------------------------------------------------


def load_toml(path: Path) -> dict[str, dict[str, object]]:
    return tomllib.loads(path.read_text(encoding="utf-8"))  # what streamlit.config does


def test_public_config_sets_the_public_server_keys() -> None:
    public = load_toml(ROOT / "deploy/streamlit-public.toml")
    server = public["server"]
    assert server["headless"] is True
    assert server["fileWatcherType"] == "none"
    assert server["runOnSave"] is False
    assert public["browser"]["gatherUsageStats"] is False
    limit = server["maxUploadSize"]
    assert isinstance(limit, int)
    developer = load_toml(ROOT / ".streamlit/config.toml")["server"]["maxUploadSize"]
    assert limit < developer, "the public server's upload limit is lower than the developer's"
    # the image uploader promises MAX_BYTES; the server refuses any bigger file, whatever a
    # widget says, so the public limit may not undercut it
    assert limit >= images.MAX_BYTES // 2**20


def test_public_config_names_only_streamlit_options() -> None:
    import streamlit.config

    known = streamlit.config.get_config_options()
    public = load_toml(ROOT / "deploy/streamlit-public.toml")
    names = [f"{section}.{key}" for section, values in public.items() for key in values]
    unknown = [name for name in names if name not in known]
    assert not unknown, f"not Streamlit options: {unknown}"


def test_public_config_keeps_the_apps_look() -> None:
    public = load_toml(ROOT / "deploy/streamlit-public.toml")
    developer = load_toml(ROOT / ".streamlit/config.toml")
    for section in ("client", "theme"):  # e.g. showSidebarNavigation=false: the app's own links
        assert public.get(section) == developer.get(section), section


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copies() -> list[tuple[list[str], str]]:
    result = []
    for word, rest in dockerfile():
        if word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            result.append((parts[:-1], parts[-1]))
    return result


def dockerignored(path: str) -> bool:
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    path = path.rstrip("/")
    return any(fnmatch.fnmatch(path, p) or path.startswith(p + "/") for p in patterns)


def test_dockerfile_copies_files_that_exist() -> None:
    sources = [src for srcs, _ in copies() for src in srcs]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not dockerignored(src), f"Dockerfile copies {src}, which .dockerignore excludes"


def test_dockerfile_copies_what_the_app_imports() -> None:
    scripts = [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "vizui").glob("*.py")]
    local = set()
    for script in scripts:
        for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            local |= {n.split(".")[0] for n in names if (ROOT / n.split(".")[0]).is_dir()}
    assert {"vizcore", "vizui"} <= local
    copied = {src.rstrip("/") for srcs, _ in copies() for src in srcs}
    needed = {"app.py", "pages", *local}
    assert needed <= copied, f"the image lacks {sorted(needed - copied)}"


def test_dockerfile_builds_a_cpu_public_image() -> None:
    steps = dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert (["requirements-cpu.txt"], "./") in copies()
    runs = [rest for word, rest in steps if word == "RUN"]
    assert any(re.search(r"pip install .*-r requirements-cpu\.txt", r) for r in runs), runs
    assert not any("requirements.txt" in r for r in runs), "the CUDA requirements in the image"
    assert (["deploy/streamlit-public.toml"], ".streamlit/config.toml") in copies()
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the app must not run as root"
    (health,) = [rest for word, rest in steps if word == "HEALTHCHECK"]
    assert "/_stcore/health" in health and ":8501" in health
    (cmd,) = [rest for word, rest in steps if word == "CMD"]
    assert json.loads(cmd) == [
        "streamlit", "run", "app.py", "--server.port", "8501", "--server.address", "0.0.0.0",
    ]  # fmt: skip
    assert ("EXPOSE", "8501") in steps


def test_dockerignore_keeps_the_context_small() -> None:
    for path in (".venv", ".git", "tests/e2e/shots", ".pytest_cache", ".ruff_cache"):
        assert dockerignored(path), path


def test_readme_recipe_names_the_files() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploying to a hosted Streamlit server", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "requirements-cpu.txt",
        "deploy/streamlit-public.toml",
        "docker build -t cnn-viz-studio .",
        "docker run --rm -p 8501:8501 cnn-viz-studio",
        "cp requirements-cpu.txt requirements.txt",
        "cp deploy/streamlit-public.toml .streamlit/config.toml",
    ):
        assert needle in section, needle
    header = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "docker build -t cnn-viz-studio ." in header
    assert "docker run --rm -p 8501:8501 cnn-viz-studio" in header
