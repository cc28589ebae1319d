"""Docs for their readers: a short README, links that resolve, nothing cited that users lack.

And code that outlives its dependencies' releases: no private name of theirs is used.
"""

import ast
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
    # a regex, as Snakefile and .smk files are not Python; .py files get private_uses too
    private = re.compile(r"\b(workflow|snakemake|scheduler|dag|logger)\._[a-z]|_schedule_reev")
    for path in tracked_files():
        if path.suffix in {".py", ".smk"} or path.name == "Snakefile":
            if path.parent.name == "tests":
                continue
            text = path.read_text(encoding="utf-8")
            assert not private.search(text), f"{path.relative_to(REPO)} uses a private name"


WATCHED = {"soundfile", "snakemake", "h5py", "pandas"}  # their private names change in any release


def is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source):
    """The private names of a watched package that Python ``source`` uses, as (line, name).

    Imports of a private module or name (``from pandas._libs import lib``,
    ``from soundfile import _snd``) and private attributes of a name an import
    of one binds (``sf._snd`` after ``import soundfile as sf``, ``workflow._rules``
    after ``from snakemake import workflow``), however deep (``pd.api._x``).
    """
    tree = ast.parse(source)
    bound, uses = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = [(a.name, a.asname or a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported = [(f"{node.module}.{a.name}", a.asname or a.name) for a in node.names]
        else:
            continue
        for dotted, name in imported:
            if dotted.split(".")[0] in WATCHED:
                bound.add(name)
                if any(map(is_private, dotted.split("."))):
                    uses.append((node.lineno, dotted))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                uses.append((node.lineno, ast.unparse(node)))
    return sorted(uses)


def test_private_uses_finds_a_planted_private_name_and_only_that():
    planted = (
        "import soundfile as sf\n"
        "with sf.SoundFile(path, 'w') as out:\n"
        "    sf._snd.sf_command(out._file, 0x1050, sf._ffi.NULL, 0)\n"
        "from snakemake import workflow\n"
        "workflow._rules\n"
        "import h5py._hl.base\n"
        "from pandas._libs import lib\n"
        "from soundfile import _snd as snd\n"
    )
    assert private_uses(planted) == [
        (3, "sf._ffi"), (3, "sf._snd"), (5, "workflow._rules"), (6, "h5py._hl.base"),
        (7, "pandas._libs.lib"), (8, "soundfile._snd"),
    ]  # fmt: skip
    public = (
        "import soundfile as sf\n"
        "import numpy as np\n"
        "from pandas import DataFrame\n"
        "with sf.SoundFile(path, 'w') as out:\n"
        "    out.write(np._core)\n"  # not a watched package
        "    sf.write(buffer, out._file, 16000)\n"  # not an attribute of an import
        "DataFrame.__init__\n"
    )
    assert private_uses(public) == []


def test_no_private_name_of_a_dependency_is_used():
    for path in tracked_files():
        if path.suffix == ".py":
            uses = private_uses(path.read_text(encoding="utf-8"))
            assert not uses, f"{path.relative_to(REPO)} uses private names: {uses}"
