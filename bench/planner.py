"""The planner against the build: ``melstore plan --json``, then the clean build it predicts.

On the UrbanSound8K-shaped corpus (8,732 clips, feature set ``seed``) and the
folder corpus of :mod:`bench.growth` (100,000 clips of 0.5-1 s, 64 mels at
1 s), each in a fresh work folder: the plan, timed, then a clean build of the
store, timed, with its size and its extraction jobs' memory (max_pss, which
counts the pages forked workers share once). The table gives predicted over
measured; the goal is within ±30 % for the wall time and ±10 % for the bytes.

Run ``python -m bench.planner --help`` from the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click
import yaml

from bench.corpus import CACHE_DIR, make_corpus
from bench.growth import FEATURE_SET, make_folder_corpus
from bench.run import (
    clean,
    job_peak_memory,
    link_dataset,
    machine,
    measure,
    publish,
    size_mb,
    snakemake_command,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "planner.md"


@dataclass
class Comparison:
    corpus: str
    files: int
    plan_seconds: float
    predicted: dict
    wall: float
    store_bytes: int
    extract_pss_mb: float


def compare(name: str, corpus: Path, config: dict, *, store: str, cores: int) -> list[Comparison]:
    """Plan, then build, ``config`` on a hard-linked copy of ``corpus``: cold, then cached.

    Cold: the page cache is dropped first (as root), as after a reboot or on a
    dataset not read for long. Cached: the same again, with the files just read.
    """
    workdir = CACHE_DIR / f"planner-{name}"
    shutil.rmtree(workdir, ignore_errors=True)
    root, pipeline = workdir / "data", workdir / "pipeline"
    link_dataset(corpus, root)
    pipeline.mkdir(parents=True)
    config["dataset"]["root"] = str(root)
    (pipeline / "my.yaml").write_text(yaml.safe_dump(config))
    comparisons = []
    for cache in ("cold", "cached"):
        if cache == "cold" and not drop_page_cache():
            continue
        started = time.perf_counter()
        planned = subprocess.run(
            [str(Path(sys.executable).parent / "melstore"), "plan", "--configfile",
             str(pipeline / "my.yaml"), "--cores", str(cores), "--json"],
            cwd=pipeline, capture_output=True, text=True, check=True,
        )  # fmt: skip
        plan_seconds = time.perf_counter() - started
        clean(pipeline)
        build = measure(f"clean build ({name}, {cache})", snakemake_command(pipeline, cores, store))
        comparisons.append(
            Comparison(
                corpus=f"{name}, {cache}",
                files=json.loads(planned.stdout)["files"],
                plan_seconds=plan_seconds,
                predicted=json.loads(planned.stdout),
                wall=build.wall,
                # the index and its shard files: all the results folder holds after a clean build
                store_bytes=int(size_mb((pipeline / store).parent) * 1e6),
                extract_pss_mb=job_peak_memory(pipeline, "extract", "max_pss"),
            )
        )
    return comparisons


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (needs root); False if it cannot."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        click.echo("cannot drop the page cache (not root): cached runs only", err=True)
        return False
    return True


@click.command(context_settings={"show_default": True})
@click.option("--files", type=click.IntRange(min=1), default=100_000,
              help="Clips in the folder corpus.")  # fmt: skip
@click.option("--cores", type=click.IntRange(min=1), default=os.cpu_count(),
              help="snakemake's --cores and the plan's.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(files: int, cores: int, out: Path) -> None:
    """Plan and build both corpora, and write predicted against measured to --out."""
    us8k = make_corpus(CACHE_DIR / "us8k-8732")
    folder = make_folder_corpus(CACHE_DIR / f"folder-{files}", files, seconds=(0.5, 1.0),
                                workers=cores)  # fmt: skip
    comparisons = [
        *compare("us8k", us8k, {"dataset": {"name": "us8k", "layout": "urbansound8k"},
                               "features": ["seed"]},
                store="results/us8k/seed.h5", cores=cores),
        *compare(f"folder-{files}", folder,
                {"dataset": {"name": "growth", "layout": "folder"}, "features": ["short"],
                 "feature_sets": {"short": FEATURE_SET}},
                store="results/growth/short.h5", cores=cores),
    ]  # fmt: skip
    publish(report(comparisons, cores=cores, files=files), out)


def report(comparisons: list[Comparison], *, cores: int, files: int) -> str:
    rows = []
    for c in comparisons:
        p = c.predicted
        [predicted_bytes] = p["store_bytes"].values()
        rows.append(
            f"| {c.corpus} | {c.files} | {c.plan_seconds:.1f} | {p['wall_seconds']:.1f} | "
            f"{c.wall:.1f} | {p['wall_seconds'] / c.wall:.2f} | {predicted_bytes / 1e6:.1f} | "
            f"{c.store_bytes / 1e6:.1f} | {predicted_bytes / c.store_bytes:.3f} | "
            f"{p['mem_mb']} | {c.extract_pss_mb:.0f} | {p['cpu_seconds']:.0f} | "
            f"{p['read_ms_per_file']:.2f} |"
        )
    lines = [
        f"# Planner against the build, {cores} cores",
        "",
        f"Command: `python -m bench.planner --files {files} --cores {cores}`",
        "",
        "Each corpus: `melstore plan --json` (timed), then a clean build of its store.",
        "Goals: wall within ±30 % (ratio 0.70-1.30), store bytes within ±10 % (0.90-1.10).",
        "",
        "| corpus, page cache | files | plan s | predicted wall s | measured wall s | ratio | "
        "predicted MB | measured MB | ratio | predicted MB/job | measured PSS MB/job | "
        "predicted CPU s | read ms/file |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "## Machine",
        *machine(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
