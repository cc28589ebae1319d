"""Atomic file writing: a reader never sees a partial output, even after kill -9."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_sibling(path: str | Path) -> Path:
    """Where ``path`` is written before it is renamed into place (same folder)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_stale_siblings(path: str | Path) -> None:
    """Delete temporary files of ``path`` left by writers that were killed."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        stale.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` if the block succeeds.

    Examples
    --------
    >>> with atomic_path("table.csv") as tmp:
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
