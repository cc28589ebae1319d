"""Long recordings: peak memory and time of the whole-file and the streamed features.

A variable-length feature set (``duration: null``) computes the features of a
whole recording. The whole-file path (``decode``, then ``FeatureExtractor``:
what a build ran before streaming) holds the decoded channels, the resampled
signal and every frame at once; ``stream_features`` holds a block of audio and
the features. This measures both on a corpus of long recordings, 10 minutes
to 3 hours at mixed rates, channels and containers (:data:`CORPUS`; or one
stereo 44.1 kHz FLAC of ``--minutes``): the UrbanSound8K-shaped corpus's
classes (``bench.corpus.synthesize``) one after another in 10 s stretches,
generated deterministically and cached under ``bench/cache/long/``.

Each way runs in a fresh Python process, which reports its peak RSS
(``ru_maxrss``), the RSS after its imports and its wall time. The window and
filter bank are built here, with librosa, and handed over as arrays, as an
extraction job builds them in a short-lived process. The two ways' features
must be equal bit for bit.

Run ``python -m bench.long_files`` from the repository root for the corpus
(``bench/results/long-files.md``), or ``--minutes 60`` for one file
(``bench/results/long-files-60min.md``).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from melstore.features.audio import decode
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend
from melstore.features.presets import PRESETS
from melstore.features.streaming import stream_features

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / "cache" / "long"
RESULTS = REPO / "bench" / "results"
SAMPLE_RATE = 44100
STRETCH_SECONDS = 10
SEED = 3600
# Bump when the synthesis changes, so that cached files are regenerated.
LONG_VERSION = 1
# the seed recipe over whole files, with 64 mels: ref max and top_db need the file's peak
LONG_SET = {**PRESETS["seed"], "n_mels": 64, "duration": None}
WAYS = ("whole-file", "streamed")


@dataclass(frozen=True)
class Recording:
    """One long file of the corpus: its length, rate, channels and container."""

    minutes: float
    sample_rate: int = SAMPLE_RATE
    channels: int = 2
    container: str = "FLAC"

    @property
    def name(self) -> str:
        kind = f"{self.sample_rate // 1000}k-{self.channels}ch"
        return f"{kind}-{self.minutes:g}min-v{LONG_VERSION}.{self.container.lower()}"


# 10 minutes to 3 hours; the hour and the 3 hours at 44.1 kHz stereo, as the goals say
CORPUS = (
    Recording(10, 48000, 1, "WAV"),
    Recording(30, 16000, 1, "FLAC"),
    Recording(60),
    Recording(180),
)


@dataclass(frozen=True)
class Measured:
    """One way's run in its own process."""

    way: str
    wall_seconds: float
    peak_rss_mb: float
    imports_rss_mb: float
    n_samples_valid: int
    n_frames_valid: int
    peak_db: float


def long_recording(recording: Recording) -> Path:
    """The cached file of ``recording``, written a stretch at a time if missing."""
    import soundfile as sf

    from bench.corpus import CLASS_NAMES, Clip, synthesize
    from melstore.files import atomic_path

    path = CACHE / recording.name
    if path.exists():
        return path
    rate = recording.sample_rate
    stretches = round(recording.minutes * 60 / STRETCH_SECONDS)
    click.echo(f"writing {path.name}: {stretches} stretches of {STRETCH_SECONDS} s ...", err=True)
    with atomic_path(path) as tmp:
        with sf.SoundFile(
            tmp, "w", samplerate=rate, channels=recording.channels,
            format=recording.container, subtype="PCM_16",
        ) as out:  # fmt: skip
            for index in range(stretches):
                class_name = CLASS_NAMES[index % len(CLASS_NAMES)]
                clip = Clip(
                    slice_file_name=f"stretch-{index}.flac", fsID=index, start=0.0,
                    end=float(STRETCH_SECONDS), salience=1, fold=1,
                    classID=CLASS_NAMES.index(class_name), class_name=class_name,
                    samplerate=rate, channels=recording.channels, subtype="PCM_16",
                    container=recording.container, frames=STRETCH_SECONDS * rate, seed=index,
                )  # fmt: skip
                out.write(synthesize(clip, base_seed=SEED))
    return path


def measure_one(way: str, audio: str, frontend: str, features: str) -> None:
    """Compute the features of ``audio`` one way, in this process; print what it cost.

    The features go to the ``.npy`` file ``features``; a JSON :class:`Measured`
    goes to stdout.
    """
    with np.load(frontend) as arrays:
        params = FeatureParams.from_dict(LONG_SET)
        extractor = FeatureExtractor(Frontend.from_arrays(params, dict(arrays)))
    imports_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if way == "whole-file":
        y, info = decode(audio)
        clip = extractor(y, sr=info.sample_rate)
        del y
    else:
        clip = stream_features(extractor, audio).clip
    wall = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(features, clip.features)
    measured = Measured(
        way, wall, peak_rss, imports_rss, clip.n_samples_valid, clip.n_frames_valid, clip.peak_db
    )
    print(json.dumps(asdict(measured)))


def measure_in_a_fresh_process(way: str, audio: Path, frontend: Path, features: Path) -> Measured:
    """:func:`measure_one` in a new Python process, so that its peak RSS is its own.

    A small Python process starts it: a process's peak RSS starts from that of
    the process that started it, here with librosa loaded.
    """
    starter = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    code = "import sys; from bench.long_files import measure_one; measure_one(*sys.argv[1:])"
    click.echo(f"measuring {way} ...", err=True)
    arguments = [way, str(audio), str(frontend), str(features)]
    result = subprocess.run(
        [sys.executable, "-c", starter, sys.executable, "-c", code, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise click.ClickException(f"{way} failed:\n{result.stderr[-3000:]}")
    return Measured(**json.loads(result.stdout))


@dataclass(frozen=True)
class Compared:
    """Both ways on one recording, whose features they gave bit for bit."""

    recording: Recording
    megabytes: float  # the file's
    features_mb: float
    runs: list[Measured]


def compare(recording: Recording, frontend: Path, scratch: Path) -> Compared:
    """Measure both ways on ``recording``; refuse features that differ by a bit."""
    audio = long_recording(recording)
    runs = [
        measure_in_a_fresh_process(way, audio, frontend, scratch / f"{way}.npy") for way in WAYS
    ]
    whole, streamed = (np.load(scratch / f"{way}.npy") for way in WAYS)
    same_record = all(
        getattr(runs[0], name) == getattr(runs[1], name)
        for name in ("n_samples_valid", "n_frames_valid", "peak_db")
    )
    if not (whole.shape == streamed.shape and np.array_equal(whole, streamed) and same_record):
        raise click.ClickException(
            f"{audio.name}: the streamed features differ: shapes {whole.shape} and "
            f"{streamed.shape}, same valid lengths and peak: {same_record}"
        )
    return Compared(recording, audio.stat().st_size / 2**20, whole.nbytes / 2**20, runs)


def report(command: str, compared: list[Compared]) -> str:
    """The Markdown report of one run."""
    from bench.run import machine  # its imports (h5py, pandas) stay out of the measured process

    rows = []
    for c in compared:
        r = c.recording
        for run in c.runs:
            realtime = r.minutes * 60 / run.wall_seconds
            rows.append(
                f"| {r.minutes:g} min, {r.sample_rate} Hz, {r.channels} ch, {r.container} "
                f"({c.megabytes:.0f} MiB) | {c.features_mb:.1f} | {run.way} | "
                f"{run.wall_seconds:.1f} | {realtime:.0f}× | {run.peak_rss_mb:.0f} | "
                f"{run.imports_rss_mb:.0f} |"
            )
    lines = [
        "# Long recordings: whole file against streamed",
        "",
        f"`{command}`: feature set `seed` with 64 mels and `duration: null`; each way in a "
        "fresh process, the whole-file way being the computation a build ran before "
        "streaming. The features of both ways are equal bit for bit, with the same valid "
        "lengths and peak, on every file.",
        "",
        "| recording | features (MiB) | way | wall time (s) | speed (× real time) | "
        "peak RSS (MiB) | RSS after imports (MiB) |",
        "|---|---:|---|---:|---:|---:|---:|",
        *rows,
        "",
        "Machine:",
        *machine(),
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--minutes", type=float, default=None,
    help="One stereo 44.1 kHz FLAC of this length instead of the corpus.",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(path_type=Path), default=None,
    help="Markdown report [default: bench/results/long-files.md, or long-files-MINUTESmin.md].",
)  # fmt: skip
def main(minutes: float | None, out: Path | None) -> None:
    """Peak RSS and wall time of long files' features, whole-file against streamed."""
    from bench.run import publish

    recordings = CORPUS if minutes is None else (Recording(minutes),)
    command = "python -m bench.long_files" + ("" if minutes is None else f" --minutes {minutes:g}")
    with tempfile.TemporaryDirectory() as scratch:
        frontend = Path(scratch) / "frontend.npz"
        np.savez(frontend, **Frontend.build(FeatureParams.from_dict(LONG_SET)).arrays())
        compared = [compare(r, frontend, Path(scratch)) for r in recordings]
    name = "long-files.md" if minutes is None else f"long-files-{minutes:g}min.md"
    publish(report(command, compared), out or RESULTS / name)


if __name__ == "__main__":
    main()
