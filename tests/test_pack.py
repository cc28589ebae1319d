"""melstore pack: one standalone file, the same bytes whatever shard_size and cores built the store.

One small folder dataset is built three times through the real workflow, at
shard_size 1, 7 and the default, on 2, 1 and 2 cores, with a fixed-length, a
variable-length and a compact feature set.
"""

import hashlib
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import run_snakemake, tone, write_audio

import melstore
from melstore.cli import main

# build name -> shard_size (None: the config's default), then snakemake's options
BUILDS = {
    "one": (1, ["--cores", "2", "--set-threads", "extract=1"]),  # two one-clip jobs at a time
    "seven": (7, ["--cores", "1"]),
    "default": (None, ["--cores", "2"]),  # one job of two workers
}
SETS = {
    "fixed": {"preset": "seed", "n_mels": 32},
    "variable": {"preset": "seed", "n_mels": 32, "duration": None},
    "compact": {"preset": "seed", "n_mels": 32, "precision_db": 0.05},
}
N_CLIPS = 10
BROKEN = {"b/broken.wav": b"not audio", "c/empty.wav": b""}


def make_dataset(root):
    """``N_CLIPS`` short clips in three class folders, at three sample rates, and two bad files."""
    for i in range(N_CLIPS):
        sr = (16000, 22050, 44100)[i % 3]
        clip = tone(sr, 0.3 + 0.2 * i, 1 + i % 2, 200 + 90 * i, seed=i)
        write_audio(root / f"{'abc'[i % 3]}/clip{i}.wav", clip, sr)
    for path, content in BROKEN.items():
        (root / path).write_bytes(content)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Each build's results folder, the three built at once (they share the dataset, read only)."""
    base = tmp_path_factory.mktemp("pack")
    make_dataset(base / "data")
    dataset = {"name": "mine", "layout": "folder", "root": str(base / "data")}
    config = {"dataset": dataset, "features": list(SETS), "feature_sets": SETS}
    config["min_success"] = 0.5  # the bad files are 2 of 12

    def build(name):
        shard_size, options = BUILDS[name]
        sized = config | ({"shard_size": shard_size} if shard_size else {})
        stores = [f"results/mine/{feature_set}.h5" for feature_set in SETS]  # no report: faster
        result = run_snakemake(base / name, sized, *stores, *options)
        assert f"Provided cores: {options[1]}" in result.stderr  # the last --cores given counts
        return base / name / "results/mine"

    with ThreadPoolExecutor(len(BUILDS)) as pool:
        return dict(zip(BUILDS, pool.map(build, BUILDS), strict=True))


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def packed(builds, tmp_path_factory):
    """(build, feature set) -> the file ``melstore pack`` wrote of that build's store."""
    folder = tmp_path_factory.mktemp("packed")
    outs = {}
    for build, results in builds.items():
        for feature_set in SETS:
            out = outs[build, feature_set] = folder / f"{build}-{feature_set}.h5"
            result = run("pack", results / f"{feature_set}.h5", out)
            assert result.exit_code == 0, result.output
            assert result.output.startswith(f"{out}: {N_CLIPS} clips, ")
            assert result.output.endswith(f" kB, packed from {results / feature_set}.h5\n")
    return outs


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_files(results, feature_set):
    return sorted((results / "shards" / feature_set).iterdir())


def key_order(clip_ids):
    """Clip ids sorted as the store's rows are: by the sha256 of each id."""
    return sorted(clip_ids, key=lambda clip_id: hashlib.sha256(clip_id.encode()).digest())


@pytest.mark.parametrize("feature_set", SETS)
def test_packed_copies_are_the_same_bytes_whatever_the_shard_size_and_cores(
    builds, packed, feature_set
):
    n_shard_files = {build: len(shard_files(builds[build], feature_set)) for build in BUILDS}
    assert n_shard_files["one"] == N_CLIPS + len(BROKEN) and n_shard_files["default"] == 1
    assert 1 < n_shard_files["seven"] < N_CLIPS
    digests = {build: sha256(packed[build, feature_set]) for build in BUILDS}
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("feature_set", SETS)
def test_a_packed_copy_reads_as_its_index_from_one_ordinary_dataset(builds, packed, feature_set):
    out = packed["one", feature_set]
    with (
        h5py.File(out, "r") as copy,
        h5py.File(shard_files(builds["one"], feature_set)[0]) as shard,
    ):
        assert not copy["features"].is_virtual and "shards" not in copy
        stored = copy["features"]  # its chunks are the shards', copied as they were encoded
        assert (stored.dtype, stored.chunks, stored.compression) == (
            shard["features"].dtype, shard["features"].chunks, shard["features"].compression
        )  # fmt: skip
    for build, results in builds.items():
        with melstore.open(results / f"{feature_set}.h5") as index, melstore.open(out) as copy:
            assert len(copy) == len(index) == N_CLIPS, build
            for row in range(N_CLIPS):
                values = copy.clip(row)
                assert np.isfinite(values).all()  # NaN would be a shard file HDF5 did not read
                np.testing.assert_array_equal(values, index.clip(row))
            pd.testing.assert_frame_equal(copy.metadata, index.metadata)
            pd.testing.assert_frame_equal(copy.failures, index.failures)
            assert copy.attrs == index.attrs
            for mine, theirs in zip(copy.stats(), index.stats(), strict=True):
                np.testing.assert_array_equal(mine, theirs)
            np.testing.assert_array_equal(copy.axes.time, index.axes.time)
            np.testing.assert_array_equal(copy.frontend["filterbank"], index.frontend["filterbank"])
    with melstore.open(out) as copy:
        clip_ids, failed = copy.metadata["clip_id"].tolist(), copy.failures["clip_id"].tolist()
    assert clip_ids == key_order(f"{'abc'[i % 3]}/clip{i}.wav" for i in range(N_CLIPS))
    assert failed == key_order(BROKEN)


def test_the_compact_copy_keeps_float16_on_its_grid(packed):
    with melstore.open(packed["seven", "compact"]) as copy:
        assert copy.features.dtype == np.float16 and copy.precision_db == 0.05
        values = copy.features[()].astype(np.float32)
        assert np.array_equal(values * 16, np.round(values * 16))  # steps of 1/16 dB


def test_packing_a_packed_copy_gives_the_same_bytes(packed, tmp_path):
    out = packed["default", "variable"]
    assert run("pack", out, tmp_path / "again.h5").exit_code == 0
    assert sha256(tmp_path / "again.h5") == sha256(out)


def size(n_bytes):
    """How info writes a size of this small dataset's files: kilobytes, or a few megabytes."""
    assert 1e3 <= n_bytes < 1e9
    return f"{n_bytes / 1e3:.1f} kB" if n_bytes < 1e6 else f"{n_bytes / 1e6:.1f} MB"


def test_info_counts_the_shard_files_and_their_bytes(builds, packed):
    index = builds["one"] / "fixed.h5"
    files = [index, *shard_files(builds["one"], "fixed")]
    result = run("info", index)
    assert result.exit_code == 0, result.output
    n_failed = len(BROKEN)
    assert result.output.splitlines()[0] == (
        f"{index}: {N_CLIPS} clips, {n_failed} failed, "
        f"{size(sum(path.stat().st_size for path in files))} with {len(files) - 1} shard files"
    )
    copy = packed["one", "fixed"]
    result = run("info", copy)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"{copy}: {N_CLIPS} clips, {n_failed} failed, {size(copy.stat().st_size)} "
        "with no shard files"
    )


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("{tmp}/notes.txt/packed.h5", "cannot write {tmp}/notes.txt/packed.h5: "),
        ("{store}", "{store} is the store itself; pack it into another file"),
        ("{shards}/packed.h5", "{shards}/packed.h5 lies in the store's shard folder "),
        ("{shards}/fixed/packed.h5", "{shards}/fixed/packed.h5 lies in the store's shard folder "),
    ],
    ids=["unwritable", "the store", "the shards folder", "a set's shard folder"],
)
def test_a_refused_output_exits_2_with_one_line_and_changes_nothing(builds, tmp_path, out, message):
    store, shards = builds["seven"] / "fixed.h5", builds["seven"] / "shards"
    (tmp_path / "notes.txt").write_text("not a folder")
    before = {path: path.read_bytes() for path in [store, *shards.rglob("*")] if path.is_file()}
    places = {"tmp": tmp_path, "store": store, "shards": shards}
    result = run("pack", store, out.format(**places))
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {message.format(**places)}"), result.output
    assert len(result.output.splitlines()) == 1, result.output
    after = {path: path.read_bytes() for path in [store, *shards.rglob("*")] if path.is_file()}
    assert after == before
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_missing_store_or_a_lone_index_exits_2_with_one_line(builds, tmp_path):
    result = run("pack", tmp_path / "missing.h5", tmp_path / "packed.h5")
    assert (result.exit_code, result.output) == (
        2, f"Error: {tmp_path / 'missing.h5'}: no such file\n"
    )  # fmt: skip
    lone = tmp_path / "lone.h5"  # an index copied without its shard files
    lone.write_bytes((builds["seven"] / "fixed.h5").read_bytes())
    result = run("pack", lone, tmp_path / "packed.h5")
    assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert result.output.startswith(f"Error: {tmp_path}/shards/fixed/")
    assert "shard file missing; " in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lone.h5"]
