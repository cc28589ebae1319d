"""Read a store from Python: ``melstore.open(path)``.

A :class:`Store` is read-only. Its features stay on disk (h5py reads them on
demand); its tables are read when first used. It reads both feature layouts:
``fixed`` (N, [channels,] n_bins, n_frames) and ``concatenated`` (variable
length, ``duration: null``), where clips lie end to end along the last axis.
Stores built with ``deltas: true`` carry a channel axis before the bins.

pandas is imported only when a table is first used as a DataFrame.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from melstore.errors import MelstoreError
from melstore.store.format import as_frame, encode_text, open_store, read_columns
from melstore.store.stats import STATS_GROUP, Moments

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    Rows = Sequence[int] | np.ndarray | pd.DataFrame | None

# The column naming each clip's class: UrbanSound8K, ESC-50, folder layout.
LABEL_COLUMNS = ("class", "category", "label")
# The dataset's own integer class ids: UrbanSound8K, ESC-50.
TARGET_COLUMNS = ("classID", "target")
FOLD_COLUMN = "fold"
# The column naming each clip's source recording in UrbanSound8K and ESC-50.
LAYOUT_SOURCE_COLUMN = {"urbansound8k": "fsID", "esc50": "src_file"}
# The label of a clip stored without one, and how tables and figures name its class.
UNLABELLED = ""
UNLABELLED_NAME = "(unlabelled)"


@dataclass(frozen=True)
class Axes:
    """What the feature axes mean.

    Attributes
    ----------
    frequency : np.ndarray
        Hz of each feature row: mel band centres (``logmel``, ``vggish``) or
        FFT bin frequencies (``logspec``).
    time : np.ndarray
        Seconds of each frame centre. For variable-length stores it covers
        the longest clip; a clip of ``n`` frames uses ``time[:n]``.
    """

    frequency: np.ndarray
    time: np.ndarray


class Store:
    """A melstore feature store, opened read-only.

    Use :func:`melstore.open` to make one, preferably in a ``with`` block (or
    call :meth:`close`).

    Attributes
    ----------
    path : Path
        The store file.
    params : dict
        The feature set's parameters, all explicit (``kind``, ``sr``,
        ``n_mels``, ``ref``...).
    versions : dict
        Versions of the libraries that computed the features.
    attrs : dict
        Every attribute of the file (``dataset``, ``feature_set``,
        ``features_layout``, ``layout_version``...), JSON ones as text.
    axes : Axes
        Mel (or FFT bin) frequencies and frame times.
    precision_db : float or None
        The largest error allowed in a stored value (in the store's units),
        None for a store of the exact values.
    max_error_db : float
        The largest error of a stored value, as measured when it was written
        (0 for a store of the exact values).

    Raises
    ------
    MelstoreError
        If the file is missing, not a melstore store, or of a layout version
        this melstore does not read.

    Examples
    --------
    >>> with melstore.open("results/demo/seed.h5") as store:
    ...     for train, test in store.folds():
    ...         X_train = store.read(train)  # (n, 128, 130) float32, dB
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open_store(self.path)
        self.attrs = {key: _plain(value) for key, value in self._file.attrs.items()}
        self.params = json.loads(self.attrs["params"])
        self.versions = json.loads(self.attrs.get("versions", "{}"))
        self.precision_db = self.attrs.get("precision_db")
        self.max_error_db = float(self.attrs.get("max_error_db", 0.0))
        self.axes = Axes(
            frequency=self._file["axes/frequency"][()], time=self._file["axes/time"][()]
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; features cannot be read afterwards."""
        self._file.close()

    def __len__(self) -> int:
        return int(self.attrs["n_clips"])

    def __repr__(self) -> str:
        return f"<melstore.Store {self.path}: {len(self)} clips of feature set {self.feature_set}>"

    @property
    def feature_set(self) -> str:
        """The feature set's name, e.g. ``seed``."""
        return self.attrs["feature_set"]

    @cached_property
    def features(self):
        """The features as a lazy, sliceable h5py dataset.

        float32, or float16 in a store with a ``precision_db`` that float16
        holds exactly (:meth:`clip` and :meth:`read` always give float32).

        ``fixed`` layout: (N, n_bins, n_frames), or (N, channels, n_bins,
        n_frames) with deltas; ``store.features[i]`` reads clip ``i`` only.
        ``concatenated`` layout: clips end to end along the last axis; use
        :meth:`clip`.
        """
        # one handle: a new one reopens the virtual dataset's shard files on its first read
        return self._file["features"]

    @property
    def fixed_length(self) -> bool:
        """True when every clip has the same shape (``features_layout`` is ``fixed``)."""
        return self.attrs["features_layout"] == "fixed"

    @cached_property
    def metadata(self) -> pd.DataFrame:
        """One row per clip, in feature order; the index is the feature row."""
        return as_frame(self.metadata_columns)

    @cached_property
    def metadata_columns(self) -> dict[str, np.ndarray]:
        """:attr:`metadata` as numpy columns (text as object arrays of str)."""
        return read_columns(self._file, "metadata")

    @cached_property
    def failures(self) -> pd.DataFrame:
        """The files that could not be processed: clip_id, path, reason."""
        return as_frame(self.failure_columns)

    @cached_property
    def failure_columns(self) -> dict[str, np.ndarray]:
        """:attr:`failures` as numpy columns."""
        return read_columns(self._file, "failures")

    @cached_property
    def frontend(self) -> dict[str, np.ndarray]:
        """The analysis window and filter bank the features were computed with.

        ``window`` (n_fft samples), ``filterbank`` (n_mels, 1 + n_fft // 2;
        absent for ``logspec``) and ``frequencies``, as
        :meth:`melstore.features.extractor.Frontend.arrays` names them. Empty for
        stores written before melstore kept them.
        """
        group = self._file.get("frontend", {})
        return {name: data[()] for name, data in group.items()}

    @property
    def label_column(self) -> str | None:
        """The metadata column naming each clip's class, or None if there is none."""
        return next((c for c in LABEL_COLUMNS if c in self.metadata_columns), None)

    @property
    def source_column(self) -> str | None:
        """The metadata column naming each clip's source recording, or None if none is known.

        The one the store was built with (``dataset.source_column``, else the
        layout's), else ``fsID`` or ``src_file`` when the metadata has one.
        """
        return find_source_column(self.metadata_columns, self.attrs.get("source_column", ""))

    def row(self, key: int | str) -> int:
        """The feature row of a clip id, or a row number checked against the store.

        Raises
        ------
        MelstoreError
            If the store has no such clip or row.
        """
        if not isinstance(key, str):
            return int(self._checked_rows([key])[0])
        row = self._rows_by_id.get(key)
        if row is None:
            example = self.metadata_columns["clip_id"][0] if len(self) else "none"
            raise MelstoreError(f"{self.path} has no clip {key!r} (clip ids look like {example!r})")
        return row

    @cached_property
    def _rows_by_id(self) -> dict[str, int]:
        return {clip_id: row for row, clip_id in enumerate(self.metadata_columns["clip_id"])}

    def clip(self, key: int | str) -> np.ndarray:
        """The features of one clip, by feature row or clip id, in either layout.

        Returns
        -------
        np.ndarray
            float32 (n_bins, n_frames), or (channels, n_bins, n_frames) with
            deltas; n_frames varies per clip in variable-length stores.
        """
        row = self.row(key)
        if self.fixed_length:
            values = self.features[row]
        else:
            start = int(self.metadata_columns["frame_offset"][row])
            values = self.features[..., start : start + int(self.metadata_columns["n_frames"][row])]
        return values.astype(np.float32, copy=False)

    def read(self, rows: Rows = None, *, normalise=None) -> np.ndarray:
        """The features of many clips as one array, in the order of ``rows``.

        Parameters
        ----------
        rows : array of int, DataFrame, or None
            Feature rows (e.g. from :meth:`folds`), a :meth:`select` result
            (its index), or None for every clip.
        normalise : fold, list of folds, or None
            Normalise each bin with the train statistics of this held-out
            fold, ``(x - mean) / std`` with ``stats(held_out=normalise)``
            (a bin of std 0 is only centred); None for the stored values.

        Returns
        -------
        np.ndarray
            float32 (len(rows), [channels,] n_bins, n_frames).

        Raises
        ------
        MelstoreError
            For variable-length stores, whose clips differ in length: read
            them one at a time with :meth:`clip`.
        """
        if not self.fixed_length:
            raise MelstoreError(
                f"{self.path} holds clips of different lengths (duration: null); "
                "read them one at a time with clip()"
            )
        if rows is None:
            out = self.features[()].astype(np.float32, copy=False)
        else:
            rows = self._checked_rows(rows)
            out = np.empty((len(rows), *self.features.shape[1:]), dtype=np.float32)
            for position, row in enumerate(rows):  # one chunk per clip: no fancy-index cost
                self.features.read_direct(out, np.s_[row], np.s_[position])
        if normalise is not None:
            mean, scale = self.normaliser(normalise)
            out -= mean
            out /= scale
        return out

    def normaliser(self, held_out) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``(mean, scale)`` for ``(x - mean) / scale`` over whole clips.

        The train statistics of ``held_out`` (:meth:`stats`), with a time axis
        to broadcast over frames; a bin of std 0 gets scale 1.
        """
        mean, std = self.stats(held_out=held_out)
        scale = np.where(std > 0, std, 1.0)
        return mean[..., None].astype(np.float32), scale[..., None].astype(np.float32)

    def select(self, **filters) -> pd.DataFrame:
        """The metadata rows matching every filter; the index is the feature row.

        Each keyword names a metadata column. A single value keeps the rows
        equal to it; a list, tuple, set, range or array keeps the rows equal
        to any of its values.

        Raises
        ------
        MelstoreError
            If a keyword is not a metadata column.

        Examples
        --------
        >>> store.select(fold=[1, 2], salience=1)  # UrbanSound8K foreground clips
        """
        table = self.metadata
        keep = np.ones(len(table), dtype=bool)
        for column, wanted in filters.items():
            values = self._column(column)
            if isinstance(wanted, Collection) and not isinstance(wanted, str | bytes):
                keep &= values.isin(list(wanted)).to_numpy()
            else:
                keep &= (values == wanted).to_numpy()
        return table[keep]

    def fold_of_rows(self, *, column: str | None = None, n_splits: int = 5) -> pd.Series:
        """The test fold of every row.

        Parameters
        ----------
        column : str, optional
            The metadata column holding the folds. By default the dataset's
            own ``fold`` column (UrbanSound8K: 10 folds, ESC-50: 5), and
            without one the fallback split described in :meth:`folds`.
        n_splits : int
            Folds of the fallback split; ignored when a fold column is used.

        Returns
        -------
        pd.Series
            One fold per row; its name is the column, or ``"fold (fallback)"``.
        """
        import pandas as pd

        folds = assign_folds(
            self.metadata_columns,
            column=column,
            n_splits=n_splits,
            source=self.source_column,
            where=self.path,
        )
        return pd.Series(folds.of_rows, name=folds.column)

    def folds(self, *, column: str | None = None, n_splits: int = 5) -> list[Split]:
        """Cross-validation splits: (train rows, test rows) for each fold.

        Each fold is the test set once, in sorted fold order, and every row is
        in exactly one test set. The rows index :attr:`features` and
        :attr:`metadata`. Each split's ``fold`` is its held-out fold: pass it
        as ``normalise`` to :meth:`read` or :meth:`to_torch_dataset` to
        normalise both sides with the train statistics of that fold.

        Parameters
        ----------
        column : str, optional
            The metadata column holding the folds; default: the dataset's own
            ``fold`` column when there is one.
        n_splits : int
            Folds of the fallback split, used when the store has no ``fold``
            column (folder datasets without one in their CSV).

        Notes
        -----
        The fallback split is deterministic and stratified by class (the label
        column, if any). When the store knows each clip's source recording
        (:attr:`source_column`), every clip of one source is in one fold: the
        sources are dealt as scikit-learn's ``StratifiedGroupKFold`` (without
        shuffling) deals groups, largest class imbalance first, each to the
        fold that keeps every class's share of the folds most even; a clip
        with no source value is a source of its own. Without a source column
        the clips are ordered by class, then by the sha256 of their clip id,
        and dealt round-robin to folds 1..``n_splits``. Either way the split
        does not depend on row order or on the machine.

        Examples
        --------
        >>> for train, test in store.folds():
        ...     model.fit(store.read(train), ...)
        >>> for split in store.folds():
        ...     X_train = store.read(split.train, normalise=split.fold)
        """
        of_rows = self.fold_of_rows(column=column, n_splits=n_splits).to_numpy()
        return [
            Split(np.flatnonzero(of_rows != fold), np.flatnonzero(of_rows == fold), fold=fold)
            for fold in sorted(set(of_rows.tolist()))
        ]

    def stats(self, held_out=None) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the features for normalising, without the held-out fold.

        Computed when the store was built, over the valid frames of each clip
        (``n_frames_valid``: zero padding does not bias them) and from the
        stored values, per frequency bin (per channel and bin with deltas).

        Parameters
        ----------
        held_out : fold, list of folds, or None
            The fold(s) whose clips are left out, as in :meth:`folds` (the
            dataset's ``fold`` column, else the fallback split of 5 folds);
            None for the whole set.

        Returns
        -------
        mean, std : np.ndarray
            float64, shaped like one frame: (n_bins,), or (channels, n_bins)
            with deltas. ``std`` is the population std (``ddof=0``).

        Raises
        ------
        MelstoreError
            If ``held_out`` is not a fold of the store, no clip is left, or the
            store was written before melstore kept statistics.

        Examples
        --------
        >>> mean, std = store.stats(held_out=10)  # UrbanSound8K: train on folds 1-9
        >>> X = (store.read(test) - mean[..., None]) / std[..., None]
        """
        group = self._file.get(STATS_GROUP)
        if group is None:
            raise MelstoreError(
                f"{self.path} was written before melstore kept statistics; rebuild it"
            )
        folds = [_plain(label) for label in group["fold"][()]]
        keep = np.ones(len(folds), dtype=bool)
        if held_out is not None:
            if not group.attrs["fold_column"]:
                self.fold_of_rows()  # raises: why the clips have no usable folds
            wanted = list(held_out) if isinstance(held_out, list | tuple | set) else [held_out]
            unknown = [fold for fold in wanted if fold not in folds]
            if unknown:
                raise MelstoreError(
                    f"{self.path}: held_out={unknown[0]!r} is not a fold; "
                    f"folds: {', '.join(map(str, folds))}"
                )
            keep = np.array([fold not in wanted for fold in folds], dtype=bool)
        pooled = Moments.read(group)[keep].total()
        if not pooled.count[0]:
            raise MelstoreError(f"{self.path}: no clip is left to compute statistics from")
        return pooled.mean[0], pooled.std[0]

    def class_fold_counts(self) -> pd.DataFrame:
        """Clips per class (rows) and fold (columns), with totals."""
        import pandas as pd

        labels = (
            self.metadata[self.label_column].replace(UNLABELLED, UNLABELLED_NAME)
            if self.label_column
            else "all clips"
        )
        folds = self.fold_of_rows()
        table = pd.crosstab(
            pd.Series(labels, index=self.metadata.index, name=self.label_column or "class"),
            folds,
            margins=True,
            margins_name="total",
        )
        return table.rename_axis(columns=folds.name)

    def targets(self, column: str | None = None) -> np.ndarray:
        """An integer class index for every row (for training).

        Parameters
        ----------
        column : str, optional
            A numeric column is used as is; a text column is numbered by
            its sorted distinct values. Default: the dataset's own class ids
            (``classID``, ``target``), else the label column.

        Returns
        -------
        np.ndarray
            int64, one per row.

        Raises
        ------
        MelstoreError
            If the store has no such column, or a clip has no value in it (an
            unlabelled clip: ``''``), naming the first such clip.
        """
        if column is None:
            known = [c for c in (*TARGET_COLUMNS, *LABEL_COLUMNS) if c in self.metadata.columns]
            if not known:
                raise MelstoreError(
                    f"{self.path} has no class column ({', '.join(LABEL_COLUMNS)}); "
                    "name one with targets(column=...)"
                )
            column = known[0]
        values = self._column(column)
        missing = values.isna() | (values.astype(str) == "")
        if missing.any():
            raise MelstoreError(
                f"{self.path}: clip {self.metadata['clip_id'][missing].iat[0]!r} has no "
                f"{column} ({int(missing.sum())} clip(s) without one); select labelled rows, "
                f"e.g. store.select({column}=...), or give every file a label"
            )
        if values.dtype.kind in "iub":
            return values.to_numpy(dtype=np.int64)
        return np.unique(values.astype(str).to_numpy(), return_inverse=True)[1].astype(np.int64)

    def to_torch_dataset(
        self, rows: Rows = None, *, target: str | None = None, normalise=None, transform=None
    ):
        """A PyTorch map-style dataset of (features, target) over ``rows``.

        Needs PyTorch, which melstore does not install. Each worker of a
        ``DataLoader`` opens the file itself, so ``num_workers > 0`` works.

        Parameters
        ----------
        rows : array of int, DataFrame, or None
            The clips, e.g. a fold's train rows; None for every clip.
        target : str, optional
            The column the targets come from (see :meth:`targets`).
        normalise : fold, list of folds, or None
            Normalise each clip with the train statistics of this held-out
            fold, as :meth:`read` does; None for the stored values.
        transform : callable, optional
            Applied to each clip's features tensor, after normalising.

        Returns
        -------
        melstore.store.torchdata.ClipDataset
            Item ``i`` is ``(torch.float32 tensor of the clip, torch.int64 target)``.

        Raises
        ------
        ImportError
            If PyTorch is not installed.
        """
        try:
            from melstore.store.torchdata import ClipDataset
        except ModuleNotFoundError as err:
            if err.name != "torch":
                raise
            raise ImportError(
                "Store.to_torch_dataset needs PyTorch, which melstore does not install; "
                "run: pip install torch"
            ) from None
        rows = np.arange(len(self)) if rows is None else self._checked_rows(rows)
        opener = functools.partial(Store, self.path)
        normaliser = None if normalise is None else self.normaliser(normalise)
        return ClipDataset(
            opener, rows, self.targets(target)[rows], normaliser=normaliser, transform=transform
        )

    def _column(self, column: str) -> pd.Series:
        return metadata_column(self.metadata, column, where=self.path)

    def _checked_rows(self, rows: Rows) -> np.ndarray:
        pandas = sys.modules.get("pandas")  # not imported: rows are no DataFrame
        if pandas is not None and isinstance(rows, pandas.DataFrame):
            rows = rows.index
        rows = np.asarray(rows).reshape(-1)
        if rows.size and rows.dtype.kind not in "iu":
            raise MelstoreError(f"{self.path}: rows must be feature row numbers, got {rows[:3]}")
        if rows.size and not 0 <= rows.min() <= rows.max() < len(self):
            raise MelstoreError(
                f"{self.path}: rows run from 0 to {len(self) - 1}, got {rows.min()}..{rows.max()}"
            )
        return rows.astype(np.int64)


class Split(tuple):
    """One fold's (train rows, test rows); ``fold`` is the fold held out for testing."""

    fold: int | str

    def __new__(cls, train: np.ndarray, test: np.ndarray, *, fold: int | str):
        split = super().__new__(cls, (train, test))
        split.fold = fold
        return split

    @property
    def train(self) -> np.ndarray:
        return self[0]

    @property
    def test(self) -> np.ndarray:
        return self[1]


def metadata_column(metadata: pd.DataFrame, column: str, *, where: object) -> pd.Series:
    """One column of a store's metadata; ``where`` names the store in the error.

    Raises
    ------
    MelstoreError
        If there is no such column.
    """
    if column not in metadata.columns:
        raise MelstoreError(
            f"{where} has no metadata column {column!r}; columns: {', '.join(metadata.columns)}"
        )
    return metadata[column]


def find_source_column(columns: Collection[str], recorded: str = "") -> str | None:
    """The column of ``columns`` naming each clip's source recording, or None.

    ``recorded`` (the config's ``dataset.source_column``, else the layout's) if
    it is a column, else UrbanSound8K's ``fsID`` or ESC-50's ``src_file``.
    """
    known = [recorded, *LAYOUT_SOURCE_COLUMN.values()]
    return next((column for column in known if column and column in columns), None)


@dataclass(frozen=True)
class Folds:
    """The test fold of every row of a store's metadata (:func:`assign_folds`).

    Attributes
    ----------
    of_rows : np.ndarray
        One fold per row, as the fold column holds them (text as given), or
        1..``n_splits`` for the fallback split.
    column : str
        The fold column, or ``"fold (fallback)"``.
    """

    of_rows: np.ndarray
    column: str


def assign_folds(
    metadata: Mapping[str, np.ndarray],
    *,
    column: str | None = None,
    n_splits: int = 5,
    source: str | None = None,
    where: object,
) -> Folds:
    """The test fold of every row of a store's metadata (see :meth:`Store.folds`).

    ``metadata`` maps column names to numpy columns, text as str or UTF-8
    bytes (no pandas needed). ``source`` names the column of source
    recordings that the fallback split keeps together (:func:`find_source_column`).

    Raises
    ------
    MelstoreError
        If the column is missing or has empty values, or ``n_splits`` < 2.
    """
    if column is None and FOLD_COLUMN not in metadata:
        return _fallback_folds(metadata, n_splits, source=source)
    column = column or FOLD_COLUMN
    if column not in metadata:
        raise MelstoreError(
            f"{where} has no metadata column {column!r}; columns: {', '.join(metadata)}"
        )
    folds = np.asarray(metadata[column])
    empty = _text_cells(folds) == b""
    if empty.any():
        example = _text_cells(np.asarray(metadata["clip_id"])[empty][:1])[0].decode()
        raise MelstoreError(
            f"{where}: column {column!r} is empty for {int(empty.sum())} clip(s), e.g. "
            f"{example!r}; give every clip a fold"
        )
    return Folds(folds, column)


def _fallback_folds(
    metadata: Mapping[str, np.ndarray], n_splits: int, *, source: str | None
) -> Folds:
    if n_splits < 2:
        raise MelstoreError(f"n_splits must be at least 2, got {n_splits}")
    clip_ids = _text_cells(np.asarray(metadata["clip_id"]))
    label_column = next((c for c in LABEL_COLUMNS if c in metadata), None)
    if label_column is None:
        labels = np.zeros(len(clip_ids), dtype="S1")
    else:
        labels = _text_cells(np.asarray(metadata[label_column]))
    name = f"{FOLD_COLUMN} (fallback)"
    if source is not None:
        sources = _text_cells(np.asarray(metadata[source]))
        # a clip without a source value is a source of its own
        groups = np.where(sources != b"", sources, np.char.add(b"\0", clip_ids))
        return Folds(grouped_folds(labels, groups, n_splits) + 1, name)
    # raw digests sort as their hex strings do, in a tenth of the memory
    hashes = np.fromiter((hashlib.sha256(c).digest() for c in clip_ids), "S32", len(clip_ids))
    folds = np.zeros(len(clip_ids), dtype=np.int64)
    folds[np.lexsort((hashes, labels))] = np.arange(len(clip_ids)) % n_splits + 1
    return Folds(folds, name)


def _text_cells(values: np.ndarray) -> np.ndarray:
    """A column's cells as UTF-8 bytes, spelt as ``str()`` spells them; missing as b''.

    Bytes sort as their text does (UTF-8 keeps code point order).
    """
    return values.astype("S") if values.dtype.kind in "biu" else encode_text(values)


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int) -> np.ndarray:
    """The fold (0..n_splits-1) of each row, keeping each group in one fold, by class.

    scikit-learn's ``StratifiedGroupKFold(n_splits)`` without shuffling: the
    groups, in sorted order, are taken by decreasing spread of their class
    counts, and each goes to the fold where the classes' shares of the folds
    spread least (the emptiest fold on a tie).
    """
    group_names, group_of = np.unique(groups, return_inverse=True)
    class_of = np.unique(labels, return_inverse=True)[1]
    counts = np.zeros((len(group_names), class_of.max(initial=-1) + 1))
    np.add.at(counts, (group_of.reshape(-1), class_of.reshape(-1)), 1)
    per_class = counts.sum(axis=0)
    in_fold = np.zeros((n_splits, counts.shape[1]))
    sizes = [0.0] * n_splits
    fold_of_group = np.zeros(len(group_names), dtype=np.int64)
    each_fold = np.eye(n_splits)[:, :, None]
    for group in np.argsort(-counts.std(axis=1), kind="mergesort").tolist():
        proposed = in_fold[None] + each_fold * counts[group]  # (candidate fold, fold, class)
        spreads = (proposed / per_class).std(axis=1).mean(axis=1).tolist()
        best, best_spread, best_size = 0, np.inf, np.inf
        for fold, spread in enumerate(spreads):
            tied = abs(spread - best_spread) <= 1e-8 + 1e-5 * abs(best_spread)  # np.isclose
            if spread < best_spread or (tied and sizes[fold] < best_size):
                best, best_spread, best_size = fold, spread, sizes[fold]
        in_fold[best] += counts[group]
        sizes[best] += counts[group].sum()
        fold_of_group[group] = best
    return fold_of_group[group_of.reshape(-1)]


def _plain(value):
    """An HDF5 attribute as a builtin value."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value
