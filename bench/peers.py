"""Benchmark melstore against its peers, Lhotse and Hugging Face datasets.

One invocation builds the seed feature set of the same UrbanSound8K-shaped
corpus, with the same number of workers, with:

- melstore: ``snakemake results/us8k/seed.h5`` from clean (the store alone, as
  the peers draw no report);
- Lhotse: ``LibrosaFbank`` through ``CutSet.compute_and_store_features`` with
  ``num_jobs`` = cores, once with ``LilcomChunkyWriter`` and once with
  ``NumpyHdf5Writer``;
- Hugging Face datasets: ``Dataset.from_dict`` of the file list, ``.map`` with
  ``num_proc`` = cores and ``save_to_disk``, once with the seed recipe (librosa
  calls) and once with the lean recipe of ``bench.baselines``.

Each build runs as a child command (``bench.peer_runs``) measured with
``bench.run.measure``: wall seconds, CPU seconds of the process tree and the
peak RSS of its largest process. Then the size of what it wrote, and the median
time of random single-clip reads from the freshly opened store (the same seeded
rows for every tool). Ratios are melstore's value over the peer's.

Run ``python -m bench.peers --help`` from the repository root; the peers
install with ``pip install -e '.[peers]'`` (see bench/README.md).
"""

from __future__ import annotations

import os
import random
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import click
import yaml

from bench.baselines import (
    DURATION,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_MELS,
    SR,
    TOP_DB,
    audio_paths,
)
from bench.corpus import CACHE_DIR, FULL_SIZE, make_corpus
from bench.peer_runs import LHOTSE_MANIFEST
from bench.run import (
    REPO,
    STORE,
    Run,
    clean,
    link_dataset,
    machine,
    measure,
    median_ms,
    median_run,
    publish,
    read_into_page_cache,
    size_mb,
    snakemake_command,
)

RESULTS = REPO / "bench" / "results" / "peers.md"
PEER_PACKAGES = ("lhotse", "lilcom", "torch", "datasets", "pyarrow")
HF_NAME = "HF datasets, {recipe} recipe"


@dataclass
class Tool:
    """One contender: how to build its store, where it lands, how to read a clip."""

    name: str
    command: list[str]
    output: Path
    read: Callable[[Path, list[int]], float]
    reset: Callable[[], None]
    note: str = ""
    kept: Path | None = None  # what it keeps on disk, if more than ``output``


@dataclass
class Result:
    """What one contender's build cost, wrote and reads at."""

    run: Run
    size_mb: float
    read_ms: float


def melstore_reads(store: Path, rows: list[int]) -> float:
    """Median ms of ``features[row]`` with h5py, from the freshly opened store.

    Parameters
    ----------
    store : Path
        melstore's HDF5 store.
    rows : list of int
        Rows to read.

    Returns
    -------
    float
        Median ms per clip.
    """
    import h5py
    import numpy as np

    with h5py.File(store, "r") as opened:
        features = opened["features"]
        return median_ms(lambda row: np.asarray(features[row]), rows)


def lhotse_reads(folder: Path, rows: list[int], *, root: Path) -> float:
    """Median ms of ``cut.load_features()`` for cuts of a freshly read manifest.

    Parameters
    ----------
    folder : Path
        What ``bench.peer_runs lhotse`` wrote.
    rows : list of int
        Rows of the corpus's CSV to read (cuts are named by file stem).
    root : Path
        The dataset root, for the CSV order.

    Returns
    -------
    float
        Median ms per clip.
    """
    from lhotse import CutSet

    cuts = {cut.id: cut for cut in CutSet.from_file(folder / LHOTSE_MANIFEST)}
    ids = [Path(path).stem for path in audio_paths(root)]
    return median_ms(lambda row: cuts[ids[row]].load_features(), rows)


def hf_reads(folder: Path, rows: list[int], *, output_format: str | None = "numpy") -> float:
    """Median ms of ``load_from_disk(folder)[row]``.

    Parameters
    ----------
    folder : Path
        What ``save_to_disk`` wrote.
    rows : list of int
        Rows to read (``map`` keeps the CSV order).
    output_format : str or None
        ``with_format`` of the dataset: "numpy" returns arrays, None the
        default Python lists.

    Returns
    -------
    float
        Median ms per clip.
    """
    from datasets import load_from_disk

    table = load_from_disk(str(folder)).with_format(output_format)
    return median_ms(lambda row: table[row]["features"], rows)


def emptier(folder: Path) -> Callable[[], None]:
    """A function that removes ``folder``, for a build from clean."""
    return lambda: shutil.rmtree(folder, ignore_errors=True)


def tools(root: Path, workdir: Path, cores: int) -> list[Tool]:
    """melstore and its peers, on the corpus at ``root`` with ``cores`` workers."""
    pipeline = workdir / "pipeline"
    peer = [sys.executable, "-m", "bench.peer_runs"]

    def lhotse(writer: str, name: str) -> Tool:
        out = workdir / f"lhotse-{writer}"
        command = [*peer, "lhotse", str(root), str(out), "--jobs", str(cores), "--writer", writer]
        return Tool(f"Lhotse, {name}", command, out,
                    lambda folder, rows: lhotse_reads(folder, rows, root=root),
                    emptier(out), note=f"num_jobs {cores}")  # fmt: skip

    def hf(recipe: str) -> Tool:
        out = workdir / f"hf-{recipe}"
        command = [*peer, "hf", str(root), str(out), "--jobs", str(cores), "--recipe", recipe]
        return Tool(HF_NAME.format(recipe=recipe), command, out, hf_reads,
                    emptier(out), note=f"num_proc {cores}")  # fmt: skip

    return [
        Tool("melstore", snakemake_command(pipeline, cores, STORE), pipeline / STORE,
             melstore_reads, lambda: clean(pipeline), note=f"snakemake --cores {cores} {STORE}",
             kept=(pipeline / STORE).parent),  # the index and its shard files
        lhotse("lilcom", "LilcomChunkyWriter"),
        lhotse("hdf5", "NumpyHdf5Writer"),
        hf("seed"),
        hf("lean"),
    ]  # fmt: skip


def build(tool: Tool) -> Run:
    """Build ``tool``'s store from clean and measure it."""
    tool.reset()
    return measure(tool.name, tool.command, note=tool.note)


def rounds(contenders: list[Tool], repeats: int) -> list[Run]:
    """Median run of each contender over ``repeats`` rounds, the order rotating each round."""
    runs: dict[str, list[Run]] = {tool.name: [] for tool in contenders}
    for k in range(repeats):
        shift = k % len(contenders)
        for tool in contenders[shift:] + contenders[:shift]:
            runs[tool.name].append(build(tool))
    return [median_run(runs[tool.name]) for tool in contenders]


def hf_difference(folder: Path, store: Path, *, block: int = 512) -> float:
    """Largest absolute difference (dB) between a HF dataset's features and melstore's.

    Parameters
    ----------
    folder : Path
        What ``save_to_disk`` wrote.
    store : Path
        melstore's HDF5 store of the same corpus; its rows are matched to the
        dataset's by file name (the corpus's are unique).
    block : int
        Rows compared at a time.

    Returns
    -------
    float
        The largest difference; files melstore did not store, and NaN rows, are left out.
    """
    import h5py
    import numpy as np
    from datasets import load_from_disk

    table = load_from_disk(str(folder)).with_format("numpy")
    names = [Path(path).name for path in table["path"]]
    worst = 0.0
    with h5py.File(store, "r") as f:
        row_of = {Path(path).name: row for row, path in enumerate(f["metadata/path"].asstr()[()])}
        for start in range(0, len(table), block):
            pairs = sorted((row_of[name], start + i)
                           for i, name in enumerate(names[start : start + block])
                           if name in row_of)  # fmt: skip
            ours = f["features"][[row for row, _ in pairs]]
            theirs = table[[i for _, i in pairs]]["features"]
            worst = max(worst, float(np.nanmax(np.abs(theirs - ours))))
    return worst


def facts(contenders: list[Tool], rows: list[int]) -> list[str]:
    """Report lines beside the table: HF's default format, agreement, melstore's shards."""
    by_name = {tool.name: tool for tool in contenders}
    store = by_name["melstore"].output
    hf_seed, hf_lean = (by_name[HF_NAME.format(recipe=r)].output for r in ("seed", "lean"))
    lists_ms = hf_reads(hf_seed, rows, output_format=None)
    difference = max(hf_difference(hf_seed, store), hf_difference(hf_lean, store))
    return [
        f"- HF datasets without `with_format('numpy')` (rows as Python lists): "
        f"{lists_ms:.3f} ms per read.",
        f"- The HF datasets' features equal melstore's within {difference:.5f} dB.",
        f"- melstore's size is its index and shard files, `{store.parent.name}/`.",
    ]


def configuration() -> list[str]:
    """The recipe each contender computes, and how the peers differ from the seed recipe."""
    seed = (f"{SR} Hz mono, first {DURATION:g} s zero-padded, n_fft {N_FFT}, hop {HOP_LENGTH}, "
            f"Hann, centred frames (constant padding), {N_MELS} Slaney mel bands 0-{SR // 2} Hz, "
            f"power 2, then dB re the clip's peak, floor {TOP_DB:g} dB below it: "
            f"{N_MELS} x {N_FRAMES} float32 per clip")  # fmt: skip
    return [
        f"- **melstore** and **HF datasets** compute the seed recipe: {seed}. HF's `seed` runs "
        "librosa's calls (`librosa.load`, `melspectrogram`, `power_to_db`); its `lean` runs "
        "soundfile, soxr and a float32 STFT, as melstore does. The column is "
        f"`Array2D(({N_MELS}, {N_FRAMES}), float32)`; reads use `with_format('numpy')`.",
        f"- **Lhotse**: `LibrosaFbank(LibrosaFbankConfig(sampling_rate={SR}, fft_size={N_FFT}, "
        f"hop_size={HOP_LENGTH}, win_length={N_FFT}, window='hann', num_mel_bins={N_MELS}, "
        f"fmin=0, fmax={SR // 2}))` on cuts `.resample({SR})`, `.truncate(max_duration="
        f"{DURATION:g})`, `.pad(duration={DURATION:g})`, the channels averaged by "
        "`augment_fn`. What it cannot match: magnitude (power 1) mel energies, then "
        "`log10(max(1e-10, x))` (no dB re the peak, no 80 dB floor); frames centred with "
        "reflect padding; 129 frames per 3 s (librosa's last centred frame dropped), "
        "frames x bands; resampled with Lhotse's torch windowed-sinc resampler (the seed "
        "recipe: soxr HQ). `LilcomChunkyWriter` is lossy (log-domain ticks of 2^-5), "
        "`NumpyHdf5Writer` stores float32.",
    ]


def versions() -> str:
    """Installed versions of the peers and what they rest on."""
    found = []
    for package in PEER_PACKAGES:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} (not installed)")
    return "- " + ", ".join(found)


def report(contenders: list[Tool], results: list[Result], notes: list[str], *,
           files: int, cores: int, command: str) -> str:  # fmt: skip
    """The Markdown report: one row per contender, ratios melstore/peer."""
    ours = results[0]

    def row(tool: Tool, result: Result) -> str:
        run = result.run
        ratios = ("—", "—") if result is ours else (
            f"{ours.run.wall / run.wall:.2f}", f"{ours.read_ms / result.read_ms:.3f}")  # fmt: skip
        return (f"| {tool.name} | {run.wall:.2f} | {run.cpu:.1f} | {run.peak_rss_mb:.0f} | "
                f"{result.size_mb:.1f} | {result.read_ms:.3f} | {ratios[0]} | {ratios[1]} | "
                f"{run.note} |")  # fmt: skip

    return "\n".join([
        f"# melstore and its peers: {files} files, {cores} cores",
        "",
        f"Command: `{command}`",
        "",
        "Wall and CPU seconds of a build from clean (CPU: the whole process tree), peak RSS",
        "of its largest process, the size of what it wrote, and the median of random",
        "single-clip reads from the freshly opened store (the same rows for every tool,",
        "each read once before it is timed).",
        "Ratios are melstore's over the peer's: below 1, melstore is faster.",
        "",
        "| tool | wall s | CPU s | peak RSS MB | size MB | read ms | melstore/peer wall "
        "| melstore/peer read | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *(row(tool, result) for tool, result in zip(contenders, results, strict=True)),
        "",
        *notes,
        "",
        "## What each computes",
        *configuration(),
        "",
        "## Machine",
        *machine(),
        versions(),
        "",
    ])  # fmt: skip


def prepare(files: int, workdir: Path) -> Path:
    """The corpus linked under ``workdir`` and the pipeline's config; returns the data root."""
    corpus = make_corpus(CACHE_DIR / f"us8k-{files}", n_files=files)
    read_into_page_cache(corpus)
    shutil.rmtree(workdir, ignore_errors=True)
    root, pipeline = workdir / "data", workdir / "pipeline"
    link_dataset(corpus, root)
    pipeline.mkdir(parents=True)
    config = {"dataset": {"name": "us8k", "layout": "urbansound8k", "root": str(root)},
              "features": ["seed"]}  # fmt: skip
    (pipeline / "my.yaml").write_text(yaml.safe_dump(config))
    return root


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
    help="Workers of every tool: snakemake --cores, num_jobs, num_proc.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=CACHE_DIR / "peers",
    help="Scratch folder, emptied first.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    help="Builds of each tool, in rounds whose order rotates; the median is kept.",
)
@click.option(
    "--reads", type=click.IntRange(min=1), default=1000, help="Random single-clip reads per store."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS,
    help="Markdown report to write.",
)
def main(files: int, cores: int, workdir: Path, repeats: int, reads: int, out: Path) -> None:
    """Build the seed set with melstore and its peers, print the table and write it to --out."""
    root = prepare(files, workdir)
    contenders = tools(root, workdir, cores)
    runs = rounds(contenders, repeats)
    rows = random.Random(0).choices(range(files), k=reads)
    click.echo("reading ...", err=True)
    results = [Result(run, size_mb(tool.kept or tool.output), tool.read(tool.output, rows))
               for tool, run in zip(contenders, runs, strict=True)]  # fmt: skip
    command = (f"python -m bench.peers --files {files} --cores {cores} --repeats {repeats} "
               f"--reads {reads}")  # fmt: skip
    publish(report(contenders, results, facts(contenders, rows), files=files, cores=cores,
                   command=command), out)  # fmt: skip


if __name__ == "__main__":
    main()
