"""Export a store for tools that do not read HDF5: metadata to Parquet, features to NumPy."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from melstore.files import atomic_path
from melstore.store.reader import Store

# Features are copied this many bytes at a time, so exporting never holds the whole array.
BLOCK_BYTES = 32 * 2**20
FORMATS = ("npz", "parquet")


def export_parquet(store: Store, path: str | Path) -> None:
    """Write the metadata table (one row per clip, in feature order) as Parquet.

    Needs pyarrow. The file is written atomically.
    """
    with atomic_path(path) as tmp:
        store.metadata.to_parquet(tmp, index=False)


def export_npz(store: Store, path: str | Path) -> None:
    """Write the features, axes, metadata and params as an uncompressed ``.npz``.

    ``np.load(path)`` then gives ``features`` (as in the store, see
    :attr:`Store.features`), ``frequency`` (Hz), ``time`` (s), one
    ``metadata/<column>`` array per metadata column (text as unicode, so no
    pickle is needed) and ``params`` (JSON text). The features are copied in
    blocks, so memory stays bounded for any store size; the file is written
    atomically.
    """
    arrays = {
        "frequency": store.axes.frequency,
        "time": store.axes.time,
        "params": np.array(json.dumps(store.params, sort_keys=True)),
    }
    for column in store.metadata.columns:
        values = store.metadata[column].to_numpy()
        arrays[f"metadata/{column}"] = values.astype(str) if values.dtype.kind == "O" else values
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        with archive.open("features.npy", "w", force_zip64=True) as member:
            _write_in_blocks(member, store.features)
        for name, values in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asarray(values), allow_pickle=False)


def _write_in_blocks(out, dataset) -> None:
    """Write an h5py dataset as a ``.npy`` stream, a block of its first axis at a time."""
    header = {
        "descr": np.lib.format.dtype_to_descr(dataset.dtype),
        "fortran_order": False,
        "shape": dataset.shape,
    }
    np.lib.format.write_array_header_2_0(out, header)
    row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:], dtype=np.int64))
    step = max(1, BLOCK_BYTES // max(row_bytes, 1))
    for start in range(0, dataset.shape[0], step):
        out.write(np.ascontiguousarray(dataset[start : start + step]).tobytes())
