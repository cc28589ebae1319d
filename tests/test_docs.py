"""Docs for their readers: a short README, links that resolve, nothing cited that users lack."""

import re
import subprocess

import pytest
from conftest import REPO

MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("git is not installed")
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.stdout.splitlines() if (REPO / name).is_file()]


def anchors(path):
    """GitHub's heading anchors of a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_the_readme_is_short_and_docs_exist():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
    names = {path.name for path in (REPO / "docs").glob("*.md")}
    assert {"store-format.md", "configuration.md", "cluster.md", "incremental.md"} <= names
    assert {"design.md"} <= names


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_resolves(document):
    for target in LINK.findall(document.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        assert linked.exists(), f"{document.name} links to a missing {target}"
        assert linked.is_relative_to(REPO), f"{document.name} links outside the repository"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{document.name}: no heading for {target}"


def test_no_file_cites_what_users_do_not_have():
    cited = re.compile(r"\.\./shared|DESIGN\.md|MODELS\.md|DEVELOPERS\.md")
    this_file = REPO / "tests" / "test_docs.py"
    for path in tracked_files():
        if path == this_file or path.suffix in {".png", ".h5", ".wav"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert not cited.search(text), f"{path.relative_to(REPO)} cites a file users lack"


def test_no_snakemake_private_name_is_used():
    private = re.compile(r"\b(workflow|snakemake|scheduler|dag|logger)\._[a-z]|_schedule_reev")
    for path in tracked_files():
        if path.suffix in {".py", ".smk"} or path.name == "Snakefile":
            if path.parent.name == "tests":
                continue
            text = path.read_text(encoding="utf-8")
            assert not private.search(text), f"{path.relative_to(REPO)} uses a private name"
