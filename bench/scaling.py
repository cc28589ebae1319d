"""Measurements behind docs/scaling.md: AudioSet-like 10 s clips on one core.

    python -m bench.scaling [--files 120]

1. Per-clip extraction cost of the real extraction code (one pinned thread), for
   10 s clips at 48 kHz stereo, as WAV and as FLAC, for two feature sets.
2. Store size per clip for each storage choice (exact, gzip, precision_db), on
   those features, with write and read cost and the largest error.
3. HDF5 virtual datasets versus a copied store: building a virtual store that maps
   every row to its shard file, opening it and random reads, at growing row counts.

Writes bench/results/scaling.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per job, as in the pipeline
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402

from bench import corpus  # noqa: E402
from melstore.features.extractor import Frontend  # noqa: E402
from melstore.features.presets import resolve_feature_set  # noqa: E402
from melstore.pipeline.extract import ShardJob, extract_shard  # noqa: E402
from melstore.store.format import ChunkEncoder, Storage, library_versions  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scaling.md"
CLIP_SECONDS = 10
FEATURE_SETS = {
    # The seed recipe's front end over the whole 10 s clip.
    "seed_10s": {"preset": "seed", "duration": 10.0},
    # A 16 kHz, 64-band, 10 ms-hop set of the kind AudioSet models use.
    "mel64_16k_10s": {
        "preset": "seed",
        "sr": 16000,
        "n_fft": 512,
        "win_length": 400,
        "hop_length": 160,
        "n_mels": 64,
        "fmin": 125.0,
        "fmax": 7500.0,
        "duration": 10.0,
    },
}
STORAGE = [
    Storage(),
    Storage(compression="gzip"),
    Storage(precision_db=0.1),
    Storage(precision_db=0.05),
    Storage(precision_db=0.01),
]
VDS_ROWS = (8_732, 100_000, 400_000)
VDS_SHARD_ROWS = 500


def write_clips(root: Path, n_files: int) -> dict[str, list[tuple[str, str, str]]]:
    """AudioSet-like clips (10 s, 48 kHz, stereo) as WAV and FLAC; entries per format."""
    entries = {"WAV": [], "FLAC": []}
    for i, clip in enumerate(corpus.plan()[:n_files]):
        container = "WAV" if i % 2 == 0 else "FLAC"
        name = f"{Path(clip.slice_file_name).stem}.{container.lower()}"
        clip = dataclasses.replace(
            clip,
            slice_file_name=name,
            samplerate=48_000,
            channels=2,
            subtype="PCM_16",
            container=container,
            frames=48_000 * CLIP_SECONDS,
        )
        path = root / clip.relative_path()
        if not path.exists():
            corpus.write_clip(clip, root=str(root), base_seed=corpus.DEFAULT_SEED)
        entries[container].append((name, clip.relative_path(), ""))
    return entries


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the job's pool worker)."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def extraction_cost(root: Path, entries, work: Path) -> tuple[list[list], dict[str, Path]]:
    """CPU ms per clip for each feature set and format; the shard files written."""
    rows, shards = [], {}
    for name, overrides in FEATURE_SETS.items():
        params = resolve_feature_set(name, {name: overrides})
        Frontend.build(params)  # the first build imports librosa: not a per-clip cost
        for container, clips in entries.items():
            out = work / f"{name}-{container}.h5"
            cpu, wall = cpu_seconds(), time.perf_counter()
            build = {"params": params.to_dict(), "storage": Storage().to_dict(),
                     "versions": library_versions(), "code": ""}  # fmt: skip
            extract_shard(ShardJob(clips, root, out, name, build, digest=""))
            cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall
            with h5py.File(out, "r") as f:
                shape = f["features"].shape
            per_clip = [f"{1000 * seconds / len(clips):.1f}" for seconds in (cpu, wall)]
            rows.append([name, container, len(clips), f"{shape[1]}×{shape[2]}", *per_clip])
            shards[name] = out
    return rows, shards


def storage_cost(shards: dict[str, Path], work: Path) -> list[list]:
    """Bytes per clip and per-clip write/read cost of each storage choice, as the store keeps it.

    Writing includes rounding and compressing a clip (done by the extraction workers).
    """
    rows = []
    for name, shard in shards.items():
        with h5py.File(shard, "r") as f:
            features = f["features"][()]
        n, shape = len(features), features.shape[1:]
        for storage in STORAGE:
            path = work / "storage.h5"
            encode, error = ChunkEncoder(storage, shape), 0.0
            start = time.perf_counter()
            with h5py.File(path, "w") as f:
                dset = f.create_dataset("features", shape=(n, *shape), chunks=(1, *shape),
                                        **storage.dataset_options())  # fmt: skip
                for i in range(n):
                    stored, clip_error = storage.quantise(features[i], name=name)
                    dset.id.write_direct_chunk((i,) + (0,) * len(shape), encode(stored))
                    error = max(error, clip_error)
            write_ms = 1000 * (time.perf_counter() - start) / n
            start = time.perf_counter()
            with h5py.File(path, "r") as f:
                for i in range(n):
                    f["features"][i]
            read_ms = 1000 * (time.perf_counter() - start) / n
            label = (
                f"precision_db {storage.precision_db:g}" if storage.precision_db
                else storage.compression or "exact (default)"
            )  # fmt: skip
            rows.append([name, label, np.dtype(storage.dtype).name,
                         f"{path.stat().st_size / n / 1024:.1f}",
                         f"{path.stat().st_size / features.size:.3f}",
                         f"{write_ms:.2f}", f"{read_ms:.3f}", f"{error:.4f}"])  # fmt: skip
    return rows


def virtual_cost(work: Path, *, shape=(64, 16), reads: int = 1000) -> list[list]:
    """Build, open and random-read a virtual store mapping each row to its shard.

    Rows follow the manifest, so every row is its own mapping (shards hold hash-chosen
    clips). The features are small: the mapping count, not the data, is measured.
    """
    rng = np.random.default_rng(0)
    rows = []
    for n_rows in VDS_ROWS:
        n_shards = -(-n_rows // VDS_SHARD_ROWS)
        shard_dir = work / f"vds-{n_rows}"
        shard_dir.mkdir()
        owner = rng.permutation(np.arange(n_rows) % n_shards)  # store row -> shard
        position = np.zeros(n_rows, dtype=np.int64)
        for shard in range(n_shards):
            members = np.flatnonzero(owner == shard)
            position[members] = np.arange(len(members))
            with h5py.File(shard_dir / f"s{shard}.h5", "w") as f:
                f.create_dataset(
                    "features",
                    data=np.full((len(members), *shape), shard, dtype=np.float32),
                    chunks=(1, *shape),
                )
        start = time.perf_counter()
        layout = h5py.VirtualLayout(shape=(n_rows, *shape), dtype=np.float32)
        sources = {}
        for shard in range(n_shards):
            with h5py.File(shard_dir / f"s{shard}.h5", "r") as f:
                sources[shard] = h5py.VirtualSource(f["features"])
        for row in range(n_rows):
            layout[row] = sources[owner[row]][position[row]]
        with h5py.File(shard_dir / "virtual.h5", "w") as f:
            f.create_virtual_dataset("features", layout)
        build = time.perf_counter() - start
        start = time.perf_counter()
        with h5py.File(shard_dir / "virtual.h5", "r") as f:
            features = f["features"]
            opened = time.perf_counter() - start
            picks = rng.integers(0, n_rows, size=reads)
            start = time.perf_counter()
            for row in picks:
                assert features[row][0, 0] == owner[row]
            read = (time.perf_counter() - start) / reads
        rows.append([n_rows, n_shards, f"{build:.1f}", f"{opened * 1000:.0f}",
                     f"{read * 1000:.2f}",
                     f"{(shard_dir / 'virtual.h5').stat().st_size / 1e6:.1f}"])  # fmt: skip
    return rows


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


@click.command()
@click.option("--files", "n_files", default=120, show_default=True, help="clips to generate")
def main(n_files: int) -> None:
    """Measure per-clip cost, store size and virtual-dataset cost for docs/scaling.md."""
    root = corpus.CACHE_DIR / f"audioset-like-{n_files}"
    entries = write_clips(root, n_files)
    with tempfile.TemporaryDirectory(dir=corpus.CACHE_DIR) as tmp:
        work = Path(tmp)
        extraction, shards = extraction_cost(root, entries, work)
        storage = storage_cost(shards, work)
        virtual = virtual_cost(work)
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    report = "\n\n".join([
        "# Scaling measurements (one core)",
        f"Command: `python -m bench.scaling --files {n_files}`. Clips: {CLIP_SECONDS} s, "
        "48 kHz, stereo, 16-bit, half WAV and half FLAC. Versions: " + versions + ".",
        "## Extraction cost per clip",
        table(["feature set", "format", "clips", "features", "CPU ms/clip", "wall ms/clip"],
              extraction),
        "## Store size per clip",
        table(["feature set", "storage", "dtype", "KiB/clip", "bytes/value", "write ms/clip",
               "read ms/clip", "max abs error dB"], storage),
        "## Virtual dataset over shard files (one mapping per row)",
        table(["rows", "shards", "build s", "open ms", "random read ms", "file MB"], virtual),
    ])  # fmt: skip
    RESULTS.write_text(report + "\n")
    click.echo(report)


if __name__ == "__main__":
    main()
