"""Gather shard files into the final store, in manifest order, with bounded memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from melstore.errors import MelstoreError
from melstore.extract import COMPUTED_COLUMNS, axes, computed_table
from melstore.features import FeatureParams
from melstore.manifest import Manifest
from melstore.store import (
    FAILURE_COLUMNS,
    OpenStores,
    StoreWriter,
    open_store,
    read_group,
)


def gather_store(
    *,
    manifest: Manifest,
    shard_paths: Sequence[str | Path],
    out_path: str | Path,
    dataset: dict,
    feature_set: str,
    params: dict,
    on_error: str = "skip",
    min_success: float = 0.0,
) -> str:
    """Stream every clip of ``manifest`` from its shard into one store.

    ``dataset`` is the config's dataset section; its name, layout, root and
    metadata CSV are recorded so that ``melstore verify`` can re-check the sources.

    Rows follow the manifest order, never the shard order, so the store is the
    same for any shard size or core count. Only one clip's features are held
    in memory at a time.

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
    index, computed, failed, versions = _index_shards(shard_paths)
    stored_rows, failure_rows = [], []
    n_clips = sum(clip_id in index for clip_id in manifest.table["clip_id"])
    _check_success(n_clips, manifest, failed, min_success=min_success, out_path=out_path)
    with (
        StoreWriter(
            out_path, n_bins=p.n_bins, n_frames=p.n_frames, channels=p.channels, n_clips=n_clips
        ) as writer,
        OpenStores() as shards,
    ):
        for row, clip_id in enumerate(manifest.table["clip_id"]):
            if clip_id in index:
                shard_path, shard_row = index[clip_id]
                features = shards.features(shard_path)
                if p.n_frames is None:
                    writer.append(_read_clip(features, shard_row, computed[shard_path]))
                else:
                    offset = writer.chunk_offset(shard_row)
                    writer.append_chunk(features.id.read_direct_chunk(offset)[1])
                stored_rows.append(row)
            elif clip_id in failed:
                if on_error == "fail":
                    _, path, reason = failed[clip_id]
                    raise MelstoreError(f"{path}: {reason}")
                failure_rows.append(failed[clip_id])
            else:
                raise MelstoreError(f"clip {clip_id!r} is in no shard; rerun the workflow")
        metadata = _metadata(manifest, stored_rows, computed)
        failures = pd.DataFrame(failure_rows, columns=FAILURE_COLUMNS)
        writer.finish(
            metadata=metadata,
            failures=failures,
            attrs={
                "dataset": dataset["name"],
                "dataset_layout": dataset["layout"],
                "dataset_root": str(dataset["root"]),
                "dataset_metadata": str(dataset["metadata"] or ""),
                "feature_set": feature_set,
                "params": p.to_dict(),
                "versions": versions,
            },
            # every shard job built the same front end: any shard's frequencies do
            axes=axes(_frequencies(shard_paths[0]), params=p, frame_counts=writer.frame_counts),
        )
        shape = writer.shape
    summary = f"{out_path}: {len(metadata)} clips, features {shape} float32"
    if len(failures):
        summary += (
            f"; {len(failures)} of {len(manifest)} files failed; see failures table in {out_path}"
        )
    return summary


def _check_success(n_ok: int, manifest: Manifest, failed: dict, *, min_success, out_path):
    """Refuse a store when too many files failed, naming the commonest reason."""
    total = len(manifest)
    if total == 0 or n_ok / total >= min_success or not failed:
        return  # without failures, missing clips are reported as "in no shard"
    reasons = pd.Series([reason for _, _, reason in failed.values()]).value_counts()
    raise MelstoreError(
        f"only {n_ok} of {total} files succeeded ({n_ok / total:.0%}), below min_success="
        f"{min_success} for {out_path}; commonest reason ({reasons.iloc[0]} files): "
        f"{reasons.index[0]}"
    )


def _index_shards(shard_paths):
    """Map each clip id to its shard and row, and read the shards' small tables."""
    index, computed, failed, versions = {}, {}, {}, None
    for shard_path in map(str, shard_paths):
        with open_store(shard_path) as shard:  # once: shard_size=1 means thousands
            table = read_group(shard, "metadata")
            shard_failures = read_group(shard, "failures")
            shard_versions = json.loads(shard.attrs["versions"])
        computed[shard_path] = table
        index.update((clip_id, (shard_path, i)) for i, clip_id in enumerate(table["clip_id"]))
        for record in shard_failures.itertuples(index=False):
            failed[record.clip_id] = tuple(record)
        if versions is not None and shard_versions != versions:
            raise MelstoreError(
                f"{shard_path} was built with other library versions than the other shards; "
                "rebuild them all with: snakemake --forcerun extract"
            )
        versions = shard_versions
    return index, computed, failed, versions or {}


def _frequencies(shard_path: str | Path) -> np.ndarray:
    """The frequency axis of a shard."""
    with open_store(str(shard_path)) as shard:
        return shard["axes/frequency"][()]


def _read_clip(features: h5py.Dataset, row: int, table: pd.DataFrame) -> np.ndarray:
    """One clip of a variable-length (concatenated) shard."""
    start = int(table["frame_offset"].iat[row])
    return features[:, start : start + int(table["n_frames"].iat[row])]


def _metadata(manifest: Manifest, stored_rows: list[int], computed: dict) -> pd.DataFrame:
    """Manifest columns of the stored clips, then what their shards computed."""
    keep = ["clip_id", "path", *manifest.csv_columns]
    table = manifest.table.iloc[stored_rows][keep].reset_index(drop=True)
    empty = pd.DataFrame(computed_table([])).astype(COMPUTED_COLUMNS)
    by_id = pd.concat([empty, *computed.values()], ignore_index=True)
    by_id = by_id.set_index("clip_id")
    computed_part = by_id.loc[table["clip_id"], list(COMPUTED_COLUMNS)].reset_index(drop=True)
    return pd.concat([table, computed_part], axis=1)
