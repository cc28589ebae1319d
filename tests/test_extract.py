"""Extraction of one shard: worker processes and the shared-memory hand-back."""

import multiprocessing
import os
import re
import signal
import threading

import h5py
import numpy as np
import pytest
from conftest import tone, write_audio

from melstore.errors import AudioError, MelstoreError
from melstore.features.presets import resolve_feature_set
from melstore.pipeline import extract, reuse
from melstore.pipeline.shards import assign_shards
from melstore.store.format import Storage

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


def job(root, entries, out, **options):
    build = {"params": SEED.to_dict(), "storage": Storage().to_dict(), "versions": {}, "code": ""}
    return extract.ShardJob(entries, root, out, "seed", build, "0123", **options)


def shard(root, entries, out, *, processes=1):
    extract.extract_shard(job(root, entries, out, processes=processes))
    with h5py.File(out, "r") as f:
        return f["features"][()], [x.decode() for x in f["metadata/clip_id"][()]]


@pytest.mark.parametrize("chunksize", [1, 4])
def test_workers_hand_back_every_clip_in_order(clips, tmp_path, monkeypatch, chunksize):
    monkeypatch.setattr(extract, "CHUNKSIZE", chunksize)
    root, entries = clips
    serial, serial_ids = shard(root, entries, tmp_path / "serial.h5", processes=1)
    pooled, pooled_ids = shard(root, entries, tmp_path / "pooled.h5", processes=2)
    assert serial_ids == pooled_ids == [f"c{i:02d}" for i in range(40) if i != 17]
    np.testing.assert_array_equal(pooled, serial)
    # each row is its own clip: pitches rise with the row, so the loudest band does too
    loudest_band = serial.max(axis=2).argmax(axis=1)
    assert (np.diff(loudest_band) >= 0).all() and loudest_band[-1] > loudest_band[0]


def test_a_worker_that_dies_ends_the_job_with_a_one_line_error(clips, tmp_path, monkeypatch):
    root, entries = clips
    file_features = extract.file_features

    def crash_on_c23(extractor, source):
        if str(source).endswith("c23.wav"):
            os._exit(1)  # as a segfault in native code would: no exception, no cleanup
        return file_features(extractor, source)

    monkeypatch.setattr(extract, "file_features", crash_on_c23)

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
    monkeypatch.setattr(extract, "CHUNKSIZE", 1)  # many files still queued at the error
    root, entries = clips
    threads = set(threading.enumerate())
    with pytest.raises(AudioError, match="c17.wav"):
        extract.extract_shard(job(root, entries, tmp_path / "s.h5", on_error="fail", processes=2))
    assert not (tmp_path / "s.h5").exists()
    # nothing of the pool outlives the error: at exit, Python 3.12.1 races a live
    # pool thread and prints a traceback under the job's one-line message
    assert multiprocessing.active_children() == []
    assert set(threading.enumerate()) <= threads


def last_build(files, **changed):
    build = {"params": SEED.to_dict(), "storage": Storage().to_dict(),
             "versions": {"librosa": "0.11.0"}, "code": "abc"}  # fmt: skip
    return reuse.LastBuild({**build, **changed}, files)


def reason(last, build, entries, stats, *, forced=False):
    changes = last.changes(build, entries, stats) if last else []
    return reuse.rebuild_reason(last, changes, n_files=len(entries), forced=forced)


def test_the_rebuild_reason_names_changed_parameters_versions_and_code():
    now = {"params": {**SEED.to_dict(), "n_mels": 40},
           "storage": Storage(precision_db=0.05).to_dict(),
           "versions": {"librosa": "1.0.0"}, "code": "def"}  # fmt: skip
    assert reason(last_build({}), now, [], {}) == (
        "rebuilding: n_mels: 128 -> 40; precision_db: (none) -> 0.05; librosa: 0.11.0 -> 1.0.0; "
        "extraction code changed"
    )


def test_the_rebuild_reason_names_the_first_files_that_changed_and_counts_the_rest():
    build = last_build({}).build
    paths = [f"f{i}.wav" for i in range(6)]
    old = {path: (path[:-4], (10, 1)) for path in paths[:5]}  # f5 is new
    entries = [(path[:-4], path, "") for path in paths[1:]]  # f0 is gone
    # f1 unchanged; f2 another size, f3 another mtime (even older), f4 both
    stats = {"f1.wav": (10, 1), "f2.wav": (11, 1), "f3.wav": (10, 0), "f4.wav": (9, 2),
             "f5.wav": (10, 1)}  # fmt: skip
    assert reason(last_build(old), build, entries, stats) == (
        "rebuilding: 3 file(s) changed: f2.wav, f3.wav, f4.wav; 1 file(s) added: f5.wav; "
        "1 file(s) removed: f0.wav"
    )
    many = {f"g{i}.wav": (1, 2) for i in range(5)}
    old_many = {path: (path, (1, 1)) for path in many}
    entries = [(path, path, "") for path in many]
    assert reason(last_build(old_many), build, entries, many) == (
        "rebuilding: 5 file(s) changed: g0.wav, g1.wav, g2.wav and 2 more"
    )


def test_a_shard_reads_only_its_own_clips_from_the_previous_files(clips, tmp_path):
    """A split shard's halves each copy their own part of their parent's file, and no other."""
    root, entries = clips
    ids = [clip_id for clip_id, _, _ in entries]
    shards = assign_shards(ids, 40)  # one shard, "s"
    folder = tmp_path / "shards/seed"
    folder.mkdir(parents=True)
    parent = job(root, [entries[row] for row in shards["s"]], folder / "s-aaaa.h5")
    extract.extract_shard(parent)
    write_index(tmp_path / "seed.h5", [parent.out_path])
    halves = assign_shards(ids, 25)
    assert set(halves) == {"s0", "s1"}
    copied = {}
    for half, rows in halves.items():
        earlier = reuse.PreviousBuild(tmp_path / "seed.h5", build=parent.build, shard=half,
                                      name=f"shards/seed/{half}-bbbb.h5")  # fmt: skip
        assert not earlier.forced and earlier.frontend
        own = {clip.columns["clip_id"] for clip in earlier.clips.values()}
        assert own == {ids[row] for row in rows} - {"c17"}  # c17 failed: nothing to copy
        copied.update(dict.fromkeys(own, half))
        # the file removed from this half is one of its own, not of the other half
        kept = [entries[row] for row in rows if ids[row] not in ("c17", min(own))]
        stats = reuse.file_stats(root, [path for _, path, _ in kept])
        changes = earlier.last_build.changes(parent.build, kept, stats)
        assert changes == [f"1 file(s) removed: {min(own)}.wav"]
    assert len(copied) == 39
    # a job whose own file the index lists was forced: it copies nothing
    forced = reuse.PreviousBuild(tmp_path / "seed.h5", build=parent.build, shard="s",
                                 name="shards/seed/s-aaaa.h5")  # fmt: skip
    assert forced.forced and not forced.clips


def write_index(path, shard_paths):
    """An index over shard files, as the gather lists them (only what reuse reads)."""
    from melstore.store.format import SHARDS_GROUP, write_table

    with h5py.File(path, "w") as index:
        names = [str(p.relative_to(path.parent)) for p in shard_paths]
        write_table(index.create_group(SHARDS_GROUP), {"name": names, "rows": [0] * len(names),
                                                       "digest": [""] * len(names)})  # fmt: skip


def test_a_forced_first_or_copying_build_says_so():
    build = last_build({}).build
    entries = [("a", "a.wav", "")]
    kept = {"a.wav": ("a", (1, 1))}
    assert reason(None, build, entries, {}, forced=True) == (
        "forced (--forcerun, or its file was deleted): computing every clip"
    )
    assert reason(None, build, entries, {}) == "building 1 files (no earlier build kept)"
    assert reason(last_build(kept), build, entries, {"a.wav": (1, 1)}) == (
        "no file of this shard changed since the last build; copying its clips"
    )


def test_progress_reaches_the_terminal_with_the_rate_and_the_time_left(capsys):
    progress = extract.Progress("seed/s0", total=4, reused=2, every_seconds=0.0)
    progress.update(failed=0)
    progress.update(failed=1)
    progress.done()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert re.fullmatch(
        r"melstore: seed/s0: 1/4 files computed \(\d+\.\d files/s, \d+ s left\), "
        r"0 failed, 2 reused unchanged",
        lines[0],
    )
    assert lines[2].startswith("melstore: seed/s0: 2/4 files computed (")
    assert lines[2].endswith("s left), 1 failed, 2 reused unchanged")


def test_the_gather_deletes_stale_shard_files_only(tmp_path):
    from melstore.pipeline.gather import remove_stale_shards

    folder = tmp_path / "shards/seed"
    folder.mkdir(parents=True)
    names = ["s0-0123456789abcdef.h5", "s1-0123456789abcdef.h5", "s1-fedcba9876543210.h5",
             ".s0-aaaaaaaaaaaaaaaa.h5.tmp42", "notes.txt", "s1.h5"]  # fmt: skip
    for name in names:
        (folder / name).write_text("")
    current = [folder / "s0-0123456789abcdef.h5", folder / "s1-0123456789abcdef.h5"]
    remove_stale_shards(tmp_path / "seed.h5", current, keep={"shards/seed/s0-0123456789abcdef.h5",
                        "shards/seed/s1-0123456789abcdef.h5"})  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["notes.txt", "s0-0123456789abcdef.h5", "s1-0123456789abcdef.h5", "s1.h5"]
    )
