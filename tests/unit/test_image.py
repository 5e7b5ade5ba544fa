"""The operator image without a container engine (the test bed has none): what the
Dockerfile says, and that the wheel its build stage makes from its build context holds
the whole package. `make lint` runs hadolint on it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from berth import cli
from testbed.testbin import REPO_ROOT

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
PACKAGE = REPO_ROOT / "operator" / "berth"


def instructions(name: str) -> list[str]:
    return re.findall(rf"^{name} (.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_base_is_pinned_and_user_is_numeric_non_root() -> None:
    bases = [line.split()[0] for line in instructions("FROM")]
    assert bases, "no FROM"
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), f"{base} is not pinned"
    users = instructions("USER")
    assert users, "the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "runAsNonRoot needs a numeric USER"
    assert int(uid) != 0, "the image would run as root"


def test_entrypoint_and_command_are_the_berth_operator() -> None:
    [entrypoint] = [json.loads(line) for line in instructions("ENTRYPOINT")]
    [command] = [json.loads(line) for line in instructions("CMD")]
    assert entrypoint == ["berth"]
    assert 'berth = "berth.cli:main"' in (REPO_ROOT / "pyproject.toml").read_text()
    operator = cli.main.commands[command[0]]
    with operator.make_context(command[0], command[1:]) as ctx:
        assert ctx.params["all_namespaces"] is True
        assert ctx.params["standalone"] is True


def test_the_build_stage_wheel_holds_every_file_of_the_package(tmp_path: Path) -> None:
    """Templates, py.typed and modules: a file left out of the wheel is missing from the
    image, which only an installed (not editable) package shows."""
    context = tmp_path / "context"
    context.mkdir()
    ignored = shutil.ignore_patterns("__pycache__", "*.egg-info")  # as .dockerignore
    for line in instructions("COPY"):
        if line.startswith("--"):
            continue  # from another stage
        *sources, destination = line.split()
        for source in sources:
            target = context / destination / (source if destination.endswith("/") else "")
            if (REPO_ROOT / source).is_dir():
                shutil.copytree(REPO_ROOT / source, target, ignore=ignored)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO_ROOT / source, target)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), "."],
        cwd=context,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [wheel] = wheels.glob("berth-*.whl")
    packaged = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("berth/")}
    expected = {
        f"berth/{path.relative_to(PACKAGE)}"
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert any(name.endswith(".j2") for name in expected)
    assert expected - packaged == set(), "files of the package missing from the wheel"
