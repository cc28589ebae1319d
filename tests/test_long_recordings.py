"""A variable-length set over a long recording: built in bounded memory, the whole-file bits.

One 20-minute stereo 44.1 kHz file goes through the real workflow. Its
extraction job streams the file, so the job's memory (Snakemake's max_rss of
all its processes) stays far below what decoding it whole takes, and its
features equal the whole-file computation's bit for bit. The job asks for
that memory (``mem_mb``), and ``melstore plan`` predicts it from the file.
"""

import json
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import MELSTORE, USER_CONFIG, run_snakemake

import melstore
from melstore.features.audio import decode
from melstore.features.extractor import FeatureExtractor, FeatureParams, Frontend

MINUTES = 20
SR = 44100
SET = {"preset": "seed", "n_mels": 64, "duration": None}
# The job's memory, all its processes: the code before streaming took twice this.
JOB_LIMIT_MB = 700


def write_long_recording(path, *, minutes: int) -> None:
    """A stereo tone sweep with noise, written a minute at a time (no whole array in memory)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True)
    with sf.SoundFile(path, "w", samplerate=SR, channels=2, subtype="PCM_16") as out:
        for minute in range(minutes):
            t = np.arange(60 * SR) / SR
            y = 0.4 * np.sin(2 * np.pi * (200 + 40 * minute) * t) + 0.02 * rng.standard_normal(
                len(t)
            )
            out.write(np.stack([y, 0.7 * y], axis=1).astype(np.float32))


@pytest.fixture(scope="module")
def long_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("long")
    recording = base / "data/meeting/long.wav"
    write_long_recording(recording, minutes=MINUTES)
    dataset = {"name": "long", "layout": "folder", "root": str(base / "data")}
    run_snakemake(base / "work", {"dataset": dataset, "features": ["long"],
                                  "feature_sets": {"long": SET}})  # fmt: skip
    return base, recording


def test_the_extraction_job_of_a_long_recording_stays_in_bounded_memory(long_build):
    base, _ = long_build
    [benchmark] = (base / "work/logs/long/benchmarks/extract/long").glob("*.tsv")
    max_rss = pd.read_csv(benchmark, sep="\t")["max_rss"].max()
    assert max_rss < JOB_LIMIT_MB


def test_a_long_recordings_features_are_the_whole_file_computations(long_build):
    base, recording = long_build
    with melstore.open(base / "work/results/long/long.h5") as store:
        stored = store.clip(0)
        params = FeatureParams.from_dict(store.params)
    y, info = decode(recording)
    whole = FeatureExtractor(Frontend.build(params))(y, sr=info.sample_rate)
    assert stored.shape == whole.features.shape and stored.shape[1] > MINUTES * 60 * 40
    np.testing.assert_array_equal(stored, whole.features)


def declared_mem_mb(workdir) -> int:
    """The ``mem_mb`` Snakemake gave the extraction job, from its log."""
    [log] = (workdir / ".snakemake/log").glob("*.snakemake.log")
    job = log.read_text().split("rule extract:", 1)[1]
    return int(re.search(r"resources: .*\bmem_mb=(\d+)", job).group(1))


def test_the_extraction_job_asks_for_the_memory_its_long_recording_needs(long_build):
    base, _ = long_build
    [benchmark] = (base / "work/logs/long/benchmarks/extract/long").glob("*.tsv")
    max_rss = pd.read_csv(benchmark, sep="\t")["max_rss"].max()
    assert max_rss <= declared_mem_mb(base / "work") <= 4 * JOB_LIMIT_MB


def test_plan_predicts_a_jobs_memory_from_the_longest_file(long_build):
    base, _ = long_build
    result = subprocess.run(
        [MELSTORE, "plan", "--configfile", USER_CONFIG, "--json", "--cores", "2"],
        cwd=base / "work", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    predicted = json.loads(result.stdout)["mem_mb"]
    assert predicted == declared_mem_mb(base / "work")
