"""Extraction of one shard: decode each file, compute its features, write a shard file.

Snakemake fans the work out over shards and feature sets. Inside a job, the
clips to compute go through one plain :class:`~concurrent.futures.ProcessPoolExecutor`
``map`` of :func:`compute_clip`, one worker per thread the job was given; the
job writes the outcomes in shard-key order, so a shard is the same for any
worker count. Clips whose files are unchanged since the shard's previous files
are copied from them (:mod:`melstore.pipeline.reuse`), and so are their window
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from melstore.errors import AudioError, MelstoreError
from melstore.features.audio import file_checksum
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.streaming import file_features
from melstore.pipeline.reuse import PreviousBuild, file_stats, rebuild_reason, shard_of
from melstore.store.format import (
    ERROR_COLUMN,
    FAILURE_COLUMNS,
    SHARD_COLUMNS,
    ChunkEncoder,
    Storage,
    StoreWriter,
    axes,
    columns_of,
    computed_table,
)
from melstore.store.stats import MOMENTS_GROUP, Moments

log = logging.getLogger("melstore")

# Files handed to a worker at a time: fewer round trips, and workers still finish together.
CHUNKSIZE = 16
# Where shard files lie, relative to the index's folder: <SHARD_FOLDER>/<set>/<shard>-<digest>.h5.
SHARD_FOLDER = "shards"


@dataclass(frozen=True)
class ShardJob:
    """One extraction job: a shard's files, how to compute them, and where to write them.

    Attributes
    ----------
    entries : sequence of (clip_id, path, problem)
        The shard's manifest rows, in shard-key order; ``path`` is relative to
        ``root`` and a non-empty ``problem`` marks a file known to be unusable.
    root : str or Path
        The dataset folder (only read).
    out_path : Path
        The shard file to write (atomically).
    feature_set : str
        Name recorded in the shard's attributes.
    build : dict
        The ``params``, ``storage``, ``versions`` and ``code`` of the build
        (:data:`melstore.pipeline.reuse.BUILD_PARTS`).
    digest : str
        The digest in the shard's name, recorded in it for the index to check.
    on_error : {'skip', 'fail'}
        ``skip`` records a failure row and goes on; ``fail`` raises.
    processes : int
        Worker processes computing clips.
    previous : str or Path, optional
        The feature set's index, whose previous shard files may lend unchanged
        clips (:mod:`melstore.pipeline.reuse`); None to compute every clip.
    """

    entries: Sequence[tuple[str, str, str]]
    root: str | Path
    out_path: Path
    feature_set: str
    build: dict
    digest: str
    on_error: str = "skip"
    processes: int = 1
    previous: str | Path | None = None

    @property
    def name(self) -> str:
        """The shard file's name relative to the index's folder, as the index lists it."""
        return f"{SHARD_FOLDER}/{self.feature_set}/{self.out_path.name}"


@dataclass(frozen=True)
class Computed:
    """A clip computed by a worker: what to store, its metadata columns, error and moments."""

    values: bytes | np.ndarray  # a store chunk's bytes (fixed length), else the array
    columns: dict  # COMPUTED_COLUMNS
    error: float
    moments: Moments


@dataclass
class ShardContents:
    """What a shard job has written so far, besides the features: its tables and moments."""

    rows: list[dict] = field(default_factory=list)  # SHARD_COLUMNS of each stored clip
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # clip_id, path, reason
    moments: list[Moments] = field(default_factory=list)

    def finish(
        self, writer: StoreWriter, *, job: ShardJob, frontend: Frontend, params: FeatureParams
    ) -> None:
        """Write the shard's tables, axes, front end, clip moments and build: it is complete."""
        writer.finish(
            metadata=computed_table([tuple(row[c] for c in SHARD_COLUMNS) for row in self.rows]),
            failures=dict(zip(FAILURE_COLUMNS, columns_of(self.failures, 3), strict=True)),
            attrs={"feature_set": job.feature_set, **job.build, "digest": job.digest},
            axes=axes(frontend.frequencies, params=params, frame_counts=writer.frame_counts),
            groups={
                "frontend": frontend.arrays(),
                MOMENTS_GROUP: Moments.concatenate(
                    [Moments.empty(0, params.frame_shape), *self.moments]
                ).clip_arrays(),
            },
        )


def extract_shard(job: ShardJob) -> None:
    """Compute, or copy from the shard's previous files, every clip of ``job`` into its shard file.

    Raises
    ------
    AudioError
        With ``on_error='fail'``, for the first unusable file, naming it.
    """
    p = FeatureParams.from_dict(job.build["params"])
    kept = Storage.from_dict(job.build["storage"])
    name = f"{job.feature_set}/{job.out_path.stem}"
    stats = file_stats(job.root, [path for _, path, problem in job.entries if not problem])
    with (
        PreviousBuild(
            job.previous, build=job.build, shard=shard_of(job.name), name=job.name
        ) as earlier,
        StoreWriter(
            job.out_path, n_bins=p.n_bins, n_frames=p.n_frames, channels=p.channels, storage=kept
        ) as writer,
        forked_pool(job.processes) as pool,
    ):
        copies = plan_copies(job, earlier, stats, name=name)
        frontend = (
            Frontend.from_arrays(p, earlier.frontend) if earlier.frontend else build_frontend(p)
        )
        contents = ShardContents()
        todo = [entry for entry, copy in zip(job.entries, copies, strict=True) if copy is None]
        progress = Progress(name, total=len(todo), reused=len(job.entries) - len(todo))
        compute = functools.partial(
            compute_clip,
            extractor=FeatureExtractor(frontend) if todo else None,  # scipy: 0.3 s to import
            root=job.root,
            storage=kept,
            encode=ChunkEncoder(kept, p.clip_shape) if p.clip_shape else None,
        )
        computed = naming_a_dead_worker(pool.map(compute, todo, chunksize=CHUNKSIZE), todo)
        try:
            for entry, copy in zip(job.entries, copies, strict=True):
                if copy is not None:
                    contents.moments.append(earlier.copy(copy, writer))
                    contents.rows.append(copy.columns)
                else:
                    store_outcome(entry, next(computed), job, writer, contents, stats)
                    progress.update(failed=len(contents.failures))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # map() queued every file: drop the rest
            raise
        contents.finish(writer, job=job, frontend=frontend, params=p)
    progress.done()


def plan_copies(
    job: ShardJob, earlier: PreviousBuild, stats: dict, *, name: str
) -> list[PreviousBuild.Clip | None]:
    """The previous clip to copy for each entry (None: compute it), having said why."""
    last = earlier.last_build
    changes = last.changes(job.build, job.entries, stats) if last else []
    reason = rebuild_reason(last, changes, n_files=len(job.entries), forced=earlier.forced)
    say(f"{name}: {reason}")
    return [earlier.find(clip_id, path, stats.get(path)) for clip_id, path, _ in job.entries]


def store_outcome(
    entry: tuple[str, str, str],
    outcome: Computed | str,
    job: ShardJob,
    writer: StoreWriter,
    contents: ShardContents,
    stats: dict,
) -> None:
    """Write a computed clip, or record why its file failed (raise, with ``on_error='fail'``)."""
    clip_id, path, _ = entry
    if isinstance(outcome, str):
        if job.on_error == "fail":
            raise AudioError(f"{path}: {outcome}")
        contents.failures.append((clip_id, path, outcome))
        log.warning("%s: %s", path, outcome)
        return
    if isinstance(outcome.values, bytes):
        writer.append_chunk(outcome.values)
    else:
        writer.append(outcome.values)
    size, mtime_ns = stats.get(path, (-1, -1))
    contents.rows.append(
        {
            "clip_id": clip_id,
            "path": path,
            **outcome.columns,
            "source_size": size,
            "source_mtime_ns": mtime_ns,
            ERROR_COLUMN: outcome.error,
        }  # fmt: skip
    )
    contents.moments.append(outcome.moments)


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
) -> Computed | str:
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
        computed = file_features(extractor, source)
        clip, info = computed.clip, computed.info
        if not np.isfinite(clip.features).all():
            raise AudioError("features are not finite")
    except AudioError as err:
        return str(err)
    values, error = storage.quantise(clip.features, name=path)
    columns = {
        "native_sr": info.sample_rate,
        "native_channels": info.channels,
        "native_format": info.format,
        "native_subtype": info.subtype,
        "native_duration": info.duration,
        "n_samples_valid": clip.n_samples_valid,
        "n_frames_valid": clip.n_frames_valid,
        "peak_db": clip.peak_db,
        "source_xxh128": checksum,
    }
    return Computed(
        values if encode is None else encode(values),
        columns,
        error,
        Moments.of_clip(values, n_frames=clip.n_frames_valid),
    )


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
    """Files done / total, the rate and the time left, at most every few seconds.

    ``reused`` counts the files copied from a previous build; None where
    nothing can be reused (``melstore features``), and the line omits it.
    """

    def __init__(self, name: str, *, total: int, reused: int | None, every_seconds: float = 5.0):
        self.name, self.total, self.reused, self.every = name, total, reused, every_seconds
        self.done_count = self.failed = 0
        self.start = self.last = time.monotonic()

    def update(self, *, failed: int) -> None:
        """One more file done; ``failed`` counts the failures so far."""
        self.done_count += 1
        self.failed = failed
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
        reused = "" if self.reused is None else f", {self.reused} reused unchanged"
        say(
            f"{self.name}: {self.done_count}/{self.total} files computed ({rate:.1f} files/s"
            f"{eta}), {self.failed} failed{reused}"
        )
