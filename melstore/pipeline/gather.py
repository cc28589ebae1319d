"""Gather shard files into the final store, in manifest order, with bounded memory.

The manifest comes in as plain columns (:meth:`Manifest.store_columns`), and
the tables are written as numpy columns.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from melstore.errors import MelstoreError
from melstore.features.extractor import FeatureParams
from melstore.pipeline.manifest import source_column
from melstore.pipeline.reuse import BUILD_PARTS, record_path, write_record
from melstore.store.format import (
    COMPUTED_COLUMNS,
    ERROR_COLUMN,
    FAILURE_COLUMNS,
    SHARD_COLUMNS,
    OpenStores,
    Storage,
    StoreWriter,
    axes,
    columns_of,
    computed_table,
    open_store,
    read_columns,
)
from melstore.store.stats import MOMENTS_GROUP, STATS_GROUP, Moments

# Clips whose moments the gather pools at a time: its memory does not grow with the shards.
MOMENTS_BLOCK = 1024
# What Manifest.store_columns gives: column name -> (numpy dtype, values in manifest order).
ManifestColumns = Mapping[str, tuple[str, Sequence]]


def gather_store(
    *,
    manifest: ManifestColumns,
    shard_paths: Sequence[str | Path],
    out_path: str | Path,
    dataset: dict,
    feature_set: str,
    params: dict,
    storage: dict | None = None,
    on_error: str = "skip",
    min_success: float = 0.0,
) -> str:
    """Stream every clip of ``manifest`` from its shard into one store, and write its record.

    ``manifest`` holds the stored manifest columns (clip_id, path, then the
    dataset CSV's), as :meth:`melstore.pipeline.manifest.Manifest.store_columns` gives
    them. ``dataset`` is the config's dataset section; its name, layout, root and
    metadata CSV are recorded so that ``melstore verify`` can re-check the sources.
    ``storage`` (:meth:`Storage.to_dict`) must be the shards' own: their chunks
    are copied as they are.

    Rows follow the manifest order, never the shard order, so the store is the
    same for any shard size or core count. Only one clip's features are held
    in memory at a time. Beside the store goes the record its next build
    reuses clips by (:func:`melstore.pipeline.reuse.record_path`).

    Returns
    -------
    str
        A one-line summary of the store, naming its failures if any.

    Raises
    ------
    MelstoreError
        If a clip is in no shard, shards disagree on library versions,
        ``on_error='fail'`` and a file failed (in shards built before), or
        fewer than ``min_success`` of the files succeeded (Kaldi's rule).
    """
    p = FeatureParams.from_dict(params)
    kept = Storage.from_dict(storage or {})
    gathering = plan_gather(
        manifest,
        shard_paths,
        on_error=on_error,
        min_success=min_success,
        out_path=out_path,
        storage=kept,
    )
    with (
        StoreWriter(
            out_path,
            n_bins=p.n_bins,
            n_frames=p.n_frames,
            channels=p.channels,
            n_clips=len(gathering.sources),
            storage=kept,
        ) as writer,
        OpenStores() as shards,
    ):
        for shard_path, shard_row in gathering.sources:
            features = shards.features(shard_path)
            if p.n_frames is None:
                writer.append(read_clip(features, shard_row, gathering.computed[shard_path]))
            else:
                offset = writer.chunk_offset(shard_row)
                writer.append_chunk(features.id.read_direct_chunk(offset)[1])
        writer.finish(
            metadata=gathering.metadata,
            failures=gathering.failures,
            attrs=store_attrs(
                dataset, feature_set=feature_set, params=p, versions=gathering.versions
            )
            | kept.attrs()
            | gathering.error_attrs(kept),
            axes=gathering.axes(p),
            groups={
                "frontend": gathering.frontend,
                STATS_GROUP: fold_stats(
                    gathering, p.frame_shape, source=source_column(dataset), out_path=out_path
                ),
            },
        )
        shape = writer.shape
    write_record(
        record_path(out_path),
        table=gathering.record_table(),
        build=gathering.build,
        state=gathering.state,
    )
    summary = f"{out_path}: {len(gathering.sources)} clips, features {shape} {np.dtype(kept.dtype)}"
    if kept.precision_db is not None:
        summary += f", within {kept.precision_db:g} of the computed values"
    n_failed = len(gathering.failures["clip_id"])
    if n_failed:
        summary += (
            f"; {n_failed} of {len(manifest['clip_id'][1])} files failed; "
            f"see failures table in {out_path}"
        )
    return summary


@dataclass
class Gathering:
    """What a store will hold, read from its shards' small tables.

    Attributes
    ----------
    sources : list of (str, int)
        The shard file and row of each clip to store, in store order.
    metadata, failures : dict of str to np.ndarray
        The store's tables, as columns.
    computed : dict
        Each shard's own metadata columns (they locate variable-length clips).
    versions : dict
        The library versions the shards were computed with.
    frontend : dict of str to np.ndarray
        The window and filter bank they were computed with.
    build : dict
        The params, storage, versions and code the shards were built with
        (empty when they disagree: then the next build reuses nothing).
    state : str
        Digest of all the store was gathered from when the shards were built.
    """

    sources: list[tuple[str, int]]
    metadata: dict[str, np.ndarray]
    failures: dict[str, np.ndarray]
    computed: dict[str, dict[str, np.ndarray]]
    versions: dict
    frontend: dict[str, np.ndarray]
    build: dict
    state: str

    def record_table(self) -> dict[str, np.ndarray]:
        """Each stored clip's row of its shard's table (:data:`SHARD_COLUMNS`), in store order."""
        return {
            column: np.asarray(
                [self.computed[shard][column][row] for shard, row in self.sources],
                dtype=object if kind == "str" else kind,
            )
            for column, kind in SHARD_COLUMNS.items()
        }

    def frame_counts(self) -> list[int]:
        """Frames of each clip to store, from variable-length shards' tables."""
        return [int(self.computed[shard]["n_frames"][row]) for shard, row in self.sources]

    def error_attrs(self, storage: Storage) -> dict[str, float]:
        """``max_error_db``, the largest error of a stored value, for a store within a bound."""
        if storage.precision_db is None:
            return {}
        return {"max_error_db": float(np.max(self.metadata[ERROR_COLUMN], initial=0.0))}

    def axes(self, params: FeatureParams) -> dict[str, np.ndarray]:
        """The store's frequency and time axes."""
        counts = [] if params.n_frames else self.frame_counts()
        return axes(self.frontend["frequencies"], params=params, frame_counts=counts)


def fold_stats(
    gathering: Gathering, frame_shape: tuple[int, ...], *, source: str, out_path: str | Path
) -> dict[str, np.ndarray | str]:
    """The moments of each fold's frames, pooled from the shards' clip moments, one shard at a time.

    The folds are those :meth:`melstore.store.reader.Store.folds` gives by
    default, with ``source`` the store's recorded source column. When the
    clips have no usable folds (a fold column with empty values), every clip
    goes into one group and ``fold_column`` is empty.
    """
    from melstore.store.format import as_frame
    from melstore.store.reader import assign_folds, find_source_column

    clip_ids = gathering.metadata["clip_id"]
    try:
        assigned = assign_folds(
            as_frame(gathering.metadata),
            source=find_source_column(gathering.metadata, source),
            where=out_path,
        )
        of_rows, fold_column = assigned.tolist(), str(assigned.name)
        labels = sorted(set(of_rows))
    except MelstoreError:
        of_rows, labels, fold_column = [""] * len(clip_ids), [""], ""
    index_of = {label: i for i, label in enumerate(labels)}
    group_of = {clip_id: index_of[fold] for clip_id, fold in zip(clip_ids, of_rows, strict=True)}
    folds = Moments.empty(len(labels), frame_shape)
    for shard_path, table in gathering.computed.items():
        with open_store(shard_path) as shard:
            for start in range(0, len(table["clip_id"]), MOMENTS_BLOCK):
                rows = slice(start, start + MOMENTS_BLOCK)
                block_ids = table["clip_id"][rows]
                stored = np.array([clip_id in group_of for clip_id in block_ids], dtype=bool)
                clips = Moments.read(shard[MOMENTS_GROUP], rows)[stored]
                groups = [group_of[clip_id] for clip_id in block_ids[stored]]
                folds = Moments.concatenate([folds, clips]).pooled(
                    np.concatenate([np.arange(len(labels)), groups]), len(labels)
                )
    return {"fold": np.asarray(labels), **folds.arrays(), "fold_column": fold_column}


def plan_gather(
    manifest: ManifestColumns,
    shard_paths: Sequence[str | Path],
    *,
    on_error: str = "skip",
    min_success: float = 0.0,
    out_path: str | Path = "the store",
    storage: Storage | None = None,
) -> Gathering:
    """Read the shards' tables and decide which clips the store holds, in manifest order.

    Raises
    ------
    MelstoreError
        As :func:`gather_store` does, before anything is written.
    """
    index, computed, failed, versions, builds = _index_shards(shard_paths)
    clip_ids = manifest["clip_id"][1]
    n_clips = sum(clip_id in index for clip_id in clip_ids)
    _check_success(n_clips, len(clip_ids), failed, min_success=min_success, out_path=out_path)
    stored_rows, failure_rows = [], []
    for row, clip_id in enumerate(clip_ids):
        if clip_id in index:
            stored_rows.append(row)
        elif clip_id in failed:
            if on_error == "fail":
                _, path, reason = failed[clip_id]
                raise MelstoreError(f"{path}: {reason}")
            failure_rows.append(failed[clip_id])
        else:
            raise MelstoreError(f"clip {clip_id!r} is in no shard; rerun the workflow")
    errors = storage is not None and storage.precision_db is not None
    metadata = _metadata(manifest, stored_rows, computed, index, errors=errors)
    failures = {  # text columns, even when empty
        name: np.asarray(values, dtype=object)
        for name, values in zip(FAILURE_COLUMNS, columns_of(failure_rows, 3), strict=True)
    }
    sources = [index[clip_id] for clip_id in metadata["clip_id"]]
    # every shard job built the same front end: any shard's will do
    frontend = _frontend_arrays(shard_paths[0])
    [(build, digest)] = builds if len(builds) == 1 else [({}, "")]
    return Gathering(
        sources, metadata, failures, computed, versions, frontend, json.loads(build), digest
    )


def store_attrs(dataset: dict, feature_set: str, *, params: FeatureParams, versions: dict) -> dict:
    """The attributes the gather gives a store (besides its layout's own)."""
    return {
        "dataset": dataset["name"],
        "dataset_layout": dataset["layout"],
        "dataset_root": str(dataset["root"]),
        "dataset_metadata": str(dataset["metadata"] or ""),
        "source_column": source_column(dataset),
        "feature_set": feature_set,
        "params": params.to_dict(),
        "versions": versions,
    }


def _check_success(n_ok: int, total: int, failed: dict, *, min_success, out_path):
    """Refuse a store when too many files failed, naming the commonest reason."""
    if total == 0 or n_ok / total >= min_success or not failed:
        return  # without failures, missing clips are reported as "in no shard"
    [(reason, count)] = Counter(reason for _, _, reason in failed.values()).most_common(1)
    raise MelstoreError(
        f"only {n_ok} of {total} files succeeded ({n_ok / total:.0%}), below min_success="
        f"{min_success} for {out_path}; commonest reason ({count} files): {reason}"
    )


def _index_shards(shard_paths):
    """Map each clip id to its shard and row, and read the shards' small tables and builds."""
    index, computed, failed, versions, builds = {}, {}, {}, None, set()
    for shard_path in map(str, shard_paths):
        with open_store(shard_path) as shard:  # once: shard_size=1 means thousands
            table = read_columns(shard, "metadata")
            shard_failures = read_columns(shard, "failures")
            shard_versions = json.loads(shard.attrs["versions"])
            build = {part: _attr(shard.attrs, part) for part in BUILD_PARTS}
            builds.add((json.dumps(build, sort_keys=True), str(shard.attrs["state"])))
        computed[shard_path] = table
        index.update((clip_id, (shard_path, i)) for i, clip_id in enumerate(table["clip_id"]))
        for record in zip(*(shard_failures[c] for c in FAILURE_COLUMNS), strict=True):
            failed[record[0]] = record
        if versions is not None and shard_versions != versions:
            raise MelstoreError(
                f"{shard_path} was built with other library versions than the other shards; "
                "rebuild them all with: snakemake --forcerun extract"
            )
        versions = shard_versions
    return index, computed, failed, versions or {}, builds


def _attr(attrs, key: str):
    """A shard attribute as written: JSON for dicts, else the plain value."""
    value = attrs[key]
    return json.loads(value) if key != "code" else str(value)


def _frontend_arrays(shard_path: str | Path) -> dict[str, np.ndarray]:
    """The window, filter bank and frequencies a shard was computed with."""
    with open_store(str(shard_path)) as shard:
        return {name: data[()] for name, data in shard["frontend"].items()}


def read_clip(features: h5py.Dataset, row: int, table: dict[str, np.ndarray]) -> np.ndarray:
    """One clip of a variable-length (concatenated) shard, by row."""
    start = int(table["frame_offset"][row])
    return features[:, start : start + int(table["n_frames"][row])]


def _metadata(
    manifest: ManifestColumns, stored_rows: list[int], computed: dict, index: dict, *, errors: bool
) -> dict[str, np.ndarray]:
    """Manifest columns of the stored clips, then what their shards computed.

    With ``errors``, the last column is each clip's quantisation error.
    """
    rows = np.asarray(stored_rows, dtype=np.int64)
    table = {name: np.asarray(v, dtype=kind)[rows] for name, (kind, v) in manifest.items()}
    # every shard's computed columns end to end; a clip's position there is its shard's start + row
    shard_paths = list(computed)
    starts = np.cumsum([0] + [len(computed[p]["clip_id"]) for p in shard_paths])
    start_of = dict(zip(shard_paths, starts.tolist(), strict=False))
    positions = [start_of[index[clip_id][0]] + index[clip_id][1] for clip_id in table["clip_id"]]
    empty = computed_table([])
    for name in [*COMPUTED_COLUMNS, *([ERROR_COLUMN] if errors else [])]:
        joined = np.concatenate([empty[name], *(computed[p][name] for p in shard_paths)])
        table[name] = joined[np.asarray(positions, dtype=np.int64)]
    return table
