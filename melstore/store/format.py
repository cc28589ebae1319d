"""The HDF5 feature store: layout, atomic writing, and plain readers.

Layout of a store (``LAYOUT_VERSION`` 1)::

    /features             float32 (N, n_bins, n_frames), one clip per chunk;
                          a compact store (``precision_db``) holds the
                          values rounded to a grid, as float16 or float32,
                          with HDF5's shuffle and gzip filters (Storage);
                          with deltas (N, 2, n_bins, n_frames): channel 0
                          the features, channel 1 their delta;
                          or, for variable length (duration: null),
                          float32 (n_bins, total_frames), clips concatenated
                          along time; metadata/frame_offset and
                          metadata/n_frames locate clip i
    /metadata/<column>    one dataset per column, N rows in feature order;
                          strings are UTF-8; the column order is in the
                          group's ``columns`` attribute
    /failures/<column>    clip_id, path, reason: one row per file that
                          could not be processed
    /axes/frequency       Hz of each row (mel centre or FFT bin frequency)
    /axes/time            seconds of each frame centre
    /frontend/<array>     what the features were computed with: window
                          (n_fft), filterbank (n_mels, 1 + n_fft // 2;
                          none for logspec) and frequencies
    attributes            format, layout_version, dataset, dataset_layout,
                          dataset_root, dataset_metadata, feature_set,
                          params (JSON), versions (JSON), n_clips, n_failures,
                          features_layout ("fixed" or "concatenated"),
                          feature_axes (JSON: the name of each axis of
                          features), channels (JSON, only with a channel
                          axis: the name of each channel); compact or
                          compressed stores only: precision_db,
                          max_error_db, compression

Files are written to a temporary name beside the target and renamed into
place, so a reader never sees a partial store. Nothing in the file depends on
time, host or completion order: the same inputs give the same bytes.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import resource
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import h5py
import numpy as np

from melstore.errors import ConfigError, MelstoreError
from melstore.files import remove_stale_siblings, temporary_sibling

if TYPE_CHECKING:  # extraction jobs write without pandas; readers need no feature code
    import pandas as pd

    from melstore.features.extractor import FeatureParams

Table = Mapping[str, np.ndarray]  # column name -> values, e.g. a DataFrame or a dict

FORMAT = "melstore"
LAYOUT_VERSION = 2
# An index's group listing its shard files (ShardRef), and that table's columns.
SHARDS_GROUP = "shards"
SHARD_REF_COLUMNS = ("name", "rows", "digest")
# A reader's chunk cache per dataset, shard sources included: none. A clip is one chunk,
# read once per request, and HDF5's 1 MB default per source made 200 shards cost 290 MB.
READ_CHUNK_CACHE_BYTES = 0
# File descriptors a reader keeps for other files besides an index's shards.
SPARE_FILE_DESCRIPTORS = 32
FAILURE_COLUMNS = ["clip_id", "path", "reason"]
_STRING = h5py.string_dtype("utf-8")
_VERSIONED = ("melstore", "librosa", "numpy", "scipy", "soundfile", "soxr", "h5py", "pandas")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the features, without importing them."""
    import soundfile

    versions = {name: importlib_metadata.version(name) for name in _VERSIONED}
    versions["libsndfile"] = soundfile.__libsndfile_version__
    versions["hdf5"] = h5py.version.hdf5_version
    return versions


class VersionChange(NamedTuple):
    """A library whose installed version is not the one a store records ('?': none known)."""

    recorded: str
    installed: str


def version_changes(recorded: Mapping[str, str]) -> dict[str, VersionChange]:
    """The libraries whose installed version differs from ``recorded`` (a store's), by name."""
    installed = library_versions()
    return {
        name: VersionChange(recorded.get(name, "?"), installed.get(name, "?"))
        for name in sorted(set(recorded) | set(installed))
        if recorded.get(name) != installed.get(name)
    }


def describe_version_changes(changes: Mapping[str, VersionChange]) -> str:
    """The changes on one line: ``librosa 0.10.2 -> 0.11.0, numpy 1.26.4 -> 2.1.0``."""
    return ", ".join(f"{name} {old} -> {new}" for name, (old, new) in changes.items())


# Rows a store of unknown size grows by, at least (unwritten rows take no space).
_GROWTH = 256

# zlib's default: 1 % smaller than level 4 at twice its CPU, a third of level 9's.
GZIP_LEVEL = 6
# Clips (or frames) read at a time when checking a store's values.
_CHECK_BLOCK = 256
# float16 holds every multiple of a grid step up to 2048 steps exactly (11 significant bits).
FLOAT16_STEPS = 2048


@dataclass(frozen=True)
class Storage:
    """How a store keeps its feature values: exact, losslessly compressed, or within a bound.

    Parameters
    ----------
    precision_db : float or None
        The largest absolute error allowed in a stored value, in the store's
        units (dB for logmel, natural-log units otherwise). None keeps the
        exact float32 values. A number rounds each value to the nearest
        multiple of ``step``, the largest power of two not above twice the
        bound, so the error is at most half a step; the values are then stored
        exactly as float16 when the grid reaches far enough, else as float32.
    compression : {None, 'gzip'}
        ``gzip`` compresses the values losslessly with HDF5's shuffle and gzip
        filters. A ``precision_db`` always compresses so.

    Every choice uses HDF5's built-in filters only: plain h5py reads the
    values as floating point with no plugin.
    """

    precision_db: float | None = None
    compression: str | None = None

    @classmethod
    def from_dict(cls, values: dict) -> Storage:
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def exact(self) -> bool:
        """Whether the values are stored as computed, with no filter (the default)."""
        return self.precision_db is None and self.compression is None

    @property
    def step(self) -> float | None:
        """The grid the values are rounded to; None when they are not rounded."""
        if self.precision_db is None:
            return None
        return 2.0 ** math.floor(math.log2(2 * self.precision_db))

    @property
    def dtype(self) -> type:
        """float16 when it holds the grid up to ±128 (dB values of an 80 dB range), else float32."""
        step = self.step
        return np.float16 if step is not None and FLOAT16_STEPS * step >= 128 else np.float32

    @property
    def limit(self) -> float:
        """The largest magnitude the stored type holds on the grid exactly."""
        return FLOAT16_STEPS * self.step if self.dtype is np.float16 else math.inf

    def dataset_options(self) -> dict:
        """Keyword arguments of ``h5py.Group.create_dataset`` for the features."""
        if self.exact:
            return {"dtype": np.float32}
        return {
            "dtype": self.dtype,
            "shuffle": True,
            "compression": "gzip",
            "compression_opts": GZIP_LEVEL,
        }

    def attrs(self) -> dict:
        """The store attributes that record the choice; none for the exact default."""
        attrs = {}
        if self.precision_db is not None:
            attrs["precision_db"] = self.precision_db
        if not self.exact:
            attrs["compression"] = "gzip"
        return attrs

    def quantise(self, features: np.ndarray, *, name: str) -> tuple[np.ndarray, float]:
        """The values to store and their largest absolute error (0 when exact).

        Raises
        ------
        ConfigError
            When a value lies beyond what the stored type holds on the grid;
            the message names ``name`` (the clip's file) and the key.
        """
        if self.step is None:
            return features, 0.0
        rounded = np.round(features / self.step) * self.step  # a power of two: exact in float32
        largest = float(np.abs(rounded).max(initial=0.0))
        if largest > self.limit:
            raise ConfigError(
                f"{name}: a feature value of magnitude {largest:g} is beyond the "
                f"\u00b1{self.limit:g} that precision_db {self.precision_db:g} stores "
                f"(float16 in steps of {self.step:g}); "
                "choose a precision_db below 1/32 (stored as float32), or null"
            )
        error = float(np.abs(rounded.astype(np.float64) - features).max(initial=0.0))
        return rounded.astype(self.dtype), error


def precision_problems(store: h5py.File) -> list[str]:
    """What contradicts a store's recorded precision; empty when every value satisfies it.

    A store with ``precision_db`` must hold every value on that precision's
    grid, in the type it implies, with recorded errors within the bound; a store
    without one must hold float32. Reads every clip once.
    """
    features, attrs = store["features"], store.attrs
    precision = attrs.get("precision_db")
    storage = Storage(precision_db=None if precision is None else float(precision))
    expected = np.dtype(storage.dtype if precision is not None else np.float32)
    if features.dtype != expected:
        claim = f"precision_db {precision:g}" if precision is not None else "no precision_db"
        return [f"features are {features.dtype}, but a store with {claim} holds {expected}"]
    if precision is None:
        return []
    problems = []
    recorded = float(attrs.get("max_error_db", math.inf))
    if recorded > storage.precision_db:
        problems.append(f"recorded max_error_db {recorded:g} exceeds precision_db {precision:g}")
    errors = store["metadata"].get(ERROR_COLUMN)
    if errors is None:
        problems.append(f"metadata has no {ERROR_COLUMN} column")
    elif len(errors) and float(np.max(errors)) > storage.precision_db:
        problems.append(
            f"a clip's {ERROR_COLUMN} {float(np.max(errors)):g} exceeds precision_db {precision:g}"
        )
    step = storage.step
    fixed = attrs.get("features_layout") == "fixed"
    axis, unit = (0, "clip row") if fixed else (features.ndim - 1, "frame")
    for first in range(0, features.shape[axis], _CHECK_BLOCK):
        block = (
            features[first : first + _CHECK_BLOCK]
            if fixed
            else (features[..., first : first + _CHECK_BLOCK])
        )
        scaled = block.astype(np.float32) / step  # a power of two: exact
        off = np.argwhere(scaled != np.round(scaled))
        if len(off):
            problems.append(
                f"values are not on the {step:g} grid of precision_db {precision:g} (first at "
                f"{unit} {first + int(off[0][axis])}): the store was not written with the "
                "precision it records"
            )
            break
    return problems


class ChunkEncoder:
    """Encode one clip into the bytes of a store chunk, with HDF5's own filters.

    What it buys: the extraction workers compress their clips in parallel, and
    the job's one writing process only copies bytes (gzip costs about 1 ms per
    128 x 130 clip, a third of computing it). It pickles as its settings; the
    in-memory HDF5 file it encodes with is made on first use in each process.
    """

    def __init__(self, storage: Storage, clip_shape: tuple[int, ...]):
        self.storage, self.clip_shape = storage, tuple(clip_shape)
        self._clip: h5py.Dataset | None = None

    def __getstate__(self) -> dict:
        return {"storage": self.storage, "clip_shape": self.clip_shape, "_clip": None}

    def __call__(self, values: np.ndarray) -> bytes:
        if self.storage.exact:  # the chunk is the float32 array itself
            return np.ascontiguousarray(values, dtype=np.float32).tobytes()
        if self._clip is None:
            shape = (1, *self.clip_shape)
            self._clip = h5py.File(io.BytesIO(), "w").create_dataset(
                "clip", shape=shape, chunks=shape, **self.storage.dataset_options()
            )
        self._clip[0] = values
        return self._clip.id.read_direct_chunk((0,) * (1 + len(self.clip_shape)))[1]


class StoreWriter:
    """Write a store: stream features in, then the tables, then rename into place.

    Parameters
    ----------
    path : str or Path
        Final location of the store.
    n_bins : int
        Rows of each feature matrix.
    n_frames : int or None
        Frames of each clip, or None for variable-length clips.
    channels : sequence of str, optional
        Names of the channels of each clip, for features shaped
        (n_channels, n_bins, n_frames); fixed-length clips only.
    n_clips : int, optional
        How many clips will be appended, when known: the features dataset is
        then created at its final size instead of growing clip by clip.
    storage : Storage, optional
        How the values are kept (default: exact float32). Appended values
        must already be on its grid (:meth:`Storage.quantise`).

    Examples
    --------
    >>> with StoreWriter("x.h5", n_bins=128, n_frames=130) as writer:
    ...     writer.append(features)
    ...     writer.finish(metadata=table, failures=failed, attrs={...}, axes={...})
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_bins: int,
        n_frames: int | None,
        channels: Sequence[str] | None = None,
        n_clips: int | None = None,
        storage: Storage | None = None,
    ):
        storage = storage or Storage()
        if channels and n_frames is None:
            raise ValueError("channels need fixed-length clips (n_frames)")
        self.path = Path(path)
        remove_stale_siblings(self.path)
        self.tmp_path = temporary_sibling(self.path)
        self.n_frames = n_frames
        self.channels = list(channels) if channels else None
        self.frame_counts: list[int] = []
        self._n_clips = n_clips
        self._capacity = n_clips or 0
        self._file = h5py.File(self.tmp_path, "w", track_order=False)
        if n_frames is None:
            self._features = self._file.create_dataset(
                "features",
                shape=(n_bins, 0),
                maxshape=(n_bins, None),
                chunks=(n_bins, 256),
                **storage.dataset_options(),
            )
        else:
            clip_shape = (len(channels), n_bins, n_frames) if channels else (n_bins, n_frames)
            self.clip_shape = clip_shape
            self._features = self._file.create_dataset(
                "features",
                shape=(n_clips or 0, *clip_shape),
                maxshape=(n_clips, *clip_shape),
                chunks=(1, *clip_shape),
                **storage.dataset_options(),
            )
            self._encode = ChunkEncoder(storage, clip_shape)
        self._finished = False

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._close(failing=exc_type is not None)
            if exc_type is None and self._finished:
                # unlink first: ext4 writes a file renamed over another back at once
                self.path.unlink(missing_ok=True)
                os.replace(self.tmp_path, self.path)
        finally:
            self.tmp_path.unlink(missing_ok=True)

    def _close(self, *, failing: bool) -> None:
        """Close the file, which flushes it: on a full disk, that is where writing fails."""
        try:
            self._file.close()
        except (OSError, RuntimeError) as err:
            if failing:
                return  # the error that stopped the writing says more; the file is removed
            if "No space left on device" in str(err):  # HDF5 reports a failed flush so
                raise OSError(errno.ENOSPC, f"no space left on device for {self.path}") from err
            raise

    def append(self, features: np.ndarray) -> None:
        """Add the next clip's features, shape ([n_channels,] n_bins, n_frames)."""
        dataset = self._features
        if self.n_frames is None:
            start = dataset.shape[1]
            dataset.resize(start + features.shape[1], axis=1)
            dataset[:, start:] = features
            self.frame_counts.append(features.shape[1])
        elif features.shape != self.clip_shape:
            raise ValueError(f"clip features {features.shape} do not fit {self.clip_shape}")
        else:
            self.append_chunk(self._encode(features))

    def append_chunk(self, chunk: bytes | np.ndarray) -> None:
        """Add the next clip as the raw bytes of a fixed-length store's chunk.

        Every clip is one chunk, so copying a clip between stores of the same
        parameters and storage needs no decoding: 40x faster than reading and
        writing arrays. The bytes have been through every filter of the store's
        (:class:`ChunkEncoder`).
        """
        row = len(self.frame_counts)
        if row == self._capacity:  # grow in steps: h5py's resize is slow per call
            self._capacity += max(_GROWTH, self._capacity // 4)
            self._features.resize(self._capacity, axis=0)
        self._features.id.write_direct_chunk(self.chunk_offset(row), chunk)
        self.frame_counts.append(self.n_frames)

    def chunk_offset(self, row: int) -> tuple[int, ...]:
        """Where clip ``row``'s chunk starts, in this store or a shard of the same layout."""
        return (row,) + (0,) * len(self.clip_shape)

    def finish(
        self,
        *,
        metadata: Table,
        failures: Table,
        attrs: dict,
        axes: dict[str, np.ndarray],
        groups: dict[str, dict[str, np.ndarray | str]] | None = None,
    ) -> None:
        """Write the tables, axes and attributes; the store is renamed on exit.

        ``metadata`` has one row per appended clip, in the same order; both
        tables map column names to equally long columns (a DataFrame works).
        Dict values of ``attrs`` are stored as JSON. ``groups`` are further
        named groups of arrays (a shard keeps its front end there); a text
        value in one becomes an attribute of its group.
        """
        n_rows = {len(values) for values in dict(metadata).values()}
        if self.n_frames is not None and self._n_clips is None:
            self._features.resize(len(self.frame_counts), axis=0)  # rows grown ahead
        unfilled = self.n_frames is not None and len(self.frame_counts) < len(self._features)
        if n_rows - {len(self.frame_counts)} or unfilled:
            raise MelstoreError(
                f"{self.path}: {n_rows} metadata rows for {len(self.frame_counts)} clips"
            )
        if self.n_frames is None:
            metadata = {**dict(metadata), **clip_locations(self.frame_counts)}
        write_contents(
            self._file,
            metadata=metadata,
            failures=failures,
            axes=axes,
            groups=groups or {},
            attrs={**layout_attrs(n_frames=self.n_frames, channels=self.channels), **attrs},
        )
        self._finished = True

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the ``features`` dataset so far."""
        return self._features.shape


def layout_attrs(*, n_frames: int | None, channels: Sequence[str] | None) -> dict:
    """The attributes that say how a store's ``features`` are laid out."""
    if n_frames is None:
        feature_axes = ["frequency", "time"]
    else:
        feature_axes = ["clip", *(["channel"] if channels else []), "frequency", "time"]
    return {
        "format": FORMAT,
        "layout_version": LAYOUT_VERSION,
        "features_layout": "concatenated" if n_frames is None else "fixed",
        "feature_axes": feature_axes,
        **({"channels": list(channels)} if channels else {}),
    }


def write_contents(
    file: h5py.File,
    *,
    metadata: Table,
    failures: Table,
    axes: dict[str, np.ndarray],
    groups: dict[str, dict[str, np.ndarray | str]],
    attrs: dict,
) -> None:
    """Everything of a store but its features: tables, axes, further groups and attributes.

    Dict and list values of ``attrs`` are stored as JSON; ``n_clips`` and
    ``n_failures`` are counted from the tables. A text value in a group
    becomes an attribute of that group.
    """
    write_table(file.create_group("metadata"), metadata)
    write_table(file.create_group("failures"), {c: failures[c] for c in FAILURE_COLUMNS})
    axes_group = file.create_group("axes")
    for name, values in axes.items():
        axes_group.create_dataset(name, data=np.asarray(values, dtype=np.float64))
    for group_name, arrays in groups.items():
        group = file.create_group(group_name)
        for name, values in arrays.items():
            if isinstance(values, str):
                group.attrs[name] = values
            elif np.asarray(values).dtype.kind in "OU":
                group.create_dataset(name, data=[str(v) for v in values], dtype=_STRING)
            else:
                group.create_dataset(name, data=values)
    counts = {
        "n_clips": len(next(iter(dict(metadata).values()), [])),
        "n_failures": len(failures[FAILURE_COLUMNS[0]]),
    }
    for key, value in {**counts, **attrs}.items():
        file.attrs[key] = (
            json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        )


def clip_locations(frame_counts: Sequence[int]) -> dict[str, np.ndarray]:
    """Where each clip of a variable-length store lies along time: frame_offset, n_frames."""
    counts = np.asarray(frame_counts, dtype=np.int64)
    offset, length = LOCATION_COLUMNS
    return {offset: np.cumsum(counts) - counts, length: counts}


def write_table(group: h5py.Group, table: Table) -> None:
    """One dataset per column: bool, int64, float64, or fixed-length UTF-8 text ('' for missing).

    Fixed-length text is read and written without a Python object per cell,
    and left uncompressed: the index job writes every row at each rerun.
    """
    group.attrs["columns"] = json.dumps([str(c) for c in table])
    for column, values in dict(table).items():
        values = np.asarray(values)
        if values.dtype.kind == "b":
            data, dtype = values, values.dtype
        elif values.dtype.kind in "iu":
            data, dtype = values.astype(np.int64), np.dtype(np.int64)
        elif values.dtype.kind == "f":
            data, dtype = values.astype(np.float64), np.dtype(np.float64)
        else:
            text = encode_text(values)
            dtype = h5py.string_dtype("utf-8", text.dtype.itemsize)
            data = text.view(dtype)  # tagged UTF-8: HDF5 converts no ASCII into a UTF-8 type
        group.create_dataset(str(column), data=data, dtype=dtype)


def encode_text(values: Sequence | np.ndarray) -> np.ndarray:
    """Text cells as a fixed-length UTF-8 bytes array; missing values (None, NaN) become b''."""
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return values
    if values.dtype.kind == "U":
        return np.char.encode(values, "utf-8")
    cells = values.ravel().tolist()
    return np.array([v if isinstance(v, bytes) else _text(v).encode() for v in cells], dtype=bytes)


def _text(value) -> str:
    """A cell as text; missing values (None, NaN) become ''."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def open_store(path: str | Path) -> h5py.File:
    """Open a store read-only, refusing anything that is not a readable melstore store."""
    try:
        store = h5py.File(path, "r", rdcc_nbytes=READ_CHUNK_CACHE_BYTES)
    except OSError as err:
        reason = "no such file" if not Path(path).exists() else "not an HDF5 file"
        raise MelstoreError(f"{path}: {reason}") from err
    try:
        check_store(store, path)
        if SHARDS_GROUP in store:
            check_shards(read_shard_refs(store), folder=Path(path).parent)
    except MelstoreError:
        store.close()
        raise
    return store


def read_table(path: str | Path, group: str = "metadata") -> pd.DataFrame:
    """Read ``metadata`` or ``failures`` of a store as a DataFrame, in stored order."""
    with open_store(path) as store:
        return read_group(store, group)


def read_group(store: h5py.File, group: str) -> pd.DataFrame:
    """Read a table group of an open store as a DataFrame, in stored order."""
    return as_frame(read_columns(store, group))


def as_frame(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Numpy columns as a DataFrame, in their order (even when empty)."""
    import pandas as pd

    return pd.DataFrame(columns, columns=list(columns))


def read_columns(
    store: h5py.File,
    group: str,
    *,
    rows: slice = slice(None),
    decode: bool = True,
    only: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read ``rows`` of a table group as numpy columns, in stored order (no pandas import).

    Text comes as str objects, or with ``decode=False`` as stored: UTF-8
    bytes, which a writer takes back as they are (:func:`encode_text`).
    ``only`` keeps the columns it names that the table has.
    """
    node = store[group]
    columns = json.loads(node.attrs["columns"])
    if only is not None:
        columns = [column for column in columns if column in only]
    return {column: _read_column(node[column], rows, decode=decode) for column in columns}


def _read_column(data: h5py.Dataset, rows: slice, *, decode: bool) -> np.ndarray:
    """One column: text (fixed or, in older stores, variable length) decoded or as bytes."""
    if h5py.check_string_dtype(data.dtype) is None:
        return data[rows]
    return data.asstr()[rows] if decode else data[rows].astype(bytes)


def check_store(store: h5py.File, path: str | Path) -> None:
    """Refuse files that are not melstore stores of a layout this code reads."""
    if store.attrs.get("format") != FORMAT:
        raise MelstoreError(f"{path} is not a melstore feature store")
    version = int(store.attrs.get("layout_version", -1))
    if version != LAYOUT_VERSION:
        raise MelstoreError(
            f"{path} has store layout version {version}; this melstore reads {LAYOUT_VERSION}: "
            "rebuild it with the workflow (snakemake)"
        )


def check_outside_dataset(
    output: str | Path, *, store: str | Path, dataset_root: str | None
) -> None:
    """Refuse to write ``output`` inside the dataset root ``store`` was built from.

    A relative root is tried from here and from the workflow folder the store
    sits in (``results/<dataset>/<set>.h5``). No root (a store from elsewhere)
    refuses nothing.

    Raises
    ------
    MelstoreError
        If ``output`` lies in the recorded dataset root.
    """
    if not dataset_root:
        return
    root = Path(dataset_root)
    roots = [root] if root.is_absolute() else [root, Path(store).parent.parent.parent / root]
    target = Path(output).resolve()
    for candidate in roots:
        if candidate.is_dir() and target.is_relative_to(candidate.resolve()):
            raise MelstoreError(
                f"{output} lies in the dataset {root} that {store} was built from, "
                "and melstore never writes there: write it elsewhere"
            )


@dataclass(frozen=True)
class ShardRef:
    """One shard file of an index, as the index records it.

    Attributes
    ----------
    name : str
        The file, relative to the index's folder (``shards/<set>/<shard>-<digest>.h5``).
    rows : int
        Its clips (fixed layout), or its frames (concatenated layout).
    digest : str
        The digest of what decided its bytes, which it records too.
    """

    name: str
    rows: int
    digest: str


def read_shard_refs(store: h5py.File) -> list[ShardRef]:
    """The shard files an index reads its features from, in row order."""
    table = read_columns(store, SHARDS_GROUP)
    return [
        ShardRef(str(name), int(rows), str(digest))
        for name, rows, digest in zip(*(table[c] for c in SHARD_REF_COLUMNS), strict=True)
    ]


def check_shards(shards: Sequence[ShardRef], *, folder: Path) -> None:
    """Refuse an index whose shard files are not all there, whole and its own.

    HDF5 reads a missing source as the fill value without an error, looks for
    it in the working directory too, and fills silently when it runs out of
    file descriptors: so each file is checked beside the index first, and
    their number against the open-file limit.

    Raises
    ------
    MelstoreError
        Naming the first shard file that is missing, unreadable, of other
        rows or another build, or the limit.
    """
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    needed = len(shards) + SPARE_FILE_DESCRIPTORS
    if limit != resource.RLIM_INFINITY and needed > limit:
        raise MelstoreError(
            f"{folder}: the store reads {len(shards)} shard files at once, beyond this process's "
            f"open-file limit of {limit}; raise it (ulimit -n {needed}) or read a packed copy "
            "(melstore pack)"
        )
    rebuild = (
        "copy the store's whole results folder, or rebuild the file: snakemake --forcerun gather"
    )
    for shard in shards:
        path = folder / shard.name
        try:
            with h5py.File(path, "r") as file:
                digest, rows = str(file.attrs.get("digest", "")), _stored_rows(file)
        except OSError as err:
            reason = "missing" if not path.exists() else f"unreadable ({_first_line(err)})"
            raise MelstoreError(f"{path}: shard file {reason}; {rebuild}") from None
        if digest != shard.digest or rows != shard.rows:
            raise MelstoreError(
                f"{path}: shard file of another build (digest {digest or 'none'}, {rows} rows; "
                f"the index expects {shard.digest}, {shard.rows} rows); {rebuild}"
            )


def _stored_rows(file: h5py.File) -> int:
    """Clips of a fixed-length shard, frames of a concatenated one."""
    features = file["features"]
    return features.shape[0] if file.attrs.get("features_layout") == "fixed" else features.shape[-1]


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class OpenStores:
    """Keep recently used shard files open for reading (shard_size=1 means thousands)."""

    def __init__(self, max_open: int = 128):
        self.max_open = max_open
        self.files: OrderedDict[str, tuple[h5py.File, h5py.Dataset]] = OrderedDict()

    def features(self, path: str) -> h5py.Dataset:
        """The ``features`` dataset of a shard, opening the file if needed."""
        if path in self.files:
            self.files.move_to_end(path)
        else:
            if len(self.files) >= self.max_open:
                self.files.popitem(last=False)[1][0].close()
            handle = h5py.File(path, "r")
            self.files[path] = (handle, handle["features"])
        return self.files[path][1]

    def __enter__(self) -> OpenStores:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close every file kept open."""
        for handle, _ in self.files.values():
            handle.close()
        self.files.clear()


# Columns a shard computes for each clip, in store order, with their dtypes
# (explicit, so that a shard whose every file failed has the same types).
COMPUTED_COLUMNS = {
    "native_sr": "int64",
    "native_channels": "int64",
    "native_format": "str",
    "native_subtype": "str",
    "native_duration": "float64",
    "n_samples_valid": "int64",
    "n_frames_valid": "int64",
    "peak_db": "float64",
    "source_xxh128": "str",
}
# A shard's metadata: the clip, its computed columns, then its file's size and mtime
# when computed (shards only: a later build reuses the clip while both are unchanged),
# and the largest error of its stored values (0 unless the store is compact).
SHARD_COLUMNS = {"clip_id": "str", "path": "str", **COMPUTED_COLUMNS,
                 "source_size": "int64", "source_mtime_ns": "int64",
                 "quantisation_error": "float64"}  # fmt: skip
# Stored in compact stores only: how far each clip's stored values are from the computed ones.
ERROR_COLUMN = "quantisation_error"
# Stored in variable-length stores only: where each clip lies along time (clip_locations).
LOCATION_COLUMNS = ("frame_offset", "n_frames")
# Every metadata column a store can get from melstore itself rather than the dataset's CSV.
STORE_COLUMNS = ("clip_id", "path", *COMPUTED_COLUMNS, ERROR_COLUMN, *LOCATION_COLUMNS)


def computed_table(records: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Rows of a shard's metadata (:data:`SHARD_COLUMNS`) as typed columns."""
    dtypes = SHARD_COLUMNS
    return {
        name: np.asarray(values, dtype=object if dtype == "str" else dtype)
        for (name, dtype), values in zip(
            dtypes.items(), columns_of(records, len(dtypes)), strict=True
        )
    }


def columns_of(records: Sequence[tuple], width: int) -> list[list]:
    """Records of ``width`` fields as ``width`` lists (empty ones when there are no records)."""
    return [list(column) for column in zip(*records, strict=True)] or [[] for _ in range(width)]


def axes(
    frequencies: np.ndarray, *, params: FeatureParams, frame_counts: Sequence[int]
) -> dict[str, np.ndarray]:
    """The axis datasets of a shard or store: row frequencies and frame-centre times.

    The time axis spans a fixed-length clip, or the longest of variable-length ones.
    """
    n_frames = params.n_frames or max(frame_counts, default=0)
    return {"frequency": frequencies, "time": params.frame_times(n_frames)}
