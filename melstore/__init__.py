"""melstore: log-scaled mel spectrogram feature stores for audio datasets.

Read a store with :func:`open`, and compute its features for new audio with
:func:`extractor`::

    import melstore

    with melstore.open("results/demo/seed.h5") as store:
        X, meta = store.read(), store.metadata
    x = melstore.extractor("results/demo/seed.h5").from_file("new.wav")

The package is imported by Snakemake jobs before their thread pools are sized,
so this module must not import numpy or anything that loads a BLAS: the
reader and the extractor are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from melstore.errors import AudioError, ConfigError, MelstoreError, VersionWarning

if TYPE_CHECKING:
    from pathlib import Path

    from melstore.store.inference import Extractor
    from melstore.store.reader import Store

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "ConfigError",
    "Extractor",
    "MelstoreError",
    "Store",
    "VersionWarning",
    "__version__",
    "extractor",
    "open",
]


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


def extractor(store: str | Path | Store, *, rounded: bool = True) -> Extractor:
    """Compute a store's features for new audio, exactly as its build computed its clips.

    Parameters
    ----------
    store : str, Path or Store
        A store written by the workflow, or one already open.
    rounded : bool
        For a compact store (``precision_db``): round as the store did, so
        the features equal the stored ones (the default); False gives the
        values before rounding. No effect on other stores.

    Returns
    -------
    Extractor
        ``from_file(path)`` and ``from_array(samples, sr=...)`` give float32
        features shaped like the store's clips.

    Raises
    ------
    MelstoreError
        If the store cannot be read.

    Warns
    -----
    VersionWarning
        If the installed libraries' versions differ from the store's.
    """
    from melstore.store.inference import Extractor

    return Extractor(store, rounded=rounded)


def __getattr__(name: str):
    if name == "Store":  # imported on first use: it loads numpy
        from melstore.store.reader import Store

        return Store
    if name == "Extractor":  # imported on first use: it loads numpy, soundfile, soxr and scipy
        from melstore.store.inference import Extractor

        return Extractor
    raise AttributeError(f"module 'melstore' has no attribute {name!r}")
