"""A deterministic synthetic corpus shaped like UrbanSound8K, for benchmarks.

The corpus has the real dataset's layout (``audio/fold1..fold10/*.wav`` and
``metadata/UrbanSound8K.csv``), its classes and class sizes, its file naming and
its published mix of formats, sample rates, channel counts and durations. The
audio is synthetic: coloured noise, harmonic tones and noisy transients, mixed
per class, so that files are about as costly to decode and transform as real
recordings and do not compress away.

Every clip is fixed by one plan of 8732 rows built from the seed. ``n_files``
takes a prefix of that plan, so a small corpus is a subset of the full one with
byte-identical files. The rows are shuffled, so a prefix is a fair sample of
classes, folds and formats. The bytes are reproducible for a given seed with
the same numpy, scipy and libsndfile on the same kind of CPU (float32 sin and
FFT kernels may round differently elsewhere).

Run ``python -m bench.corpus --help`` from the repository root.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import click
import numpy as np
import soundfile as sf
from scipy.fft import next_fast_len
from scipy.signal import lfilter

from melstore.features.audio import write_audio

DEFAULT_SEED = 8732
# Bump when the synthesis changes, so that cached corpora are regenerated.
SYNTH_VERSION = 1
CACHE_DIR = Path(__file__).resolve().parent / "cache"
CSV_COLUMNS = (
    "slice_file_name",
    "fsID",
    "start",
    "end",
    "salience",
    "fold",
    "classID",
    "class",
)
# The real class names, IDs and sizes; they sum to 8732.
CLASS_SIZES = {
    "air_conditioner": 1000,
    "car_horn": 429,
    "children_playing": 1000,
    "dog_bark": 1000,
    "drilling": 1000,
    "engine_idling": 1000,
    "gun_shot": 374,
    "jackhammer": 1000,
    "siren": 929,
    "street_music": 1000,
}
CLASS_NAMES = tuple(CLASS_SIZES)
FULL_SIZE = sum(CLASS_SIZES.values())
N_FOLDS = 10
# The published per-file counts; each table sums to 8732.
SAMPLE_RATES = {
    44100: 5370,
    48000: 2502,
    96000: 610,
    24000: 82,
    16000: 45,
    22050: 44,
    11025: 39,
    192000: 17,
    8000: 12,
    11024: 7,
    32000: 4,
}
SUBTYPES = {"PCM_16": 5758, "PCM_24": 2753, "FLOAT": 169, "PCM_U8": 43, "IMA_ADPCM": 9}
N_STEREO = round(0.92 * FULL_SIZE)
N_EXTENSIBLE = round(0.05 * FULL_SIZE)
# Durations: 1260 slices are shorter than 3 s (published), the shortest 0.05 s
# (below the seed recipe's n_fft after resampling); most of the rest are the
# full 4 s (the 7325 is our choice: the real count is not published).
N_FULL_LENGTH = 7325
N_SHORTEST = 12
N_UNDER_3S = 1260
MAX_SECONDS = 4.0
MIN_SECONDS = 0.05


class Voice(NamedTuple):
    """How one class is synthesised.

    Attributes
    ----------
    colour : float
        Noise spectrum slope: power falls as ``f ** -colour`` (0 white, 1 pink, 2 brown).
    f0 : tuple of float
        Range of the fundamental frequency in Hz.
    harmonics : int
        Number of harmonics of the tone.
    levels : tuple of float
        Relative levels of noise, tone and transients.
    vibrato : tuple of float
        Relative depth and rate (Hz) of the frequency modulation.
    tremolo : tuple of float
        Rate (Hz) and depth (0..1) of the amplitude modulation.
    transient_rate : float
        Mean number of transients per second.
    transient_decay : float
        Decay time constant of a transient, in seconds.
    gate : float
        How much the tone follows the transient envelope (0 steady, 1 only during transients).
    """

    colour: float
    f0: tuple[float, float]
    harmonics: int
    levels: tuple[float, float, float]
    vibrato: tuple[float, float] = (0.0, 0.0)
    tremolo: tuple[float, float] = (0.0, 0.0)
    transient_rate: float = 0.0
    transient_decay: float = 0.01
    gate: float = 0.0


VOICES = {
    "air_conditioner": Voice(colour=1.5, f0=(50, 120), harmonics=6, levels=(1.0, 0.3, 0.0)),
    "car_horn": Voice(
        colour=1.0,
        f0=(350, 500),
        harmonics=8,
        levels=(0.3, 1.0, 0.2),
        vibrato=(0.005, 5),
        transient_rate=0.5,
        transient_decay=0.3,
        gate=0.3,
    ),
    "children_playing": Voice(
        colour=1.0,
        f0=(250, 600),
        harmonics=5,
        levels=(0.6, 0.6, 0.4),
        vibrato=(0.05, 3),
        tremolo=(4, 0.6),
        transient_rate=2.0,
        transient_decay=0.05,
        gate=0.3,
    ),
    "dog_bark": Voice(
        colour=1.0,
        f0=(300, 700),
        harmonics=6,
        levels=(0.3, 1.0, 0.5),
        vibrato=(0.02, 2),
        transient_rate=1.5,
        transient_decay=0.08,
        gate=1.0,
    ),
    "drilling": Voice(
        colour=0.5,
        f0=(800, 2500),
        harmonics=4,
        levels=(0.5, 0.8, 0.0),
        vibrato=(0.01, 8),
        tremolo=(35, 0.8),
    ),
    "engine_idling": Voice(
        colour=2.0,
        f0=(25, 60),
        harmonics=10,
        levels=(0.6, 1.0, 0.0),
        vibrato=(0.01, 1),
        tremolo=(12, 0.5),
    ),
    "gun_shot": Voice(
        colour=0.0,
        f0=(80, 200),
        harmonics=3,
        levels=(0.1, 0.3, 1.5),
        transient_rate=0.7,
        transient_decay=0.25,
        gate=1.0,
    ),
    "jackhammer": Voice(
        colour=1.0,
        f0=(100, 300),
        harmonics=6,
        levels=(0.4, 0.4, 1.0),
        transient_rate=15.0,
        transient_decay=0.02,
        gate=0.5,
    ),
    "siren": Voice(
        colour=1.0, f0=(600, 900), harmonics=4, levels=(0.3, 1.0, 0.0), vibrato=(0.4, 0.5)
    ),
    "street_music": Voice(
        colour=1.0,
        f0=(150, 450),
        harmonics=8,
        levels=(0.4, 0.8, 0.3),
        vibrato=(0.01, 5),
        tremolo=(2, 0.5),
        transient_rate=2.0,
        transient_decay=0.1,
        gate=0.2,
    ),
}


@dataclass(frozen=True)
class Clip:
    """One planned file: its CSV row, its format and the seed of its content."""

    slice_file_name: str
    fsID: int
    start: float
    end: float
    salience: int
    fold: int
    classID: int
    class_name: str
    samplerate: int
    channels: int
    subtype: str
    container: str
    frames: int
    seed: int

    def csv_row(self) -> list:
        """The row of ``metadata/UrbanSound8K.csv``, in :data:`CSV_COLUMNS` order."""
        return [
            self.slice_file_name,
            self.fsID,
            self.start,
            self.end,
            self.salience,
            self.fold,
            self.classID,
            self.class_name,
        ]

    def relative_path(self) -> str:
        """Path of the audio file relative to the corpus root."""
        return f"audio/fold{self.fold}/{self.slice_file_name}"


def plan(*, seed: int = DEFAULT_SEED) -> list[Clip]:
    """The full 8732-clip plan, in CSV order.

    Parameters
    ----------
    seed : int
        Seed of every random choice, including each clip's content.

    Returns
    -------
    list of Clip
        The clips; any prefix of this list is a valid smaller corpus.
    """
    rng = np.random.default_rng(seed)
    slices = list(_slices(rng))
    n_recordings = slices[-1][0] + 1
    # Freesound IDs are unique per source recording.
    fs_ids = rng.choice(np.arange(100, 200_000), size=n_recordings, replace=False)
    folds = _balanced_folds(rng, slices, n_recordings=n_recordings)
    durations = _durations(rng, slices)
    samplerates = rng.permutation(_multiset(SAMPLE_RATES))
    subtypes = rng.permutation(_multiset(SUBTYPES))
    channels = rng.permutation(np.repeat([2, 1], [N_STEREO, FULL_SIZE - N_STEREO]))
    # libsndfile cannot write IMA ADPCM into a WAVE_FORMAT_EXTENSIBLE header.
    can_extend = np.flatnonzero(subtypes != "IMA_ADPCM")
    extensible = set(rng.choice(can_extend, size=N_EXTENSIBLE, replace=False).tolist())
    # Silence before each occurrence: occurrences of a recording follow one another.
    gaps = rng.integers(0, 30_000, size=len(slices)) / 1000

    clips = []
    offset = 0.0
    for i, (recording, class_id, occurrence, slice_id, salience) in enumerate(slices):
        if slice_id == 0:
            offset = (offset if occurrence > 0 else 0.0) + float(gaps[i])
        sr, n_channels, subtype = int(samplerates[i]), int(channels[i]), str(subtypes[i])
        frames = max(1, round(durations[i] * sr))
        if subtype == "IMA_ADPCM":
            # ADPCM files hold whole blocks; keep the CSV duration equal to the file's.
            block = _adpcm_block_frames(sr, n_channels)
            frames = max(1, frames // block) * block
        start = round(offset, 6)
        offset += frames / sr
        clips.append(
            Clip(
                slice_file_name=f"{fs_ids[recording]}-{class_id}-{occurrence}-{slice_id}.wav",
                fsID=int(fs_ids[recording]),
                start=start,
                end=round(offset, 6),
                salience=salience,
                fold=folds[recording],
                classID=class_id,
                class_name=CLASS_NAMES[class_id],
                samplerate=sr,
                channels=n_channels,
                subtype=subtype,
                container="WAVEX" if i in extensible else "WAV",
                frames=frames,
                seed=i,
            )
        )
    return [clips[i] for i in rng.permutation(len(clips))]


def _slices(rng: np.random.Generator) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield (recording, classID, occurrenceID, sliceID, salience), grouped by occurrence.

    Like the real dataset, each source recording has a few occurrences of its
    class, each cut into consecutive slices of up to 4 s.
    """
    recording = 0
    for class_id, size in enumerate(CLASS_SIZES.values()):
        remaining = size
        while remaining > 0:
            for occurrence in range(int(rng.integers(1, 4))):
                n_slices = min(remaining, int(rng.integers(1, 7)))
                salience = int(rng.choice([1, 2], p=[0.65, 0.35]))
                for slice_id in range(n_slices):
                    yield recording, class_id, occurrence, slice_id, salience
                remaining -= n_slices
                if remaining == 0:
                    break
            recording += 1


def _balanced_folds(
    rng: np.random.Generator, slices: list[tuple], *, n_recordings: int
) -> list[int]:
    """Fold (1..10) of each recording; all slices of a recording share a fold.

    Recordings go, in random order, to the fold with the fewest slices so far,
    which keeps the folds within one recording's slices of each other.
    """
    sizes = np.bincount([s[0] for s in slices], minlength=n_recordings)
    fold_sizes = np.zeros(N_FOLDS, dtype=int)
    folds = [0] * n_recordings
    for recording in rng.permutation(n_recordings):
        fold = int(np.argmin(fold_sizes))
        folds[recording] = fold + 1
        fold_sizes[fold] += sizes[recording]
    return folds


def _durations(rng: np.random.Generator, slices: list[tuple]) -> np.ndarray:
    """Duration in seconds of each slice; the short ones end their occurrence."""
    n_mid = FULL_SIZE - N_FULL_LENGTH - N_UNDER_3S
    durations = np.concatenate(
        [
            np.full(N_FULL_LENGTH, MAX_SECONDS),
            rng.uniform(3.0, MAX_SECONDS, size=n_mid),
            rng.uniform(MIN_SECONDS, 3.0, size=N_UNDER_3S - N_SHORTEST),
            np.full(N_SHORTEST, MIN_SECONDS),
        ]
    )
    durations = rng.permutation(np.round(durations, 6))
    # A recording is cut into 4 s slices, so only an occurrence's last slices are shorter.
    occurrence = [(s[0], s[2]) for s in slices]
    bounds = [0, *[i for i in range(1, len(slices)) if occurrence[i] != occurrence[i - 1]]]
    for begin, end in zip(bounds, [*bounds[1:], len(slices)], strict=True):
        durations[begin:end] = np.sort(durations[begin:end])[::-1]
    return durations


def _multiset(counts: dict) -> np.ndarray:
    """Each key repeated its count times."""
    return np.repeat(list(counts), list(counts.values()))


@functools.cache
def _adpcm_block_frames(samplerate: int, channels: int) -> int:
    """Frames per IMA ADPCM block, as libsndfile chooses it for this format."""
    buffer = io.BytesIO()
    sf.write(
        buffer,
        np.zeros((1, channels), dtype=np.float32),
        samplerate,
        subtype="IMA_ADPCM",
        format="WAV",
    )
    buffer.seek(0)
    return sf.info(buffer).frames


def synthesize(clip: Clip, *, base_seed: int) -> np.ndarray:
    """The audio of one clip.

    Parameters
    ----------
    clip : Clip
        The planned clip (class, sample rate, channels, length).
    base_seed : int
        Seed of the plan; with ``clip.seed`` it fixes the content.

    Returns
    -------
    numpy.ndarray
        float32 array of shape (frames, channels), peak between -32 and -1 dBFS.
    """
    rng = np.random.default_rng([base_seed, clip.seed])
    voice = VOICES[clip.class_name]
    sr, n, channels = clip.samplerate, clip.frames, clip.channels
    # float32 throughout (except the phase sum): half the memory traffic, SIMD sin.
    t = np.arange(n, dtype=np.float32) / np.float32(sr)

    noise = _coloured_noise(rng, colour=voice.colour, shape=(channels, n))
    if channels == 2:
        # Partly correlated channels, as from a stereo field recording.
        correlation = np.float32(rng.uniform(0.3, 0.95))
        noise[1] = correlation * noise[0] + np.sqrt(1 - correlation**2) * noise[1]

    impulses = np.zeros(n, dtype=np.float32)
    n_transients = rng.poisson(voice.transient_rate * n / sr)
    impulses[rng.integers(0, n, size=n_transients)] = rng.uniform(0.3, 1.0, size=n_transients)
    pole = np.exp(-1.0 / (voice.transient_decay * sr))
    envelope = lfilter(np.float32([1.0]), np.float32([1.0, -pole]), impulses)
    transients = envelope * rng.standard_normal(n, dtype=np.float32)

    tone = _tone(rng, voice=voice, t=t, sr=sr)
    tone *= 1 - voice.gate + voice.gate * envelope / max(float(envelope.max()), 1e-9)
    rate, depth = voice.tremolo
    tremolo_phase = np.float32(2 * np.pi * rate) * t + np.float32(rng.uniform(0, 2 * np.pi))
    tone *= np.float32(1 - depth / 2) + np.float32(depth / 2) * np.sin(tremolo_phase)

    gains = (rng.uniform(0.5, 1.5, size=(3, channels)) * np.asarray(voice.levels)[:, None]).astype(
        np.float32
    )
    mix = gains[0][:, None] * noise + np.outer(gains[1], tone) + np.outer(gains[2], transients)
    peak = 10 ** (rng.uniform(-32, -1) / 20)
    mix *= np.float32(peak / max(float(np.abs(mix).max()), 1e-12))
    return mix.T


def _coloured_noise(rng: np.random.Generator, *, colour: float, shape: tuple) -> np.ndarray:
    """Unit-variance Gaussian noise (float32) whose power spectrum falls as ``f ** -colour``."""
    n = shape[-1]
    # Shape a longer block of a length with small prime factors: FFTs of odd
    # lengths (clip frames are arbitrary) are several times slower.
    fast = next_fast_len(n, real=True)
    spectrum = np.fft.rfft(rng.standard_normal((*shape[:-1], fast), dtype=np.float32), axis=-1)
    slope = np.arange(spectrum.shape[-1], dtype=np.float32)
    slope[0] = 1.0  # the DC bin is removed below; avoid dividing by zero
    spectrum *= slope ** np.float32(-colour / 2)
    spectrum[..., 0] = 0
    noise = np.fft.irfft(spectrum, n=fast, axis=-1)[..., :n]
    return noise / np.float32(max(float(noise.std()), 1e-12))


def _tone(rng: np.random.Generator, *, voice: Voice, t: np.ndarray, sr: int) -> np.ndarray:
    """A harmonic tone (float32) with vibrato, its harmonics kept below Nyquist."""
    f0 = rng.uniform(*voice.f0)
    depth, rate = voice.vibrato
    vibrato_phase = np.float32(2 * np.pi * rate) * t + np.float32(rng.uniform(0, 2 * np.pi))
    frequency = np.float32(f0) * (1 + np.float32(depth) * np.sin(vibrato_phase))
    # Sum in float64, then wrap, so that float32 keeps the phase exact to ~1e-5 rad.
    phase = np.mod(np.cumsum(frequency, dtype=np.float64) * (2 * np.pi / sr), 2 * np.pi)
    orders = np.arange(1, voice.harmonics + 1)
    orders = orders[orders * f0 * (1 + depth) < 0.45 * sr]
    amplitudes = (rng.uniform(0.3, 1.0, size=len(orders)) / orders).astype(np.float32)
    offsets = rng.uniform(0, 2 * np.pi, size=(len(orders), 1)).astype(np.float32)
    return amplitudes @ np.sin(
        np.outer(orders.astype(np.float32), phase.astype(np.float32)) + offsets
    )


def write_clip(clip: Clip, *, root: str, base_seed: int) -> int:
    """Synthesise one clip and write it atomically under ``root``.

    Parameters
    ----------
    clip : Clip
        The clip to write.
    root : str
        Corpus root directory.
    base_seed : int
        Seed of the plan.

    Returns
    -------
    int
        Size of the written file in bytes.
    """
    path = Path(root) / clip.relative_path()
    write_audio(
        path,
        synthesize(clip, base_seed=base_seed),
        clip.samplerate,
        container=clip.container,
        subtype=clip.subtype,
    )
    return path.stat().st_size


def plan_digest(clips: list[Clip], *, seed: int) -> str:
    """A hash of everything that decides the corpus bytes."""
    payload = json.dumps(
        {"seed": seed, "synth_version": SYNTH_VERSION, "clips": [asdict(c) for c in clips]}
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def make_corpus(
    out_dir: str | Path,
    n_files: int = FULL_SIZE,
    seed: int = DEFAULT_SEED,
    *,
    workers: int | None = None,
) -> Path:
    """Generate the first ``n_files`` clips of the plan under ``out_dir``, unless cached.

    Parameters
    ----------
    out_dir : str or Path
        Corpus root; receives ``audio/fold*/`` and ``metadata/UrbanSound8K.csv``.
    n_files : int
        Number of clips, 1 to 8732.
    seed : int
        Seed of the plan.
    workers : int, optional
        Number of processes; defaults to ``os.cpu_count()``.

    Returns
    -------
    Path
        The corpus root.
    """
    if not 1 <= n_files <= FULL_SIZE:
        raise ValueError(f"n_files must be between 1 and {FULL_SIZE}, got {n_files}")
    root = Path(out_dir)
    clips = plan(seed=seed)[:n_files]
    marker = root / ".complete"
    stamp = json.dumps({"n_files": n_files, "seed": seed, "plan": plan_digest(clips, seed=seed)})
    if marker.exists() and marker.read_text() == stamp:
        click.echo(f"corpus cached: {root} ({n_files} files)", err=True)
        return root

    marker.unlink(missing_ok=True)
    for fold in range(1, N_FOLDS + 1):
        (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    total_bytes = 0
    report_every = max(1, n_files // 20)
    write = functools.partial(write_clip, root=str(root), base_seed=seed)
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for done, size in enumerate(pool.map(write, clips, chunksize=8), start=1):
            total_bytes += size
            if done % report_every == 0 or done == n_files:
                click.echo(
                    f"{done}/{n_files} files, {total_bytes / 1e9:.2f} GB, "
                    f"{time.perf_counter() - began:.1f} s",
                    err=True,
                )

    csv_path = root / "metadata" / "UrbanSound8K.csv"
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(clip.csv_row() for clip in clips)
    os.replace(tmp, csv_path)
    # Written last: its presence means every file above is complete.
    marker.write_text(stamp)
    return root


@click.command(context_settings={"show_default": True})
@click.option(
    "--files",
    "n_files",
    type=click.IntRange(1, FULL_SIZE),
    default=FULL_SIZE,
    help="Number of clips: a prefix of the full plan.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Corpus root. [default: bench/cache/us8k-FILES, with -seedSEED for another seed]",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, help="Seed of the plan.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=os.cpu_count(),
    help="Number of writer processes.",
)
def main(n_files: int, out_dir: Path | None, seed: int, workers: int) -> None:
    """Write a synthetic UrbanSound8K-shaped corpus (cached; deterministic per seed)."""
    if out_dir is None:
        suffix = "" if seed == DEFAULT_SEED else f"-seed{seed}"
        out_dir = CACHE_DIR / f"us8k-{n_files}{suffix}"
    make_corpus(out_dir, n_files=n_files, seed=seed, workers=workers)
    click.echo(str(out_dir))


if __name__ == "__main__":
    main()
