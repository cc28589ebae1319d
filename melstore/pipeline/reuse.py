"""Copying a shard's unchanged clips from the feature set's previous shard files.

What it buys: one changed file costs one decode, not its shard's.

How: shard files stay on disk, each named by a digest of what decides its
bytes (:meth:`melstore.pipeline.plan.Plan.shard_file`), and the feature set's
index lists the current ones. When a change gives a shard a new name, its
extraction job reads that list before the index is rewritten, opens the
previous files whose key ranges overlap its own (the same shard, or the one
it split from or merged into), and copies each clip whose file has the same
path, size and mtime (what Snakemake itself trusts) when their build is
alike: the same parameters, storage, library versions and extraction code.
Those files also lend the window and filter bank, so that a rerun need not
build them with librosa.

A job whose own file the index lists already was forced (``--forcerun``,
``--forceall``, a deleted shard): it copies nothing, so a forced rerun
recomputes a rewrite that kept a file's size and mtime. So does
``reuse_clips: false`` in the config.
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

from melstore.pipeline.shards import KEY_BITS, key_range, key_values
from melstore.store.format import (
    LOCATION_COLUMNS,
    SHARD_COLUMNS,
    SHARDS_GROUP,
    OpenStores,
    StoreWriter,
    read_columns,
    read_shard_refs,
)
from melstore.store.stats import MOMENTS_GROUP, Moments

# A file's size and modification time (ns): a clip is reused only if both are unchanged.
FileStat = tuple[int, int]

# What a build is made with; clips are copied only between builds alike in all four.
BUILD_PARTS = ("params", "storage", "versions", "code")


def file_stats(root: str | Path, paths: Sequence[str]) -> dict[str, FileStat]:
    """The size and mtime of each readable file (a file that cannot be stat'ed is left out)."""
    stats = {}
    for path in paths:
        with suppress(OSError):  # the job reports an unreadable file when it computes it
            stat = os.stat(os.path.join(root, path))
            stats[path] = (stat.st_size, stat.st_mtime_ns)
    return stats


def shard_of(name: str) -> str:
    """The shard (``s01``) of a shard file's name (``shards/<set>/s01-<digest>.h5``)."""
    return Path(name).stem.split("-")[0]


def shard_build(attrs: h5py.AttributeManager) -> dict:
    """The params, storage, versions and code a shard file records."""
    return {
        part: json.loads(attrs[part]) if part != "code" else str(attrs[part])
        for part in BUILD_PARTS
    }


@dataclass
class LastBuild:
    """What the previous shard files of a key range were built from, to say what changed since."""

    build: dict  # their params, storage, versions and code
    files: dict[str, tuple[str, FileStat]]  # path -> (clip_id, stat) of their clips in the range
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
    """Clips of a shard's previous files that may be copied instead of computed."""

    @dataclass(frozen=True)
    class Clip:
        file: str  # the previous shard file
        row: int  # its row there
        columns: dict  # its row of that file's metadata (SHARD_COLUMNS)
        frames: tuple[int, int] | None  # (offset, count) in a concatenated shard

        @property
        def stat(self) -> FileStat:
            """Its file's size and mtime when it was computed."""
            return int(self.columns["source_size"]), int(self.columns["source_mtime_ns"])

    def __init__(self, index: str | Path | None, *, build: dict, shard: str, name: str):
        """Read the previous files of ``shard`` that ``index`` lists; ``name`` is the job's own."""
        self.clips: dict[tuple, PreviousBuild.Clip] = {}
        self.last_build: LastBuild | None = None
        self.forced = False
        self.frontend: dict[str, np.ndarray] = {}  # window and filter bank, if built alike
        self._open = OpenStores()
        self._moments: dict[str, Moments] = {}  # each previous file's clip moments
        if index is None:
            return
        try:
            with h5py.File(index, "r") as opened:
                names = (
                    [ref.name for ref in read_shard_refs(opened)] if SHARDS_GROUP in opened else []
                )
        except (OSError, KeyError, ValueError):
            return  # no index, or not one of ours: compute every clip
        self.forced = name in names
        folder = Path(index).parent
        earlier = [
            str(folder / other)
            for other in names
            if other != name and _overlaps(shard_of(other), shard) and (folder / other).exists()
        ]
        self._read(earlier, build, shard)

    def _read(self, files: list[str], build: dict, shard: str) -> None:
        builds, known, failed = [], {}, set()
        start, stop = key_range(shard)
        for path in files:
            try:
                with h5py.File(path, "r") as previous:
                    table = read_columns(previous, "metadata")
                    failures = read_columns(previous, "failures")
                    moments = Moments.read(previous[MOMENTS_GROUP])
                    builds.append(shard_build(previous.attrs))
                    if builds[-1] == build and not self.frontend:
                        self.frontend = {k: v[()] for k, v in previous["frontend"].items()}
            except (OSError, KeyError, ValueError):
                continue  # a previous file we cannot read lends nothing
            keys = key_values(table["clip_id"].tolist())
            inside = (keys >= np.uint64(start)) & (
                np.ones(len(keys), bool) if stop >= 2**KEY_BITS else keys < np.uint64(stop)
            )
            failed |= set(failures["path"].tolist())
            self._moments[path] = moments
            for row in np.flatnonzero(inside).tolist():
                columns = {name: table[name][row] for name in SHARD_COLUMNS}
                frames = (
                    tuple(int(table[c][row]) for c in LOCATION_COLUMNS)
                    if LOCATION_COLUMNS[0] in table
                    else None
                )
                known[row, path] = PreviousBuild.Clip(path, row, columns, frames)
        if not builds:
            return
        self.last_build = LastBuild(
            builds[0] if all(b == builds[0] for b in builds) else {},
            {str(c.columns["path"]): (str(c.columns["clip_id"]), c.stat) for c in known.values()},
            frozenset(failed),
        )
        if all(b == build for b in builds):
            self.clips = {
                (str(c.columns["clip_id"]), str(c.columns["path"]), c.stat): c
                for c in known.values()
            }

    def find(self, clip_id: str, path: str, stat: FileStat | None) -> PreviousBuild.Clip | None:
        """The previous clip with this id, path, size and mtime, if any."""
        return None if stat is None else self.clips.get((clip_id, path, stat))

    def copy(self, clip: PreviousBuild.Clip, writer: StoreWriter) -> Moments:
        """Append a previous clip to ``writer``, as raw chunk bytes where the layout allows.

        Returns the clip's moments, as its previous file keeps them.
        """
        features = self._open.features(clip.file)
        if clip.frames is None:
            writer.append_chunk(features.id.read_direct_chunk(writer.chunk_offset(clip.row))[1])
        else:
            start, count = clip.frames
            writer.append(features[:, start : start + count])
        return self._moments[clip.file][clip.row : clip.row + 1]

    def __enter__(self) -> PreviousBuild:
        return self

    def __exit__(self, *exc) -> None:
        self._open.close()


def _overlaps(one: str, other: str) -> bool:
    """Whether two shards' key ranges overlap: one's prefix begins the other's."""
    return one.startswith(other) or other.startswith(one)


# File names listed in a rebuild reason before "and N more".
_NAMES_SHOWN = 3


def rebuild_reason(
    last: LastBuild | None, changes: Sequence[str], *, n_files: int, forced: bool
) -> str:
    """One line saying why a shard is built: its first build, what changed, or forced."""
    if forced:
        return "forced (--forcerun, or its file was deleted): computing every clip"
    if last is None:
        return f"building {n_files} files (no earlier build kept)"
    if changes:
        return "rebuilding: " + "; ".join(changes)
    return "no file of this shard changed since the last build; copying its clips"


def _short(value) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    return shown if len(paths) <= _NAMES_SHOWN else f"{shown} and {len(paths) - _NAMES_SHOWN} more"
