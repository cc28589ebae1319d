"""Growth with dataset size: a large folder corpus, and what a build and its reruns cost on it.

The corpus is a folder dataset (label = parent folder) of short clips, 0.5-1 s
by default, in the UrbanSound8K corpus's ten classes and synthesis, with mixed
sample rates, bit depths and channel counts. It is generated deterministically
(cached under ``bench/cache/folder-FILES``); 100,000 clips take about 7 GB.

On it, with one feature set (``seed`` at 1 s with 64 mels), this measures:
parse time per file (``Plan.from_config``, in this process), a dry run, a
clean build and its throughput, a no-op rerun, reruns after one changed file
(the store target, then the default target with its report), 1,000 added
files, the largest extraction and gather job RSS, and the store's bytes on
disk against its features'. With
``--reruns-only`` it skips the clean build. With ``--tiny`` the corpus is of
0.1 s clips at 8 kHz, copies of 64 synthesised ones (a million take about a
minute to write, where synthesising each would take an hour), and only the
store target's changed-file runs are made: the million-file bench.

Run ``python -m bench.growth --help`` from the repository root.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import yaml

from bench.corpus import CACHE_DIR, CLASS_NAMES, synthesize
from bench.run import (
    Run,
    clean,
    job_peak_memory,
    link_dataset,
    machine,
    measure,
    median_ms,
    median_run,
    publish,
    snakemake_command,
)
from melstore.features.audio import write_audio
from melstore.pipeline.plan import Plan

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "growth.md"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SEED = 100_000
# Bump when the plan or the synthesis changes, so that cached corpora are regenerated.
FOLDER_VERSION = 1
SAMPLE_RATES = (8000, 16000, 22050, 32000, 44100, 48000)
SUBTYPES = ("PCM_16", "PCM_16", "PCM_16", "PCM_24", "FLOAT", "PCM_U8")
FEATURE_SET = {"preset": "seed", "duration": 1.0, "n_mels": 64}
# Files added after the reruns, against the clean build's time.
ADDED_FILES = 1000


@dataclass(frozen=True)
class FolderClip:
    """One planned file of the folder corpus (what :func:`bench.corpus.synthesize` needs)."""

    path: str
    class_name: str
    samplerate: int
    channels: int
    subtype: str
    frames: int
    seed: int


def folder_plan(
    n_files: int, *, seconds: tuple[float, float], seed: int = SEED
) -> list[FolderClip]:
    """``n_files`` clips spread over the ten classes, with their formats and lengths."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, len(CLASS_NAMES), size=n_files)
    rates = rng.choice(SAMPLE_RATES, size=n_files)
    subtypes = rng.choice(SUBTYPES, size=n_files)
    channels = rng.choice([1, 2], size=n_files, p=[0.4, 0.6])
    durations = rng.uniform(*seconds, size=n_files)
    return [
        FolderClip(
            path=f"{CLASS_NAMES[c]}/{i:07d}.wav",
            class_name=CLASS_NAMES[c],
            samplerate=int(sr),
            channels=int(ch),
            subtype=str(subtype),
            frames=max(1, round(float(d) * int(sr))),
            seed=i,
        )
        for i, (c, sr, subtype, ch, d) in enumerate(
            zip(classes, rates, subtypes, channels, durations, strict=True)
        )
    ]


def write_folder_clip(clip: FolderClip, *, root: str) -> int:
    """Synthesise one clip, write it under ``root``, and return its size in bytes."""
    path = Path(root) / clip.path
    audio = synthesize(clip, base_seed=SEED)
    write_audio(path, audio, clip.samplerate, container="WAV", subtype=clip.subtype)
    return path.stat().st_size


def make_folder_corpus(
    root: Path, n_files: int, *, seconds: tuple[float, float], workers: int
) -> Path:
    """Generate the folder corpus under ``root``, unless a complete one is cached there."""
    clips = folder_plan(n_files, seconds=seconds)
    marker = root / ".complete"
    stamp = json.dumps({"version": FOLDER_VERSION, "n_files": n_files, "seconds": seconds})
    if marker.exists() and marker.read_text() == stamp:
        click.echo(f"corpus cached: {root} ({n_files} files)", err=True)
        return root
    marker.unlink(missing_ok=True)
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    began, total = time.perf_counter(), 0
    write = functools.partial(write_folder_clip, root=str(root))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for done, size in enumerate(pool.map(write, clips, chunksize=64), start=1):
            total += size
            if done % max(1, n_files // 20) == 0 or done == n_files:
                click.echo(f"{done}/{n_files} files, {total / 1e9:.2f} GB, "
                           f"{time.perf_counter() - began:.0f} s", err=True)  # fmt: skip
    marker.write_text(stamp)
    return root


def parse_seconds(config: dict, *, repeats: int = 3) -> float:
    """The fastest of ``repeats`` parses of ``config`` (validation, listing, shards, digests)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        plan = Plan.from_config(json.loads(json.dumps(config)), schema_path=SCHEMA)
        for shard in plan.shards:  # what the Snakefile computes at every start
            plan.shard_file("short", shard, "code", {})
        best = min(best, time.perf_counter() - start)
    return best


def make_tiny_corpus(root: Path, n_files: int) -> Path:
    """``n_files`` clips of 0.1 s (8 kHz, mono, 16-bit), each a copy of one of 64 synthesised."""
    marker = root / ".complete"
    stamp = json.dumps({"version": FOLDER_VERSION, "n_files": n_files, "tiny": True})
    if marker.exists() and marker.read_text() == stamp:
        click.echo(f"corpus cached: {root} ({n_files} files)", err=True)
        return root
    marker.unlink(missing_ok=True)
    plan = folder_plan(n_files, seconds=(0.1, 0.1))
    variants = defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        for clip in plan[:64]:
            tiny = FolderClip(clip.path, clip.class_name, 8000, 1, "PCM_16", 800, clip.seed)
            path = Path(scratch) / f"{clip.seed}.wav"
            audio = synthesize(tiny, base_seed=SEED)
            write_audio(path, audio, 8000, container="WAV", subtype="PCM_16")
            variants[clip.class_name].append(path.read_bytes())
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    for done, clip in enumerate(plan, start=1):
        choices = variants.get(clip.class_name) or next(iter(variants.values()))
        (root / clip.path).write_bytes(choices[clip.seed % len(choices)])
        if done % max(1, n_files // 10) == 0:
            click.echo(f"{done}/{n_files} files, {time.perf_counter() - began:.0f} s", err=True)
    marker.write_text(stamp)
    return root


def change_one_file(root: Path, clips: list[FolderClip], position: float) -> str:
    """Replace one clip's file by a new one with other content, and name it."""
    clip = clips[int((len(clips) - 1) * position)]
    path = root / clip.path
    tone = np.sin(2 * np.pi * 700 * np.arange(clip.frames) / clip.samplerate).astype(np.float32)
    path.unlink()
    write_audio(path, 0.3 * tone, clip.samplerate, container="WAV", subtype="PCM_16")
    return clip.path


@dataclass
class Growth:
    files: int
    corpus_gb: float
    parse_s: float
    runs: dict[str, Run]
    extract_rss_mb: float
    gather_rss_mb: float
    index_mb: float
    features_mb: float
    results_mb: float  # at the end: after added files, two generations of shard files
    clean_results_mb: float | None  # right after the clean build: one generation
    read_ms: float


def add_files(root: Path, clips: list[FolderClip], n_files: int) -> str:
    """Copy ``n_files`` clips into a new folder (new clip ids, new shards' files); name it."""
    folder = root / "added"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for i, clip in enumerate(clips[:n_files]):
        shutil.copyfile(root / clip.path, folder / f"added{i:05d}.wav")
    return folder.name


def features_mb(index: Path) -> float:
    """The bytes the features take in the index's shard files (their datasets' storage)."""
    import h5py

    total = 0
    with h5py.File(index, "r") as opened:
        names = opened["shards/name"].asstr()[()]
    for name in names:
        with h5py.File(index.parent / name, "r") as shard:
            total += shard["features"].id.get_storage_size()
    return total / 1e6


def melstore_read_ms(store: Path, *, n: int = 1000, seed: int = 0) -> float:
    """Median ms of ``Store.clip(row)`` for ``n`` random rows, through melstore's reader."""
    import melstore

    with melstore.open(store) as opened:
        rows = np.random.default_rng(seed).integers(0, len(opened), n).tolist()
        return median_ms(opened.clip, rows)


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / 1e6


@click.command(context_settings={"show_default": True})
@click.option("--files", type=click.IntRange(min=1), default=100_000, help="Clips in the corpus.")
@click.option("--seconds", type=(float, float), default=(0.5, 1.0),
              help="Shortest and longest clip.")  # fmt: skip
@click.option("--cores", type=click.IntRange(min=1), default=os.cpu_count(),
              help="snakemake's --cores, and the corpus writers.")  # fmt: skip
@click.option("--reruns-only", is_flag=True, help="Skip the clean build; needs a built workdir.")
@click.option("--tiny", is_flag=True,
              help="0.1 s clips copied from 64; changed files: store target only.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder [default: bench/cache/growth-FILES].")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(files, seconds, cores, reruns_only, tiny, workdir, out) -> None:
    """Generate the folder corpus, build it, rerun it, and write the table to --out."""
    if tiny:
        seconds = (0.1, 0.1)
        corpus = make_tiny_corpus(CACHE_DIR / f"tiny-{files}", files)
    else:
        corpus = make_folder_corpus(CACHE_DIR / f"folder-{files}", files, seconds=seconds,
                                    workers=cores)  # fmt: skip
    workdir = workdir or CACHE_DIR / f"growth-{'tiny-' if tiny else ''}{files}"
    root, work = workdir / "data", workdir / "pipeline"
    if not reruns_only:
        shutil.rmtree(workdir, ignore_errors=True)
        link_dataset(corpus, root)
    work.mkdir(parents=True, exist_ok=True)
    config = {"dataset": {"name": "growth", "layout": "folder", "root": str(root)},
              "features": ["short"], "feature_sets": {"short": FEATURE_SET}}  # fmt: skip
    (work / "my.yaml").write_text(yaml.safe_dump(config))
    parse = parse_seconds(config)
    runs = {"dry": measure("dry run (-n)", snakemake_command(work, cores, "-n"))}
    store_target = snakemake_command(work, cores, "results/growth/short.h5")
    results = work / "results" / "growth"
    clean_results_mb = None
    if not reruns_only:
        clean(work)
        runs["build"] = measure("clean build of the store", store_target)
        clean_results_mb = disk_mb(results)
    runs["noop"] = median_run([measure("no-op rerun", store_target) for _ in range(3)])
    clips = folder_plan(files, seconds=seconds)
    default_target = snakemake_command(work, cores)  # the store and its report
    changes = [("one changed file", store_target, (0.25, 0.5, 0.75))]
    if not tiny:
        runs["default"] = measure("default target, report included", default_target)
        changes.append(("one changed file, default target", default_target, (0.3, 0.6, 0.9)))
    for label, command, positions in changes:
        changed = [
            measure(label, command, note=f"changed {change_one_file(root, clips, position)}")
            for position in positions
        ]
        runs[label] = median_run(changed)
    if not tiny:
        added = add_files(root, clips, ADDED_FILES)
        runs["added"] = measure(f"{ADDED_FILES} added files", store_target, note=f"in {added}/")
    growth = Growth(
        files=files,
        corpus_gb=disk_mb(corpus) / 1e3,
        parse_s=parse,
        runs=runs,
        extract_rss_mb=job_peak_memory(work, "extract"),
        gather_rss_mb=job_peak_memory(work, "gather"),
        index_mb=(results / "short.h5").stat().st_size / 1e6,
        features_mb=features_mb(results / "short.h5"),
        results_mb=disk_mb(results) - disk_mb(results / "report"),
        clean_results_mb=clean_results_mb,
        read_ms=melstore_read_ms(results / "short.h5"),
    )
    publish(report(growth, cores=cores, seconds=seconds, tiny=tiny), out)


def report(growth: Growth, *, cores: int, seconds: tuple[float, float], tiny: bool) -> str:
    runs = growth.runs
    build = runs.get("build")
    rate = "" if build is None else (
        f"- Clean build: {build.wall:.1f} s, {growth.files / build.wall:.0f} clips/s "
        f"({growth.files / build.wall / cores:.0f} per core).\n"
    )  # fmt: skip
    lines = [
        f"# Growth: {growth.files} files of {seconds[0]:g}-{seconds[1]:g} s, {cores} cores",
        "",
        f"Command: `python -m bench.growth --files {growth.files} --seconds {seconds[0]:g} "
        f"{seconds[1]:g} --cores {cores}{' --tiny' if tiny else ''}`",
        "",
        f"A folder corpus of {growth.corpus_gb:.2f} GB; one feature set: "
        f"`{json.dumps(FEATURE_SET)}`.",
        "",
        "| run | wall s | CPU s | peak RSS MB | notes |",
        "|---|---:|---:|---:|---|",
        *(f"| {r.name} | {r.wall:.2f} | {r.cpu:.1f} | {r.peak_rss_mb:.0f} | {r.note} |"
          for r in runs.values()),
        "",
        f"- Parse (`Plan.from_config` and shard file names, fastest of 3): {growth.parse_s:.2f} s, "
        f"{growth.parse_s / growth.files * 1e6:.1f} µs per file.",
        rate
        + f"- Largest extraction job: {growth.extract_rss_mb:.0f} MB max_rss; gather "
        f"{growth.gather_rss_mb:.0f} MB.",
        f"- Store: index {growth.index_mb:.1f} MB, features {growth.features_mb:.0f} MB; "
        f"`results/growth/` without the report: {growth.results_mb:.0f} MB "
        f"({growth.results_mb / growth.features_mb:.2f}× the features' bytes)"
        + (
            ""
            if growth.clean_results_mb is None
            else f"; right after the clean build {growth.clean_results_mb:.0f} MB "
            f"({growth.clean_results_mb / growth.features_mb:.2f}×)"
        )
        + ".",
        f"- One random clip through melstore (`Store.clip`, median of 1000, each read once "
        f"before): {growth.read_ms:.3f} ms.",
        "",
        "## Machine",
        *machine(),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
