"""The README's commands and code stay true."""

import re

import pytest
from conftest import REPO, TORCH_BUILD

README = (REPO / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize(
    "number",
    [
        pytest.param(number, marks=[pytest.mark.torch] if "import torch" in code else [])
        for number, code in enumerate(SNIPPETS)
    ],
)
def test_readme_python_snippets_run_on_the_demo_build(number, demo_build, monkeypatch):
    code = SNIPPETS[number]
    monkeypatch.chdir(demo_build[0])
    namespace = {}
    exec(compile(code, f"README.md snippet {number + 1}", "exec"), namespace)  # noqa: S102
    if "meta" in namespace:  # the snippets that read the metadata read all of it
        assert len(namespace["meta"]) == 48


def test_readme_states_the_ci_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    command = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    )
    assert command in README and command in ci


def test_ci_installs_the_torch_build_the_skip_line_names():
    ci = (REPO / ".ci" / "run").read_text()
    assert f'torch_build="{TORCH_BUILD}"' in ci
    assert '.venv/bin/pip install -q "$torch_build"' in ci
