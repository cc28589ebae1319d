"""Check a store against its sources: which files changed, vanished or appeared."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from melstore.errors import AudioError
from melstore.features.audio import file_checksum
from melstore.pipeline.manifest import build_manifest
from melstore.store.format import open_store, read_group


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
