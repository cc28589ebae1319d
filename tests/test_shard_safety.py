"""A store made of its shards reads safely (#30), each case through the real workflow.

melstore refuses, in one line naming the file, an index whose shard files are not all
there, whole and its own, or more than the open-file limit allows; plain h5py reads a
missing shard's rows as NaN, never 0. A results folder moved or copied still reads; a
reader that opened the store before a rebuild reads its old values; and kill -9 of a
rebuild leaves the old store readable, while the rerun equals a clean build.
"""

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import USER_CONFIG, run_snakemake, snakemake_command, tone, write_audio

import melstore
from melstore.store.format import SPARE_FILE_DESCRIPTORS, read_shard_refs
from melstore.store.index import pack

DATASET, FEATURE_SET = "safe", "a"
INDEX = f"results/{DATASET}/{FEATURE_SET}.h5"
N_MELS, OTHER_MELS = 16, 12  # the build's, and another build's parameters
# Two one-worker extraction jobs at a time: tiny shards build in half the wall time.
FAST = ("--set-threads", "extract=1")


def make_dataset(root):
    for i in range(12):
        write_audio(root / f"c{i % 3}/clip{i:02d}.wav", tone(16000, 0.5, 1, 200 + 30 * i, i), 16000)


def config(root, n_mels=N_MELS):
    return {
        "dataset": {"name": DATASET, "layout": "folder", "root": str(root)},
        "features": [FEATURE_SET],
        "feature_sets": {FEATURE_SET: {"preset": "seed", "n_mels": n_mels, "duration": 0.5}},
        "shard_size": 4,  # four shards of three clips
    }


def build(workdir, root, **settings):
    return run_snakemake(workdir, config(root, **settings), INDEX, *FAST)


@dataclass(frozen=True)
class Build:
    data: Path
    work: Path
    values: np.ndarray  # the features, as melstore read them after the build

    @property
    def index(self) -> Path:
        return self.work / INDEX


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Build:
    """The dataset and its build, made once; tests change only copies of them."""
    base = tmp_path_factory.mktemp("shard-safety")
    make_dataset(base / "data")
    build(base / "work", base / "data")
    with melstore.open(base / "work" / INDEX) as store:
        values = store.features[()]
    return Build(base / "data", base / "work", values)


@pytest.fixture(scope="module")
def other(built, tmp_path_factory) -> Path:
    """The work dir of a clean build of the same files with other parameters."""
    workdir = tmp_path_factory.mktemp("shard-safety-other") / "work"
    build(workdir, built.data, n_mels=OTHER_MELS)
    return workdir


@pytest.fixture
def work(built, tmp_path) -> Path:
    """This test's own copy of the build's work dir (the dataset stays shared and unchanged)."""
    copy = tmp_path / "work"
    shutil.copytree(built.work, copy, symlinks=True)
    return copy


def shards_of(index) -> list[tuple[Path, slice]]:
    """Each shard file beside ``index``, and the index's rows it holds."""
    with h5py.File(index, "r") as opened:
        refs = read_shard_refs(opened)
    ends = np.cumsum([ref.rows for ref in refs]).tolist()
    return [
        (Path(index).parent / ref.name, slice(end - ref.rows, end))
        for ref, end in zip(refs, ends, strict=True)
    ]


def plain_read(index) -> np.ndarray | None:
    """The features as plain h5py reads them, or None when HDF5 refuses to."""
    try:
        with h5py.File(index, "r") as opened:
            return opened["features"][()]
    except OSError:
        return None


def python(*args, cwd, prefix=(), **options) -> subprocess.CompletedProcess:
    """``python *args`` in a process of its own, run from ``cwd`` under ``prefix``."""
    command = [*prefix, sys.executable, *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, **options)


def melstore_cli(*args, cwd, **options) -> subprocess.CompletedProcess:
    return python("-m", "melstore.cli", *args, cwd=cwd, **options)


def assert_refused(index, named: Path, *, cwd):
    """melstore.open and `melstore info` (exit 2), run from ``cwd``, stop in one line naming it."""
    with pytest.raises(melstore.MelstoreError) as refused:
        melstore.open(index)
    message = str(refused.value)
    assert str(named) in message and "\n" not in message, message
    info = melstore_cli("info", index, cwd=cwd)
    assert info.returncode == 2, info.stdout + info.stderr
    [line] = info.stderr.splitlines()
    assert str(named) in line


# Each way to break a shard file, given the other build's file of the same shard.
DAMAGE = {
    "deleted": lambda shard, theirs: shard.unlink(),
    "renamed": lambda shard, theirs: shard.rename(shard.with_suffix(".old")),
    "truncated": lambda shard, theirs: os.truncate(shard, shard.stat().st_size // 2),
    "of another build": lambda shard, theirs: shutil.copyfile(theirs, shard),
}
MISSING = {"deleted", "renamed"}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_broken_shard_file_stops_melstore_in_one_line_naming_it(
    damage, work, other, built, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # HDF5 also looks for a missing source in the working directory
    index = work / INDEX
    position = 1  # not the first: every file is checked
    shard, rows = shards_of(index)[position]
    DAMAGE[damage](shard, shards_of(other / INDEX)[position][0])  # the same files: same shards

    assert_refused(index, shard, cwd=tmp_path)
    read = plain_read(index)
    if damage in MISSING:
        assert np.isnan(read[rows]).all()
        np.testing.assert_array_equal(np.delete(read, rows, 0), np.delete(built.values, rows, 0))
    else:  # never 0: HDF5 refuses a source it cannot open, or of another shape, or fills NaN
        assert read is None or np.isnan(read[rows]).all()


@pytest.mark.parametrize("cwd", ["elsewhere", "the build's results folder"])
def test_a_lone_index_beside_another_builds_shards_stops_melstore(
    cwd, work, other, built, tmp_path, monkeypatch
):
    beside = tmp_path / "other-results"
    shutil.copytree(other / f"results/{DATASET}", beside)
    lone = beside / f"{FEATURE_SET}.h5"
    shutil.copyfile(work / INDEX, lone)  # over the other build's own index
    folder = work / f"results/{DATASET}" if cwd != "elsewhere" else tmp_path
    monkeypatch.chdir(folder)

    assert_refused(lone, shards_of(lone)[0][0], cwd=folder)
    read = plain_read(lone)
    if cwd == "elsewhere":
        assert np.isnan(read).all()
    else:  # HDF5 alone reads the build's shards from the working directory: the check stops it
        np.testing.assert_array_equal(read, built.values)


# A reader in a process of its own: what melstore.open says of argv[1], then the rows
# plain h5py reads as NaN.
READER = """
import sys
import h5py, numpy as np, melstore
try:
    melstore.open(sys.argv[1]).close()
    print("opened")
except melstore.MelstoreError as err:
    print(err)
with h5py.File(sys.argv[1], "r") as index:
    print(np.flatnonzero(np.isnan(index["features"][()]).all(axis=(1, 2))).tolist())
"""


def test_an_unreadable_shard_file_stops_melstore_and_plain_h5py_reads_nan(work, tmp_path):
    index = work / INDEX
    shard, rows = shards_of(index)[1]
    shard.chmod(0)
    without_root_reads = []
    if os.geteuid() == 0:  # root reads a mode-000 file: the reader runs without that privilege
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root, the reader needs setpriv (util-linux) to drop root's reads")
        # the capabilities that let root ignore file modes (user nobody may not reach this Python)
        without_root_reads = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    reader = python("-c", READER, index, cwd=tmp_path, prefix=without_root_reads)
    assert reader.returncode == 0, reader.stderr
    message, nan_rows = reader.stdout.splitlines()
    assert str(shard) in message and "unreadable" in message, message
    assert nan_rows == str(list(range(rows.start, rows.stop)))
    info = melstore_cli("info", index, cwd=tmp_path, prefix=without_root_reads)
    assert info.returncode == 2, info.stdout + info.stderr
    [line] = info.stderr.splitlines()
    assert str(shard) in line


def test_an_open_file_limit_below_what_the_shards_need_stops_melstore_in_one_line(built, tmp_path):
    needed = len(shards_of(built.index)) + SPARE_FILE_DESCRIPTORS
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    def limited(soft):
        return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    reader = python("-c", READER, built.index, cwd=tmp_path, preexec_fn=limited(needed - 1))
    message = reader.stdout.splitlines()[0]
    assert f"open-file limit of {needed - 1}" in message and str(built.index.parent) in message
    info = melstore_cli("info", built.index, cwd=tmp_path, preexec_fn=limited(needed - 1))
    assert info.returncode == 2
    [line] = info.stderr.splitlines()
    assert f"open-file limit of {needed - 1}" in line
    enough = python("-c", READER, built.index, cwd=tmp_path, preexec_fn=limited(needed))
    assert enough.stdout.splitlines() == ["opened", "[]"]


def test_a_results_folder_moved_or_copied_elsewhere_reads_the_same_values(
    work, built, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    folder = work / f"results/{DATASET}"
    copied, moved = tmp_path / "copied" / DATASET, tmp_path / "moved" / DATASET
    shutil.copytree(folder, copied)
    moved.parent.mkdir()
    folder.rename(moved)
    for index in (copied / f"{FEATURE_SET}.h5", moved / f"{FEATURE_SET}.h5"):
        with melstore.open(index) as store:
            np.testing.assert_array_equal(store.features[()], built.values)
        np.testing.assert_array_equal(plain_read(index), built.values)


def test_a_reader_that_opened_the_store_before_a_rebuild_reads_its_old_values(
    work, built, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(built.data, data)
    changed = "c1/clip04.wav"
    write_audio(data / changed, tone(16000, 0.5, 1, 999, 99), 16000)
    with melstore.open(work / INDEX) as before:  # opened, and nothing read
        build(work, data)
        np.testing.assert_array_equal(before.features[()], built.values)
    with melstore.open(work / INDEX) as after:  # the rebuild did change that clip, and only it
        differs = np.flatnonzero((after.features[()] != built.values).any(axis=(1, 2)))
        assert differs.tolist() == [after.row(changed)]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# The temporary file of the next index being written (beside the store, hidden), named
# after its writer's process id.
INDEX_TMP = f"..{FEATURE_SET}.index.h5.tmp*"


def kill_9_while_writing(workdir, folder: Path, pattern: str, *, whole_run: bool):
    """Start the build; once a job writes a temporary file into ``folder``, kill -9 it.

    ``whole_run`` kills snakemake's process group, as a crash does; else only the job,
    whose process id its temporary file's name ends with, as the OOM killer does.
    """
    left = set(folder.glob(pattern))  # by jobs killed before
    process = subprocess.Popen(
        snakemake_command(workdir, INDEX, *FAST),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (writing := sorted(set(folder.glob(pattern)) - left)):
        assert process.poll() is None and time.monotonic() < deadline, f"no job wrote {pattern}"
        time.sleep(0.001)  # the index job writes for a few tens of milliseconds
    if whole_run:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        os.kill(int(writing[0].name.rsplit(".tmp", 1)[1]), signal.SIGKILL)
    process.wait(timeout=120)
    assert writing[0].exists(), "the job finished before the kill"
    if whole_run:
        run_snakemake(workdir, yaml.safe_load((workdir / USER_CONFIG).read_text()), "--unlock")


def test_kill_9_during_a_shard_job_and_the_index_job_leaves_the_old_store_and_the_rerun_is_clean(
    work, built, other
):
    new = config(built.data, n_mels=OTHER_MELS)  # every shard and the index are rebuilt
    (work / USER_CONFIG).write_text(yaml.safe_dump(new))
    results = work / f"results/{DATASET}"
    for folder, pattern in [(results / "shards" / FEATURE_SET, ".*.h5.tmp*"), (results, INDEX_TMP)]:
        kill_9_while_writing(work, folder, pattern, whole_run=True)
        with melstore.open(work / INDEX) as store:
            np.testing.assert_array_equal(store.features[()], built.values)
        verified = melstore_cli("verify", work / INDEX, cwd=work)
        assert verified.returncode == 0, verified.stdout + verified.stderr

    run_snakemake(work, new, INDEX, *FAST)
    assert sha256(work / INDEX) == sha256(other / INDEX)
    pack(work / INDEX, work / "rerun.h5")
    pack(other / INDEX, work / "clean.h5")
    assert sha256(work / "rerun.h5") == sha256(work / "clean.h5")
    assert list(results.rglob(".*.tmp*")) == []  # killed writers' files are gone


def test_the_rerun_after_kill_9_of_the_index_job_alone_gathers_again(work, built, tmp_path):
    """The store is never the gather's output, so a failed gather leaves it and reruns."""
    data = tmp_path / "data"
    shutil.copytree(built.data, data)  # the same sizes and mtimes: the gather alone reruns
    moved = config(data)
    (work / USER_CONFIG).write_text(yaml.safe_dump(moved))
    kill_9_while_writing(work, work / f"results/{DATASET}", INDEX_TMP, whole_run=False)
    with melstore.open(work / INDEX) as store:  # the old store, untouched
        assert store.attrs["dataset_root"] == str(built.data)

    run_snakemake(work, moved, INDEX, *FAST)
    with melstore.open(work / INDEX) as store:
        assert store.attrs["dataset_root"] == str(data)
