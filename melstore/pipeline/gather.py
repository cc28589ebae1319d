"""Gather shard files into the feature set's index, with bounded memory.

The index (:mod:`melstore.store.index`) maps each shard file's features in
shard order, which with the hash-trie shards is shard-key order at every
shard size; it holds the tables, axes, front end and per-fold statistics as
real datasets. The manifest comes in as plain columns, read from the
manifest file (:mod:`melstore.pipeline.manifest_file`), and the tables are
written as numpy columns. Nothing here imports pandas.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from melstore.errors import MelstoreError
from melstore.features.extractor import FeatureParams
from melstore.pipeline.shards import SHARD_FILE_NAME
from melstore.store.format import (
    COMPUTED_COLUMNS,
    ERROR_COLUMN,
    FAILURE_COLUMNS,
    LOCATION_COLUMNS,
    SHARDS_GROUP,
    ShardRef,
    Storage,
    axes,
    clip_locations,
    columns_of,
    computed_table,
    encode_text,
    read_columns,
    read_shard_refs,
)
from melstore.store.index import write_index
from melstore.store.reader import LAYOUT_SOURCE_COLUMN, assign_folds, find_source_column
from melstore.store.stats import MOMENTS_GROUP, STATS_GROUP, Moments

# Clips whose moments are pooled at a time, in store order: the same sums at every shard size.
MOMENTS_BLOCK = 1024
# What an index takes from its shards' metadata (their paths, sizes and mtimes are for reuse).
INDEX_SHARD_COLUMNS = ("clip_id", *COMPUTED_COLUMNS, ERROR_COLUMN, *LOCATION_COLUMNS)
# What Manifest.store_columns gives: column name -> values in manifest order (text as bytes).
ManifestColumns = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class GatherJob:
    """One gather job: a feature set's shard files, and where its next index goes.

    Attributes
    ----------
    manifest : ManifestColumns
        The stored manifest columns (clip_id, path, then the dataset CSV's), as
        :meth:`melstore.pipeline.manifest.Manifest.store_columns` gives them.
    shard_paths : sequence of str or Path
        The current shard files, in shard order.
    store : str or Path
        The path users open, which still holds the previous index.
    out_path : str or Path
        Where the next index is written, in the same folder (the workflow's
        ``publish`` rule then links it to ``store``).
    dataset : dict
        The config's dataset section; its name, layout, root and metadata CSV
        are recorded so that ``melstore verify`` can re-check the sources.
    feature_set : str
        The feature set's name.
    params, storage : dict
        Its parameters (:meth:`FeatureParams.to_dict`) and storage
        (:meth:`Storage.to_dict`; the shards' own).
    on_error : {'skip', 'fail'}
        ``fail`` refuses a store with failure rows.
    min_success : float
        The smallest share of files that must succeed.
    """

    manifest: ManifestColumns
    shard_paths: Sequence[str | Path]
    store: str | Path
    out_path: str | Path
    dataset: dict
    feature_set: str
    params: dict
    storage: dict = field(default_factory=dict)
    on_error: str = "skip"
    min_success: float = 0.0


def gather_store(job: GatherJob) -> str:
    """Write the next index of a feature set over its shard files, then delete stale shard files.

    A shard file is deleted once neither the next index nor the previous one
    lists it, so a reader that opened the previous index still finds every
    file it reads.

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
    p, kept = FeatureParams.from_dict(job.params), Storage.from_dict(job.storage)
    gathering = plan_gather(
        job.manifest,
        job.shard_paths,
        on_error=job.on_error,
        min_success=job.min_success,
        out_path=job.store,
        storage=kept,
    )
    previous = listed_shards(job.store)
    write_index(
        job.out_path,
        shards=gathering.refs,
        clip_shape=p.clip_shape,
        n_bins=p.n_bins,
        channels=p.channels,
        storage=kept,
        contents=index_contents(job, gathering, params=p, storage=kept),
    )
    current = {ref.name for ref in gathering.refs}
    remove_stale_shards(job.out_path, job.shard_paths, keep={*previous, *current})
    with h5py.File(job.out_path, "r") as index:
        shape = index["features"].shape
    return gathering.summary(job.store, kept, shape=shape, n_files=len(job.manifest["clip_id"]))


def index_contents(
    job: GatherJob, gathering: Gathering, *, params: FeatureParams, storage: Storage
) -> dict:
    """The index's tables, axes, front end, statistics and attributes (:func:`write_contents`)."""
    source = source_column(job.dataset)
    return {
        "metadata": gathering.metadata,
        "failures": gathering.failures,
        "axes": gathering.axes(params),
        "groups": {
            "frontend": gathering.frontend,
            STATS_GROUP: fold_stats(
                gathering, params.frame_shape, source=source, out_path=job.store
            ),
        },
        "attrs": store_attrs(
            job.dataset, feature_set=job.feature_set, params=params, versions=gathering.versions
        )
        | storage.attrs()
        | gathering.error_attrs(storage),
    }


def source_column(dataset: dict) -> str:
    """The metadata column naming each clip's source recording, or ``""`` when none is known.

    ``dataset.source_column`` if the config names one, else the layout's own.
    """
    return dataset.get("source_column") or LAYOUT_SOURCE_COLUMN.get(dataset["layout"], "")


def listed_shards(index: str | Path) -> list[str]:
    """The shard files an existing index lists (none if it is missing or not an index)."""
    try:
        with h5py.File(index, "r") as opened:
            return [ref.name for ref in read_shard_refs(opened)] if SHARDS_GROUP in opened else []
    except (OSError, KeyError, ValueError):
        return []


def remove_stale_shards(index: str | Path, shard_paths: Sequence[str | Path], *, keep: set[str]):
    """Delete the shard files of the shards' folder that ``keep`` (relative to ``index``) omits.

    That is shard files of older generations, and temporary files of killed
    jobs; a file not named as a shard file is left alone.
    """
    folder = Path(index).parent
    for shard_folder in {Path(path).parent for path in shard_paths}:
        for path in shard_folder.iterdir():
            stale = os.path.relpath(path, folder) not in keep
            if stale and SHARD_FILE_NAME.fullmatch(path.name):
                path.unlink(missing_ok=True)


@dataclass
class ShardTables:
    """What one shard file holds besides its features."""

    path: str
    metadata: dict[str, np.ndarray]
    failures: dict[str, np.ndarray]
    versions: dict
    digest: str

    @classmethod
    def read(cls, path: str | Path) -> ShardTables:
        """The tables of a shard file; metadata text as stored (bytes), which the index copies."""
        with h5py.File(path, "r") as shard:
            return cls(
                str(path),
                read_columns(shard, "metadata", decode=False, only=INDEX_SHARD_COLUMNS),
                read_columns(shard, "failures"),
                json.loads(shard.attrs["versions"]),
                str(shard.attrs["digest"]),
            )

    @property
    def n_clips(self) -> int:
        return len(self.metadata["clip_id"])


@dataclass
class Gathering:
    """What an index will hold, read from its shards' small tables.

    Attributes
    ----------
    shard_paths : list of str
        Every shard file, in shard order: the index's rows are their clips, end to end.
    refs : list of ShardRef
        Each shard's name relative to the index, rows and digest.
    metadata, failures : dict of str to np.ndarray
        The index's tables, as columns.
    versions : dict
        The library versions the shards were computed with.
    frontend : dict of str to np.ndarray
        The window and filter bank they were computed with.
    """

    shard_paths: list[str]
    refs: list[ShardRef]
    metadata: dict[str, np.ndarray]
    failures: dict[str, np.ndarray]
    versions: dict
    frontend: dict[str, np.ndarray]

    def error_attrs(self, storage: Storage) -> dict[str, float]:
        """``max_error_db``, the largest error of a stored value, for a store within a bound."""
        if storage.precision_db is None:
            return {}
        return {"max_error_db": float(np.max(self.metadata[ERROR_COLUMN], initial=0.0))}

    def axes(self, params: FeatureParams) -> dict[str, np.ndarray]:
        """The store's frequency and time axes."""
        counts = [] if params.n_frames else self.metadata["n_frames"].tolist()
        return axes(self.frontend["frequencies"], params=params, frame_counts=counts)

    def summary(self, store: str | Path, storage: Storage, *, shape: tuple, n_files: int) -> str:
        """One line: the store's clips, shape and type, its bound, and its failures."""
        n_clips = len(self.metadata["clip_id"])
        summary = f"{store}: {n_clips} clips, features {shape} {np.dtype(storage.dtype)}"
        if storage.precision_db is not None:
            summary += f", within {storage.precision_db:g} of the computed values"
        n_failed = len(self.failures["clip_id"])
        if n_failed:
            summary += f"; {n_failed} of {n_files} files failed; see failures table in {store}"
        return summary


def fold_stats(
    gathering: Gathering, frame_shape: tuple[int, ...], *, source: str, out_path: str | Path
) -> dict[str, np.ndarray | str]:
    """The moments of each fold's frames, pooled from the shards' clip moments.

    The folds are those :meth:`melstore.store.reader.Store.folds` gives by
    default, with ``source`` the store's recorded source column. When the
    clips have no usable folds (a fold column with empty values), every clip
    goes into one group and ``fold_column`` is empty. The clips are pooled
    in store order, :data:`MOMENTS_BLOCK` at a time, whatever the shards:
    the sums are the same at every shard size.
    """
    source = find_source_column(gathering.metadata, source)
    try:
        assigned = assign_folds(gathering.metadata, source=source, where=out_path)
        labels, groups = np.unique(assigned.of_rows, return_inverse=True)
        fold_column = assigned.column
    except MelstoreError:
        labels, fold_column = np.array([""]), ""
        groups = np.zeros(len(gathering.metadata["clip_id"]), dtype=np.int64)
    if labels.dtype.kind == "S":  # a text fold column, as the manifest gives it
        labels = np.char.decode(labels)
    folds = Moments.empty(len(labels), frame_shape)
    own = np.arange(len(labels))
    start = 0
    for clips in clip_moments(gathering.shard_paths, frame_shape):
        block = groups[start : start + len(clips)]
        folds = Moments.concatenate([folds, clips]).pooled(
            np.concatenate([own, block]), len(labels)
        )
        start += len(clips)
    return {"fold": np.asarray(labels), **folds.arrays(), "fold_column": fold_column}


def clip_moments(shard_paths: Sequence[str], frame_shape: tuple[int, ...]) -> Iterator[Moments]:
    """Every stored clip's moments in store order, :data:`MOMENTS_BLOCK` clips at a time."""
    pending = Moments.empty(0, frame_shape)
    for path in shard_paths:
        with h5py.File(path, "r") as opened:
            pending = Moments.concatenate([pending, Moments.read(opened[MOMENTS_GROUP])])
        while len(pending) >= MOMENTS_BLOCK:
            yield pending[:MOMENTS_BLOCK]
            pending = pending[MOMENTS_BLOCK:]
    if len(pending):
        yield pending


def plan_gather(
    manifest: ManifestColumns,
    shard_paths: Sequence[str | Path],
    *,
    on_error: str = "skip",
    min_success: float = 0.0,
    out_path: str | Path = "the store",
    storage: Storage | None = None,
) -> Gathering:
    """Read the shards' tables and decide what the index holds.

    Raises
    ------
    MelstoreError
        As :func:`gather_store` does, before anything is written.
    """
    shards = [ShardTables.read(path) for path in shard_paths]  # once: shard_size=1 means thousands
    versions = check_versions(shards)
    # clip ids as UTF-8 bytes arrays: no Python object per clip
    stored = np.concatenate([shard.metadata["clip_id"] for shard in shards] or [encode_text([])])
    failed = {
        record[0]: record
        for shard in shards
        for record in zip(*(shard.failures[c] for c in FAILURE_COLUMNS), strict=True)
    }
    clip_ids = manifest["clip_id"]
    _check_success(len(stored), len(clip_ids), failed, min_success=min_success, out_path=out_path)
    rows = _manifest_rows(clip_ids, stored, encode_text(list(failed)), out_path=out_path)
    if on_error == "fail" and failed:
        _, path, reason = next(iter(failed.values()))
        raise MelstoreError(f"{path}: {reason}")
    errors = storage is not None and storage.precision_db is not None
    metadata = _metadata(manifest, rows, shards, errors=errors)
    failures = {  # text columns, even when empty
        name: np.asarray(values, dtype=object)
        for name, values in zip(FAILURE_COLUMNS, columns_of(list(failed.values()), 3), strict=True)
    }
    folder = Path(out_path).parent
    counts = metadata["n_frames"] if "n_frames" in metadata else None
    refs, start = [], 0
    for shard in shards:
        rows = shard.n_clips
        if counts is not None:  # concatenated: a shard's rows are its frames
            rows = int(counts[start : start + shard.n_clips].sum())
        refs.append(ShardRef(os.path.relpath(shard.path, folder), rows, shard.digest))
        start += shard.n_clips
    # every shard job built the same front end: any shard's will do
    frontend = _frontend_arrays(shard_paths[0]) if shard_paths else {}
    return Gathering([shard.path for shard in shards], refs, metadata, failures, versions, frontend)


def check_versions(shards: Sequence[ShardTables]) -> dict:
    """The library versions the shards were built with, which must be the same for all."""
    for shard in shards[1:]:
        if shard.versions != shards[0].versions:
            raise MelstoreError(
                f"{shard.path} was built with other library versions than the other shards; "
                "rebuild them all with: snakemake --forcerun extract"
            )
    return shards[0].versions if shards else {}


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


def _frontend_arrays(shard_path: str | Path) -> dict[str, np.ndarray]:
    """The window, filter bank and frequencies a shard was computed with."""
    with h5py.File(shard_path, "r") as shard:
        return {name: data[()] for name, data in shard["frontend"].items()}


def _manifest_rows(
    clip_ids: np.ndarray, stored: np.ndarray, failed: np.ndarray, *, out_path
) -> np.ndarray:
    """The manifest row of each stored clip, in store order (ids as bytes arrays).

    Every manifest clip must be stored or failed, once: the two sorted id
    lists are then equal, which one comparison checks (one sort each, much
    cheaper than ``np.isin`` and a binary search: bench/README.md).
    """
    listed = np.argsort(clip_ids, kind="stable")
    done = np.concatenate([stored, failed])
    found = np.argsort(done, kind="stable")
    if len(done) != len(clip_ids) or not (clip_ids[listed] == done[found]).all():
        _refuse_mismatch(clip_ids, done, out_path=out_path)
    rows = np.empty(len(done), dtype=np.int64)
    rows[found] = listed
    return rows[: len(stored)]


def _refuse_mismatch(clip_ids: np.ndarray, done: np.ndarray, *, out_path) -> None:
    """Name a clip the manifest and the shards disagree on."""
    missing = ~np.isin(clip_ids, done)
    if missing.any():
        first = clip_ids[np.argmax(missing)].decode()
        raise MelstoreError(f"clip {first!r} is in no shard; rerun the workflow")
    strays = ~np.isin(done, clip_ids)
    where = "in a shard but not in the dataset" if strays.any() else "in more than one shard"
    ordered = np.sort(done)
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    clip = (done[np.argmax(strays)] if strays.any() else twice[0]).decode()
    raise MelstoreError(f"{out_path}: clip {clip!r} is {where}; rerun the workflow")


def _metadata(
    manifest: ManifestColumns, rows: np.ndarray, shards: Sequence[ShardTables], *, errors: bool
) -> dict[str, np.ndarray]:
    """Manifest columns of the stored clips (``rows``, in store order), then what shards computed.

    With ``errors``, the quantisation error column follows; in the
    concatenated layout, each clip's place along time (``clip_locations``).
    """
    table = {name: values[rows] for name, values in manifest.items()}
    empty = computed_table([])
    for name in [*COMPUTED_COLUMNS, *([ERROR_COLUMN] if errors else [])]:
        # text as bytes, kept so; each shard's part is dropped once concatenated
        parts = [shard.metadata.pop(name) for shard in shards]
        table[name] = np.concatenate(parts) if parts else empty[name]
    if shards and "n_frames" in shards[0].metadata:
        counts = np.concatenate([shard.metadata["n_frames"] for shard in shards])
        table.update(clip_locations(counts.tolist()))
    return table
