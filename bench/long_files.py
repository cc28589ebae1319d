"""Long recordings: peak memory and time of the whole-file and the streamed features.

A variable-length feature set (``duration: null``) computes the features of a
whole recording. The whole-file path (``decode``, then ``FeatureExtractor``)
holds the decoded channels, the resampled signal and every frame at once;
``stream_features`` holds a block of audio and the features. This measures
both on one long stereo 44.1 kHz FLAC: the UrbanSound8K-shaped corpus's
classes (``bench.corpus.synthesize``) one after another in 10 s stretches,
generated deterministically and cached under ``bench/cache/long/``.

Each way runs in a fresh Python process, which reports its peak RSS
(``ru_maxrss``), the RSS after its imports and its wall time. The window and
filter bank are built here, with librosa, and handed over as arrays, as an
extraction job builds them in a short-lived process. The two ways' features
must be equal bit for bit.

Run ``python -m bench.long_files --minutes 60`` from the repository root; it
writes ``bench/results/long-files-60min.md``.
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
class Measured:
    """One way's run in its own process."""

    way: str
    wall_seconds: float
    peak_rss_mb: float
    imports_rss_mb: float
    n_samples_valid: int
    n_frames_valid: int
    peak_db: float


def long_recording(minutes: float) -> Path:
    """The cached stereo FLAC of ``minutes``, written a stretch at a time if missing."""
    import soundfile as sf

    from bench.corpus import CLASS_NAMES, Clip, synthesize
    from melstore.files import atomic_path

    path = CACHE / f"stereo-44k-{minutes:g}min-v{LONG_VERSION}.flac"
    if path.exists():
        return path
    stretches = round(minutes * 60 / STRETCH_SECONDS)
    click.echo(f"writing {path.name}: {stretches} stretches of {STRETCH_SECONDS} s ...", err=True)
    with atomic_path(path) as tmp:
        with sf.SoundFile(
            tmp, "w", samplerate=SAMPLE_RATE, channels=2, format="FLAC", subtype="PCM_16"
        ) as out:
            for index in range(stretches):
                class_name = CLASS_NAMES[index % len(CLASS_NAMES)]
                clip = Clip(
                    slice_file_name=f"stretch-{index}.flac", fsID=index, start=0.0,
                    end=float(STRETCH_SECONDS), salience=1, fold=1,
                    classID=CLASS_NAMES.index(class_name), class_name=class_name,
                    samplerate=SAMPLE_RATE, channels=2, subtype="PCM_16", container="FLAC",
                    frames=STRETCH_SECONDS * SAMPLE_RATE, seed=index,
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


def report(minutes: float, audio: Path, runs: list[Measured], *, features: np.ndarray) -> str:
    """The Markdown report of one run, whose two ways gave ``features`` bit for bit."""
    from bench.run import machine  # its imports (h5py, pandas) stay out of the measured process

    lines = [
        f"# Long recordings: {minutes:g} min, whole file against streamed",
        "",
        f"`python -m bench.long_files --minutes {minutes:g}`: one stereo 44.1 kHz FLAC of "
        f"{minutes:g} min ({audio.stat().st_size / 2**20:.0f} MiB), feature set `seed` with "
        f"64 mels and `duration: null` ({features.nbytes / 2**20:.1f} MiB of features); each way "
        "in a fresh process.",
        "",
        "| way | wall time (s) | peak RSS (MiB) | RSS after imports (MiB) |",
        "|---|---:|---:|---:|",
        *(
            f"| {run.way} | {run.wall_seconds:.1f} | {run.peak_rss_mb:.0f} | "
            f"{run.imports_rss_mb:.0f} |"
            for run in runs
        ),
        "",
        f"Features: equal bit for bit, shape {features.shape}, with the same valid lengths "
        "and peak.",
        "",
        "Machine:",
        *machine(),
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--minutes", type=float, default=60.0, show_default=True, help="Recording length.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None,
    help="Markdown report [default: bench/results/long-files-MINUTESmin.md].",
)  # fmt: skip
def main(minutes: float, out: Path | None) -> None:
    """Peak RSS and wall time of a long file's features, whole-file against streamed."""
    from bench.run import publish

    audio = long_recording(minutes)
    with tempfile.TemporaryDirectory() as scratch:
        frontend = Path(scratch) / "frontend.npz"
        np.savez(frontend, **Frontend.build(FeatureParams.from_dict(LONG_SET)).arrays())
        runs = [
            measure_in_a_fresh_process(way, audio, frontend, Path(scratch) / f"{way}.npy")
            for way in WAYS
        ]
        whole, streamed = (np.load(Path(scratch) / f"{way}.npy") for way in WAYS)
    same_record = all(
        getattr(runs[0], name) == getattr(runs[1], name)
        for name in ("n_samples_valid", "n_frames_valid", "peak_db")
    )
    if not (whole.shape == streamed.shape and np.array_equal(whole, streamed) and same_record):
        raise click.ClickException(
            f"the streamed features differ: shapes {whole.shape} and {streamed.shape}, "
            f"same valid lengths and peak: {same_record}"
        )
    text = report(minutes, audio, runs, features=whole)
    publish(text, out or RESULTS / f"long-files-{minutes:g}min.md")


if __name__ == "__main__":
    main()
