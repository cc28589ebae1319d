"""The manifest file: a dataset's clips and CSV columns, as the index jobs read them.

What it buys: the ``manifest`` rule writes it once per change of the
dataset's listed paths or CSV, and an index job reads it in milliseconds,
instead of listing the dataset and parsing its CSV with pandas at every
rerun (docs/design.md has the measurements). Reading it needs no pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from melstore.files import atomic_path
from melstore.store.format import read_columns, write_table

# The file's one table: clip_id, path, then the dataset CSV's columns, in manifest order.
MANIFEST_TABLE = "manifest"


def write_manifest_file(columns: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write the columns :meth:`Manifest.store_columns` gives, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as opened:
        write_table(opened.create_group(MANIFEST_TABLE), columns)


def read_manifest_file(path: str | Path) -> dict[str, np.ndarray]:
    """The columns :func:`write_manifest_file` wrote, text as UTF-8 bytes."""
    with h5py.File(path, "r") as opened:
        return read_columns(opened, MANIFEST_TABLE, decode=False)
