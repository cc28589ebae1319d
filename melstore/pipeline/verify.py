"""Check a store against its sources (which files changed, vanished or appeared), and
against its computation: recompute clips in the current environment (the drift guard)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melstore.errors import AudioError
from melstore.features.audio import file_checksum
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.pipeline.extract import compute_clip
from melstore.pipeline.manifest import build_manifest
from melstore.store.format import (
    Storage,
    VersionChange,
    open_store,
    read_group,
    version_changes,
)
from melstore.store.reader import Store

# Default tolerance of a recomputed value (store units), unless its precision_db is coarser.
DRIFT_TOLERANCE = 0.01


@dataclass(frozen=True)
class SourceChange:
    """One difference between a store and its dataset folder."""

    kind: str  # "changed", "missing" or "new"
    path: str


def verify_sources(store: str | Path, *, root: str | Path | None = None) -> list[SourceChange]:
    """Re-hash the sources of ``store`` and list what differs since it was built.

    Parameters
    ----------
    store : str or Path
        A melstore store.
    root : str or Path, optional
        Where the dataset is now; default: the root recorded in the store.

    Returns
    -------
    list of SourceChange
        Stored clips whose file changed or is missing, then files the dataset
        layout would now include that the store has no row for, by path.
    """
    with open_store(store) as f:
        layout = f.attrs["dataset_layout"]
        root = Path(root if root is not None else f.attrs["dataset_root"])
        metadata_csv = f.attrs["dataset_metadata"] or None
        stored = read_group(f, "metadata")
        known = set(stored["path"]) | set(read_group(f, "failures")["path"])
    with ThreadPoolExecutor(max_workers=4) as pool:  # hashlib releases the GIL
        hashes = pool.map(lambda path: _checksum(root / path), stored["path"])
        changes = [
            SourceChange("missing" if now is None else "changed", path)
            for path, then, now in zip(stored["path"], stored["source_xxh128"], hashes, strict=True)
            if now != then
        ]
    current = build_manifest(root, layout, metadata_csv).table
    present = current.loc[current["problem"] == "", "path"]
    changes += [SourceChange("new", path) for path in present if path not in known]
    return changes


def _checksum(path: Path) -> str | None:
    """The file's checksum, or None if it cannot be read any more."""
    try:
        return file_checksum(path)
    except AudioError:
        return None


@dataclass(frozen=True)
class Drift:
    """How far recomputed clips are from the stored ones (:func:`recompute_clips`).

    Attributes
    ----------
    differences : dict of str to float
        The largest absolute difference of each recomputed clip, by clip id
        (infinite when the recomputed shape differs).
    skipped : dict of str to str
        Clips not compared, by clip id, and why (their file changed or fails now).
    tolerance : float
        The largest difference allowed.
    versions : dict of str to VersionChange
        The libraries whose version differs from the store's, by name.
    """

    differences: dict[str, float]
    skipped: dict[str, str]
    tolerance: float
    versions: dict[str, VersionChange]

    @property
    def largest(self) -> tuple[str, float]:
        """The clip with the largest difference, and that difference."""
        return max(self.differences.items(), key=lambda item: item[1], default=("", 0.0))

    @property
    def beyond(self) -> dict[str, float]:
        """The clips that differ by more than the tolerance."""
        return {clip: d for clip, d in self.differences.items() if not d <= self.tolerance}


def recompute_clips(
    store: str | Path,
    *,
    n_clips: int,
    root: str | Path | None = None,
    seed: int = 0,
    tolerance: float | None = None,
) -> Drift:
    """Recompute a seeded choice of clips from their audio, here and now, and compare.

    The window and filter bank are rebuilt with the installed librosa, and
    the features computed with the store's recorded parameters, so a library
    upgrade or a store whose values do not match its parameters shows up as
    a difference.

    Parameters
    ----------
    store : str or Path
        A melstore store.
    n_clips : int
        How many clips to recompute (all of them if the store has fewer).
    root : str or Path, optional
        Where the dataset is now; default: the root recorded in the store.
    seed : int
        Seed of the choice of clips.
    tolerance : float, optional
        The largest difference allowed; default: the larger of 0.01 and the
        store's ``precision_db``.
    """
    with Store(store) as opened:
        params = FeatureParams.from_dict(opened.params)
        root = Path(root if root is not None else opened.attrs["dataset_root"])
        if tolerance is None:
            tolerance = max(DRIFT_TOLERANCE, opened.precision_db or 0.0)
        chosen = np.random.default_rng(seed).choice(
            len(opened), size=min(n_clips, len(opened)), replace=False
        )
        columns = opened.metadata_columns
        extractor = FeatureExtractor(Frontend.build(params))
        differences, skipped = {}, {}
        for row in sorted(chosen.tolist()):
            clip_id, path = columns["clip_id"][row], columns["path"][row]
            outcome = compute_clip(
                (clip_id, path, ""), extractor=extractor, root=root, storage=Storage(), encode=None
            )
            if isinstance(outcome, str):
                skipped[clip_id] = f"cannot be computed now: {outcome}"
                continue
            values = outcome.values
            if outcome.columns["source_xxh128"] != columns["source_xxh128"][row]:
                skipped[clip_id] = f"{path} changed since the store was built"
                continue
            stored = opened.clip(row)
            differences[clip_id] = (
                float(np.max(np.abs(stored - values), initial=0.0))
                if stored.shape == values.shape
                else float("inf")
            )
        recorded = opened.versions
    return Drift(differences, skipped, tolerance, version_changes(recorded))
