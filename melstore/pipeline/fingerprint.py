"""Fingerprints of the package code that shapes the outputs.

Snakemake reruns a ``script:`` job when the script changes, but not when the
package it imports does. The rules put these fingerprints in their ``params``
so that a change in the DSP or store code reruns exactly the affected jobs.
The source is hashed after parsing, without docstrings, so comments, docstrings
and formatting do not count as changes.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util

# Modules whose code decides the features in a shard file.
EXTRACT_MODULES = (
    "melstore.features.audio",
    "melstore.features.kinds",
    "melstore.features.extractor",
    "melstore.pipeline.extract",
    "melstore.store.format",
    "melstore.store.stats",
)
# Modules whose code decides how shards become the final store.
GATHER_MODULES = (
    "melstore.pipeline.gather",
    "melstore.pipeline.manifest",
    "melstore.store.format",
    "melstore.store.stats",
)
# Modules whose code draws the report figures and tables of a store.
REPORT_MODULES = (
    "melstore.report.tables",
    "melstore.report.figures",
    "melstore.store.reader",
    "melstore.store.format",
    "melstore.store.audit",
)


def code_fingerprint(modules: tuple[str, ...]) -> str:
    """A short hash of the given modules' code, ignoring comments and docstrings."""
    digest = hashlib.sha256()
    for name in modules:
        digest.update(name.encode())
        digest.update(
            _code_digest(open(importlib.util.find_spec(name).origin, encoding="utf-8").read())
        )
    return digest.hexdigest()[:16]


@functools.cache  # the rules share modules: parse each source once per workflow start
def _code_digest(source: str) -> bytes:
    return hashlib.sha256(ast.dump(_without_docstrings(ast.parse(source))).encode()).digest()


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
