"""melstore: log-scaled mel spectrogram feature stores for audio datasets.

Read a store with :func:`open`::

    import melstore

    with melstore.open("results/demo/seed.h5") as store:
        X, meta = store.read(), store.metadata

The package is imported by Snakemake jobs before their thread pools are sized,
so this module must not import numpy or anything that loads a BLAS: the
reader is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from melstore.errors import AudioError, ConfigError, MelstoreError

if TYPE_CHECKING:
    from pathlib import Path

    from melstore.store.reader import Store

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "MelstoreError", "Store", "__version__", "open"]


def open(path: str | Path) -> Store:  # noqa: A001 - reads like open() / h5py.File
    """Open a feature store read-only.

    Parameters
    ----------
    path : str or Path
        A store written by the workflow, e.g. ``results/demo/seed.h5``.

    Returns
    -------
    Store
        Lazy features, metadata, failures, params, axes, folds and selection.

    Raises
    ------
    MelstoreError
        If the file is missing, not a melstore store, or of an incompatible
        layout version.
    """
    from melstore.store.reader import Store

    return Store(path)


def __getattr__(name: str):
    if name == "Store":  # imported on first use: it loads numpy
        from melstore.store.reader import Store

        return Store
    raise AttributeError(f"module 'melstore' has no attribute {name!r}")
