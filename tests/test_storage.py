"""Compact and compressed stores: precision_db and compression, end to end and unit by unit."""

import stat
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import run_snakemake, standalone_copy, tone, write_audio

from melstore.errors import ConfigError
from melstore.store.format import ChunkEncoder, Storage, StoreWriter, precision_problems
from melstore.store.reader import Store

BOUNDS = [0.001, 0.01, 0.03, 0.05, 0.1, 0.5, 2.0]


@pytest.mark.parametrize("bound", BOUNDS)
def test_rounding_stays_within_the_bound_and_on_the_grid(bound):
    rng = np.random.default_rng(1)
    values = (rng.random((4, 128, 130)) * -100 + rng.random() * 20).astype(np.float32)
    storage = Storage(precision_db=bound)
    stored, error = storage.quantise(values, name="x.wav")
    difference = np.abs(stored.astype(np.float64) - values)
    assert difference.max() <= bound
    assert error == difference.max()
    assert storage.step <= 2 * bound < 2 * storage.step
    assert error > storage.step / 4  # the grid is used, not a finer one
    scaled = stored.astype(np.float64) / storage.step
    assert np.array_equal(scaled, np.round(scaled))


def test_float16_holds_the_grid_only_where_it_is_exact():
    assert Storage(precision_db=0.05).dtype is np.float16  # steps of 1/16 up to +-128
    assert Storage(precision_db=0.01).dtype is np.float32  # steps of 1/64 reach only +-32
    assert Storage().dtype is np.float32
    with pytest.raises(ConfigError, match=r"loud\.wav: .*precision_db 0\.05"):
        Storage(precision_db=0.05).quantise(np.full((2, 3), -200, np.float32), name="loud.wav")


@pytest.mark.parametrize(
    "storage", [Storage(), Storage(compression="gzip"), Storage(precision_db=0.05)], ids=str
)
def test_chunks_encoded_by_workers_read_back_with_plain_h5py(storage, tmp_path):
    rng = np.random.default_rng(2)
    clips = [(rng.random((2, 16, 20)) * -80).astype(np.float32) for _ in range(3)]
    stored = [storage.quantise(clip, name="x")[0] for clip in clips]
    encode = ChunkEncoder(storage, (2, 16, 20))
    with StoreWriter(tmp_path / "s.h5", n_bins=16, n_frames=20, channels=["a", "b"],
                     storage=storage) as writer:  # fmt: skip
        for values in stored:
            writer.append_chunk(encode(values))
        writer.finish(metadata={"i": np.arange(3)}, failures={"clip_id": [], "path": [],
                      "reason": []}, attrs=storage.attrs(), axes={})  # fmt: skip
    with h5py.File(tmp_path / "s.h5", "r") as f:
        read = f["features"][()]
        assert read.dtype.kind == "f" and read.dtype == np.dtype(storage.dtype)
        assert np.array_equal(read, np.stack(stored))
        assert (f["features"].compression == "gzip") == (not storage.exact)


# --- end to end: the real snakemake on a small folder dataset ------------------------------


def make_dataset(root):
    for i in range(9):
        sr = (16000, 22050, 44100)[i % 3]
        write_audio(root / f"c{i % 3}/clip{i}.wav", tone(sr, 0.4 + 0.3 * i, 1 + i % 2,
                    200 + 90 * i, seed=i), sr)  # fmt: skip
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


SETS = {
    "exact": {"preset": "seed"},
    "small": {"preset": "seed", "precision_db": 0.05},
    "fine": {"preset": "seed", "precision_db": 0.01},
    "lossless": {"preset": "seed", "compression": "gzip"},
    "small_deltas": {"preset": "salamon2017", "precision_db": 0.05},
    "small_vggish": {"preset": "vggish", "precision_db": 0.05},
}


def config(root, **extra):
    return {
        "dataset": {"name": "mine", "layout": "folder", "root": str(root)},
        "features": [*SETS, "salamon2017", "vggish"],
        "feature_sets": SETS,
        **extra,
    }


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): (p.is_file() and p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("storage")
    root = base / "data"
    make_dataset(root)
    before = snapshot(root)
    run_snakemake(base / "work", config(root))
    assert snapshot(root) == before, "the dataset was written"
    written = {p.relative_to(base / "work").parts[0] for p in (base / "work").iterdir()}
    assert written <= {"results", "logs", ".snakemake", "my.yaml"}
    yield base, root
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def features(path):
    with h5py.File(path, "r") as f:
        return f["features"][()]


def shard_files(index):
    """The shard files an index reads its features from."""
    with h5py.File(index, "r") as f:
        return [index.parent / name for name in f["shards/name"].asstr()[()]]


def stored_bytes(index):
    """The bytes the features of an index take on disk, over its shard files."""
    total = 0
    for path in shard_files(index):
        with h5py.File(path, "r") as shard:
            total += shard["features"].id.get_storage_size()
    return total


def test_a_store_without_the_keys_is_the_exact_float32_store(built):
    base, root = built
    run_snakemake(base / "plain", {**config(root), "features": ["seed"], "feature_sets": {}})
    exact, plain = base / "work/results/mine/exact.h5", base / "plain/results/mine/seed.h5"
    with h5py.File(exact, "r") as a, h5py.File(plain, "r") as b:
        assert a["features"].dtype == np.float32 and a["features"].compression is None
        assert np.array_equal(a["features"][()], b["features"][()])
        assert {"precision_db", "max_error_db", "compression"}.isdisjoint(a.attrs)
        assert "quantisation_error" not in a["metadata"]


@pytest.mark.parametrize("name, bound", [("small", 0.05), ("fine", 0.01)])
def test_a_compact_store_is_within_its_recorded_bound(built, name, bound):
    base, _ = built
    exact = features(base / "work/results/mine/exact.h5").astype(np.float64)
    path = base / f"work/results/mine/{name}.h5"
    with h5py.File(path, "r") as f:  # plain h5py, no plugin: floating point comes back
        stored = f["features"][()]
        assert stored.dtype.kind == "f"
        assert f.attrs["precision_db"] == bound
        error = np.abs(stored - exact)
        assert error.max() <= bound
        assert f.attrs["max_error_db"] == error.max()
        per_clip = error.reshape(len(error), -1).max(axis=1)
        assert np.array_equal(f["metadata/quantisation_error"][()], per_clip)
    assert 0 < stored_bytes(path) < exact.nbytes / 2
    with Store(path) as store:
        assert store.precision_db == bound and store.clip(0).dtype == np.float32


def test_a_lossless_store_holds_the_exact_values_in_fewer_bytes(built):
    base, _ = built
    path = base / "work/results/mine/lossless.h5"
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["features"][()], features(base / "work/results/mine/exact.h5"))
        assert 0 < stored_bytes(path) < f["features"][()].nbytes
        assert "precision_db" not in f.attrs
    for shard_path in shard_files(path):
        with h5py.File(shard_path, "r") as shard:
            assert shard["features"].compression == "gzip" and shard["features"].shuffle


def test_deltas_and_natural_log_kinds_keep_the_bound(built):
    base, _ = built
    for compact, exact in [("small_deltas", "salamon2017"), ("small_vggish", "vggish")]:
        a = features(base / f"work/results/mine/{exact}.h5").astype(np.float64)
        b = features(base / f"work/results/mine/{compact}.h5")
        assert b.shape == a.shape and np.abs(b - a).max() <= 0.05


def verify(path):
    command = [sys.executable, "-m", "melstore.cli", "verify", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_verify_reports_the_bound_and_fails_a_store_that_does_not_meet_it(built, tmp_path):
    base, _ = built
    good = verify(base / "work/results/mine/small.h5")
    assert good.returncode == 0, good.stderr
    assert "precision_db 0.05 met" in good.stderr
    command = [
        sys.executable,
        "-m",
        "melstore.cli",
        "info",
        str(base / "work/results/mine/small.h5"),
    ]
    info = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert "storage      within precision_db 0.05 (largest error 0.03" in info.stdout
    for name, claim in [("small", 0.5), ("small", 0.01), ("exact", 0.05), ("lossless", 0.05)]:
        copy = standalone_copy(
            base / f"work/results/mine/{name}.h5", tmp_path / f"{name}-{claim}.h5"
        )
        with h5py.File(copy, "a") as f:
            f.attrs["precision_db"] = claim
            f.attrs["max_error_db"] = 0.0
        with h5py.File(copy, "r") as f:
            assert precision_problems(f)
        result = verify(copy)
        assert result.returncode == 1, (name, claim, result.stderr)
        assert f"precision_db {claim:g} not met" in result.stderr
        assert result.stdout.startswith("precision ")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("precision_db", 0, "precision_db"),
        ("precision_db", -0.1, "precision_db"),
        ("precision_db", 50, "precision_db"),
        ("precision_db", "fine", "precision_db"),
        ("compression", "lzf", "compression"),
    ],
)
def test_a_bad_storage_key_is_refused_in_one_line_naming_it(key, value, expected, tmp_path):
    root = tmp_path / "data"
    write_audio(root / "a/x.wav", tone(16000, 0.5), 16000)
    sets = {"mine": {"preset": "seed", key: value}}
    cfg = {"dataset": {"name": "m", "layout": "folder", "root": str(root)},
           "features": ["mine"], "feature_sets": sets}  # fmt: skip
    result = run_snakemake(tmp_path / "work", cfg, "-n", check=False)
    assert result.returncode != 0
    [message] = [line for line in result.stderr.splitlines() if line.startswith("melstore:")]
    assert expected in message and "Traceback" not in result.stderr


def test_a_build_keeps_the_features_once_in_its_shards_and_the_index_maps_them(built):
    base, _ = built
    results = base / "work/results/mine"
    names = [*SETS, "salamon2017", "vggish"]
    # each store, the same file under the name the gather wrote it by, and the manifest file
    assert {p.name for p in results.glob("*.h5")} == {
        "manifest.h5",
        *(file for name in names for file in (f"{name}.h5", f".{name}.index.h5")),
    }
    for name in names:
        assert (results / f"{name}.h5").samefile(results / f".{name}.index.h5")
        with h5py.File(results / f"{name}.h5", "r") as index:
            assert index["features"].is_virtual and index["features"].id.get_storage_size() == 0
            [shard] = index["shards/name"].asstr()[()]  # 9 files: one shard
        assert [p.relative_to(results).as_posix() for p in results.glob(f"shards/{name}/*")] == [
            shard
        ]
