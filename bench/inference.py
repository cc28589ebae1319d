"""Inference against the build: ``Extractor.from_file`` per clip, against ``compute_clip``.

A model served with ``melstore.extractor`` computes each new clip as the
workflow computed the store's; it should cost about what a build spends on a
clip. Both run on the same 4 s clips of the UrbanSound8K-shaped corpus
(``bench.corpus``'s plan, its full-length clips in their own formats, rates
and channel counts), in one process on one thread (``pin_threads(1)``):

- the build: ``compute_clip``, which an extraction job maps over its files
  (hash, decode, features, rounding, chunk encoding, moments), with the
  window and filter bank built by librosa as a job builds them;
- inference: ``from_file`` of an extractor of the store those clips were
  built into (decode, features, rounding).

Each clip is timed ``--repeats`` times by each, the order alternating; the
median CPU time (``time.process_time``) per clip is kept, and the ratio is
that of their sums. Both first run once over every clip, so imports and
caches are not timed. The features of ``from_file`` are checked to equal the
stored clips bit for bit. Target: inference within 1.2x of the build.

Run ``python -m bench.inference --help`` from the repository root; it writes
bench/results/inference.md.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from bench import corpus
from bench.run import machine, publish
from melstore.features.extractor import FeatureExtractor, Frontend
from melstore.features.presets import PRESETS, resolve_feature_set
from melstore.pipeline.extract import ShardJob, compute_clip, extract_shard
from melstore.pipeline.runtime import pin_threads
from melstore.store.format import ChunkEncoder, Storage, library_versions
from melstore.store.inference import Extractor
from melstore.store.reader import Store

RESULTS = Path(__file__).resolve().parent / "results" / "inference.md"
CLIP_SECONDS = corpus.MAX_SECONDS
TARGET_RATIO = 1.2


@dataclass(frozen=True)
class Timing:
    """The median CPU and wall milliseconds of each clip under one contender."""

    name: str
    cpu_ms: list[float]
    wall_ms: list[float]

    @property
    def total_cpu_ms(self) -> float:
        return sum(self.cpu_ms)


def full_length_clips(n_clips: int) -> list[corpus.Clip]:
    """The first ``n_clips`` clips of the corpus plan that last the full 4 s."""
    full = [clip for clip in corpus.plan() if clip.frames == round(CLIP_SECONDS * clip.samplerate)]
    if len(full) < n_clips:
        raise click.ClickException(f"the corpus plan has only {len(full)} clips of 4 s")
    return full[:n_clips]


def write_clips(root: Path, clips: list[corpus.Clip]) -> list[tuple[str, str, str]]:
    """Write the clips under ``root`` unless already there; their manifest entries."""
    for clip in clips:
        if not (root / clip.relative_path()).exists():
            corpus.write_clip(clip, root=str(root), base_seed=corpus.DEFAULT_SEED)
    return [(Path(clip.slice_file_name).stem, clip.relative_path(), "") for clip in clips]


def build_store(root: Path, entries: list, store: Path, preset: str) -> None:
    """The clips' store, as one extraction job writes it (a shard file is a store)."""
    params = resolve_feature_set(preset, {})
    build = {"params": params.to_dict(), "storage": Storage().to_dict(),
             "versions": library_versions(), "code": ""}  # fmt: skip
    store.unlink(missing_ok=True)
    extract_shard(ShardJob(entries, root, store, preset, build, digest=""))


def timed(calls: dict[str, Callable[[int], object]], n_clips: int, repeats: int) -> list[Timing]:
    """Median CPU and wall ms of each call per clip, over ``repeats`` alternating rounds."""
    names = list(calls)
    cpu = {name: [[] for _ in range(n_clips)] for name in names}
    wall = {name: [[] for _ in range(n_clips)] for name in names}
    for name in names:  # warm up: imports, caches, first allocations
        for clip in range(n_clips):
            calls[name](clip)
    for round_ in range(repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for clip in range(n_clips):
            for name in order:
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                calls[name](clip)
                cpu[name][clip].append(1000 * (time.process_time() - cpu_start))
                wall[name][clip].append(1000 * (time.perf_counter() - wall_start))
    return [
        Timing(name, [statistics.median(c) for c in cpu[name]],
               [statistics.median(w) for w in wall[name]])
        for name in names
    ]  # fmt: skip


def identical_clips(extractor: Extractor, store: Path, paths: list[Path]) -> int:
    """How many clips ``from_file`` computes bit for bit as the store holds them."""
    with Store(store) as opened:
        return sum(
            extractor.from_file(path).tobytes() == opened.clip(row).tobytes()
            for row, path in enumerate(paths)
        )


def report(timings: list[Timing], clips: list[corpus.Clip], *, identical: int, command: str,
           preset: str) -> str:  # fmt: skip
    """The Markdown report: per-clip cost of each, their ratio against the target."""
    build, inference = timings
    ratio = inference.total_cpu_ms / build.total_cpu_ms
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"

    def row(timing: Timing, what: str) -> str:
        cpu, wall = statistics.median(timing.cpu_ms), statistics.median(timing.wall_ms)
        return f"| {timing.name} | {what} | {cpu:.2f} | {wall:.2f} | {timing.total_cpu_ms:.0f} |"

    rates = Counter(clip.samplerate for clip in clips)
    subtypes = Counter(clip.subtype for clip in clips)
    stereo = sum(clip.channels == 2 for clip in clips)
    return "\n".join([
        f"# Inference against the build: {len(clips)} clips of {CLIP_SECONDS:g} s, one thread",
        "",
        f"Command: `{command}`",
        "",
        f"Feature set `{preset}`. Each clip is timed by each contender in alternating rounds;",
        "the table gives the median over clips of each clip's median, and the total over",
        "clips. CPU time is `time.process_time` of this single-threaded process.",
        "",
        "| contender | what it does per clip | CPU ms/clip | wall ms/clip | total CPU ms |",
        "|---|---|---:|---:|---:|",
        row(build, "hash, decode, features, rounding, chunk encoding, moments"),
        row(inference, "decode, features, rounding"),
        "",
        f"- Inference / build, total CPU: **{ratio:.3f}** (target ≤ {TARGET_RATIO}: {verdict}).",
        f"- `from_file` equals the stored clip bit for bit for {identical} of {len(clips)} clips.",
        f"- Clips: sample rates {dict(sorted(rates.items()))}; {stereo} stereo; "
        f"subtypes {dict(sorted(subtypes.items()))}.",
        "",
        "## Machine",
        *machine(),
        "",
    ])  # fmt: skip


@click.command(context_settings={"show_default": True})
@click.option("--clips", "n_clips", type=click.IntRange(1), default=200,
              help="4 s clips of the corpus plan to time (generated once, cached).")  # fmt: skip
@click.option("--repeats", type=click.IntRange(1), default=5,
              help="Timings of each clip by each contender; the median is kept.")  # fmt: skip
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="seed",
              help="The feature set of the store.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=corpus.CACHE_DIR / "inference", help="Clips and the store.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(n_clips: int, repeats: int, preset: str, workdir: Path, out: Path) -> None:
    """Time Extractor.from_file against the build's compute_clip on 4 s clips, one thread."""
    pin_threads(1)  # as an extraction job: one thread, the cores go to processes
    clips = full_length_clips(n_clips)
    root, store = workdir / "clips", workdir / f"{preset}.h5"
    click.echo(f"writing {n_clips} clips, building their store ...", err=True)
    entries = write_clips(root, clips)
    build_store(root, entries, store, preset)
    params = resolve_feature_set(preset, {})
    storage = Storage()
    job_extractor = FeatureExtractor(Frontend.build(params))  # as build_frontend makes it
    encode = ChunkEncoder(storage, params.clip_shape) if params.clip_shape else None
    extractor = Extractor(store)
    paths = [root / path for _, path, _ in entries]
    click.echo(f"timing {repeats} rounds ...", err=True)
    timings = timed(
        {
            "build: compute_clip": lambda i: compute_clip(
                entries[i], extractor=job_extractor, root=root, storage=storage, encode=encode
            ),
            "inference: Extractor.from_file": lambda i: extractor.from_file(paths[i]),
        },
        n_clips,
        repeats,
    )
    command = f"python -m bench.inference --clips {n_clips} --repeats {repeats} --preset {preset}"
    identical = identical_clips(extractor, store, paths)
    publish(report(timings, clips, identical=identical, command=command, preset=preset), out)


if __name__ == "__main__":
    main()
