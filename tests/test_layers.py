"""The package's layers: lower ones never import higher ones, and nothing imports in a cycle.

Layers, lowest first: feature computation; the store (format, writer, reader,
export, torch dataset); the pipeline (plan, manifest, shards, extract, gather,
job adapter); the report (figures, tables, baseline); the command line.
"""

import ast
from pathlib import Path

import pytest
from conftest import REPO, run_python

PACKAGE = REPO / "melstore"
LAYERS = {
    "errors": 0, "files": 0, "runtime": 0,
    "audio": 1, "kinds": 1, "features": 1, "presets": 1,
    "store": 2, "reader": 2, "export": 2, "torchdata": 2,
    "config": 3, "manifest": 3, "shards": 3, "reuse": 3, "extract": 3, "gather": 3,
    "demo": 3, "workflow": 3, "fingerprint": 3, "jobs": 3, "verify": 3,
    "figures": 4, "report": 4, "baseline": 4,
    "cli": 5, "__init__": 5,
}  # fmt: skip
# What reading a store may not pull in: decoders, DSP, the workflow engine, plotting.
NOT_FOR_READING = ("soundfile", "soxr", "scipy", "librosa", "snakemake", "matplotlib", "xxhash")


def melstore_imports(path: Path) -> set[str]:
    """Modules of melstore that ``path`` imports at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("melstore"):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "melstore" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found - {path.stem}


GRAPH = {path.stem: melstore_imports(path) for path in sorted(PACKAGE.glob("*.py"))}


def test_every_module_has_a_layer():
    assert set(GRAPH) == set(LAYERS)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(module):
    higher = {name for name in GRAPH[module] if LAYERS[name] > LAYERS[module]}
    assert higher == set(), f"melstore.{module} imports {sorted(higher)} from a higher layer"


def test_no_import_cycles():
    visiting, done = [], set()

    def visit(module):
        if module in visiting:
            raise AssertionError("import cycle: " + " -> ".join([*visiting, module]))
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(GRAPH[module]):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_reading_a_store_imports_numpy_h5py_and_pandas_only(demo_build):
    store = demo_build[0] / "results/demo/seed.h5"
    code = f"""
import sys
import melstore
with melstore.open({str(store)!r}) as store:
    store.clip(0), store.clip(store.metadata["clip_id"][1]), store.read([2, 3])
    store.metadata, store.failures, store.folds(), store.class_fold_counts(), store.axes
print(sorted(name for name in {NOT_FOR_READING!r} if name in sys.modules))
print(all(name in sys.modules for name in ("numpy", "h5py", "pandas")))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "True"]
