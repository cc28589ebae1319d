"""Copying a shard's unchanged clips from its previous build instead of computing them.

What it buys: with one extraction job per feature set (the default
``shard_size``), one changed file costs one decode, not the whole dataset.

How: Snakemake deletes a job's outputs before it reruns, so each finished shard
file is also hard-linked under ``.previous/`` beside it (a link costs neither a
copy nor space). A rerun of the shard reads its previous build, and the shards
it was split from or merged from, and copies a clip when its file has the same
path, size and modification time (what Snakemake itself trusts), and the shard
was built with the same parameters, storage, library versions and extraction code.

A job that Snakemake reruns although none of this changed was forced
(``--forcerun``, ``--forceall``, an incomplete output): it copies nothing, so a
forced rerun recomputes a rewrite that kept a file's size and mtime. So does
``reuse_clips: false`` in the config. The same previous build tells the
one-line reason a shard is rebuilt, and lends its window and filter bank, so
that a rerun need not build them with librosa.
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

from melstore.pipeline.shards import shard_key
from melstore.store.format import SHARD_COLUMNS, OpenStores, StoreWriter, read_columns

# Beside a feature set's shard files: a hard link to each one's last build, for
# its next build to reuse (Snakemake deletes a job's output before it reruns).
PREVIOUS_DIR = ".previous"

# A file's size and modification time (ns): a clip is reused only if both are unchanged.
FileStat = tuple[int, int]


def file_stats(root: str | Path, paths: Sequence[str]) -> dict[str, FileStat]:
    """The size and mtime of each readable file (a file that cannot be stat'ed is left out)."""
    stats = {}
    for path in paths:
        with suppress(OSError):  # the job reports an unreadable file when it computes it
            stat = os.stat(os.path.join(root, path))
            stats[path] = (stat.st_size, stat.st_mtime_ns)
    return stats


def previous_build(shard_file: str | Path) -> Path:
    """Where the last build of ``shard_file`` is kept for its next build."""
    path = Path(shard_file)
    return path.parent / PREVIOUS_DIR / path.name


def keep_previous_build(shard_file: str | Path) -> None:
    """Hard-link a finished shard file to :func:`previous_build`, replacing the older link.

    A link, not a copy: it costs no time and, while the shard exists, no space.
    Where the filesystem has no hard links, nothing is kept and a rerun
    recomputes.
    """
    kept = previous_build(shard_file)
    with suppress(OSError):
        kept.parent.mkdir(exist_ok=True)
        # unlink, then link: ext4 flushes a file renamed over another one
        kept.unlink(missing_ok=True)
        os.link(shard_file, kept)


def shard_files(shard_file: str | Path) -> list[Path]:
    """Existing shard files of the same feature set, and kept previous builds.

    ``shard_file``'s own previous build comes first; a file reachable under
    both names (a shard and its link) is listed once.
    """
    path = Path(shard_file)
    found = sorted(
        [*path.parent.glob("s*.h5"), *(path.parent / PREVIOUS_DIR).glob("s*.h5")],
        key=lambda other: (other.name != path.name, other.name, other.parent.name == PREVIOUS_DIR),
    )
    files, inodes = [], set()
    for other in found:
        with suppress(OSError):  # vanished meanwhile
            stat = other.stat()
            inode = (stat.st_dev, stat.st_ino)
            if inode not in inodes:
                inodes.add(inode)
                files.append(other)
    return files


def related_shard_files(shard_file: str | Path) -> list[Path]:
    """Existing shard files on the same trie path as ``shard_file``.

    That is the file itself (its previous build), the shards it was split from
    (its prefixes) and the shards it was merged from (names it prefixes): the
    only earlier files that can hold its clips.
    """
    stem = Path(shard_file).stem
    return [
        other
        for other in shard_files(shard_file)
        if stem.startswith(other.stem) or other.stem.startswith(stem)
    ]


@dataclass
class LastBuild:
    """What the last build of a shard was made from, to say what changed since."""

    build: dict  # its params, storage, versions and code
    files: dict[str, tuple[str, FileStat]]  # path -> (clip_id, stat), over its trie path
    own: bool  # the shard's own previous build, not one it was split or merged from

    def changes(
        self, build: dict, entries: Sequence[Sequence[str]], stats: dict[str, FileStat], out_path
    ) -> list[str]:
        """What changed since this build, one phrase each; empty when the rerun was forced.

        Parameters
        ----------
        build : dict
            This build's ``params``, ``storage``, ``versions`` and ``code``.
        entries : sequence of (clip_id, path, problem)
            The shard's files now.
        stats : dict
            Path to (size, mtime_ns) of the files now.
        out_path : str or Path
            The shard file: its name (``s`` + trie prefix) tells which earlier clips were its own.
        """
        changes = [
            f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
            for part in ("params", "storage", "versions")
            for old, new in [(self.build[part] or {}, build[part])]
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
        if self.build["code"] != build["code"]:
            changes.append("extraction code changed")
        prefix = Path(out_path).stem.removeprefix("s")
        paths = {path for _, path, _ in entries}
        files = {
            "changed": sorted(
                path
                for path in paths & self.files.keys()
                if path in stats and stats[path] != self.files[path][1]
            ),
            "added": sorted(paths - self.files.keys()),
            # earlier shards on this trie path may also hold clips that now belong to a sibling
            "removed": sorted(
                path
                for path, (clip_id, _) in self.files.items()
                if path not in paths and shard_key(clip_id).startswith(prefix)
            ),
        }
        for word, names in files.items():
            if names:
                changes.append(f"{len(names)} file(s) {word}: {_names(names)}")
        return changes


class PreviousBuild:
    """Clips of earlier shard files that may be copied instead of computed."""

    @dataclass(frozen=True)
    class Clip:
        shard: str
        row: int
        record: tuple
        frames: tuple[int, int] | None  # (offset, count) in a concatenated shard

    def __init__(self, paths: Sequence[str | Path], *, build: dict, name: str):
        self.clips: dict[tuple, PreviousBuild.Clip] = {}
        self.last_build: LastBuild | None = None
        self.frontend: dict[str, np.ndarray] = {}  # window and filter bank, if built alike
        for path in map(str, paths):
            try:
                with h5py.File(path, "r") as shard:
                    table = read_columns(shard, "metadata")
                    if self.last_build is None:  # the shard's own previous build comes first
                        attrs = shard.attrs
                        self.last_build = LastBuild(
                            {
                                key: _json_attr(attrs, key)
                                for key in ("params", "storage", "versions")
                            }
                            | {"code": attrs.get("code")},
                            {},
                            own=Path(path).name == name,
                        )
                    columns = ("path", "clip_id", "source_size", "source_mtime_ns")
                    files = zip(*(table[column].tolist() for column in columns), strict=True)
                    for file, clip_id, *stat in files:  # the first (newest) build of a file wins
                        self.last_build.files.setdefault(file, (clip_id, tuple(stat)))
                    if built_alike(shard, build):
                        self._add(path, table)
                        if not self.frontend and "frontend" in shard:
                            self.frontend = {k: v[()] for k, v in shard["frontend"].items()}
            except (OSError, KeyError):
                continue  # vanished, or not a complete shard file: nothing to reuse

    def _add(self, path: str, table: dict[str, np.ndarray]) -> None:
        rows = zip(*(table[column].tolist() for column in SHARD_COLUMNS), strict=True)
        offsets, counts = table.get("frame_offset"), table.get("n_frames")
        for row, record in enumerate(rows):
            frames = None if offsets is None else (int(offsets[row]), int(counts[row]))
            key = (record[0], record[1], record[-2:])  # id, path, (size, mtime_ns)
            self.clips.setdefault(key, PreviousBuild.Clip(path, row, record, frames))

    def find(self, clip_id: str, path: str, stat: FileStat | None) -> PreviousBuild.Clip | None:
        """The earlier clip with this id, path, size and mtime, if any."""
        return None if stat is None else self.clips.get((clip_id, path, stat))

    @staticmethod
    def copy(clip: PreviousBuild.Clip, shards: OpenStores, writer: StoreWriter) -> None:
        """Append a clip's features to ``writer``, as raw bytes where the layout allows."""
        features = shards.features(clip.shard)
        if clip.frames is None:
            writer.append_chunk(features.id.read_direct_chunk(writer.chunk_offset(clip.row))[1])
        else:
            start, count = clip.frames
            writer.append(features[:, start : start + count])


def _json_attr(attrs, key: str):
    return json.loads(attrs[key]) if key in attrs else None


# File names listed in a rebuild reason before "and N more".
_NAMES_SHOWN = 3


def rebuild_reason(last: LastBuild | None, changes: Sequence[str], *, n_files: int) -> str:
    """One line saying why a shard is built: its first build, what changed, or forced."""
    if last is None:
        return f"building {n_files} files (no earlier build kept)"
    if not changes and not last.own:
        return f"building {n_files} files of a new shard, from those it was split or merged from"
    if not changes:
        return "forced: no file or parameter changed since the last build; computing every clip"
    return "rebuilding: " + "; ".join(changes)


def _short(value) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    return shown if len(paths) <= _NAMES_SHOWN else f"{shown} and {len(paths) - _NAMES_SHOWN} more"


def built_alike(shard: h5py.File, build: dict) -> bool:
    """Whether a shard file was built with these parameters, storage, library versions and code."""
    attrs = shard.attrs
    return (
        attrs.get("code") == build["code"]
        and set(SHARD_COLUMNS) <= set(json.loads(shard["metadata"].attrs["columns"]))
        and all(json.loads(attrs[key]) == build[key] for key in ("params", "storage", "versions"))
    )
