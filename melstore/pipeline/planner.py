"""Predict a build before it starts: CPU and wall time, jobs, store bytes and memory.

The planner times a seeded sample of the dataset's files through the real
extraction code (:func:`melstore.pipeline.extract.compute_clip`, one thread,
in this process), at least one file of each format and sample-rate group found
in a larger sample of headers. It scales the sample by the dataset's share of
each group. What a sample cannot show, a job's start-up, the workers' overhead,
Snakemake's parse and the gather's tables, are the constants below, measured on a
2-core machine with local disk (``python -m bench.planner``; docs/scaling.md).
"""

from __future__ import annotations

import functools
import math
import os
import time
import tracemalloc
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from melstore.errors import AudioError, MelstoreError
from melstore.features.audio import file_checksum, read_header
from melstore.features.extractor import FeatureExtractor, Frontend
from melstore.pipeline import demo
from melstore.pipeline.jobs import EXTRACT_THREADS
from melstore.pipeline.memory import clip_arrays_mb, job_memory_mb
from melstore.pipeline.plan import Plan
from melstore.pipeline.runtime import pin_threads, retain_freed_memory
from melstore.store.format import ChunkEncoder
from melstore.store.stats import Moments

# Files whose headers are read to find the format and sample-rate groups.
HEADER_SAMPLE = 400
# Files read in full, in parallel as the workers read, to time the disk as it serves them now.
READ_SAMPLE = 64
# Timing stops after this much CPU, or wall time on a slow disk, per feature set, once every
# group has a timed file...
TIMING_BUDGET_SECONDS = 3.0
TIMING_BUDGET_WALL_SECONDS = 8.0
# ... or at this many files.
TIMED_SAMPLE = 400

# Measured constants of the model (bench/results/planner.md).
SNAKEMAKE_SECONDS = 1.6  # snakemake's start-up and DAG, whatever the dataset
PARSE_SECONDS_PER_FILE = 8e-6  # listing, stat-ing and sharding, per file and invocation
JOB_SECONDS = 1.0  # an extraction job's start-up, imports and filter bank
WORKER_EFFICIENCY = 0.9  # a worker's clips per second, relative to this process's
GATHER_SECONDS = 1.0  # the gather's start-up
GATHER_SECONDS_PER_CLIP = 25e-6  # its tables and statistics, per clip
METADATA_BYTES_PER_CLIP = 200  # a stored clip's rows of the index's tables
SHARD_TABLE_BYTES_PER_CLIP = 170  # its row of its shard file's table, besides its moments
STORE_FIXED_BYTES = 40_000  # an index's or a shard file's HDF5 structure, besides its front end
SLOW_READ_MS = 1.0  # a file read slower than this is not from the page cache
GATHER_BASE_MB = 150  # the gather's process
GATHER_MB_PER_CLIP = 0.5e-3  # its tables and index, per clip of the dataset
MANIFEST_BASE_MB = 150  # the manifest job's process, with pandas
MANIFEST_MB_PER_CLIP = 0.5e-3  # its listing and tables, per file of the dataset

# The job length aimed at on a cluster.
CLUSTER_JOB_SECONDS = 120
# The workflow checkout melstore is installed from (pip install -e .), and its cluster profile.
WORKFLOW = Path(__file__).resolve().parents[2]
SLURM_PROFILE = WORKFLOW / "profiles/slurm/profile.yaml"
SHARD_SIZE_RANGE = (1000, 50000)


@dataclass
class FileGroup:
    """Files of one format and sample rate, as the header sample found them."""

    format: str
    sample_rate: int
    share: float  # of the header sample
    timed: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per clip, per feature set


@dataclass
class SetPrediction:
    """What building one feature set's store costs."""

    cpu_seconds: float
    wall_seconds: float
    jobs: int
    store_bytes: int
    precision_db: float | None
    mem_mb: int
    cpu_ms_per_clip: float  # per file of the dataset, over its groups
    bytes_per_clip: float  # of features, per stored clip
    worker_peak_mb: float  # the largest sampled clip's arrays, or the longest file's (variable)
    gather_seconds: float


@dataclass
class Prediction:
    """A whole build's prediction; :meth:`to_dict` is what ``melstore plan --json`` prints."""

    files: int
    cores: int
    shard_size: int
    feature_sets: dict[str, SetPrediction]
    groups: list[FileGroup]
    unreadable_share: float
    read_ms_per_file: float  # reading a file in full, as the disk and its cache serve it now
    parse_seconds: float
    sample_seconds: float
    cluster_threads: int  # CPUs of an extraction job in the cluster profile

    @property
    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds for s in self.feature_sets.values())

    @property
    def wall_seconds(self) -> float:
        return self.parse_seconds + sum(s.wall_seconds for s in self.feature_sets.values())

    @property
    def jobs(self) -> int:
        return sum(s.jobs for s in self.feature_sets.values())

    @property
    def mem_mb(self) -> int:
        return max(s.mem_mb for s in self.feature_sets.values())

    def recommended_shard_size(self) -> int:
        """Files per extraction job so that one runs about 2 min on the cluster profile's CPUs."""
        cpu_per_clip = max(s.cpu_ms_per_clip for s in self.feature_sets.values()) / 1e3
        rate = self.cluster_threads * WORKER_EFFICIENCY / max(cpu_per_clip, 1e-6)
        size = _round_to_two_digits(CLUSTER_JOB_SECONDS * rate)
        return int(min(max(size, SHARD_SIZE_RANGE[0]), SHARD_SIZE_RANGE[1]))

    @property
    def gather_mem_mb(self) -> int:
        """The gather's memory, which grows with the dataset (its tables), not the features."""
        return int(math.ceil(GATHER_BASE_MB + self.files * GATHER_MB_PER_CLIP))

    @property
    def manifest_mem_mb(self) -> int:
        """The manifest job's memory: it lists the dataset and reads its CSV."""
        return int(math.ceil(MANIFEST_BASE_MB + self.files * MANIFEST_MB_PER_CLIP))

    def slurm_resources(self) -> dict[str, dict[str, int]]:
        """The SLURM requests of an extraction job (at the recommended shard size), the
        manifest job and a gather.

        With headroom: memory 1.5x (a clip longer than the sample's), run time
        3x and at least 10 min (slower nodes and disks).
        """
        shard_size = self.recommended_shard_size()
        worst = max(self.feature_sets.values(), key=lambda s: s.cpu_ms_per_clip)
        seconds = JOB_SECONDS + shard_size * worst.cpu_ms_per_clip / 1e3 / (
            self.cluster_threads * WORKER_EFFICIENCY
        )
        mem = max(
            job_memory_mb(s.worker_peak_mb, threads=self.cluster_threads, shard_clips=shard_size)
            for s in self.feature_sets.values()
        )
        gather = max(s.gather_seconds for s in self.feature_sets.values())
        return {
            "extract": {
                "cpus_per_task": self.cluster_threads,
                "mem_mb": _headroom_mb(mem),
                "runtime": _headroom_minutes(seconds),
            },
            "manifest": {
                "mem_mb": _headroom_mb(self.manifest_mem_mb),
                "runtime": _headroom_minutes(self.parse_seconds),
            },
            "gather": {
                "mem_mb": _headroom_mb(self.gather_mem_mb),
                "runtime": _headroom_minutes(gather),
            },
        }

    def lines(self) -> list[str]:
        """The prediction for people: a table per feature set, and the cluster settings."""
        sampled = sum(group.timed for group in self.groups)
        rows = [
            (name, s.cpu_seconds, s.wall_seconds, s.jobs, s.store_bytes, s.precision_db, s.mem_mb)
            for name, s in self.feature_sets.items()
        ]
        width = max(len("feature set"), *(len(name) for name in self.feature_sets))
        slurm = self.slurm_resources()
        return [
            f"{self.files} files: {len(self.groups)} format/rate group(s), {sampled} clips timed "
            f"per feature set, sampled in {self.sample_seconds:.1f} s; a file is read in "
            f"{self.read_ms_per_file:.2f} ms now; at --cores {self.cores}:",
            "",
            f"{'feature set':<{width}}  {'CPU':>9}  {'wall':>9}  {'jobs':>5}  "
            f"{'store':>9}  {'storage':<18}  {'memory/job':>10}",
            *(
                f"{name:<{width}}  {_duration(cpu):>9}  {_duration(wall):>9}  {jobs:>5}  "
                f"{_bytes(size):>9}  {_storage(precision):<18}  {mem:>7} MB"
                for name, cpu, wall, jobs, size, precision, mem in rows
            ),
            f"{'total':<{width}}  {_duration(self.cpu_seconds):>9}  "
            f"{_duration(self.wall_seconds):>9}  {self.jobs:>5}  "
            f"{_bytes(sum(r[4] for r in rows)):>9}  {'':<18}  {self.mem_mb:>7} MB",
            "",
            *(
                [
                    f"Reading a file takes {self.read_ms_per_file:.1f} ms: the disk is cold or "
                    "slow, and a long run may read slower still; take the wall time as a "
                    "lower bound."
                ]
                if self.read_ms_per_file > SLOW_READ_MS
                else []
            ),
            f"The wall time includes snakemake's start and parse, {self.parse_seconds:.1f} s "
            f"per invocation (a no-op rerun costs about that). A gather needs "
            f"{self.gather_mem_mb} MB.",
            f"On a cluster (profiles/slurm, {self.cluster_threads} CPUs per extraction job), "
            f"aim at jobs of about {CLUSTER_JOB_SECONDS // 60} min; in your config:",
            f"  shard_size: {self.recommended_shard_size()}",
            "and in profiles/slurm/profile.yaml (runtime in minutes):",
            "  set-resources:",
            *(
                line
                for rule, request in slurm.items()
                for line in [f"    {rule}:", *(f"      {k}: {v}" for k, v in request.items())]
            ),
        ]

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "cores": self.cores,
            "cpu_seconds": round(self.cpu_seconds, 1),
            "wall_seconds": round(self.wall_seconds, 1),
            "jobs": self.jobs,
            "store_bytes": {name: s.store_bytes for name, s in self.feature_sets.items()},
            "mem_mb": self.mem_mb,
            "gather_mem_mb": self.gather_mem_mb,
            "shard_size": self.shard_size,
            "recommended_shard_size": self.recommended_shard_size(),
            "slurm": self.slurm_resources(),
            "feature_sets": {name: asdict(s) for name, s in self.feature_sets.items()},
            "groups": [asdict(group) for group in self.groups],
            "unreadable_share": self.unreadable_share,
            "read_ms_per_file": round(self.read_ms_per_file, 3),
            "parse_seconds": round(self.parse_seconds, 2),
            "sample_seconds": round(self.sample_seconds, 2),
        }


def load_plan(configfile: str | Path) -> Plan:
    """The plan ``snakemake --configfile CONFIGFILE`` makes, from this checkout's workflow.

    Raises
    ------
    MelstoreError
        If melstore is not installed from its workflow checkout, or the config is bad.
    """
    import yaml
    from snakemake.utils import update_config

    default, schema = WORKFLOW / "config.yaml", WORKFLOW / "workflow/schemas/config.schema.yaml"
    if not (default.is_file() and schema.is_file()):
        raise MelstoreError(
            f"melstore plan needs the workflow checkout melstore runs from (pip install -e .); "
            f"{default} is missing"
        )
    config = yaml.safe_load(default.read_text())
    try:
        update_config(config, yaml.safe_load(Path(configfile).read_text()) or {})
    except (yaml.YAMLError, AttributeError) as err:
        raise MelstoreError(f"{configfile}: not a YAML mapping: {err}") from None
    return Plan.from_config(config, schema_path=schema)


def predict(
    plan: Plan,
    *,
    cores: int,
    seed: int = 0,
    header_sample: int = HEADER_SAMPLE,
    timed_sample: int = TIMED_SAMPLE,
) -> Prediction:
    """Time a sample of ``plan``'s files and predict what building its stores costs.

    Parameters
    ----------
    plan : Plan
        The checked configuration (its manifest, feature sets, storage and shards).
    cores : int
        The ``--cores`` that ``snakemake`` will be given.
    seed : int
        Seed of the sample: the same seed times the same files.
    header_sample, timed_sample : int
        Files whose headers are read, and files timed per feature set.

    Raises
    ------
    MelstoreError
        If the dataset has no usable file, or no sampled file has a readable header.
    """
    started = time.monotonic()
    pin_threads(1)  # as a worker runs: one thread, and freed memory kept for the next clip
    retain_freed_memory()
    usable = _usable_files(plan)
    picked = [usable[i] for i in np.random.default_rng(seed).permutation(len(usable))]
    members = _header_groups(plan.root, picked[:header_sample])
    n_headers = min(header_sample, len(usable))
    groups = {key: FileGroup(*key, share=len(paths) / n_headers) for key, paths in members.items()}
    # not seeded: a file this planner read before would be served from the page cache
    unseen = np.random.default_rng().choice(len(usable), min(READ_SAMPLE, len(usable)), False)
    read_seconds = _read_seconds(plan.root, [usable[i] for i in unseen], threads=job_threads(cores))
    order = _round_robin(members)[: max(timed_sample, len(members))]
    variable = any(params.duration is None for params in plan.feature_sets.values())
    # a variable-length set's memory follows its longest file, which a sample may miss
    longest = plan.longest_seconds(list(range(len(plan.manifest.table)))) if variable else 0.0
    feature_sets = {
        name: _predict_set(
            plan,
            name,
            _sample_set(plan, name, groups, order),
            n_files=len(usable),
            read_per_file=read_seconds,
            cores=cores,
            longest_seconds=longest,
        )
        for name in plan.feature_sets
    }
    return Prediction(
        files=len(plan.manifest.table),
        cores=cores,
        shard_size=plan.config["shard_size"],
        feature_sets=feature_sets,
        groups=list(groups.values()),
        unreadable_share=1 - sum(g.share for g in groups.values()),
        read_ms_per_file=read_seconds * 1e3,
        parse_seconds=SNAKEMAKE_SECONDS + PARSE_SECONDS_PER_FILE * len(plan.manifest.table),
        sample_seconds=time.monotonic() - started,
        cluster_threads=cluster_threads(),
    )


def job_threads(cores: int) -> int:
    """An extraction job's workers at ``--cores``: the rule's threads, as Snakemake lowers them."""
    return min(EXTRACT_THREADS, cores)


def cluster_threads() -> int:
    """The CPUs of an extraction job in the SLURM profile (its ``set-threads``)."""
    import yaml

    return int(yaml.safe_load(SLURM_PROFILE.read_text())["set-threads"]["extract"])


@dataclass(frozen=True)
class ClipTiming:
    cpu_seconds: float
    stored_bytes: int  # 0 when the clip failed
    peak_bytes: int  # of the arrays computing it allocated


def _usable_files(plan: Plan) -> list[str]:
    """The manifest's files without a known problem; an error if there are none to time."""
    table = plan.manifest.table
    usable = table.loc[table["problem"] == "", "path"].tolist()
    if not usable:
        raise MelstoreError(f"no usable audio file under {plan.root} to time")
    if demo.is_demo_root(plan.root) and not (plan.root / usable[0]).exists():
        raise MelstoreError(
            f"{plan.root}: the demo is generated by the workflow's first run "
            "(snakemake --cores 8); plan it after that, or plan your own dataset"
        )
    return usable


def _header_groups(root: Path, picked: list[str]) -> dict[tuple[str, int], list[str]]:
    """The ``picked`` files with a readable header, by (format, sample rate), sorted."""
    members: dict[tuple[str, int], list[str]] = defaultdict(list)
    for path in picked:
        try:
            info = read_header(os.path.join(root, path))
        except AudioError:
            continue  # an unreadable file costs next to nothing and stores nothing
        members[(info.format, info.sample_rate)].append(path)
    if not members:
        raise MelstoreError(f"none of {len(picked)} sampled files under {root} is readable")
    return dict(sorted(members.items()))


def _read_seconds(root: Path, paths: list[str], *, threads: int) -> float:
    """A worker's wall time to read a file in full (its checksum) while ``threads`` workers do."""

    def read(path: str) -> None:
        with suppress(AudioError):  # an unreadable file is the job's to report
            file_checksum(os.path.join(root, path))

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as readers:  # file reads and hashing release the GIL
        list(readers.map(read, paths))
    return (time.perf_counter() - started) * threads / max(1, len(paths))


def _round_robin(members: dict[tuple, list[str]]) -> list[tuple[tuple, str]]:
    """(group, file) pairs taking one file of each group in turn."""
    longest = max(len(paths) for paths in members.values())
    return [
        (key, paths[position])
        for position in range(longest)
        for key, paths in members.items()
        if position < len(paths)
    ]


def _time_clips(
    plan: Plan, params, storage, order: list[tuple[tuple, str]], *, n_groups: int
) -> tuple[dict[tuple, list[ClipTiming]], int]:
    """CPU time, stored bytes and memory of files in ``order``, through the real extraction code.

    Timing stops once every group has a file and the budget is spent. Also
    returns the bytes of the window and filter bank, which every store keeps.
    """
    from melstore.pipeline.extract import compute_clip

    frontend = Frontend.build(params)
    compute = functools.partial(
        compute_clip,
        extractor=FeatureExtractor(frontend),
        root=plan.root,
        storage=storage,
        encode=ChunkEncoder(storage, params.clip_shape) if params.clip_shape else None,
    )
    compute(("", order[0][1], ""))  # the first call loads what the rest reuse
    timings: dict[tuple, list[ClipTiming]] = defaultdict(list)
    spent, started = 0.0, time.perf_counter()
    for key, path in order:
        waited = time.perf_counter() - started
        if len(timings) == n_groups and (
            spent > TIMING_BUDGET_SECONDS or waited > TIMING_BUDGET_WALL_SECONDS
        ):
            break
        start = time.process_time()
        outcome = compute(("", path, ""))
        cpu = time.process_time() - start
        spent += cpu
        peak = 0
        if len(timings[key]) == 0:  # each group's first file: its arrays' peak memory
            tracemalloc.start()
            compute(("", path, ""))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        timings[key].append(ClipTiming(cpu, _stored_bytes(outcome, storage), peak))
    return timings, sum(array.nbytes for array in frontend.arrays().values())


def _stored_bytes(outcome, storage) -> int:
    """The bytes a computed clip takes in the store (0 if it failed)."""
    if isinstance(outcome, str):
        return 0
    values = outcome.values
    if isinstance(values, bytes):
        return len(values)
    if storage.exact:
        return values.nbytes
    return len(ChunkEncoder(storage, values.shape)(values))


@dataclass(frozen=True)
class SetSample:
    """What the timed sample says of one feature set's clips."""

    cpu_per_file: float  # one thread, over the dataset's format and rate groups
    stored_share: float  # of the files, those whose features are stored
    bytes_per_clip: float  # of features, per stored clip
    worker_peak_mb: float  # the largest sampled clip's arrays
    fixed_bytes: int  # an index's or shard file's structure and front end
    moments_bytes: int  # a stored clip's moments in its shard file


def _sample_set(
    plan: Plan, name: str, groups: dict[tuple, FileGroup], order: list[tuple[tuple, str]]
) -> SetSample:
    """Time feature set ``name`` on the files in ``order``; record each group's CPU time."""
    timings, frontend_bytes = _time_clips(
        plan, plan.feature_sets[name], plan.storage[name], order, n_groups=len(groups)
    )
    for key, group in groups.items():
        group.timed = len(timings[key])
        group.cpu_seconds[name] = float(np.mean([t.cpu_seconds for t in timings[key]]))
    stored = {key: [t for t in ts if t.stored_bytes] for key, ts in timings.items()}
    stored_share = sum(g.share for key, g in groups.items() if stored[key])
    stored_bytes = sum(
        groups[key].share * np.mean([t.stored_bytes for t in ts])
        for key, ts in stored.items()
        if ts
    )
    return SetSample(
        cpu_per_file=sum(g.share * g.cpu_seconds[name] for g in groups.values()),
        stored_share=stored_share,
        bytes_per_clip=stored_bytes / max(stored_share, 1e-9),
        worker_peak_mb=max(t.peak_bytes for ts in timings.values() for t in ts) / 1e6,
        fixed_bytes=STORE_FIXED_BYTES + frontend_bytes,
        moments_bytes=Moments.empty(1, plan.feature_sets[name].frame_shape).nbytes,
    )


def _predict_set(
    plan: Plan,
    name: str,
    sample: SetSample,
    *,
    n_files: int,
    read_per_file: float,
    cores: int,
    longest_seconds: float,
) -> SetPrediction:
    """Feature set ``name``'s jobs scheduled on ``cores``, its store's bytes and its memory.

    A worker's memory is the sampled clips' largest, or for a variable-length
    set its longest file's (:func:`clip_arrays_mb`) when that is larger.
    """
    threads = job_threads(cores)
    params = plan.feature_sets[name]
    worker_peak_mb = sample.worker_peak_mb
    if params.duration is None:
        worker_peak_mb = max(worker_peak_mb, clip_arrays_mb(params, seconds=longest_seconds))
    shard_clips = [len(rows) for rows in plan.shards.values()]
    # a read served by the page cache is in the sampled CPU time; a slower one waits on the disk
    disk_wait = read_per_file if read_per_file * 1e3 > SLOW_READ_MS else 0.0
    per_file = sample.cpu_per_file + disk_wait
    jobs = [JOB_SECONDS + clips * per_file / (threads * WORKER_EFFICIENCY) for clips in shard_clips]
    # the index and each shard file hold a front end; a clip's row and moments are in its shard
    per_clip = (
        sample.bytes_per_clip
        + METADATA_BYTES_PER_CLIP
        + SHARD_TABLE_BYTES_PER_CLIP
        + sample.moments_bytes
    )
    stored_clips = n_files * sample.stored_share
    gather = GATHER_SECONDS + n_files * GATHER_SECONDS_PER_CLIP  # it maps the shards, copies none
    return SetPrediction(
        cpu_seconds=n_files * sample.cpu_per_file,
        wall_seconds=_schedule(jobs, slots=max(1, cores // threads)) + gather,
        jobs=len(shard_clips),
        store_bytes=int((1 + len(shard_clips)) * sample.fixed_bytes + stored_clips * per_clip),
        precision_db=plan.storage[name].precision_db,
        mem_mb=job_memory_mb(worker_peak_mb, threads=threads, shard_clips=max(shard_clips)),
        cpu_ms_per_clip=sample.cpu_per_file * 1e3,
        bytes_per_clip=sample.bytes_per_clip,
        worker_peak_mb=worker_peak_mb,
        gather_seconds=gather,
    )


def _headroom_mb(mem_mb: float) -> int:
    return int(math.ceil(1.5 * mem_mb / 100) * 100)


def _headroom_minutes(seconds: float) -> int:
    return int(max(10, math.ceil(3 * seconds / 60)))


def _schedule(durations: list[float], slots: int) -> float:
    """When the last of ``durations`` ends, each started on the first free slot, longest first."""
    ends = [0.0] * slots
    for duration in sorted(durations, reverse=True):
        ends[ends.index(min(ends))] += duration
    return max(ends)


def _round_to_two_digits(value: float) -> int:
    digits = max(0, int(math.log10(max(value, 1))) - 1)
    return int(round(value, -digits))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bytes(n_bytes: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit}"
    return f"{n_bytes:.0f} B"


def _storage(precision_db: float | None) -> str:
    return "exact" if precision_db is None else f"precision_db {precision_db:g}"
