"""A store made of its shards: an index file over shard files, and packing it into one file.

What it buys: a rebuild rewrites the shards whose files changed and this
small index, never the features of the others.

The index's ``/features`` is an HDF5 virtual dataset: one mapping per shard
file, in row order, with NaN as its fill value, so plain h5py reads it as one
array and a missing source reads as NaN, never as 0. Its source names are
relative to the index's folder, which can therefore be moved or copied whole.
Tables, axes, front end and statistics are real datasets in the index, and
``/shards`` lists each shard's name, rows and digest (:class:`ShardRef`), which
readers check first (:func:`melstore.store.format.check_shards`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.store.format import (
    LOCATION_COLUMNS,
    SHARD_REF_COLUMNS,
    SHARDS_GROUP,
    ShardRef,
    Storage,
    StoreWriter,
    check_outside_dataset,
    layout_attrs,
    open_store,
    read_columns,
    read_shard_refs,
    write_contents,
    write_table,
)

# What a packed copy takes from an index's attributes: all but what its writer sets itself.
_LAYOUT_ATTRS = ("format", "layout_version", "features_layout", "feature_axes", "channels",
                 "n_clips", "n_failures")  # fmt: skip
# Groups a packed copy carries over, besides the features and the tables.
_ARRAY_GROUPS = ("frontend", "stats")


def write_index(
    path: str | Path,
    *,
    shards: Sequence[ShardRef],
    clip_shape: tuple[int, ...] | None,
    n_bins: int,
    channels: Sequence[str] | None,
    storage: Storage,
    contents: dict,
) -> None:
    """Write an index over ``shards`` atomically.

    Parameters
    ----------
    path : str or Path
        The index; the shards' names are relative to its folder.
    shards : sequence of ShardRef
        Every shard file, in row order (shards with no rows are left out of
        the mapping but listed).
    clip_shape : tuple or None
        One clip's shape (fixed layout), or None for concatenated clips of
        ``n_bins`` rows.
    storage : Storage
        How the shards keep their values (the virtual dataset's type).
    contents : dict
        The keyword arguments of :func:`melstore.store.format.write_contents`
        but ``attrs``' layout part, which is derived here.
    """
    dtype = np.dtype(storage.dtype if not storage.exact else np.float32)
    total = sum(shard.rows for shard in shards)
    shape = (total, *clip_shape) if clip_shape else (n_bins, total)
    layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
    layout.dcpl.set_obj_track_times(False)  # else a creation time: two builds would differ
    start = 0
    for shard in shards:
        if not shard.rows:
            continue
        stop = start + shard.rows
        if clip_shape:
            source = h5py.VirtualSource(shard.name, "features", (shard.rows, *clip_shape), dtype)
            layout[start:stop] = source
        else:
            source = h5py.VirtualSource(shard.name, "features", (n_bins, shard.rows), dtype)
            layout[:, start:stop] = source
        start = stop
    n_frames = clip_shape[-1] if clip_shape else None
    attrs = {**layout_attrs(n_frames=n_frames, channels=channels), **contents.pop("attrs")}
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as index:
        index.create_virtual_dataset("features", layout, fillvalue=np.nan)
        refs = {column: [getattr(s, column) for s in shards] for column in SHARD_REF_COLUMNS}
        write_table(index.create_group(SHARDS_GROUP), refs)
        write_contents(index, attrs=attrs, **contents)


def pack(store: str | Path, out: str | Path) -> None:
    """Write a store as one standalone file, with no virtual dataset, for sharing.

    The features are copied chunk by chunk from the shard files, undecoded,
    and the tables, axes, front end and statistics as they are: the bytes do
    not depend on the shard size or the cores the store was built with.

    Raises
    ------
    MelstoreError
        If the store does not verify, or ``out`` is the store itself or lies
        in its shards' folder or its dataset.
    """
    with open_store(store) as index:
        shards = read_shard_refs(index) if SHARDS_GROUP in index else None
        _check_pack_target(Path(store), Path(out), shards or [])
        check_outside_dataset(out, store=store, dataset_root=index.attrs.get("dataset_root"))
        attrs = {k: v for k, v in index.attrs.items() if k not in _LAYOUT_ATTRS}
        fixed = index.attrs["features_layout"] == "fixed"
        features = index["features"]
        metadata = read_columns(index, "metadata")
        if not fixed:  # the writer locates the clips itself
            metadata = {k: v for k, v in metadata.items() if k not in LOCATION_COLUMNS}
        folder = Path(store).parent
        sources = [Path(store)] if shards is None else [folder / shard.name for shard in shards]
        with StoreWriter(
            out,
            n_bins=features.shape[-2],
            n_frames=features.shape[-1] if fixed else None,
            channels=json.loads(index.attrs["channels"]) if "channels" in index.attrs else None,
            n_clips=len(features) if fixed else None,
            storage=Storage(
                precision_db=attrs.get("precision_db"), compression=attrs.get("compression")
            ),
        ) as writer:
            for path in sources:
                with h5py.File(path, "r") as source:
                    copy_clips(source, writer)
            writer.finish(
                metadata=metadata,
                failures=read_columns(index, "failures"),
                attrs=attrs,
                axes={name: data[()] for name, data in index["axes"].items()},
                groups={name: _array_group(index[name]) for name in _ARRAY_GROUPS if name in index},
            )


def _check_pack_target(store: Path, out: Path, shards: Sequence[ShardRef]) -> None:
    """Refuse to write a packed copy over its index, or where a rebuild deletes files."""
    target = out.resolve()
    if target == store.resolve():
        raise MelstoreError(f"{out} is the store itself; pack it into another file")
    # the folder the shard names start with (shards/): the workflow clears files it did not write
    for folder in {store.parent / Path(shard.name).parts[0] for shard in shards}:
        if target.is_relative_to(folder.resolve()):
            raise MelstoreError(
                f"{out} lies in the store's shard folder {folder}, which rebuilds clear; "
                "pack it into a file elsewhere"
            )


def copy_clips(source: h5py.File, writer: StoreWriter) -> None:
    """Append every clip of a standalone store or shard to ``writer``, in row order.

    Fixed-length clips go as raw chunks, undecoded; concatenated ones clip by
    clip, located by their ``frame_offset`` and ``n_frames``.
    """
    features = source["features"]
    if source.attrs["features_layout"] == "fixed":
        for row in range(len(features)):
            writer.append_chunk(features.id.read_direct_chunk(writer.chunk_offset(row))[1])
        return
    located = read_columns(source, "metadata")
    for start, count in zip(*(located[c].tolist() for c in LOCATION_COLUMNS), strict=True):
        writer.append(features[:, start : start + count])


def _array_group(group: h5py.Group) -> dict[str, np.ndarray | str]:
    """A group of arrays and text attributes, as :func:`write_contents` takes it."""
    arrays = {
        name: data.asstr()[()] if data.dtype.kind == "O" else data[()]
        for name, data in group.items()
    }
    return {**arrays, **{name: str(value) for name, value in group.attrs.items()}}
