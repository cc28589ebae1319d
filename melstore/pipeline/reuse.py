"""Copying a shard's unchanged clips from its previous build instead of computing them.

What it buys: with one extraction job per feature set (the default
``shard_size``), one changed file costs one decode, not the whole dataset.

How: Snakemake deletes a job's outputs before it reruns, so each finished shard
file is also hard-linked under ``.previous/`` beside it (a link costs neither a
copy nor space). A rerun of the shard reads its previous build, and the shards
it was split from or merged from, and copies a clip when its file has the same
path and the same content checksum, and the shard was built with the same
parameters, library versions and extraction code. So no clip is ever copied
from a file whose bytes changed, and ``--forcerun extract`` gives a clean
build's bytes. ``reuse_clips: false`` in the config computes every clip instead.
The same previous build tells the one-line reason a shard is rebuilt, and lends
its window and filter bank, so that a rerun need not build them with librosa.
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

from melstore.errors import AudioError
from melstore.features.audio import file_checksum
from melstore.pipeline.shards import shard_key
from melstore.store.format import SHARD_COLUMNS, OpenStores, StoreWriter, read_columns

# Beside a feature set's shard files: a hard link to each one's last build, for
# its next build to reuse (Snakemake deletes a job's output before it reruns).
PREVIOUS_DIR = ".previous"


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

    build: dict  # its params, versions and code
    files: dict[str, tuple[str, str]]  # path -> (clip_id, checksum), over its trie path


class PreviousBuild:
    """Clips of earlier shard files that may be copied instead of computed."""

    @dataclass(frozen=True)
    class Clip:
        shard: str
        row: int
        record: tuple
        frames: tuple[int, int] | None  # (offset, count) in a concatenated shard

    def __init__(self, paths: Sequence[str | Path], *, build: dict):
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
                            {key: _json_attr(attrs, key) for key in ("params", "versions")}
                            | {"code": attrs.get("code")},
                            {},
                        )
                    self.last_build.files.update(
                        zip(
                            table["path"].tolist(),
                            zip(
                                table["clip_id"].tolist(),
                                table["source_xxh128"].tolist(),
                                strict=True,
                            ),
                            strict=True,
                        )
                    )
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
            key = (record[0], record[1], record[-1])  # id, path, checksum
            self.clips[key] = PreviousBuild.Clip(path, row, record, frames)

    def find(self, clip_id: str, path: str, checksum: str | None) -> PreviousBuild.Clip | None:
        """The earlier clip with this id, path and source checksum, if any."""
        return None if checksum is None else self.clips.get((clip_id, path, checksum))

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


def rebuild_reason(
    last: LastBuild | None,
    build: dict,
    entries: Sequence[Sequence[str]],
    checksums: dict[str, str],
    out_path: str | Path,
) -> str:
    """One line saying why a shard is built: its first build, or what changed since the last.

    Parameters
    ----------
    last : LastBuild or None
        The shard's last build, if one was kept.
    build : dict
        This build's ``params``, ``versions`` and ``code``.
    entries : sequence of (clip_id, path, problem)
        The shard's files now.
    checksums : dict
        Path to content checksum of the files that were hashed before computing.
    out_path : str or Path
        The shard file: its name (``s`` + trie prefix) tells which earlier clips were its own.
    """
    if last is None:
        return f"building {len(entries)} files (no earlier build kept)"
    changes = [
        f"{key}: {_short(old.get(key))} -> {_short(new.get(key))}"
        for part in ("params", "versions")
        for old, new in [(last.build[part] or {}, build[part])]
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]
    if last.build["code"] != build["code"]:
        changes.append("extraction code changed")
    prefix = Path(out_path).stem.removeprefix("s")
    paths = {path for _, path, _ in entries}
    files = {
        "changed": [
            path
            for path in sorted(paths & last.files.keys())
            if path in checksums and checksums[path] != last.files[path][1]
        ],
        "added": sorted(paths - last.files.keys()),
        # earlier shards on this trie path may also hold clips that now belong to a sibling
        "removed": sorted(
            path
            for path, (clip_id, _) in last.files.items()
            if path not in paths and shard_key(clip_id).startswith(prefix)
        ),
    }
    changes += [
        f"{len(names)} file(s) {word}: {_names(names)}" for word, names in files.items() if names
    ]
    if not changes:
        return "forced: no file or parameter changed since the last build"
    return "rebuilding: " + "; ".join(changes)


def _short(value) -> str:
    if value is None:
        return "(none)"
    return value if isinstance(value, str) else json.dumps(value)


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:_NAMES_SHOWN])
    return shown if len(paths) <= _NAMES_SHOWN else f"{shown} and {len(paths) - _NAMES_SHOWN} more"


def built_alike(shard: h5py.File, build: dict) -> bool:
    """Whether a shard file was built with these parameters, library versions and code."""
    attrs = shard.attrs
    return (
        attrs.get("code") == build["code"]
        and set(SHARD_COLUMNS) <= set(json.loads(shard["metadata"].attrs["columns"]))
        and json.loads(attrs["params"]) == build["params"]
        and json.loads(attrs["versions"]) == build["versions"]
    )


def checksum(path: str) -> str | None:
    """The content checksum of a file, or None if it cannot be read (the job reports why)."""
    try:
        return file_checksum(path)
    except AudioError:
        return None
