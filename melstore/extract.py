"""Extraction of one shard: read, decode, compute features, write a shard file."""

from __future__ import annotations

import json
import logging
import math
import mmap
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from melstore.audio import decode, file_checksum
from melstore.errors import AudioError, MelstoreError
from melstore.features import FeatureExtractor, FeatureParams, Frontend
from melstore.shards import shard_key
from melstore.store import (
    FAILURE_COLUMNS,
    OpenStores,
    StoreWriter,
    library_versions,
    read_columns,
)

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
    "source_xxh128": "str",
}
# A shard's metadata: the clip, then its computed columns.
SHARD_COLUMNS = {"clip_id": "str", "path": "str", **COMPUTED_COLUMNS}


def extract_shard(
    *,
    entries: Sequence[Sequence[str]],
    root: str | Path,
    params: dict,
    out_path: str | Path,
    feature_set: str,
    on_error: str = "skip",
    processes: int = 1,
    code: str = "",
    reusable: Sequence[str | Path] = (),
    siblings: Sequence[str | Path] = (),
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
    on_error : {'skip', 'fail'}
        ``skip`` records a failure row and goes on; ``fail`` raises.
    processes : int
        Worker processes, forked after the imports so that each costs
        milliseconds, not the 0.3 s of a new job.
    code : str
        Fingerprint of the extraction code, recorded so that a later run can
        tell whether this shard's clips may be reused.
    reusable : sequence of str or Path
        Earlier shard files of this feature set: this shard's own previous
        version first, or shards it was split from or merged from. A clip whose
        file has the same path and the same content (checksum), in a shard built
        with the same parameters, library versions and code, is copied instead
        of computed: one changed file costs one decode, not a whole shard, and
        no clip is ever reused from a file whose bytes changed.
    siblings : sequence of str or Path
        Every earlier shard file of this feature set. The front end (window
        and filter bank) is read from one built alike, if any, instead of
        importing librosa to build it (1 s).

    Raises
    ------
    AudioError
        With ``on_error='fail'``, for the first unusable file, naming it.
    """
    p = FeatureParams.from_dict(params)
    build = {"params": p.to_dict(), "versions": library_versions(), "code": code}
    name = f"{feature_set}/{Path(out_path).stem}"
    reuse = _ReuseIndex(reusable, build=build)  # read and closed before the pool forks
    # only where a clip could be reused: otherwise the workers hash the files they decode
    checksums = _checksums(root, entries) if reuse.clips else {}
    earlier = [reuse.find(clip_id, path, checksums.get(path)) for clip_id, path, _ in entries]
    todo = [entry for entry, previous in zip(entries, earlier, strict=True) if previous is None]
    _say(f"{name}: {rebuild_reason(reuse.last_build, build, entries, checksums, out_path)}")
    frontend, new_checksums = _frontend(siblings, build=build, todo=todo, root=root)
    checksums.update(new_checksums)
    progress = _Progress(name, total=len(todo), reused=len(entries) - len(todo))
    records, failures = [], []
    with (
        _computed_in_order(
            todo,
            root=root,
            frontend=frontend,
            checksums=checksums,
            processes=processes,
        ) as computed,
        StoreWriter(out_path, n_bins=p.n_bins, n_frames=p.n_frames, channels=p.channels) as writer,
        OpenStores() as shards,
    ):
        for (clip_id, path, _), previous in zip(entries, earlier, strict=True):
            if previous is not None:
                reuse.copy(previous, shards, writer)
                records.append(previous.record)
                continue
            outcome = next(computed)
            if isinstance(outcome, str):
                if on_error == "fail":
                    raise AudioError(f"{path}: {outcome}")
                failures.append((clip_id, path, outcome))
                log.warning("%s: %s", path, outcome)
                progress.update(failed=True)
                continue
            features, record = outcome
            writer.append(features)
            records.append((clip_id, path, *record))
            progress.update()
        writer.finish(
            metadata=computed_table(records),
            failures=dict(zip(FAILURE_COLUMNS, columns_of(failures, 3), strict=True)),
            attrs={"feature_set": feature_set, **build},
            axes=axes(frontend.frequencies, params=p, frame_counts=writer.frame_counts),
            groups={"frontend": frontend.arrays()},
        )
    progress.done()


def _saved_frontend(paths: Sequence[str | Path], *, build: dict) -> Frontend | None:
    """The front end kept in a shard file built alike (same parameters, versions, code)."""
    for path in map(str, paths):
        try:
            with h5py.File(path, "r") as shard:
                if "frontend" in shard and _built_alike(shard, build):
                    saved = {name: data[()] for name, data in shard["frontend"].items()}
                    return Frontend.from_arrays(FeatureParams.from_dict(build["params"]), saved)
        except OSError:
            continue  # vanished, or not a complete HDF5 file
    return None


def _built_alike(shard: h5py.File, build: dict) -> bool:
    """Whether a shard file was built with these parameters, library versions and code."""
    attrs = shard.attrs
    return (
        attrs.get("code") == build["code"]
        and set(SHARD_COLUMNS) <= set(json.loads(shard["metadata"].attrs["columns"]))
        and json.loads(attrs["params"]) == build["params"]
        and json.loads(attrs["versions"]) == build["versions"]
    )


def _frontend(siblings, *, build: dict, todo, root) -> tuple[Frontend, dict[str, str]]:
    """The front end, from a shard built alike or built anew, and checksums of some of ``todo``.

    A front end is built in a short-lived forked process: librosa and
    scipy.signal add 120 MB to a process, which every worker forked later
    would inherit (the job's resident memory, counted per process, tripled on
    2 cores). Meanwhile this process hashes the files to compute, which the
    workers then need not do: the second core would idle for that second.
    """
    saved = _saved_frontend(siblings, build=build)
    if saved is not None:
        return saved, {}
    checksums = {}
    # an executor, not a Pool: it raises if the child dies instead of waiting forever
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        max_workers=1, mp_context=fork, initializer=signal.signal, initargs=_IGNORE_INTERRUPTS
    ) as executor:
        building = executor.submit(_build_frontend, build["params"])
        for _, path, problem in todo:
            if building.done():
                break
            if not problem:
                with suppress(AudioError):  # the worker records the failure
                    checksums[path] = file_checksum(os.path.join(root, path))
        return building.result(), checksums


def _build_frontend(params: dict) -> Frontend:
    return Frontend.build(FeatureParams.from_dict(params))


def _checksums(root: str | Path, entries: Sequence[Sequence[str]]) -> dict[str, str]:
    """The content checksum of every readable file of ``entries`` (the workers report the rest)."""
    checksums = {}
    for _, path, problem in entries:
        if not problem:
            with suppress(AudioError):
                checksums[path] = file_checksum(os.path.join(root, path))
    return checksums


# The worker processes' state, set before they fork (fork copies it for free).
_worker: dict = {}


# Ctrl-C reaches the whole process group: the job alone reports it, in one line.
_IGNORE_INTERRUPTS = (signal.SIGINT, signal.SIG_IGN)


def _start_worker(frontend: Frontend | None = None) -> None:
    signal.signal(*_IGNORE_INTERRUPTS)
    if frontend is not None:
        _worker["extractor"] = FeatureExtractor(frontend)


def _compute_clip(entry: tuple[str, str, str]) -> str | tuple[np.ndarray, tuple]:
    """One clip's features and computed columns, or the reason it failed."""
    clip_id, path, problem = entry
    p = _worker["extractor"].params
    try:
        if problem:
            raise AudioError(problem)
        source = os.path.join(_worker["root"], path)
        # file_checksum also reports an unreadable file
        checksum = _worker["checksums"].get(path) or file_checksum(source)
        y, info = decode(source, max_duration=p.duration)
        clip = _worker["extractor"](y, sr=info.sample_rate)
        if not np.isfinite(clip.features).all():
            raise AudioError("features are not finite")
    except AudioError as err:
        return str(err)
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
    return clip.features, record


# Files handed to a worker at a time: 16 halves the parent's CPU per clip against 4
# (0.27 -> 0.13 ms), and the workers still finish within ~0.1 s of each other.
_CHUNKSIZE = 16


@contextmanager
def _computed_in_order(
    todo, *, root, frontend: Frontend, checksums: dict[str, str], processes: int
) -> Iterator:
    """Outcomes of :func:`_compute_clip` for ``todo``, in order, from a fork pool if it pays.

    With a pool and a fixed clip shape, a clip's features are a view that is
    valid until the next outcome is drawn (:class:`_SlotRing`). A few files
    (a rerun after some changed) go to one worker that imports the DSP code
    itself (scipy, 0.3 s) while this process copies the unchanged clips.
    """
    _worker.update(root=root, checksums=checksums)
    if not todo:
        yield iter(())
        return
    if processes <= 1:
        _worker["extractor"] = FeatureExtractor(frontend)
        yield map(_compute_clip, todo)
        return
    context = multiprocessing.get_context("fork")
    if len(todo) < 2 * processes:
        pool, ring = {"max_workers": 1, "initializer": _start_worker, "initargs": (frontend,)}, None
    else:
        # built before the fork: scipy is imported once, and its pages are shared
        _worker["extractor"] = FeatureExtractor(frontend)
        pool = {"max_workers": processes, "initializer": _start_worker}
        shape = frontend.params.clip_shape
        ring = (
            None
            if shape is None
            else _SlotRing(context, shape=shape, n_slots=2 * processes * _CHUNKSIZE)
        )
    _worker["ring"] = ring
    # an executor, not a Pool: when a worker dies, a Pool waits forever for its files
    with ProcessPoolExecutor(mp_context=context, **pool) as executor:
        if ring is None:  # a few clips, or variable-length ones, go through the pipe
            outcomes = executor.map(_compute_clip, todo, chunksize=_CHUNKSIZE)
        else:
            outcomes = ring.drain(
                executor.map(_compute_into_ring, enumerate(todo), chunksize=_CHUNKSIZE)
            )
        try:
            yield _naming_a_dead_worker(outcomes, todo)
        except BaseException:
            if ring is not None:
                ring.abandon()  # workers waiting for a slot would hold up the shutdown
            # and wait: a pool thread alive at exit makes Python 3.12.1 print a traceback
            executor.shutdown(wait=True, cancel_futures=True)
            raise


def _naming_a_dead_worker(outcomes: Iterator, todo) -> Iterator:
    """The outcomes; if a worker process died, a one-line error naming where it was."""
    done = 0
    try:
        for outcome in outcomes:
            yield outcome
            done += 1
    except BrokenProcessPool:
        raise MelstoreError(
            f"a worker process died (out of memory, or a crash in native code) while computing "
            f"{todo[done][1]} or one of the {2 * _CHUNKSIZE} files after it in the manifest"
        ) from None


def _compute_into_ring(item: tuple[int, tuple[str, str, str]]) -> str | tuple[None, tuple]:
    """:func:`_compute_clip` for item ``index`` of the pool, its features left in the ring."""
    index, entry = item
    outcome = _compute_clip(entry)
    if isinstance(outcome, str):
        return outcome
    features, record = outcome
    _worker["ring"].put(index, features)
    return None, record


class _SlotRing:
    """Clip-sized slots in shared memory, through which forked workers hand back features.

    Sent through the pool's pipe, a 66 KB clip cost the parent 0.6 ms of CPU
    (pickling, and a pipe buffer of 64 KB): on 2 cores, 15 % of a job. Here the
    worker of item ``i`` writes slot ``i % n_slots`` once the parent has taken
    item ``i - n_slots``, and sends only the clip's record. With more slots than
    a pool chunk has items, the earliest unfinished item always finds its slot
    free, so the ring cannot deadlock.
    """

    def __init__(self, context, *, shape: tuple[int, ...], n_slots: int):
        # anonymous and shared: forked workers write the parent's pages
        buffer = mmap.mmap(-1, n_slots * math.prod(shape) * np.dtype(np.float32).itemsize)
        self.slots = np.frombuffer(buffer, dtype=np.float32).reshape(n_slots, *shape)
        self.taken = context.Value("q", 0, lock=False)  # guarded by ``changed``
        self.changed = context.Condition()

    def put(self, index: int, features: np.ndarray) -> None:
        """In a worker: store item ``index``'s features once its slot is free."""
        with self.changed:
            self.changed.wait_for(lambda: self.taken.value > index - len(self.slots))
        self.slots[index % len(self.slots)] = features

    def drain(self, outcomes: Iterator) -> Iterator:
        """In the parent: the outcomes in order, features as views of their slots.

        Drawing the next outcome hands the previous one's slot back to the workers.
        """
        for index, outcome in enumerate(outcomes):
            if not isinstance(outcome, str):
                outcome = (self.slots[index % len(self.slots)], outcome[1])
            yield outcome
            with self.changed:
                self.taken.value += 1
                self.changed.notify_all()

    def abandon(self) -> None:
        """In the parent, giving up: let every waiting worker write and go on."""
        with self.changed:
            self.taken.value = 2**62
            self.changed.notify_all()


@dataclass
class LastBuild:
    """What the last build of a shard was made from, to say what changed since."""

    build: dict  # its params, versions and code
    files: dict[str, tuple[str, str]]  # path -> (clip_id, checksum), over its trie path


class _ReuseIndex:
    """Clips of earlier shard files that may be copied instead of computed."""

    @dataclass(frozen=True)
    class Clip:
        shard: str
        row: int
        record: tuple
        frames: tuple[int, int] | None  # (offset, count) in a concatenated shard

    def __init__(self, paths: Sequence[str | Path], *, build: dict):
        self.clips: dict[tuple, _ReuseIndex.Clip] = {}
        self.last_build: LastBuild | None = None
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
                    if _built_alike(shard, build):
                        self._add(path, table)
            except (OSError, KeyError):
                continue  # vanished, or not a complete shard file: nothing to reuse

    def _add(self, path: str, table: dict[str, np.ndarray]) -> None:
        rows = zip(*(table[column].tolist() for column in SHARD_COLUMNS), strict=True)
        offsets, counts = table.get("frame_offset"), table.get("n_frames")
        for row, record in enumerate(rows):
            frames = None if offsets is None else (int(offsets[row]), int(counts[row]))
            key = (record[0], record[1], record[-1])  # id, path, checksum
            self.clips[key] = _ReuseIndex.Clip(path, row, record, frames)

    def find(self, clip_id: str, path: str, checksum: str | None) -> _ReuseIndex.Clip | None:
        """The earlier clip with this id, path and source checksum, if any."""
        return None if checksum is None else self.clips.get((clip_id, path, checksum))

    @staticmethod
    def copy(clip: _ReuseIndex.Clip, shards: OpenStores, writer: StoreWriter) -> None:
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


def _say(line: str) -> None:
    """Tell the terminal (Snakemake shows a job's stderr) and the job's log."""
    print(f"melstore: {line}", file=sys.stderr, flush=True)
    log.info("%s", line)


class _Progress:
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
        _say(
            f"{self.name}: {self.done_count}/{self.total} files computed ({rate:.1f} files/s"
            f"{eta}), {self.failed} failed, {self.reused} reused unchanged"
        )
