"""Extraction of one shard: decode each file, compute its features, write a shard file.

Snakemake fans the work out over shards and feature sets. Inside a job, the
clips to compute go through one plain :class:`~concurrent.futures.ProcessPoolExecutor`
``map`` of :func:`compute_clip`, one worker per thread the job was given; the
job writes the outcomes in manifest order, so a shard is the same for any
worker count. Clips whose files are unchanged since the feature set's last
store are copied from it (:mod:`melstore.pipeline.reuse`), and so are its window
and filter bank; a clean build makes them in :func:`build_frontend`.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from melstore.errors import AudioError, MelstoreError
from melstore.features.audio import decode, file_checksum
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.pipeline.reuse import PreviousBuild, file_stats, rebuild_reason
from melstore.store.format import (
    FAILURE_COLUMNS,
    ChunkEncoder,
    Storage,
    StoreWriter,
    axes,
    columns_of,
    computed_table,
    library_versions,
)
from melstore.store.stats import MOMENTS_GROUP, Moments

log = logging.getLogger("melstore")

# Files handed to a worker at a time: fewer round trips, and workers still finish together.
CHUNKSIZE = 16


def extract_shard(
    *,
    entries: Sequence[Sequence[str]],
    root: str | Path,
    params: dict,
    out_path: str | Path,
    feature_set: str,
    storage: dict | None = None,
    on_error: str = "skip",
    processes: int = 1,
    code: str = "",
    previous: str | Path | None = None,
    state: str = "",
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
    out_path : str or Path
        The shard file to write (atomically).
    feature_set : str
        Name recorded in the shard's attributes.
    storage : dict, optional
        How the values are stored (:meth:`Storage.to_dict`); default exact float32.
    on_error : {'skip', 'fail'}
        ``skip`` records a failure row and goes on; ``fail`` raises.
    processes : int
        Worker processes computing clips.
    code : str
        Fingerprint of the extraction code, recorded so that a later run can
        tell whether this shard's clips may be reused.
    previous : str or Path, optional
        The feature set's last store, whose unchanged clips may be copied (see
        :mod:`melstore.pipeline.reuse`); None to compute every clip.
    state : str
        Digest of all the store is gathered from now (:meth:`Plan.gather_state`),
        recorded for its next build: if that finds it unchanged, it was forced.

    Raises
    ------
    AudioError
        With ``on_error='fail'``, for the first unusable file, naming it.
    """
    p = FeatureParams.from_dict(params)
    kept = Storage.from_dict(storage or {})
    build = {
        "params": p.to_dict(),
        "storage": kept.to_dict(),
        "versions": library_versions(),
        "code": code,
    }
    name = f"{feature_set}/{Path(out_path).stem}"
    earlier = PreviousBuild(previous, build=build, shard=Path(out_path).stem)
    stats = file_stats(root, [path for _, path, problem in entries if not problem])
    last = earlier.last_build
    changes = last.changes(build, entries, stats) if last else []
    forced = last is not None and not changes and last.state == state
    say(f"{name}: {rebuild_reason(last, changes, n_files=len(entries), forced=forced)}")
    copies = [
        None if forced else earlier.find(clip_id, path, stats.get(path))
        for clip_id, path, _ in entries
    ]
    todo = [entry for entry, copy in zip(entries, copies, strict=True) if copy is None]
    records, failures = [], []
    moments = Moments.empty(len(entries), p.frame_shape)  # row i: the i-th stored clip's
    with (
        StoreWriter(
            out_path, n_bins=p.n_bins, n_frames=p.n_frames, channels=p.channels, storage=kept
        ) as writer,
        earlier,
        forked_pool(processes) as pool,
    ):
        frontend = (
            Frontend.from_arrays(p, earlier.frontend) if earlier.frontend else build_frontend(p)
        )
        compute = functools.partial(
            compute_clip,
            extractor=FeatureExtractor(frontend) if todo else None,  # scipy: 0.3 s to import
            root=root,
            storage=kept,
            encode=ChunkEncoder(kept, p.clip_shape) if p.clip_shape else None,
        )
        progress = Progress(name, total=len(todo), reused=len(entries) - len(todo))
        computed = naming_a_dead_worker(pool.map(compute, todo, chunksize=CHUNKSIZE), todo)
        try:
            for (clip_id, path, _), copy in zip(entries, copies, strict=True):
                if copy is not None:
                    values = earlier.copy(copy, writer)
                    records.append(copy.record)
                    moments[len(records) - 1] = Moments.of_clip(
                        values, n_frames=copy.n_frames_valid
                    )
                    continue
                outcome = next(computed)
                if isinstance(outcome, str):
                    if on_error == "fail":
                        raise AudioError(f"{path}: {outcome}")
                    failures.append((clip_id, path, outcome))
                    log.warning("%s: %s", path, outcome)
                    progress.update(failed=True)
                    continue
                stored, record, error, clip_moments = outcome
                if isinstance(stored, bytes):
                    writer.append_chunk(stored)
                else:
                    writer.append(stored)
                records.append((clip_id, path, *record, *stats.get(path, (-1, -1)), error))
                moments[len(records) - 1] = clip_moments
                progress.update()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # map() queued every file: drop the rest
            raise
        writer.finish(
            metadata=computed_table(records),
            failures=dict(zip(FAILURE_COLUMNS, columns_of(failures, 3), strict=True)),
            attrs={"feature_set": feature_set, **build, "state": state},
            axes=axes(frontend.frequencies, params=p, frame_counts=writer.frame_counts),
            groups={
                "frontend": frontend.arrays(),
                MOMENTS_GROUP: moments[: len(records)].arrays(),
            },
        )
    progress.done()


def forked_pool(processes: int) -> ProcessPoolExecutor:
    """Worker processes forked from this one, which leave Ctrl-C to the job."""
    return ProcessPoolExecutor(
        max_workers=max(1, processes),
        mp_context=multiprocessing.get_context("fork"),
        initializer=signal.signal,  # Ctrl-C reaches the process group: the job alone reports it
        initargs=(signal.SIGINT, signal.SIG_IGN),
    )


def build_frontend(params: FeatureParams) -> Frontend:
    """The window and filter bank, built with librosa in a short-lived process.

    What it buys: librosa and numba never load into the job's own processes.
    A worker that built them kept about 170 MB more than the others, and the
    job's memory, which a cluster's limit counts, went from about 250 to 420 MB
    on 2 cores (docs/design.md).
    """
    with forked_pool(1) as builder:
        return builder.submit(Frontend.build, params).result()


def compute_clip(
    entry: tuple[str, str, str],
    *,
    extractor: FeatureExtractor,
    root: str | Path,
    storage: Storage,
    encode: ChunkEncoder | None,
) -> str | tuple[bytes | np.ndarray, tuple, float, Moments]:
    """One clip's stored values, computed columns, error and moments, or why it failed.

    ``entry`` is (clip_id, path, problem). The values come back as a store
    chunk's bytes when ``encode`` is given (fixed-length clips), else as an
    array. The moments are those of the stored values' valid frames.
    """
    _, path, problem = entry
    try:
        if problem:
            raise AudioError(problem)
        source = os.path.join(root, path)
        checksum = file_checksum(source)  # also reports an unreadable file
        y, info = decode(source, max_duration=extractor.params.duration)
        clip = extractor(y, sr=info.sample_rate)
        if not np.isfinite(clip.features).all():
            raise AudioError("features are not finite")
    except AudioError as err:
        return str(err)
    values, error = storage.quantise(clip.features, name=path)
    record = (
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
    moments = Moments.of_clip(values, n_frames=clip.n_frames_valid)
    return (values if encode is None else encode(values)), record, error, moments


def naming_a_dead_worker(outcomes: Iterator, todo: Sequence) -> Iterator:
    """The outcomes; if a worker process died, a one-line error naming where it was."""
    done = 0
    try:
        for outcome in outcomes:
            yield outcome
            done += 1
    except BrokenProcessPool:
        raise MelstoreError(
            f"a worker process died (out of memory, or a crash in native code) while computing "
            f"{todo[done][1]} or one of the {2 * CHUNKSIZE} files after it in the manifest"
        ) from None


def say(line: str) -> None:
    """Tell the terminal (Snakemake shows a job's stderr) and the job's log."""
    print(f"melstore: {line}", file=sys.stderr, flush=True)
    log.info("%s", line)


class Progress:
    """Files done / total, the rate and the time left, at most every few seconds."""

    def __init__(self, name: str, *, total: int, reused: int, every_seconds: float = 5.0):
        self.name, self.total, self.reused, self.every = name, total, reused, every_seconds
        self.done_count = self.failed = 0
        self.start = self.last = time.monotonic()

    def update(self, *, failed: bool = False) -> None:
        self.done_count += 1
        self.failed += failed
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._report(now)

    def done(self) -> None:
        self._report(time.monotonic())

    def _report(self, now: float) -> None:
        rate = self.done_count / max(now - self.start, 1e-9)
        left = self.total - self.done_count
        eta = f", {left / rate:.0f} s left" if left and rate > 0 else ""
        say(
            f"{self.name}: {self.done_count}/{self.total} files computed ({rate:.1f} files/s"
            f"{eta}), {self.failed} failed, {self.reused} reused unchanged"
        )
