"""Size, error and read time of each storage choice, and the disk a build leaves, on the corpus.

One invocation builds the seed feature set of the UrbanSound8K-shaped corpus
once per storage choice (exact float32, ``compression: gzip``, and
``precision_db`` 0.1, 0.05 and 0.01), all in one ``snakemake`` run, then
reports for each store: bytes per stored value, the largest difference from
the exact store, the recorded ``precision_db`` and ``max_error_db``, the median
random single-clip read with plain h5py, and whether ``melstore verify``
passes. It also reports the disk used under ``results/<dataset>/`` against the
stores, a rerun after one changed file for the ``precision_db: 0.05`` set, and
whether that set's store has the same bytes when built on one core with small
shards.

Run ``python -m bench.storage --help`` from the repository root.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import yaml

from bench.corpus import CACHE_DIR, FULL_SIZE, make_corpus
from bench.run import (
    clean,
    link_dataset,
    machine,
    measure,
    one_file_changed,
    publish,
    random_reads,
    snakemake_command,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "storage.md"
CHOICES = {
    "seed": ({}, "exact float32 (default)"),
    "seed_gzip": ({"compression": "gzip"}, "`compression: gzip`"),
    "seed_p010": ({"precision_db": 0.1}, "`precision_db: 0.1`"),
    "seed_p005": ({"precision_db": 0.05}, "`precision_db: 0.05`"),
    "seed_p001": ({"precision_db": 0.01}, "`precision_db: 0.01`"),
}
COMPACT = "seed_p005"


def config(root: Path, names, **extra) -> dict:
    return {
        "dataset": {"name": "us8k", "layout": "urbansound8k", "root": str(root)},
        "features": list(names),
        "feature_sets": {
            name: {"preset": "seed", **keys} for name, (keys, _) in CHOICES.items() if keys
        },
        **extra,
    }


def largest_difference(store: Path, exact: Path) -> float:
    """The largest absolute difference between two stores' features, block by block."""
    worst = 0.0
    with h5py.File(store, "r") as ours, h5py.File(exact, "r") as theirs:
        for start in range(0, ours["features"].shape[0], 512):
            block = slice(start, start + 512)
            ours_block = ours["features"][block].astype(np.float64)
            worst = max(worst, float(np.abs(ours_block - theirs["features"][block]).max()))
    return worst


def store_row(store: Path, exact: Path) -> dict:
    with h5py.File(store, "r") as f:
        features = f["features"]
        values = features.size
        attrs = dict(f.attrs)
        dtype, stored = str(features.dtype), features.id.get_storage_size()
    verify = subprocess.run([sys.executable, "-m", "melstore.cli", "verify", str(store)],
                            capture_output=True, text=True)  # fmt: skip
    return {
        "dtype": dtype,
        "file_mb": store.stat().st_size / 1e6,
        "bytes_per_value": store.stat().st_size / values,
        "feature_bytes_per_value": stored / values,
        "max_error": largest_difference(store, exact),
        "precision_db": attrs.get("precision_db"),
        "max_error_db": attrs.get("max_error_db"),
        "read_ms": random_reads(store),
        "verify": verify.returncode,
    }


def disk_use(folder: Path) -> int:
    """Bytes of the files under ``folder``, each inode once, the report left out."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and "report" not in path.relative_to(folder).parts:
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@click.command(context_settings={"show_default": True})
@click.option("--files", type=click.IntRange(1, FULL_SIZE), default=FULL_SIZE,
              help="Corpus size (a prefix of the full 8732-file plan).")  # fmt: skip
@click.option("--cores", type=click.IntRange(min=1), default=os.cpu_count(),
              help="snakemake's --cores.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              default=CACHE_DIR / "storage", help="Scratch folder, emptied first.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=RESULTS,
              help="Markdown report to write.")  # fmt: skip
def main(files: int, cores: int, workdir: Path, out: Path) -> None:
    """Build one store per storage choice, measure them, print the table and write it to --out."""
    corpus = make_corpus(CACHE_DIR / f"us8k-{files}", n_files=files)
    shutil.rmtree(workdir, ignore_errors=True)
    root, work = workdir / "data", workdir / "pipeline"
    link_dataset(corpus, root)
    work.mkdir(parents=True)
    (work / "my.yaml").write_text(yaml.safe_dump(config(root, CHOICES)))
    stores = [f"results/us8k/{name}.h5" for name in CHOICES]
    build = measure("every storage choice, from clean", snakemake_command(work, cores, *stores))
    results = work / "results/us8k"
    exact = results / "seed.h5"
    rows = {name: store_row(results / f"{name}.h5", exact) for name in CHOICES}
    stores_bytes = sum((results / f"{name}.h5").stat().st_blocks * 512 for name in CHOICES)
    left = disk_use(results)
    leftovers = sorted(p.relative_to(results).as_posix() for p in results.rglob("*.h5"))

    # one changed file, with only the compact set: its store alone, then with its report
    (work / "my.yaml").write_text(yaml.safe_dump(config(root, [COMPACT])))
    store_only = snakemake_command(work, cores, f"results/us8k/{COMPACT}.h5")
    e_store = one_file_changed("(e') compact store alone, one file changed", root, store_only,
                               positions=(0.25, 0.3, 0.35))  # fmt: skip
    default_target = snakemake_command(work, cores)
    e_default = one_file_changed("(e) compact set, default target, one file changed", root,
                                 default_target, positions=(0.5, 0.6, 0.7))  # fmt: skip

    # the same files on one core with small shards: the same bytes?
    other = workdir / "sharded"
    other.mkdir()
    (other / "my.yaml").write_text(yaml.safe_dump(config(root, [COMPACT], shard_size=3000)))
    clean(other)
    measure("compact store, 1 core, shard_size 3000",
            snakemake_command(other, 1, f"results/us8k/{COMPACT}.h5"))  # fmt: skip
    same = sha256(other / f"results/us8k/{COMPACT}.h5") == sha256(results / f"{COMPACT}.h5")

    lines = [
        f"# Storage choices: {files} files, {cores} cores",
        "",
        f"Command: `python -m bench.storage --files {files} --cores {cores}`",
        "",
        "The seed feature set of the corpus, one store per storage choice, built in one",
        f"snakemake run ({build.wall:.1f} s, {build.cpu:.0f} CPU s for all five). Bytes per value:",
        "the store file's size over its number of feature values (the features alone in",
        "brackets). Max error: the largest absolute difference from the exact store, in dB.",
        "Read: median of 1000 random single-clip reads with plain h5py.",
        "",
        "| storage | dtype | store MB | bytes per value | max error dB | recorded bound / max "
        "error | read ms | `melstore verify` |",
        "|---|---|---:|---:|---:|---|---:|---|",
    ]
    for name, row in rows.items():
        recorded = (
            "–" if row["precision_db"] is None
            else f"{row['precision_db']:g} / {row['max_error_db']:.5f}"
        )  # fmt: skip
        lines.append(
            f"| {CHOICES[name][1]} | {row['dtype']} | {row['file_mb']:.1f} | "
            f"{row['bytes_per_value']:.3f} ({row['feature_bytes_per_value']:.3f}) | "
            f"{row['max_error']:.5f} | {recorded} | {row['read_ms']:.3f} | "
            f"{'passes' if row['verify'] == 0 else 'fails'} |"
        )
    lines += [
        "",
        f"- Disk under `results/us8k/` after the build, report aside: {left / 1e6:.1f} MB for "
        f"{stores_bytes / 1e6:.1f} MB of stores ({left / stores_bytes:.3f}×); the files: "
        + ", ".join(leftovers)
        + ".",
        f"- One changed file, `{COMPACT}` only: the store alone {e_store.wall:.2f} s "
        f"({e_store.note}); the default target (store and report) {e_default.wall:.2f} s "
        f"({e_default.note}).",
        f"- The `{COMPACT}` store built on 1 core with `shard_size: 3000` has "
        + ("the same sha256 as" if same else "**other bytes than**")
        + f" the one built on {cores} cores in one shard.",
        "",
        "## Machine",
        *machine(),
    ]
    publish("\n".join(lines) + "\n", out)


if __name__ == "__main__":
    main()
