"""Fingerprints of the package code that shapes the outputs.

Snakemake reruns a ``script:`` job when the script changes, but not when the
package it imports does. The rules put :func:`script_fingerprint` in their
``params``, so that a change in the code a job runs reruns exactly the jobs
that run it. Which modules those are is read from the import statements
themselves, followed from module to module: every ``import`` anywhere in the
code counts, in functions too, and a module counts with the packages above it.
The source is hashed after parsing, without docstrings, so comments,
docstrings and formatting do not count as changes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

PACKAGE = "melstore"


def script_fingerprint(script: str | Path) -> str:
    """A short hash of ``script``'s code and of every package module it imports, directly or not.

    The script's own code counts too: Snakemake does not compare the code of a
    job whose outputs are gone (a temporary shard), only its params.
    """
    digest = hashlib.sha256(_code(Path(script).read_text(encoding="utf-8")).digest)
    digest.update(code_fingerprint(imported_modules(script)).encode())
    return digest.hexdigest()[:16]


def imported_modules(script: str | Path) -> tuple[str, ...]:
    """The package modules the code of ``script`` imports, directly or not, sorted by name."""
    found: set[str] = set()
    pending = list(_code(Path(script).read_text(encoding="utf-8")).imports)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        found.add(name)
        pending.extend(_code(_source(name)).imports)
    return tuple(sorted(found))


def code_fingerprint(modules: tuple[str, ...]) -> str:
    """A short hash of the given modules' code, ignoring comments and docstrings."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode())
        digest.update(_code(_source(name)).digest)
    return digest.hexdigest()[:16]


def _source(module: str) -> str:
    return _module_file(module).read_text(encoding="utf-8")


def _module_file(module: str) -> Path | None:
    """The file of a package module, found without importing anything but the package."""
    [top] = importlib.util.find_spec(PACKAGE).submodule_search_locations
    path = Path(top, *module.split(".")[1:])
    return next((f for f in (path / "__init__.py", path.with_suffix(".py")) if f.is_file()), None)


class Code(NamedTuple):
    """What a source's code is: the package modules it imports, and a digest of it."""

    imports: frozenset[str]
    digest: bytes


@functools.cache  # the rules share modules: parse each source once per workflow start
def _code(source: str) -> Code:
    tree = ast.parse(source)
    imports = frozenset(_imports(tree))  # before the docstrings go: the tree is edited
    return Code(imports, hashlib.sha256(ast.dump(_without_docstrings(tree)).encode()).digest())


def _imports(tree: ast.Module) -> set[str]:
    """The package modules an import statement of ``tree`` names, with their parent packages.

    ``from package import name`` names the module ``package.name`` when there
    is one, else ``package``.
    """
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            named.add(node.module)
            named.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if _is_module(f"{node.module}.{alias.name}")
            )
    ours = {name for name in named if name == PACKAGE or name.startswith(f"{PACKAGE}.")}
    parts = [name.split(".") for name in ours]
    return {".".join(part[:end]) for part in parts for end in range(1, len(part) + 1)}


def _is_module(name: str) -> bool:
    return name.startswith(f"{PACKAGE}.") and _module_file(name) is not None


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree
