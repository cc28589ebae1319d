"""The code stays clean: ruff, snakefmt and snakemake --lint, as the project requires."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def run(*command):
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")])
def test_ruff(args):
    result = run(sys.executable, "-m", "ruff", *args)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt():
    # installed beside the Python running the tests, as pip puts the test extra
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    result = run(snakefmt, "--check", "Snakefile", "workflow")
    assert result.returncode == 0, result.stderr


def test_snakemake_lint():
    result = run(sys.executable, "-m", "snakemake", "--lint")
    assert result.returncode == 0 and "Lints for" not in result.stdout, result.stdout
