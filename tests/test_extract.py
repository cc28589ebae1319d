"""Extraction of one shard: worker processes and the shared-memory hand-back."""

import multiprocessing
import os
import signal
import threading

import h5py
import numpy as np
import pytest
from conftest import tone, write_audio

from melstore import extract
from melstore.errors import AudioError, MelstoreError
from melstore.presets import resolve_feature_set

SEED = resolve_feature_set("seed", {})


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """40 clips of different lengths, rates and pitches, with an undecodable one inside."""
    root = tmp_path_factory.mktemp("clips")
    entries = []
    for i in range(40):
        path = f"c{i:02d}.wav"
        if i == 17:
            (root / path).write_bytes(b"not audio at all")
        else:
            sr = (22050, 44100, 16000)[i % 3]
            write_audio(root / path, tone(sr, 0.2 + 0.1 * i, freq=200 + 50 * i), sr)
        entries.append((f"c{i:02d}", path, ""))
    return root, entries


def shard(root, entries, out, *, processes=1, params=SEED, siblings=()):
    extract.extract_shard(
        entries=entries,
        root=root,
        params=params.to_dict(),
        out_path=out,
        feature_set="seed",
        processes=processes,
        siblings=siblings,
    )
    with h5py.File(out, "r") as f:
        return f["features"][()], [x.decode() for x in f["metadata/clip_id"][()]]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_workers_hand_back_every_clip_in_order(clips, tmp_path, monkeypatch, chunksize):
    # chunksize 1 gives a ring of 4 slots for 40 clips: workers wait for their slot
    monkeypatch.setattr(extract, "_CHUNKSIZE", chunksize)
    root, entries = clips
    serial, serial_ids = shard(root, entries, tmp_path / "serial.h5", processes=1)
    pooled, pooled_ids = shard(root, entries, tmp_path / "pooled.h5", processes=2)
    assert serial_ids == pooled_ids == [f"c{i:02d}" for i in range(40) if i != 17]
    np.testing.assert_array_equal(pooled, serial)
    # each row is its own clip: pitches rise with the row, so the loudest band does too
    loudest_band = serial.max(axis=2).argmax(axis=1)
    assert (np.diff(loudest_band) >= 0).all() and loudest_band[-1] > loudest_band[0]


def test_the_front_end_comes_from_a_shard_built_alike(clips, tmp_path, monkeypatch):
    root, entries = clips
    first = tmp_path / "s0.h5"
    shard(root, entries[:5], first)

    def no_librosa(cls, params):
        raise AssertionError("built the front end again")

    monkeypatch.setattr(extract.Frontend, "build", classmethod(no_librosa))
    shard(root, entries[5:10], tmp_path / "s1.h5", siblings=[first])
    with h5py.File(first, "r") as a, h5py.File(tmp_path / "s1.h5", "r") as b:
        for name in ("window", "filterbank", "frequencies"):
            np.testing.assert_array_equal(a[f"frontend/{name}"][()], b[f"frontend/{name}"][()])
    other = resolve_feature_set("seed64", {"seed64": {"preset": "seed", "n_mels": 64}})
    with pytest.raises(AssertionError, match="built the front end again"):
        shard(root, entries[5:10], tmp_path / "s2.h5", params=other, siblings=[first])


def test_a_worker_that_dies_ends_the_job_with_a_one_line_error(clips, tmp_path, monkeypatch):
    root, entries = clips
    decode = extract.decode

    def crash_on_c23(source, **kwargs):
        if str(source).endswith("c23.wav"):
            os._exit(1)  # as a segfault in native code would: no exception, no cleanup
        return decode(source, **kwargs)

    monkeypatch.setattr(extract, "decode", crash_on_c23)

    def hung(signum, frame):
        raise TimeoutError("the job waits forever for the dead worker's files")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        with pytest.raises(MelstoreError, match="worker process died") as error:
            shard(root, entries, tmp_path / "s.h5", processes=2)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "\n" not in str(error.value) and not (tmp_path / "s.h5").exists()


def test_fail_mode_stops_the_workers_at_the_first_bad_file(clips, tmp_path, monkeypatch):
    monkeypatch.setattr(extract, "_CHUNKSIZE", 1)  # 4 slots: workers wait for the parent
    root, entries = clips
    threads = set(threading.enumerate())
    with pytest.raises(AudioError, match="c17.wav"):
        extract.extract_shard(entries=entries, root=root, params=SEED.to_dict(),
                              out_path=tmp_path / "s.h5", feature_set="seed", on_error="fail",
                              processes=2)  # fmt: skip
    assert not (tmp_path / "s.h5").exists()
    # nothing of the pool outlives the error: at exit, Python 3.12.1 races a live
    # pool thread and prints a traceback under the job's one-line message
    assert multiprocessing.active_children() == []
    assert set(threading.enumerate()) <= threads
