"""The code stays ruff-clean and mypy-clean, and its API typed for callers: checked on every
test run, like any behaviour."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("tool", ["ruff check", "ruff format --check"])
def test_ruff(tool: str) -> None:
    if shutil.which("ruff") is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = run(*tool.split(), ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_api_is_typed_and_listed_for_callers() -> None:
    """PEP 561: without ``py.typed`` in the installed package, a caller's mypy finds no
    ``pipeline`` at all; ``dir()`` lists the names ``__getattr__`` loads on first use."""
    assert (REPO / "pipeline" / "py.typed").is_file()
    setup = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in setup["tool"]["setuptools"]["package-data"]["pipeline"]
    # A fresh interpreter: no lazy name loaded yet.
    script = "import pipeline; print(sorted(set(pipeline.__all__) - set(dir(pipeline))))"
    listed = run(sys.executable, "-c", script)
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stdout
