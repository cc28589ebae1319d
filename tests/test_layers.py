"""The package's layers: lower ones never import higher ones, and nothing imports in a cycle.

Layers, lowest first, one subpackage each: ``features`` (audio input, feature
kinds, parameters, presets); ``store`` (format, writer, reader, export, torch
dataset); ``pipeline`` (plan, manifest, shards, extraction, reuse, gather, job
adapter); ``report`` (figures, tables, baseline). ``errors`` and ``files`` sit
below them all; the command line, ``melstore/__init__`` and the PyTorch front end
(``melstore.torch``) above.
"""

import ast

import pytest
from conftest import REPO, run_python

PACKAGE = REPO / "melstore"
LAYERS = {"errors": 0, "files": 0, "features": 1, "store": 2, "pipeline": 3, "report": 4,
          "cli": 5, "__init__": 5, "torch": 5}  # fmt: skip
# What reading a store may not pull in: decoders, DSP, the workflow engine, plotting, PyTorch.
NOT_FOR_READING = ("soundfile", "soxr", "scipy", "librosa", "snakemake", "matplotlib", "xxhash",
                   "torch")  # fmt: skip


def module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def melstore_imports(path) -> set[str]:
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
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name in GRAPH_NODES} - {module_name(path)}


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH_NODES = {module_name(path) for path in SOURCES}
GRAPH = {module_name(path): melstore_imports(path) for path in SOURCES}


def test_every_module_has_a_layer():
    for module in GRAPH:
        assert layer(module) in LAYERS.values(), module


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_a_higher_layer(module):
    higher = {name for name in GRAPH[module] if layer(name) > layer(module)}
    assert higher == set(), f"{module} imports {sorted(higher)} from a higher layer"


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
