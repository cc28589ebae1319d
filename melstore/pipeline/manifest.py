"""Dataset layouts: list a dataset's clips and their metadata without decoding audio.

A manifest is a table with one row per clip, in a deterministic order:

``clip_id``
    A stable identifier: the file stem for UrbanSound8K and ESC-50, the path
    relative to the root for folders.
``path``
    Path relative to the dataset root, with forward slashes.
``problem``
    Empty, or the reason the file cannot even be opened (missing, or outside
    the root). Such rows end up in the store's failures table.
the CSV columns
    Every column of the dataset's own CSV, as read by pandas.

UrbanSound8K and ESC-50 are driven by their CSV: its row order is the manifest
order, and audio files the CSV does not name are reported as ``unlisted`` and
left out. Folders are driven by the files: sorted paths, label = parent folder,
and an optional CSV with a ``path`` column joined in.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from melstore.errors import ConfigError
from melstore.store.format import STORE_COLUMNS, encode_text
from melstore.store.reader import UNLABELLED

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LAYOUTS = ("urbansound8k", "esc50", "folder")
# A folder dataset's label column (see _folder_labels).
LABEL_COLUMN = "label"

# Columns melstore writes itself, in the store or the manifest: a CSV may not use them.
RESERVED_COLUMNS = (*STORE_COLUMNS, "problem")
ESCAPES_ROOT = "path escapes the dataset root"
NOT_FOUND = "file not found"
# Where each layout keeps its own metadata CSV, relative to the root.
LAYOUT_CSV = {"urbansound8k": "metadata/UrbanSound8K.csv", "esc50": "meta/esc50.csv"}


# The stat of a file that was not stat'ed: missing, unusable, broken, or the generated demo's.
NO_STAT = (-1, -1)


@dataclass
class Listing:
    """The audio files below a dataset root, sorted by path (:func:`scan_audio`).

    ``problems[i]`` is ``""``, or why ``paths[i]`` cannot be used;
    ``stats[i]`` is its (size, mtime_ns) when listed, or :data:`NO_STAT`.
    Columns rather than a mapping: a million files are listed in 4 s, not 6.
    """

    paths: list[str]
    problems: list[str]
    stats: np.ndarray

    @classmethod
    def unstated(cls, paths: list[str]) -> Listing:
        """Usable files known without looking at them (the generated demo)."""
        paths = sorted(paths)
        return cls(paths, [""] * len(paths), np.full((len(paths), 2), NO_STAT, dtype=np.int64))

    def problem_of(self) -> dict[str, str]:
        """Path to problem, for every listed file."""
        return dict(zip(self.paths, self.problems, strict=True))

    def stats_of(self, paths: list[str], problems: list[str]) -> np.ndarray:
        """The (n, 2) stats of ``paths``: :data:`NO_STAT` where unlisted or with a problem."""
        if paths == self.paths:  # a folder without a CSV: the listing's own order
            stats = self.stats.copy()
        else:
            index = {path: row for row, path in enumerate(self.paths)}
            rows = np.fromiter((index.get(p, -1) for p in paths), dtype=np.int64, count=len(paths))
            stats = np.where((rows >= 0)[:, None], self.stats[rows], NO_STAT)
        stats[np.fromiter(map(bool, problems), dtype=bool, count=len(problems))] = NO_STAT
        return stats


@dataclass
class Manifest:
    """The clips of a dataset, in order, with their CSV metadata."""

    table: pd.DataFrame
    csv_columns: list[str]
    # (size, mtime_ns) of each row's file when listed; NO_STAT if not (see Listing)
    file_stats: np.ndarray
    unlisted: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.table)

    def listing_digest(self) -> str:
        """A digest of each row's path and problem: what the manifest holds besides its CSV."""
        digest = hashlib.sha256("\0".join(self.table["path"].tolist()).encode())
        digest.update("\0".join(self.table["problem"].tolist()).encode())
        return digest.hexdigest()

    def store_columns(self) -> dict[str, np.ndarray]:
        """What a store keeps of the manifest: clip_id, path and the CSV columns.

        Numeric columns as they are; text as fixed-length UTF-8 bytes, ``b""``
        where the CSV has no value, as the store writes it: no Python object
        per cell, and no pandas needed to write them.
        """
        columns = {}
        for name in ["clip_id", "path", *self.csv_columns]:
            values = self.table[name]
            if values.dtype.kind in "biuf":
                columns[name] = values.to_numpy()
            else:
                text = values.astype(str).where(values.notna(), "")
                columns[name] = encode_text(text.to_numpy(str))
        return columns


def build_manifest(
    root: str | Path, layout: str, metadata: str | Path | None = None, *, with_stats: bool = True
) -> Manifest:
    """List the clips of a dataset on disk.

    Parameters
    ----------
    root : str or Path
        The dataset folder. It is only read.
    layout : {'urbansound8k', 'esc50', 'folder'}
        How the folder is organised.
    metadata : str or Path, optional
        A CSV replacing the layout's own (for ``folder``: an optional CSV with
        a ``path`` column, relative to ``root``).
    with_stats : bool
        Stat each file for its size and mtime; without, they are :data:`NO_STAT`.

    Raises
    ------
    ConfigError
        If the root or the CSV is missing, the CSV lacks a required column or
        uses a reserved one, or two rows share a clip id.
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"config key 'dataset.root': {root} is not a directory")
    if layout not in LAYOUTS:
        raise ConfigError(f"config key 'dataset.layout': {layout!r}; choose one of {LAYOUTS}")
    csv_path = metadata_csv(root, layout, metadata)
    csv = None if csv_path is None else read_csv(csv_path)
    return manifest_from_listing(layout, csv=csv, listing=scan_audio(root, with_stats=with_stats))


def metadata_csv(root: str | Path, layout: str, metadata: str | Path | None) -> Path | None:
    """The CSV a dataset's manifest is read from: ``metadata``, or the layout's own."""
    if metadata is not None:
        return Path(metadata)
    return Path(root) / LAYOUT_CSV[layout] if layout in LAYOUT_CSV else None


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a metadata CSV, naming the file in any error; a ``label`` column is text."""
    try:
        return pd.read_csv(path, dtype={LABEL_COLUMN: str})
    except FileNotFoundError:
        raise ConfigError(f"metadata CSV not found: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"metadata CSV {path} is not readable: {first_line}") from None


def scan_audio(root: Path, *, with_stats: bool = True) -> Listing:
    """Find audio files below ``root`` by extension, with their size and mtime.

    The stats come with the listing, so a workflow start stats each file once;
    ``with_stats=False`` leaves them out (:data:`NO_STAT`), at a tenth of the cost.
    Hidden files (``.``-prefixed, e.g. macOS ``._x.wav``) are skipped; symlinked
    folders are not followed, and symlinked files pointing outside the root
    are flagged (only symlinks are resolved: resolving every path costs 0.4 s
    on UrbanSound8K, at every workflow start). A broken symlink has no stat:
    its job reports the file unreadable.
    """
    real_root = os.path.realpath(root)
    paths, problems, stats = [], [], []
    folders = [(os.fspath(root), "")]
    while folders:
        folder, prefix = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, f"{prefix}{name}/"))
                    continue
                if not name.lower().endswith(AUDIO_EXTENSIONS):
                    continue
                paths.append(prefix + name)
                problems.append(_symlink_problem(entry, real_root) if entry.is_symlink() else "")
                stats.append(_stat(entry) if with_stats else NO_STAT)
    order = sorted(range(len(paths)), key=paths.__getitem__)
    return Listing(
        [paths[i] for i in order],
        [problems[i] for i in order],
        np.array(stats, dtype=np.int64).reshape(-1, 2)[order],
    )


def _stat(entry: os.DirEntry) -> tuple[int, int]:
    """A listed file's size and mtime, or :data:`NO_STAT` (a broken symlink)."""
    try:
        stat = entry.stat()
    except OSError:
        return NO_STAT
    return stat.st_size, stat.st_mtime_ns


def _symlink_problem(entry: os.DirEntry, real_root: str) -> str:
    """ESCAPES_ROOT for a symlinked file whose target lies outside the root, else ``""``."""
    inside = os.path.commonpath([real_root, os.path.realpath(entry.path)]) == real_root
    return "" if inside else ESCAPES_ROOT


def manifest_from_listing(
    layout: str,
    *,
    csv: pd.DataFrame | None,
    listing: Listing,
) -> Manifest:
    """Build a manifest from a CSV and a file listing (see :func:`scan_audio`)."""
    if layout == "folder":
        return _folder(csv, listing)
    name_column = {"urbansound8k": "slice_file_name", "esc50": "filename"}[layout]
    required = [name_column, "fold"] if layout == "urbansound8k" else [name_column]
    _check_columns(csv, required)
    names = csv[name_column].astype(str)
    if layout == "urbansound8k":
        paths = "audio/fold" + csv["fold"].astype(str) + "/" + names
    else:
        paths = "audio/" + names
    # plain lists and posixpath: Arrow-backed Series and path objects are slow to iterate
    paths = paths.tolist()
    stems = [posixpath.splitext(posixpath.basename(name))[0] for name in names.tolist()]
    table = pd.DataFrame({"clip_id": stems, "path": paths})
    files = listing.problem_of()
    problems = [_problem(p, files) for p in paths]
    table["problem"] = problems
    table = pd.concat([table, csv.reset_index(drop=True)], axis=1)
    _check_unique(table["clip_id"])
    unlisted = sorted(set(files) - set(paths))
    return Manifest(table, list(csv.columns), listing.stats_of(paths, problems), unlisted)


def _folder(csv: pd.DataFrame | None, listing: Listing) -> Manifest:
    paths = listing.paths  # plain str: PurePosixPath and Arrow-backed Series are slow per file
    table = pd.DataFrame({"path": paths})
    csv_columns = [LABEL_COLUMN]
    if csv is not None:
        _check_columns(csv, ["path"], joined_on="path")
        csv = csv.assign(path=csv["path"].astype(str))
        _check_unique(csv["path"], what="path in the metadata CSV")
        table = table.merge(csv, on="path", how="outer")
        table = table.sort_values("path", kind="stable").reset_index(drop=True)
        csv_columns += [c for c in csv.columns if c not in ("path", LABEL_COLUMN)]
    table[LABEL_COLUMN] = _folder_labels(table)
    table.insert(0, "clip_id", table["path"])
    if csv is None:
        problems = listing.problems
    else:
        paths, files = table["path"].tolist(), listing.problem_of()
        problems = [_problem(p, files) for p in paths]
    table.insert(2, "problem", problems)
    table = table[["clip_id", "path", "problem", *csv_columns]]
    return Manifest(table, csv_columns, listing.stats_of(paths, problems))


def _folder_labels(table: pd.DataFrame) -> list[str]:
    """Each row's label: the CSV's where it gives one, else the parent folder's name.

    A file at the root with no CSV label gets :data:`UNLABELLED`; every label is text.
    """
    folder_names = [_parent_name(path) for path in table["path"].tolist()]
    if LABEL_COLUMN not in table:
        return folder_names
    given = table[LABEL_COLUMN]
    given = given.astype(str).where(given.notna(), UNLABELLED).str.strip().tolist()
    return [label or folder for label, folder in zip(given, folder_names, strict=True)]


def _parent_name(path: str) -> str:
    """The name of a relative posix path's folder, as ``PurePosixPath(path).parent.name``."""
    return path.rpartition("/")[0].rpartition("/")[2]


def _problem(path: str, files: dict[str, str]) -> str:
    """Why a listed path cannot be processed, or ``""``."""
    if path in files:  # found by scan_audio: relative and below the root
        return files[path]
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts:
        return ESCAPES_ROOT
    return files.get(path, NOT_FOUND)


def _check_columns(csv: pd.DataFrame, required: list[str], *, joined_on: str = "") -> None:
    """Refuse a CSV that lacks a required column or names one as melstore's own columns.

    ``joined_on`` is the column the manifest is joined on (a folder CSV's ``path``).
    """
    missing = [c for c in required if c not in csv.columns]
    if missing:
        raise ConfigError(f"metadata CSV lacks the column(s) {', '.join(missing)}")
    clashes = [c for c in csv.columns if c in RESERVED_COLUMNS and c != joined_on]
    if clashes:
        raise ConfigError(
            f"metadata CSV column {clashes[0]!r} is a column melstore writes itself; "
            f"rename it (reserved: {', '.join(RESERVED_COLUMNS)})"
        )


def _check_unique(ids: pd.Series, what: str = "clip id") -> None:
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ConfigError(
            f"duplicate {what} {duplicated.iloc[0]!r} ({len(duplicated)} duplicates in all)"
        )
