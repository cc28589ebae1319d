"""The peers' own builds of the seed feature set, each run as one child command.

``python -m bench.peers`` measures these commands with ``bench.run.measure``;
they can also be run alone:

- ``python -m bench.peer_runs lhotse ROOT OUT --jobs N --writer lilcom``: Lhotse's
  ``LibrosaFbank`` through ``CutSet.compute_and_store_features`` with
  ``LilcomChunkyWriter`` (``--writer hdf5``: ``NumpyHdf5Writer``);
- ``python -m bench.peer_runs hf ROOT OUT --jobs N --recipe seed``: Hugging Face
  ``datasets``: ``Dataset.from_dict`` of the file list, ``.map`` of the seed (or
  lean) recipe of ``bench.baselines`` with ``num_proc`` N, then ``save_to_disk``.

Lhotse's workers are spawned and import this module again, so it imports only
the standard library and click at the top. The command line imports
``bench.baselines`` before anything else, which pins the native thread pools
(BLAS, OpenMP, so torch's too) to one thread per process, as in melstore's
workers and the baselines; workers inherit the setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

# Offline: the runs read and write local files only.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

LHOTSE_MANIFEST = "cuts.jsonl.gz"
WRITERS = ("lilcom", "hdf5")


def downmix(samples, sampling_rate: int):
    """Mean of the channels, as the seed recipe's ``librosa.load(mono=True)``.

    Parameters
    ----------
    samples : numpy.ndarray
        (channels, samples) audio of one cut.
    sampling_rate : int
        Its sampling rate (unused: the signature of Lhotse's ``augment_fn``).

    Returns
    -------
    numpy.ndarray
        (1, samples) float32 audio.
    """
    return samples.mean(axis=0, keepdims=True, dtype="float32")


def lhotse_extractor():
    """``LibrosaFbank`` configured as close to the seed recipe as it allows.

    Returns
    -------
    lhotse.LibrosaFbank
        22050 Hz, n_fft 2048 (window as long), hop 512, Hann, 128 Slaney mel
        bands over 0-11025 Hz.
    """
    from lhotse import LibrosaFbank, LibrosaFbankConfig

    from bench.baselines import HOP_LENGTH, N_FFT, N_MELS, SR

    config = LibrosaFbankConfig(sampling_rate=SR, fft_size=N_FFT, hop_size=HOP_LENGTH,
                                win_length=N_FFT, window="hann", num_mel_bins=N_MELS,
                                fmin=0, fmax=SR // 2)  # fmt: skip
    return LibrosaFbank(config)


def lhotse_cuts(root: Path):
    """The corpus as Lhotse cuts of 3 s at 22050 Hz, one per file, in CSV order.

    Parameters
    ----------
    root : Path
        UrbanSound8K-layout dataset root.

    Returns
    -------
    lhotse.CutSet
        Cuts named by file stem: resampled, cut to their first 3 s and padded
        with silence to 3 s (multi-channel files stay multi-channel; see
        :func:`downmix`).
    """
    from lhotse import CutSet, Recording

    from bench.baselines import DURATION, SR, audio_paths

    cuts = CutSet.from_cuts(
        Recording.from_file(path, recording_id=Path(path).stem).to_cut()
        for path in audio_paths(root)
    ).resample(SR)
    cuts = cuts.truncate(max_duration=DURATION, offset_type="start", preserve_id=True)
    return cuts.pad(duration=DURATION, preserve_id=True)


def run_lhotse(root: Path, out: Path, *, jobs: int, writer: str) -> None:
    """Compute and store the features of ``root`` with Lhotse under ``out``.

    Parameters
    ----------
    root : Path
        UrbanSound8K-layout dataset root.
    out : Path
        Folder to write: the feature archives under ``feats/`` (one per job)
        and the cuts manifest :data:`LHOTSE_MANIFEST`.
    jobs : int
        Lhotse's ``num_jobs``.
    writer : {"lilcom", "hdf5"}
        ``LilcomChunkyWriter`` or ``NumpyHdf5Writer``.
    """
    cuts = lhotse_cuts(root)
    from lhotse import LilcomChunkyWriter, NumpyHdf5Writer

    storage = {"lilcom": LilcomChunkyWriter, "hdf5": NumpyHdf5Writer}[writer]
    out.mkdir(parents=True, exist_ok=True)
    cuts = cuts.compute_and_store_features(
        extractor=lhotse_extractor(), storage_path=out / "feats", num_jobs=jobs,
        augment_fn=downmix, storage_type=storage, progress_bar=False,
    )  # fmt: skip
    cuts.to_file(out / LHOTSE_MANIFEST)


def hf_row(path: str, *, recipe: str) -> dict:
    """One row of the Hugging Face dataset: the features of one file.

    Parameters
    ----------
    path : str
        Audio file.
    recipe : {"seed", "lean"}
        Which recipe of ``bench.baselines`` computes them.

    Returns
    -------
    dict
        ``{"features": (128, 130) float32 array}``.
    """
    from bench.baselines import RECIPES

    return {"features": RECIPES[recipe](path)}


def run_hf(root: Path, out: Path, *, jobs: int, recipe: str) -> None:
    """Compute the features of ``root`` with ``datasets.map`` and save them to ``out``.

    Parameters
    ----------
    root : Path
        UrbanSound8K-layout dataset root.
    out : Path
        Folder for ``save_to_disk``.
    jobs : int
        ``num_proc`` of ``map`` and ``save_to_disk``.
    recipe : {"seed", "lean"}
        Which recipe of ``bench.baselines`` computes the features.
    """
    import datasets

    from bench.baselines import N_FRAMES, N_MELS, audio_paths

    datasets.disable_progress_bars()
    array = datasets.Array2D((N_MELS, N_FRAMES), "float32")
    schema = datasets.Features({"path": datasets.Value("string"), "features": array})
    table = datasets.Dataset.from_dict({"path": audio_paths(root)})
    table = table.map(hf_row, input_columns="path", fn_kwargs={"recipe": recipe},
                      features=schema, num_proc=jobs, load_from_cache_file=False)  # fmt: skip
    table.save_to_disk(str(out), num_proc=jobs)


@click.group()
def main() -> None:
    """The peers' builds of the seed feature set, one per command."""
    # Before numpy loads: one native thread per process (see the module's docstring).
    import bench.baselines  # noqa: F401


def _run_arguments(command):
    """ROOT, OUT and --jobs, shared by the commands."""
    command = click.option("--jobs", type=click.IntRange(min=1), default=os.cpu_count(),
                           show_default=True, help="Worker processes.")(command)  # fmt: skip
    command = click.argument("out", type=click.Path(file_okay=False, path_type=Path))(command)
    root = click.Path(exists=True, file_okay=False, path_type=Path)
    return click.argument("root", type=root)(command)


@main.command()
@_run_arguments
@click.option("--writer", type=click.Choice(WRITERS), default="lilcom", show_default=True)
def lhotse(root: Path, out: Path, jobs: int, writer: str) -> None:
    """Lhotse's LibrosaFbank features of ROOT, stored under OUT."""
    run_lhotse(root, out, jobs=jobs, writer=writer)


@main.command()
@_run_arguments
@click.option("--recipe", type=click.Choice(["seed", "lean"]), default="seed", show_default=True)
def hf(root: Path, out: Path, jobs: int, recipe: str) -> None:
    """Hugging Face datasets: the seed features of ROOT, saved to OUT."""
    run_hf(root, out, jobs=jobs, recipe=recipe)


if __name__ == "__main__":
    main()
