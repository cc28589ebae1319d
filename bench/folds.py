"""This checkout against a baseline commit on the corpus, and what its fold tools cost.

One invocation builds the seed feature set of the UrbanSound8K-shaped corpus
with this checkout and with a baseline commit (by default the one before
per-fold statistics), alternately, from clean and after one changed file, and
reports both and their ratio: with the default baseline, the price of the
moments every extraction worker computes and the gather pools. It reads both
stores with plain h5py, every fold whole and single clips at random. On this
checkout's store it then times
``Store.stats`` for every held-out fold against the direct numpy computation
(one pass over the training clips per fold, what a user would otherwise run)
and reports their largest relative difference; and it times ``melstore
audit`` and ``melstore verify --recompute 20``.

Run ``python -m bench.folds --help`` from the repository root.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

import click
import h5py
import numpy as np
import yaml

import melstore
from bench.corpus import CACHE_DIR, FULL_SIZE, make_corpus
from bench.run import (
    clean,
    job_peak_memory,
    link_dataset,
    machine,
    measure,
    median_run,
    one_file_changed,
    publish,
    random_reads,
    read_into_page_cache,
    snakemake_command,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "folds.md"
STORE = "results/us8k/seed.h5"
BASELINE = "688e277"  # the last commit before per-fold statistics


def checkout(revision: str, folder: Path) -> Path:
    """The repository at ``revision``, unpacked into ``folder`` (git archive, no worktree)."""
    if not (folder / "Snakefile").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision], cwd=REPO, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
    return folder


def baseline_python(code: Path) -> Path:
    """A virtualenv's python that imports the package in ``code``, then this one's libraries.

    This checkout's editable install maps ``melstore`` to it ahead of PYTHONPATH, so
    the baseline gets an environment of its own: a ``.pth`` line puts ``code`` first
    and this environment's site-packages after it, whose own ``.pth`` files (that
    mapping) are then not read.
    """
    venv = code.with_name(f"venv-{code.name}")
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    paths = sysconfig.get_paths()
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    (site / "baseline.pth").write_text(f"{code}\n{paths['purelib']}\n{paths['platlib']}\n")
    return venv / "bin" / "python"


def pipeline_command(workdir: Path, cores: int, code: Path | None, *targets: str) -> list[str]:
    """This checkout's pipeline, or the one in ``code`` with its own package and snakemake."""
    command = snakemake_command(workdir, cores, *targets)
    if code is None:
        return command
    command[command.index(str(REPO / "Snakefile"))] = str(code / "Snakefile")
    return [str(baseline_python(code)), "-P", *command[1:]]  # -P: not this checkout, the cwd


def numpy_train_stats(store, held_out):
    """Mean and std over the valid frames of the clips not in ``held_out``, in one direct pass."""
    folds = store.fold_of_rows().to_numpy()
    valid = store.metadata["n_frames_valid"].to_numpy()
    total = np.zeros(store.features.shape[1:-1])
    squares, count = np.zeros_like(total), 0
    rows = np.flatnonzero(folds != held_out)
    for start in range(0, len(rows), 512):
        block_rows = rows[start : start + 512]
        block = store.read(block_rows).astype(np.float64)
        mask = np.arange(block.shape[-1]) < valid[block_rows][:, None]
        block *= mask[:, None, :]
        total += block.sum(axis=(0, -1))
        squares += np.square(block).sum(axis=(0, -1))
        count += int(valid[block_rows].sum())
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def fold_read_seconds(store_path: Path, *, repeats: int = 3) -> float:
    """Seconds to read every fold of a store whole (plain h5py, rows in order), best of repeats.

    The folds are the corpus's own ``fold`` column, which every layout version keeps.
    """
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with h5py.File(store_path, "r") as opened:
            folds = opened["metadata/fold"][()]
            for fold in np.unique(folds):
                opened["features"][np.flatnonzero(folds == fold)]
        best = min(best, time.perf_counter() - start)
    return best


def stats_rows(store_path: Path) -> dict:
    """Store.stats against the direct numpy pass, for every held-out fold: time and agreement."""
    with melstore.open(store_path) as store:
        folds = sorted(set(store.fold_of_rows()))
        start = time.perf_counter()
        ours = {fold: store.stats(held_out=fold) for fold in folds}
        stats_seconds = time.perf_counter() - start
        start = time.perf_counter()
        direct = {fold: numpy_train_stats(store, fold) for fold in folds}
        numpy_seconds = time.perf_counter() - start
    worst = max(
        float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
        for fold in folds
        for a, b in zip(ours[fold], direct[fold], strict=True)
    )
    return {"folds": len(folds), "stats_s": stats_seconds, "numpy_s": numpy_seconds,
            "relative": worst}  # fmt: skip


def cli(*args: str) -> tuple[float, int, str]:
    """Wall seconds, exit status and stderr's last line of one melstore command."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "melstore.cli", *args],
                            capture_output=True, text=True)  # fmt: skip
    last = (result.stderr.strip().splitlines() or [""])[-1]
    return time.perf_counter() - start, result.returncode, last


@click.command(context_settings={"show_default": True})
@click.option("--files", type=click.IntRange(1, FULL_SIZE), default=FULL_SIZE,
              help="Corpus size (a prefix of the full 8732-file plan).")  # fmt: skip
@click.option("--cores", type=click.IntRange(min=1), default=os.cpu_count(),
              help="snakemake's --cores.")  # fmt: skip
@click.option("--baseline", default=BASELINE, help="The commit to compare with.")
@click.option("--repeats", type=click.IntRange(min=1), default=3,
              help="Alternating clean builds of each.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=CACHE_DIR / "folds", help="Scratch folder.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(files: int, cores: int, baseline: str, repeats: int, workdir: Path, out: Path) -> None:
    """Build with this checkout and the baseline, time the fold tools, write the table to --out."""
    corpus = make_corpus(CACHE_DIR / f"us8k-{files}", n_files=files)
    read_into_page_cache(corpus)
    base_code = checkout(baseline, workdir / f"code-{baseline}")
    sides = {"this checkout": None, f"baseline {baseline}": base_code}
    builds, changed, gather_rss = {}, {}, {}
    for code in sides.values():
        work = workdir / ("ours" if code is None else "base")
        if not (work / "data").exists():
            link_dataset(corpus, work / "data")
        (work / "my.yaml").write_text(yaml.safe_dump({
            "dataset": {"name": "us8k", "layout": "urbansound8k", "root": str(work / "data")},
            "features": ["seed"],
        }))  # fmt: skip
    for _ in range(repeats):
        for side, code in sides.items():
            work = workdir / ("ours" if code is None else "base")
            clean(work)
            run = measure(f"{side}: store from clean", pipeline_command(work, cores, code, STORE))
            builds.setdefault(side, []).append(run)
            gather_rss[side] = job_peak_memory(work, "gather")
    for side, code in sides.items():
        work = workdir / ("ours" if code is None else "base")
        changed[side] = one_file_changed(f"{side}: store after one changed file", work / "data",
                                         pipeline_command(work, cores, code, STORE),
                                         positions=(0.25, 0.5, 0.75))  # fmt: skip
    clean_runs = {side: median_run(runs) for side, runs in builds.items()}
    ours_store = workdir / "ours" / STORE
    reads = {
        side: (fold_read_seconds(work / STORE), random_reads(work / STORE))
        for side, work in [
            ("this checkout", workdir / "ours"),
            (f"baseline {baseline}", workdir / "base"),
        ]
    }
    stats = stats_rows(ours_store)
    audit = cli("audit", str(ours_store))
    drift = cli("verify", str(ours_store), "--recompute", "20")

    ours, base = (clean_runs[side] for side in sides)
    ours_e, base_e = (changed[side] for side in sides)
    lines = [
        f"# This checkout against {baseline}, fold statistics, audit and drift guard: "
        f"{files} files, {cores} cores",
        "",
        f"Command: `python -m bench.folds --files {files} --cores {cores} --repeats {repeats}"
        f"{'' if baseline == BASELINE else f' --baseline {baseline}'}`",
        "",
        f"The seed store of the corpus, built by this checkout and by the baseline commit "
        f"`{baseline}`,",
        "alternately; one changed file: the median of three reruns, a different file each time.",
        "",
        "| run | wall s | CPU s | peak RSS MB | notes |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {r.name} | {r.wall:.2f} | {r.cpu:.1f} | {r.peak_rss_mb:.0f} | {r.note} |"
            for r in [*clean_runs.values(), *changed.values()]
        ),
        "",
        f"- Clean build, this checkout / baseline: {ours.wall / base.wall:.3f} "
        f"(CPU {ours.cpu / base.cpu:.3f}).",
        f"- One changed file, this checkout / baseline: {ours_e.wall / base_e.wall:.3f} "
        f"(CPU {ours_e.cpu / base_e.cpu:.3f}).",
        *(
            f"- {side}: every fold read whole in {fold_s:.2f} s (best of 3); one random clip "
            f"in {read_ms:.3f} ms (median of 1000), plain h5py."
            for side, (fold_s, read_ms) in reads.items()
        ),
        "- Gather peak RSS (Snakemake's benchmark, max_rss): "
        + ", ".join(f"{side} {mb:.0f} MB" for side, mb in gather_rss.items())
        + ".",
        f"- `Store.stats(held_out=k)` for all {stats['folds']} folds: "
        f"{stats['stats_s'] * 1e3:.1f} ms in all; the direct numpy pass over each fold's "
        f"training clips: {stats['numpy_s']:.1f} s. Largest relative difference: "
        f"{stats['relative']:.1e}.",
        f"- `melstore audit`: {audit[0]:.2f} s, exit {audit[1]}: `{audit[2]}`",
        f"- `melstore verify --recompute 20`: {drift[0]:.2f} s, exit {drift[1]}: `{drift[2]}`",
        "",
        "## Machine",
        *machine(),
    ]
    publish("\n".join(lines) + "\n", out)


if __name__ == "__main__":
    main()
