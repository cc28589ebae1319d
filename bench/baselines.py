"""Two hand-written competitors for melstore's "seed" feature set.

Both read an UrbanSound8K-layout root (``metadata/UrbanSound8K.csv`` and
``audio/fold{fold}/{slice_file_name}``) and write one HDF5 file whose
``features`` dataset is (N, 128, 130) float32 in CSV row order: 22050 Hz mono,
3 s zero-padded, n_fft 2048, hop 512, Hann window, centred frames with zero
padding, 128 Slaney mel bands over 0-11025 Hz, power 2, then
``power_to_db(ref=max, amin=1e-10, top_db=80)``.

- ``lean``: the fastest straightforward script: soundfile, soxr, a numpy STFT and
  a mel basis built once.
- ``seed``: the seed recipe, stock librosa calls per file.

Both run in a pool of forked processes with one native thread each. Rows of
files that cannot be decoded stay NaN and are reported on stderr.

Run ``python -m bench.baselines --help`` from the repository root.
"""

from __future__ import annotations

# The thread pools must be sized before numpy is imported (E402: imports below code).
# ruff: noqa: E402
import os
import sys
import warnings

if "numpy" in sys.modules:
    warnings.warn(
        "numpy was imported before bench.baselines, so its thread pools are not pinned",
        stacklevel=2,
    )
# numpy's BLAS, OpenMP and numba size their pools once, when they load, and
# several processes with a pool per core each oversubscribe the cores (see
# bench/README.md). Forked workers inherit these pools.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

import functools
import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import click
import h5py
import librosa
import numpy as np
import pandas as pd
import scipy.fft
import soundfile as sf
import soxr

SR = 22050
DURATION = 3.0
N_SAMPLES = 66150  # DURATION * SR
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
N_FRAMES = 1 + N_SAMPLES // HOP_LENGTH  # centred frames: 130
AMIN = 1e-10
TOP_DB = 80.0
CSV_PATH = Path("metadata") / "UrbanSound8K.csv"


@functools.cache
def lean_constants() -> tuple[np.ndarray, np.ndarray]:
    """The lean recipe's mel basis and Hann window, built once per process.

    :func:`extract` builds them before the pool forks, so all workers share them.

    Returns
    -------
    tuple of numpy.ndarray
        The (128, 1025) float32 Slaney mel basis and the (2048,) float32
        periodic Hann window.
    """
    mel_basis = librosa.filters.mel(
        sr=SR,
        n_fft=N_FFT,
        n_mels=N_MELS,
        fmin=0.0,
        fmax=SR / 2,
        htk=False,
        norm="slaney",
        dtype=np.float32,
    )
    # Periodic, as librosa's get_window("hann", n_fft, fftbins=True).
    k = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * k / N_FFT)
    return mel_basis, window.astype(np.float32)


def lean_features(path: str) -> np.ndarray:
    """Seed features of one file with the minimum of work.

    Parameters
    ----------
    path : str
        Audio file.

    Returns
    -------
    numpy.ndarray
        (128, 130) float32 log-mel spectrogram in dB, 0 dB at the clip's peak.
    """
    with sf.SoundFile(path) as audio:
        sr_native = audio.samplerate
        # Decode only the 3 s that are kept.
        y = audio.read(frames=int(DURATION * sr_native), dtype="float32", always_2d=True)
    # An explicit mean over the channels, as a matrix product: numpy 2.4's
    # y.mean(axis=1) reduces row by row and costs 2.6 ms per 3 s stereo clip, this 0.1 ms.
    y = y @ np.full(y.shape[1], 1 / y.shape[1], dtype=np.float32)
    if sr_native != SR:
        y = soxr.resample(y, sr_native, SR, quality="soxr_hq")
    # One buffer holds the zero padding to 3 s and the n_fft // 2 of centring.
    padded = np.zeros(N_SAMPLES + N_FFT, dtype=np.float32)
    kept = min(len(y), N_SAMPLES)
    padded[N_FFT // 2 : N_FFT // 2 + kept] = y[:kept]
    mel_basis, window = lean_constants()
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    # A float32 FFT: scipy's is 6x faster than numpy's (float32 or float64) here.
    spectrum = scipy.fft.rfft(frames * window, axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    mel = mel_basis @ power.T
    return _power_to_db(mel)


def _power_to_db(power: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(power, ref=np.max, amin=AMIN, top_db=TOP_DB)``."""
    db = 10.0 * np.log10(np.maximum(AMIN, power))
    db -= 10.0 * np.log10(np.maximum(AMIN, power.max()))
    return np.maximum(db, db.max() - TOP_DB)


def seed_features(path: str) -> np.ndarray:
    """Seed features of one file, with the seed recipe's librosa calls.

    Parameters
    ----------
    path : str
        Audio file.

    Returns
    -------
    numpy.ndarray
        (128, 130) float32 log-mel spectrogram in dB, 0 dB at the clip's peak.
    """
    y, sr = librosa.load(path, sr=SR, mono=True, duration=DURATION, res_type="soxr_hq")
    y = librosa.util.fix_length(y, size=N_SAMPLES)
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=sr,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        window="hann",
        center=True,
        pad_mode="constant",
        power=2.0,
        n_mels=N_MELS,
        fmin=0.0,
        fmax=SR / 2,
        htk=False,
        norm="slaney",
    )
    return librosa.power_to_db(mel, ref=np.max, amin=AMIN, top_db=TOP_DB)


RECIPES: dict[str, Callable[[str], np.ndarray]] = {"lean": lean_features, "seed": seed_features}


def _guarded(path: str, *, recipe: Callable[[str], np.ndarray]) -> tuple[np.ndarray | None, str]:
    """Run ``recipe`` on one file; a failure skips the file instead of ending the run."""
    try:
        return recipe(path), ""
    # Broad on purpose: librosa 0.11 reports an undecodable file as soundfile's
    # error, EOFError or audioread's NoBackendError, depending on the file.
    except Exception as error:
        return None, f"{type(error).__name__}: {error}"


def audio_paths(root: str | Path) -> list[str]:
    """Audio files of an UrbanSound8K-layout root, in CSV row order."""
    root = Path(root)
    table = pd.read_csv(root / CSV_PATH, usecols=["slice_file_name", "fold"])
    return [
        str(root / "audio" / f"fold{fold}" / name)
        for fold, name in zip(table["fold"], table["slice_file_name"], strict=True)
    ]


def extract(
    root: str | Path, *, recipe: str, out: str | Path, workers: int, chunksize: int = 8
) -> tuple[int, int]:
    """Compute one recipe's features for every file of ``root`` into ``out``.

    Parameters
    ----------
    root : str or Path
        UrbanSound8K-layout dataset root.
    recipe : {"lean", "seed"}
        Which competitor to run.
    out : str or Path
        HDF5 file to write (atomically); its ``features`` rows follow the CSV.
    workers : int
        Number of worker processes.
    chunksize : int
        Files handed to a worker at a time.

    Returns
    -------
    tuple of int
        Number of files written and number skipped.
    """
    task = functools.partial(_guarded, recipe=RECIPES[recipe])
    paths = audio_paths(root)
    if recipe == "lean":
        lean_constants()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    skipped = 0
    # Fork, so that workers start at once with the imports and constants above.
    context = multiprocessing.get_context("fork")
    try:
        # The pool forks before the HDF5 file opens: a forked open HDF5 handle is unsafe.
        with context.Pool(processes=workers) as pool, h5py.File(tmp, "w") as store:
            features = store.create_dataset(
                "features",
                shape=(len(paths), N_MELS, N_FRAMES),
                dtype=np.float32,
                chunks=(1, N_MELS, N_FRAMES),
                fillvalue=np.nan,
            )
            # imap yields in submission order: rows are written in order as they arrive.
            results = pool.imap(task, paths, chunksize=chunksize)
            for row, (path, (clip, error)) in enumerate(zip(paths, results, strict=True)):
                if clip is None:
                    skipped += 1
                    click.echo(f"skipped {path}: {error}", err=True)
                else:
                    features[row] = clip
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(paths) - skipped, skipped


def max_difference(first: str | Path, second: str | Path) -> tuple[float, int]:
    """Largest absolute difference between the ``features`` of two stores.

    Parameters
    ----------
    first, second : str or Path
        HDF5 files written by :func:`extract` from the same dataset.

    Returns
    -------
    tuple
        The largest difference in dB and the row where it occurs. Rows that
        are NaN in both files count as equal.
    """
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        features_a, features_b = a["features"][()], b["features"][()]
    difference = np.abs(features_a - features_b)
    difference[np.isnan(features_a) & np.isnan(features_b)] = 0.0
    # A NaN left means one recipe skipped a file that the other computed.
    per_row = np.nan_to_num(difference, nan=np.inf).max(axis=(1, 2))
    row = int(np.argmax(per_row))
    return float(per_row[row]), row


@click.group()
def main() -> None:
    """Hand-written competitors for melstore on the seed feature set."""


def _extract_options(command: Callable) -> Callable:
    """The arguments shared by the extraction commands."""
    options = [
        click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path)),
        click.option(
            "--out",
            type=click.Path(dir_okay=False, path_type=Path),
            required=True,
            help="HDF5 file.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=os.cpu_count(),
            show_default=True,
            help="Number of worker processes.",
        ),
        click.option(
            "--chunksize",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="Files handed to a worker at a time.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _run(root: Path, *, recipe: str, out: Path, workers: int, chunksize: int) -> None:
    """Run :func:`extract` and report its wall time on stderr."""
    began = time.perf_counter()
    written, skipped = extract(root, recipe=recipe, out=out, workers=workers, chunksize=chunksize)
    elapsed = time.perf_counter() - began
    click.echo(f"{recipe}: {written} files, {skipped} skipped, {elapsed:.2f} s -> {out}", err=True)


@main.command()
@_extract_options
def lean(root: Path, out: Path, workers: int, chunksize: int) -> None:
    """Write the seed features of ROOT with the lean recipe."""
    _run(root, recipe="lean", out=out, workers=workers, chunksize=chunksize)


@main.command()
@_extract_options
def seed(root: Path, out: Path, workers: int, chunksize: int) -> None:
    """Write the seed features of ROOT with the seed recipe (stock librosa)."""
    _run(root, recipe="seed", out=out, workers=workers, chunksize=chunksize)


@main.command()
@click.argument("first", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("second", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tolerance", type=float, default=0.05, show_default=True, help="Largest allowed dB gap."
)
def compare(first: Path, second: Path, tolerance: float) -> None:
    """Check that two feature stores agree within TOLERANCE dB."""
    difference, row = max_difference(first, second)
    click.echo(f"max |difference| = {difference:.6f} dB (row {row})")
    if difference > tolerance:
        raise click.ClickException(f"the stores differ by more than {tolerance} dB")


if __name__ == "__main__":
    main()
