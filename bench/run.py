"""Benchmark melstore against hand-written scripts on an UrbanSound8K-shaped corpus.

One invocation runs, on the same cores and the same corpus:

(a) the lean baseline script, (b) the seed recipe in a process pool,
(c) the full pipeline from clean (``snakemake --cores N``: the store and its
report), (d) a no-op rerun, (e) a rerun after one file changed, and (f)
random reads of single clips from the store. (c') and (e') repeat (c) and (e)
for the store alone, as the scripts build no report.

Times are wall seconds, CPU is user + system of the whole process tree, and
peak RSS is the largest single process. The machines are shared and noisy, so
the results are ratios between runs made side by side, not absolute targets;
(a) and (c) alternate ``--repeats`` times and c/a is the median of the pairs.

Run ``python -m bench.run --help`` from the repository root.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import h5py
import numpy as np
import pandas as pd
import yaml

from bench.corpus import CACHE_DIR, FULL_SIZE, make_corpus
from melstore.features.audio import write_audio
from melstore.store.format import library_versions

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "latest.md"
STORE = "results/us8k/seed.h5"
TARGETS = {"c/a": 1.15, "c/b": 0.70, "d_seconds": 2.5, "e_seconds": 6.0, "f_ms": 1.0,
           "gather_rss_mb": 400, "extract_rss_mb": 400}  # fmt: skip


@dataclass
class Run:
    """What one measured command cost."""

    name: str
    wall: float
    cpu: float
    peak_rss_mb: float
    note: str = ""


def measure(name: str, command: list[str], *, cwd: Path = REPO, note: str = "") -> Run:
    """Run ``command`` in a fresh child and measure it, with its whole process tree.

    A small Python wrapper process runs the command, so that the
    RUSAGE_CHILDREN figures it reports cover this command alone.
    """
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,\n"
        "                    stderr=subprocess.PIPE).returncode\n"
        "wall = time.perf_counter() - t\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps([rc, wall, u.ru_utime + u.ru_stime, u.ru_maxrss / 1024]))\n"
    )  # fmt: skip
    click.echo(f"running {name} ...", err=True)
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0 or json.loads(result.stdout)[0] != 0:
        raise click.ClickException(f"{name} failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    _, wall, cpu, rss = json.loads(result.stdout)
    return Run(name, wall, cpu, rss, note)


def link_dataset(corpus: Path, root: Path) -> None:
    """A copy of the corpus made of hard links, so that (e) can change a file safely."""
    for source in corpus.rglob("*"):
        target = root / source.relative_to(corpus)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not source.name.startswith("."):
            os.link(source, target)


def clean(workdir: Path) -> None:
    """Remove everything a pipeline run wrote, for a run from clean."""
    for outputs in ("results", "logs", ".snakemake"):
        shutil.rmtree(workdir / outputs, ignore_errors=True)


def size_mb(path: Path) -> float:
    """Megabytes (10^6) of the files at or under ``path``, each hard-linked file once."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    sizes = {(stat.st_dev, stat.st_ino): stat.st_size for stat in map(Path.stat, files)}
    return sum(sizes.values()) / 1e6


def snakemake_command(workdir: Path, cores: int, *targets: str) -> list[str]:
    """The pipeline on ``workdir``, with its config file my.yaml, as the README runs it."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", str(cores), *targets,
            "--configfile", str(workdir / "my.yaml")]  # fmt: skip


def job_peak_memory(workdir: Path, rule: str, column: str = "max_rss") -> float:
    """Largest ``column`` (MB) among a rule's Snakemake benchmark files.

    Snakemake sums the job's processes: ``max_rss`` counts the pages that forked
    workers share with their parent once per process, ``max_pss`` once in all.
    """
    files = list(workdir.glob(f"logs/*/benchmarks/{rule}/**/*.tsv"))
    return max((pd.read_csv(f, sep="\t")[column].max() for f in files), default=float("nan"))


def read_into_page_cache(folder: Path) -> None:
    """Read every audio file under ``folder`` once, so that no contender's first build is cold."""
    for path in folder.rglob("*.wav"):
        path.read_bytes()


def median_ms(read: Callable[[int], object], rows: list[int]) -> float:
    """Median milliseconds of ``read(row)`` over ``rows``, each row read once before.

    The first pass puts the rows' bytes in the page cache, so that every tool
    is timed on its own work, not on whether the kernel kept its files since
    they were written.

    Parameters
    ----------
    read : callable
        Reads one clip, given its row in the corpus's CSV order.
    rows : list of int
        Rows to read, in order.

    Returns
    -------
    float
        The median time of one call, in ms.
    """
    for row in rows:
        read(row)
    times = []
    for row in rows:
        start = time.perf_counter()
        read(row)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def random_reads(store: Path, *, n: int = 1000, seed: int = 0) -> float:
    """Median milliseconds to read one random clip from a freshly opened store."""
    with h5py.File(store, "r") as f:
        features = f["features"]
        rows = random.Random(seed).choices(range(features.shape[0]), k=n)
        times = []
        for row in rows:
            start = time.perf_counter()
            np.asarray(features[row])
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def change_one_file(root: Path, *, position: float = 0.5) -> str:
    """Replace one clip's content (a new file, so the corpus's hard link is untouched).

    The clip is the one at ``position`` (0 to 1) of the metadata CSV.
    """
    table = pd.read_csv(root / "metadata" / "UrbanSound8K.csv")
    row = table.iloc[int((len(table) - 1) * position)]
    path = root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
    tone = np.sin(2 * np.pi * 1000 * np.arange(44100 * 2) / 44100).astype(np.float32) * 0.3
    path.unlink()
    write_audio(path, tone, 44100, container="WAV", subtype="PCM_16")
    return path.relative_to(root).as_posix()


def one_file_changed(name: str, root: Path, command: list[str], *, positions) -> Run:
    """The median of reruns after one file changed, a different file each time."""
    runs = []
    for position in positions:
        changed = change_one_file(root, position=position)
        runs.append(measure(name, command, note=f"changed {changed}"))
    return median_run(runs)


def publish(text: str, out: Path) -> None:
    """Write a benchmark's Markdown report to ``out`` and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(text)


def machine() -> list[str]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    versions = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    return [
        f"- cores: {os.cpu_count()} ({model}); memory: "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        f"- Python {platform.python_version()} on {platform.system()} {platform.release()}",
        f"- {versions}",
    ]


def median_run(runs: list[Run]) -> Run:
    """The run of median wall time, noting the range of all of them."""
    middle = sorted(runs, key=lambda run: run.wall)[len(runs) // 2]
    if len(runs) == 1:
        return middle
    walls = [run.wall for run in runs]
    spread = f"median of {len(runs)}: {min(walls):.2f}–{max(walls):.2f} s"
    return Run(middle.name, middle.wall, middle.cpu, middle.peak_rss_mb,
               "; ".join(filter(None, [middle.note, spread])))  # fmt: skip


def report(runs: dict[str, Run], extra: dict, *, files: int, cores: int, command: str) -> str:
    b, c = runs["b"], runs["c"]
    ratios = {"c/a": extra["c/a"], "c/b": c.wall / b.wall}
    store_c_a, store_e = extra["c'/a"], runs["e'"].wall
    checks = {
        "c/a": ratios["c/a"] <= TARGETS["c/a"],
        "c/b": ratios["c/b"] <= TARGETS["c/b"],
        "d_seconds": runs["d"].wall <= TARGETS["d_seconds"],
        "e_seconds": runs["e"].wall <= TARGETS["e_seconds"],
        "f_ms": extra["f_ms"] <= TARGETS["f_ms"],
        "gather_rss_mb": extra["gather_rss_mb"] <= TARGETS["gather_rss_mb"],
        "extract_rss_mb": extra["extract_rss_mb"] <= TARGETS["extract_rss_mb"],
    }

    def row(label, value, goal, key):
        return f"| {label} | {value} | ≤ {goal} | {'met' if checks[key] else '**missed**'} |"

    lines = [
        f"# melstore benchmark: {files} files, {cores} cores",
        "",
        f"Command: `{command}`",
        "",
        "c/a is the median of the ratios of the (a), (c) pairs, run alternately; the other",
        "ratios use the median (c).",
        "",
        "| run | wall s | CPU s | peak RSS MB | notes |",
        "|---|---:|---:|---:|---|",
        *(f"| {r.name} | {r.wall:.2f} | {r.cpu:.1f} | {r.peak_rss_mb:.0f} | {r.note} |"
          for r in runs.values()),
        f"| (f) random single-clip reads | median {extra['f_ms']:.3f} ms | | | 1000 reads |",
        "",
        "| target | value | goal | |",
        "|---|---:|---:|---|",
        row("c/a (pipeline vs lean script)", f"{ratios['c/a']:.2f}", TARGETS["c/a"], "c/a"),
        row("c/b (pipeline vs seed recipe)", f"{ratios['c/b']:.2f}", TARGETS["c/b"], "c/b"),
        row("(d) no-op rerun", f"{runs['d'].wall:.2f} s", f"{TARGETS['d_seconds']} s", "d_seconds"),
        row("(e) one file changed", f"{runs['e'].wall:.2f} s", f"{TARGETS['e_seconds']} s",
            "e_seconds"),
        row("(f) random read", f"{extra['f_ms']:.3f} ms", f"{TARGETS['f_ms']} ms", "f_ms"),
        row("gather peak RSS", f"{extra['gather_rss_mb']:.0f} MB",
            f"{TARGETS['gather_rss_mb']} MB", "gather_rss_mb"),
        row("largest extraction job RSS", f"{extra['extract_rss_mb']:.0f} MB "
            f"(PSS {extra['extract_pss_mb']:.0f} MB)", f"{TARGETS['extract_rss_mb']} MB",
            "extract_rss_mb"),
        "",
        f"The store alone, without the report (the scripts draw none): c'/a {store_c_a:.2f}, "
        f"(e') {store_e:.2f} s.",
        "",
        f"Largest difference between the pipeline's features and the seed recipe's: "
        f"{extra['max_db_difference']:.5f} dB.",
        "",
        "## Machine",
        *machine(),
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def max_db_difference(store: Path, reference: Path) -> float:
    with h5py.File(store, "r") as ours, h5py.File(reference, "r") as theirs:
        worst = 0.0
        for start in range(0, ours["features"].shape[0], 512):
            block = slice(start, start + 512)
            worst = max(
                worst, float(np.nanmax(np.abs(ours["features"][block] - theirs["features"][block])))
            )
    return worst


@click.command(context_settings={"show_default": True})
@click.option(
    "--files",
    type=click.IntRange(1, FULL_SIZE),
    default=FULL_SIZE,
    help="Corpus size (a prefix of the full 8732-file plan).",
)
@click.option(
    "--cores",
    type=click.IntRange(min=1),
    default=os.cpu_count(),
    help="Cores for every run (workers of the scripts, --cores of snakemake).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=CACHE_DIR / "run",
    help="Scratch folder, emptied first.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=None,
    help="The pipeline's shard_size (default: the workflow's).",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=5,
    help="Alternating runs of (a) and (c); the ratio is the median of the pairs' ratios.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS,
    help="Markdown report to write.",
)
def main(
    files: int, cores: int, workdir: Path, shard_size: int | None, repeats: int, out: Path
) -> None:
    """Run (a)-(f) on the same corpus and cores, print the table and write it to --out."""
    corpus = make_corpus(CACHE_DIR / f"us8k-{files}", n_files=files)
    shutil.rmtree(workdir, ignore_errors=True)
    root, pipeline = workdir / "data", workdir / "pipeline"
    link_dataset(corpus, root)
    pipeline.mkdir(parents=True)
    config = {"dataset": {"name": "us8k", "layout": "urbansound8k", "root": str(root)},
              "features": ["seed"]}  # fmt: skip
    if shard_size:
        config["shard_size"] = shard_size
    (pipeline / "my.yaml").write_text(yaml.safe_dump(config))
    python = sys.executable
    lean = [python, "-m", "bench.baselines", "lean", str(root), "--out", str(workdir / "lean.h5"),
            "--workers", str(cores)]  # fmt: skip
    # (a) and (c) alternate, so that a slow spell of a shared machine hits both.
    pairs = []
    for _ in range(repeats):
        clean(pipeline)
        pairs.append((measure("(a) lean script", lean),
                      measure("(c) pipeline from clean", snakemake_command(pipeline, cores),
                              note="snakemake: the store and its report")))  # fmt: skip
    runs = {
        "a": median_run([a for a, _ in pairs]),
        "b": measure("(b) seed recipe, process pool", [python, "-m", "bench.baselines", "seed",
                     str(root), "--out", str(workdir / "seed.h5"), "--workers", str(cores)]),
        "c": median_run([c for _, c in pairs]),
        "d": measure("(d) no-op rerun", snakemake_command(pipeline, cores)),
    }  # fmt: skip
    store = pipeline / STORE
    extra = {
        "gather_rss_mb": job_peak_memory(pipeline, "gather"),
        "extract_rss_mb": job_peak_memory(pipeline, "extract"),
        "extract_pss_mb": job_peak_memory(pipeline, "extract", "max_pss"),
        "max_db_difference": max_db_difference(store, workdir / "seed.h5"),
    }
    default_target = snakemake_command(pipeline, cores)
    runs["e"] = one_file_changed("(e) rerun after one file changed", root, default_target,
                                 positions=(0.5, 0.6, 0.7))  # fmt: skip
    extra["f_ms"] = random_reads(store)
    clean(pipeline)
    store_only = snakemake_command(pipeline, cores, STORE)
    runs["c'"] = measure("(c') the store alone, from clean", store_only, note=f"snakemake {STORE}")
    runs["e'"] = one_file_changed("(e') the store alone, one file changed", root, store_only,
                                  positions=(0.25, 0.3, 0.35))  # fmt: skip
    extra["c/a"] = statistics.median(c.wall / a.wall for a, c in pairs)
    extra["c'/a"] = runs["c'"].wall / runs["a"].wall
    command = f"python -m bench.run --files {files} --cores {cores} --repeats {repeats}" + (
        f" --shard-size {shard_size}" if shard_size else ""
    )
    publish(report(runs, extra, files=files, cores=cores, command=command), out)


if __name__ == "__main__":
    main()
