"""Extraction of one shard: read, decode, compute features, write a shard file."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from melstore.audio import decode, file_sha256
from melstore.errors import AudioError
from melstore.features import FeatureExtractor, FeatureParams, Frontend
from melstore.store import FAILURE_COLUMNS, StoreWriter, library_versions

log = logging.getLogger("melstore")

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
    "source_sha256": "str",
}


def extract_shard(
    *,
    entries: Sequence[Sequence[str]],
    root: str | Path,
    params: dict,
    frontend_path: str | Path,
    out_path: str | Path,
    feature_set: str,
    on_error: str = "skip",
) -> None:
    """Compute the features of a list of files into one shard file.

    Parameters
    ----------
    entries : sequence of (clip_id, path, problem)
        The shard's manifest rows; ``path`` is relative to ``root`` and a
        non-empty ``problem`` marks a file known to be unusable.
    root : str or Path
        The dataset folder (only read).
    params : dict
        The feature set's parameters (:meth:`FeatureParams.to_dict`).
    frontend_path : str or Path
        The feature set's saved :class:`Frontend`.
    out_path : str or Path
        The shard file to write (atomically).
    feature_set : str
        Name recorded in the shard's attributes.
    on_error : {'skip', 'fail'}
        ``skip`` records a failure row and goes on; ``fail`` raises.

    Raises
    ------
    AudioError
        With ``on_error='fail'``, for the first unusable file, naming it.
    """
    p = FeatureParams.from_dict(params)
    frontend = Frontend.load(frontend_path, p)
    extractor = FeatureExtractor(frontend)
    progress = _Progress(Path(out_path).stem, total=len(entries))
    records, failures = [], []
    with StoreWriter(out_path, n_bins=p.n_bins, n_frames=p.n_frames, channels=p.channels) as writer:
        for clip_id, path, problem in entries:
            try:
                if problem:
                    raise AudioError(problem)
                source = Path(root) / path
                checksum = file_sha256(source)  # also reports unreadable files
                y, info = decode(source, max_duration=p.duration)
                clip = extractor(y, sr=info.sample_rate)
                if not np.isfinite(clip.features).all():
                    raise AudioError("features are not finite")
            except AudioError as err:
                if on_error == "fail":
                    raise AudioError(f"{path}: {err}") from None
                failures.append((clip_id, path, str(err)))
                log.warning("%s: %s", path, err)
                progress.update(failed=True)
                continue
            writer.append(clip.features)
            records.append(
                (
                    clip_id,
                    path,
                    info.sample_rate,
                    info.channels,
                    info.format,
                    info.subtype,
                    info.duration,
                    clip.n_samples_valid,
                    clip.n_frames_valid,
                    clip.peak_db,
                    checksum,
                )
            )
            progress.update()
        writer.finish(
            metadata=computed_table(records),
            failures=dict(zip(FAILURE_COLUMNS, _columns(failures, 3), strict=True)),
            attrs={
                "feature_set": feature_set,
                "params": p.to_dict(),
                "versions": library_versions(),
            },
            axes=axes(frontend, n_frames=p.n_frames or max(writer.frame_counts, default=0)),
        )
    progress.done()


def computed_table(records: Sequence[tuple]) -> dict[str, np.ndarray]:
    """Rows of (clip_id, path, *computed columns) as typed columns."""
    dtypes = {"clip_id": "str", "path": "str", **COMPUTED_COLUMNS}
    return {
        name: np.asarray(values, dtype=object if dtype == "str" else dtype)
        for (name, dtype), values in zip(
            dtypes.items(), _columns(records, len(dtypes)), strict=True
        )
    }


def _columns(records: Sequence[tuple], width: int) -> list[list]:
    return [list(column) for column in zip(*records, strict=True)] or [[] for _ in range(width)]


def axes(frontend: Frontend, *, n_frames: int) -> dict[str, np.ndarray]:
    """The store's axis datasets: row frequencies and frame-centre times."""
    return {
        "frequency": frontend.frequencies,
        "time": frontend.params.frame_times(n_frames),
    }


class _Progress:
    """Log files done / total and the rate, at most every few seconds."""

    def __init__(self, name: str, *, total: int, every_seconds: float = 5.0):
        self.name, self.total, self.every = name, total, every_seconds
        self.done_count = self.failed = 0
        self.start = self.last = time.monotonic()

    def update(self, *, failed: bool = False) -> None:
        self.done_count += 1
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now)

    def done(self) -> None:
        self._log(time.monotonic())

    def _log(self, now: float) -> None:
        rate = self.done_count / max(now - self.start, 1e-9)
        log.info(
            "%s: %d/%d files (%.1f files/s), %d failed",
            self.name,
            self.done_count,
            self.total,
            rate,
            self.failed,
        )
