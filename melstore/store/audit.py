"""A leakage audit of a store's folds: what ``melstore audit`` and the report show.

Cross-validation scores are valid only if no test clip has a copy or a
sibling in training. The audit finds clips whose source audio is identical
(the stored checksum) in different folds, and clips that share a source
recording (UrbanSound8K ``fsID``, ESC-50 ``src_file``, or the CSV column the
config's ``dataset.source_column`` names) in different folds. It also tabulates
the class balance of the folds, which is not leakage but often explains a
strange fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from melstore.errors import MelstoreError

if TYPE_CHECKING:
    import pandas as pd

    from melstore.store.reader import Store

CHECKSUM_COLUMN = "source_xxh128"
# Clips named per leak in a line before "and N more".
CLIPS_SHOWN = 6


@dataclass(frozen=True)
class Leak:
    """Clips in more than one fold that share their audio or their source recording.

    Attributes
    ----------
    kind : str
        ``identical`` (the same audio checksum) or ``shared`` (the same value
        of the source column).
    column : str
        The column they share: ``source_xxh128`` or the source column.
    value : str
        The shared value.
    clips : list of (fold, path)
        Every clip with that value, by fold then path.
    """

    kind: str
    column: str
    value: str
    clips: list[tuple[object, str]]

    @property
    def folds(self) -> list:
        return sorted({fold for fold, _ in self.clips})

    def line(self) -> str:
        """One line naming the value and the clips, with their folds."""
        value = self.value[:16] if self.kind == "identical" else self.value
        named = [f"fold {fold} {path}" for fold, path in self.clips[:CLIPS_SHOWN]]
        if len(self.clips) > CLIPS_SHOWN:
            named.append(f"and {len(self.clips) - CLIPS_SHOWN} more")
        return f"{self.kind:<9} {self.column} {value}: " + ", ".join(named)


@dataclass
class Audit:
    """What :func:`audit_store` found.

    Attributes
    ----------
    store : str
        The store's path.
    fold_column : str
        The folds audited: ``fold``, or ``fold (fallback)`` (see ``Store.folds``).
    source_column : str or None
        The column naming source recordings, None when the store has none.
    leaks : list of Leak
        Identical audio across folds, then shared sources across folds.
    balance : pd.DataFrame
        Clips per class (rows) and fold (columns), with totals.
    n_clips : int
        Clips in the store.
    """

    store: str
    fold_column: str
    source_column: str | None
    leaks: list[Leak]
    balance: pd.DataFrame
    n_clips: int

    def count(self, kind: str) -> tuple[int, int]:
        """Leaks of one kind, and the clips they involve."""
        found = [leak for leak in self.leaks if leak.kind == kind]
        return len(found), sum(len(leak.clips) for leak in found)

    def summary(self) -> str:
        """One line: the store and the verdict."""
        return f"{self.store}: {self.verdict()}"

    def verdict(self) -> str:
        """Leakage found or not, with counts."""
        n_folds = len(self.balance.columns) - 1
        scope = f"{n_folds} folds ({self.fold_column}), {self.n_clips} clips"
        checked = "identical audio" + (
            f" and shared {self.source_column}" if self.source_column else ""
        )
        if not self.leaks:
            return f"no leakage across {scope}; checked {checked}"
        identical, identical_clips = self.count("identical")
        found = [f"{identical} identical audio ({identical_clips} clips)"]
        if self.source_column:
            shared, shared_clips = self.count("shared")
            found.append(f"{shared} shared {self.source_column} ({shared_clips} clips)")
        return f"LEAKAGE across folds: {', '.join(found)}; {scope}"

    def leak_table(self) -> pd.DataFrame:
        """One row per leaking clip: kind, column, value, fold and path."""
        import pandas as pd

        return pd.DataFrame(
            [
                (leak.kind, leak.column, leak.value, fold, path)
                for leak in self.leaks
                for fold, path in leak.clips
            ],
            columns=["kind", "column", "value", "fold", "path"],
        )


def audit_store(store: Store, *, source_column: str | None = None) -> Audit:
    """Audit the folds of ``store`` for leakage (see the module docstring).

    Parameters
    ----------
    store : Store
        An open store.
    source_column : str, optional
        The metadata column naming each clip's source recording; default:
        the one the store records (``fsID``, ``src_file``, or
        ``dataset.source_column``), if any.

    Raises
    ------
    MelstoreError
        If ``source_column`` is not a metadata column, or the folds are unusable.
    """
    table = store.metadata
    folds = store.fold_of_rows()
    if source_column is None:
        source_column = store.source_column
    elif source_column not in table.columns:
        raise MelstoreError(
            f"{store.path} has no metadata column {source_column!r} to audit sources by; "
            f"columns: {', '.join(table.columns)}"
        )
    leaks = _across_folds(table, folds, CHECKSUM_COLUMN, "identical")
    if source_column:
        leaks += _across_folds(table, folds, source_column, "shared")
    return Audit(
        store=str(store.path),
        fold_column=str(folds.name),
        source_column=source_column,
        leaks=leaks,
        balance=store.class_fold_counts(),
        n_clips=len(store),
    )


def _across_folds(table: pd.DataFrame, folds: pd.Series, column: str, kind: str) -> list[Leak]:
    """Groups of clips with one value of ``column`` that lie in more than one fold."""
    values = table[column]
    known = values.notna() & (values.astype(str) != "")
    frame = table.loc[known, ["path"]].assign(value=values[known].astype(str), fold=folds[known])
    spread = frame.groupby("value")["fold"].nunique()
    leaking = frame[frame["value"].isin(spread.index[spread > 1])]
    # one sort and one grouping: a dataset of many duplicates is not scanned once per duplicate
    leaking = leaking.sort_values(["value", "fold", "path"], kind="stable")
    leaks = []
    for value, clips in leaking.groupby("value", sort=False):
        pairs = list(zip(clips["fold"].tolist(), clips["path"].tolist(), strict=True))
        leaks.append(Leak(kind, column, value, pairs))
    return leaks
