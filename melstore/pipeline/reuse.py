"""Copying a shard's unchanged clips from the feature set's last store instead of computing them.

What it buys: one changed file costs one decode, not the whole dataset, and no
second copy of the features stays on disk.

How: shard files are temporary (Snakemake deletes them once the store is
gathered), so the last build of every clip is the store itself. Beside it the
gather writes a small record, ``<feature set>.sources.h5``: for each stored
clip, in store order, what its shard computed, its file's size and
modification time, and the parameters, storage, library versions and
extraction code of the build, and a digest of all it was gathered from. An
extraction job copies a clip from the store
when its file has the same path, size and mtime (what Snakemake itself trusts)
and the build is alike.

Snakemake reruns every shard of a feature set when one of them changes (the
gather needs them all, and they are gone); a shard whose own files are unchanged
then copies all its clips. When nothing the store is gathered from changed (the
dataset's files and metadata CSV, the gather's settings and code), the rerun was
forced (``--forcerun``, ``--forceall``, an incomplete output): the job copies
nothing, so a
forced rerun recomputes a rewrite that kept a file's size and mtime. So does
``reuse_clips: false`` in the config. The same record tells the one-line reason
a shard is rebuilt, and the store lends its window and filter bank, so that a
rerun need not build them with librosa.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from melstore.files import atomic_path
from melstore.pipeline.shards import KEY_BITS, key_range, key_values
from melstore.store.format import SHARD_COLUMNS, StoreWriter, read_columns, write_table

# A file's size and modification time (ns): a clip is reused only if both are unchanged.
FileStat = tuple[int, int]

# What a build is made with; clips are copied only between builds alike in all four.
BUILD_PARTS = ("params", "storage", "versions", "code")
_N_FRAMES_VALID = list(SHARD_COLUMNS).index("n_frames_valid")
# Record columns besides SHARD_COLUMNS: each clip's row in the store, and its shard key.
STORE_ROW, SHARD_KEY = "store_row", "shard_key"


def file_stats(root: str | Path, paths: Sequence[str]) -> dict[str, FileStat]:
    """The size and mtime of each readable file (a file that cannot be stat'ed is left out)."""
    stats = {}
    for path in paths:
        with suppress(OSError):  # the job reports an unreadable file when it computes it
            stat = os.stat(os.path.join(root, path))
            stats[path] = (stat.st_size, stat.st_mtime_ns)
    return stats


def record_path(store: str | Path) -> Path:
    """The record of what ``store`` was built from, beside it."""
    store = Path(store)
    return store.with_name(f"{store.stem}.sources.h5")


def write_record(path: str | Path, *, table: dict[str, np.ndarray], build: dict, state: str):
    """Write a store's record atomically: its clips' shard tables, its build, and its state.

    ``table`` holds :data:`SHARD_COLUMNS` for each stored clip, in store order.
    The record keeps them in shard-key order, with each clip's store row, so
    that a shard's clips are one slice of it (:func:`read_record`).
    """
    keys = key_values(table["clip_id"])
    order = np.argsort(keys, kind="stable")
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as record:
        clips = record.create_group("clips")
        write_table(clips, {**{k: v[order] for k, v in table.items()}, STORE_ROW: order})
        clips.create_dataset(SHARD_KEY, data=keys[order])  # uint64: write_table keeps int64
        record.attrs["build"] = json.dumps(build, sort_keys=True)
        record.attrs["state"] = state


def read_record(path: str | Path, shard: str) -> tuple[dict[str, np.ndarray], dict, str, int]:
    """The rows of a store's record that shard ``shard`` holds now, its build, state and length.

    Only that slice of the record is read: a job's memory and start-up do not
    grow with the dataset.
    """
    with h5py.File(path, "r") as record:
        clips = record["clips"]
        keys = clips[SHARD_KEY][()]
        start, stop = key_range(shard)
        first = int(np.searchsorted(keys, np.uint64(start)))
        # the last shard's range ends at 2**64, which uint64 cannot hold
        end = len(keys) if stop >= 2**KEY_BITS else int(np.searchsorted(keys, np.uint64(stop)))
        rows = slice(first, end)
        table = read_columns(record, "clips", rows=rows)
        return table, json.loads(record.attrs["build"]), str(record.attrs["state"]), len(keys)


@dataclass
class LastBuild:
    """What the last store of a feature set was built from, to say what changed since."""

    build: dict  # its params, storage, versions and code
    files: dict[str, tuple[str, FileStat]]  # path -> (clip_id, stat) of the shard's clips then
    state: str  # digest of all the store was gathered from: files, shards, CSV, settings
    failed: frozenset[str] = frozenset()  # paths of the files that could not be processed

    def changes(
        self, build: dict, entries: Sequence[Sequence[str]], stats: dict[str, FileStat]
    ) -> list[str]:
        """What changed for this shard since this build, one phrase each.

        Parameters
        ----------
        build : dict
            This build's ``params``, ``storage``, ``versions`` and ``code``.
        entries : sequence of (clip_id, path, problem)
            The shard's files now.
        stats : dict
            Path to (size, mtime_ns) of the files now.
        """
        changes = [
            f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
            for part in ("params", "storage", "versions")
            for old, new in [(self.build.get(part) or {}, build[part])]
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
        if self.build.get("code") != build["code"]:
            changes.append("extraction code changed")
        paths = {path for _, path, _ in entries}
        files = {
            "changed": sorted(
                path
                for path in paths & self.files.keys()
                if path in stats and stats[path] != self.files[path][1]
            ),
            "added": sorted(paths - self.files.keys() - self.failed),
            "removed": sorted(self.files.keys() - paths),
        }
        for word, names in files.items():
            if names:
                changes.append(f"{len(names)} file(s) {word}: {_names(names)}")
        return changes


class PreviousBuild:
    """Clips of the feature set's last store that may be copied instead of computed."""

    @dataclass(frozen=True)
    class Clip:
        row: int
        record: tuple  # its row of the record's table (SHARD_COLUMNS)
        frames: tuple[int, int] | None  # (offset, count) in a concatenated store

        @property
        def n_frames_valid(self) -> int:
            return int(self.record[_N_FRAMES_VALID])

    def __init__(self, store: str | Path | None, *, build: dict, shard: str = "s"):
        self.store = None if store is None else str(store)
        self.clips: dict[tuple, PreviousBuild.Clip] = {}
        self.last_build: LastBuild | None = None
        self.frontend: dict[str, np.ndarray] = {}  # window and filter bank, if built alike
        self._features: h5py.Dataset | None = None
        self._raw_chunks = False
        if self.store is None:
            return
        try:
            table, last, state, length = read_record(record_path(self.store), shard)
            with h5py.File(self.store, "r") as store:
                failed = frozenset(read_columns(store, "failures")["path"].tolist())
                columns = ("path", "clip_id", "source_size", "source_mtime_ns")
                files = zip(*(table[column].tolist() for column in columns), strict=True)
                self.last_build = LastBuild(
                    last,
                    {path: (clip_id, tuple(stat)) for path, clip_id, *stat in files},
                    state,
                    failed,
                )
                if all(last.get(part) == build[part] for part in BUILD_PARTS):
                    self._index(store, table, length)
        except (OSError, KeyError, ValueError):
            self.last_build, self.clips = None, {}  # no store or record, or not one of ours

    def _index(self, store: h5py.File, table: dict[str, np.ndarray], length: int) -> None:
        metadata = store["metadata"]
        if metadata["clip_id"].shape[0] != length:
            return  # the record is not this store's
        self.frontend = {k: v[()] for k, v in store.get("frontend", {}).items()}
        # only a concatenated store locates its clips by frames
        stored = {
            name: metadata[name][()] for name in ("frame_offset", "n_frames") if name in metadata
        }
        offsets, counts = stored.get("frame_offset"), stored.get("n_frames")
        rows = zip(*(table[column].tolist() for column in SHARD_COLUMNS), strict=True)
        for row, record in zip(table[STORE_ROW].tolist(), rows, strict=True):
            frames = None if offsets is None else (int(offsets[row]), int(counts[row]))
            key = (record[0], record[1], tuple(record[-3:-1]))  # id, path, (size, mtime_ns)
            self.clips[key] = PreviousBuild.Clip(row, record, frames)

    def find(self, clip_id: str, path: str, stat: FileStat | None) -> PreviousBuild.Clip | None:
        """The stored clip with this id, path, size and mtime, if any."""
        return None if stat is None else self.clips.get((clip_id, path, stat))

    def copy(self, clip: PreviousBuild.Clip, writer: StoreWriter) -> np.ndarray:
        """Append a stored clip to ``writer``, as raw chunk bytes where the layout allows.

        Returns the clip's stored values (for its moments).
        """
        if self._features is None:
            self._features = h5py.File(self.store, "r")["features"]
            # without filters a chunk's bytes are the values themselves: no decoding
            self._raw_chunks = self._features.compression is None and not self._features.shuffle
        if clip.frames is None:
            chunk = self._features.id.read_direct_chunk(writer.chunk_offset(clip.row))[1]
            writer.append_chunk(chunk)
            if self._raw_chunks:
                return np.frombuffer(chunk, self._features.dtype).reshape(self._features.shape[1:])
            return self._features[clip.row]  # decoded by HDF5's filters
        start, count = clip.frames
        values = self._features[:, start : start + count]
        writer.append(values)
        return values

    def close(self) -> None:
        """Close the store, if a clip was copied from it."""
        if self._features is not None:
            self._features.file.close()
            self._features = None

    def __enter__(self) -> PreviousBuild:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# File names listed in a rebuild reason before "and N more".
_NAMES_SHOWN = 3


def rebuild_reason(
    last: LastBuild | None, changes: Sequence[str], *, n_files: int, forced: bool
) -> str:
    """One line saying why a shard is built: its first build, what changed, or forced."""
    if last is None:
        return f"building {n_files} files (no earlier build kept)"
    if changes:
        return "rebuilding: " + "; ".join(changes)
    if forced:
        return "forced: no file or parameter changed since the last build; computing every clip"
    return "no file of this shard changed since the last build; copying its clips"


def _short(value) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    return shown if len(paths) <= _NAMES_SHOWN else f"{shown} and {len(paths) - _NAMES_SHOWN} more"
