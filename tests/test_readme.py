"""The README's commands and code stay true."""

import re

import yaml
from conftest import REPO, run_snakemake

README = (REPO / "README.md").read_text()


def test_readme_python_snippets_run_on_the_demo_build(tmp_path, monkeypatch):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    run_snakemake(tmp_path, config)
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert blocks
    for code in blocks:
        namespace = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["meta"].shape[0] == 48


def test_readme_states_the_ci_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    command = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    )
    assert command in README and command in ci
