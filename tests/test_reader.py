"""The Python API, melstore.open(), on stores built by the real workflow."""

import hashlib

import h5py
import numpy as np
import pytest
from conftest import VARIABLE_CLIPS, run_python, standalone_copy

import melstore
from melstore.pipeline import demo
from melstore.store.format import read_table


@pytest.fixture(scope="module")
def seed_path(demo_build):
    return demo_build[0] / "results/demo/seed.h5"


@pytest.fixture
def seed(seed_path):
    with melstore.open(seed_path) as store:
        yield store


def test_open_gives_lazy_features_metadata_in_feature_order_params_and_axes(seed, seed_path):
    assert isinstance(seed.features, h5py.Dataset)  # lazy: nothing read yet
    assert seed.features.shape == (48, 128, 130) and len(seed) == 48
    # rows in shard-key order: by the sha256 of the clip id, whatever the shard size
    csv_ids = [name.removesuffix(".wav") for name in demo.csv_table()["slice_file_name"]]
    assert list(seed.metadata["clip_id"]) == sorted(
        csv_ids, key=lambda clip_id: hashlib.sha256(clip_id.encode()).digest()
    )
    assert seed.metadata.equals(read_table(seed_path))
    assert seed.failures.empty and list(seed.failures.columns) == ["clip_id", "path", "reason"]
    assert seed.params["n_mels"] == 128 and seed.params["ref"] == "max"
    assert seed.feature_set == "seed" and seed.attrs["dataset"] == "demo"
    assert "librosa" in seed.versions
    assert seed.axes.frequency.shape == (128,) and seed.axes.time.shape == (130,)
    assert 0 < seed.axes.frequency[0] < seed.axes.frequency[-1] < 11025
    assert seed.axes.time[1] == pytest.approx(512 / 22050)
    with h5py.File(seed_path) as f:
        everything = f["features"][()]
    clip_id = seed.metadata["clip_id"].iat[7]
    np.testing.assert_array_equal(seed.clip(clip_id), everything[7])
    np.testing.assert_array_equal(seed.features[3:5], everything[3:5])
    np.testing.assert_array_equal(seed.read([9, 2, 9]), everything[[9, 2, 9]])
    np.testing.assert_array_equal(seed.read(), everything)


def test_the_store_keeps_the_window_and_mel_filter_bank_its_features_were_computed_with(seed):
    import librosa

    mel = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128, fmin=0.0, fmax=11025.0)
    assert seed.frontend["filterbank"].shape == (128, 1025)
    np.testing.assert_allclose(seed.frontend["filterbank"], mel, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(seed.frontend["window"], librosa.filters.get_window("hann", 2048))
    np.testing.assert_array_equal(seed.frontend["frequencies"], seed.axes.frequency)


def test_folds_use_the_dataset_fold_column_and_test_every_row_exactly_once(seed):
    folds = seed.folds()
    assert len(folds) == demo.N_FOLDS
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested) == list(range(len(seed)))
    for number, (train, test) in enumerate(folds, start=1):
        assert set(seed.metadata["fold"].iloc[test]) == {number}
        assert sorted(np.concatenate([train, test])) == list(range(len(seed)))


def test_select_keeps_rows_matching_every_filter(seed):
    chosen = seed.select(fold=[1, 2], salience=1)
    meta = seed.metadata
    expected = meta[meta["fold"].isin([1, 2]) & (meta["salience"] == 1)]
    assert list(chosen.index) == list(expected.index) and len(chosen) == 12
    assert list(seed.select(**{"class": "hum"})["class"].unique()) == ["hum"]
    np.testing.assert_array_equal(seed.read(chosen), seed.features[()][chosen.index])
    assert seed.select(fold=99).empty
    with pytest.raises(melstore.MelstoreError, match="no metadata column 'colour'"):
        seed.select(colour="red")


def test_targets_are_the_dataset_class_ids(seed):
    np.testing.assert_array_equal(seed.targets(), seed.metadata["classID"])
    by_name = seed.targets("class")
    assert sorted(set(by_name)) == list(range(6))


def test_unknown_clips_and_rows_are_refused_in_one_line(seed):
    with pytest.raises(melstore.MelstoreError, match="has no clip 'nope'"):
        seed.clip("nope")
    with pytest.raises(melstore.MelstoreError, match="rows run from 0 to 47"):
        seed.read([48])


def test_variable_length_store_gives_each_clip_its_own_length(variable_build):
    _, path = variable_build
    with melstore.open(path) as store:
        assert not store.fixed_length
        meta = store.metadata
        assert sorted(meta["path"]) == sorted(VARIABLE_CLIPS)
        for row, (_, seconds) in enumerate(VARIABLE_CLIPS[p] for p in meta["path"]):
            clip = store.clip(row)
            assert clip.shape == (32, 1 + round(seconds * 22050) // 512)
            assert clip.max() == pytest.approx(0.0, abs=1e-4)  # ref=max: each clip's peak is 0 dB
        assert len(store.axes.time) == meta["n_frames"].max()
        assert list(store.failures["path"]) == ["frog/broken.wav"]
        with pytest.raises(melstore.MelstoreError, match="one at a time with clip"):
            store.read()


def test_without_a_fold_column_folds_are_a_deterministic_stratified_split(variable_build):
    _, path = variable_build
    with melstore.open(path) as store:
        folds = store.folds(n_splits=3)
        again = store.folds(n_splits=3)
        labels = store.metadata["label"].to_numpy()
        assert store.fold_of_rows().name == "fold (fallback)"
        assert len(store.folds()) == 5  # 6 clips dealt to the default 5 folds
    assert all(
        np.array_equal(a, c) and np.array_equal(b, d)
        for (a, b), (c, d) in zip(folds, again, strict=True)
    )
    assert sorted(np.concatenate([test for _, test in folds])) == list(range(6))
    for _, test in folds:  # 3 clips of each label over 3 folds: one of each per fold
        assert sorted(labels[test]) == ["bird", "frog"]


def test_files_that_are_not_stores_or_of_another_layout_version_are_refused(seed_path, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(melstore.MelstoreError, match="notes.txt: not an HDF5 file"):
        melstore.open(tmp_path / "notes.txt")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(melstore.MelstoreError, match="is not a melstore feature store"):
        melstore.open(tmp_path / "other.h5")
    old = standalone_copy(seed_path, tmp_path / "old.h5")
    with h5py.File(old, "a") as f:
        f.attrs["layout_version"] = 1
    with pytest.raises(
        melstore.MelstoreError, match="layout version 1; this melstore reads 2: rebuild"
    ):
        melstore.open(old)
    with pytest.raises(melstore.MelstoreError, match="missing.h5: no such file"):
        melstore.open(tmp_path / "missing.h5")


def test_a_channel_axis_from_deltas_is_read_per_clip(seed_path, tmp_path):
    path = standalone_copy(seed_path, tmp_path / "deltas.h5")
    with h5py.File(path, "a") as f:
        static = f["features"][()]
        del f["features"]
        f["features"] = np.stack([static, np.diff(static, axis=-1, prepend=0)], axis=1)
    with melstore.open(path) as store:
        assert store.clip(4).shape == (2, 128, 130)
        np.testing.assert_array_equal(store.read([4])[0, 0], static[4])


def test_importing_melstore_loads_no_numpy_and_store_comes_on_first_use():
    result = run_python(
        "import sys, melstore\n"
        "assert 'numpy' not in sys.modules, 'jobs size thread pools before numpy loads'\n"
        "assert melstore.Store.__module__ == 'melstore.store.reader'\n"
    )
    assert result.returncode == 0, result.stderr


def test_to_torch_dataset_without_torch_raises_a_clear_import_error_when_called(seed_path):
    result = run_python(
        "import sys\n"
        "sys.modules['torch'] = None  # what Python does for a package that is not installed\n"
        "import melstore\n"
        f"store = melstore.open({str(seed_path)!r})\n"
        "assert len(store.folds()) == 4\n"
        "store.to_torch_dataset()\n"
    )
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        "ImportError: Store.to_torch_dataset needs PyTorch, which melstore does not install; "
        "run: pip install torch"
    )


@pytest.mark.torch
def test_to_torch_dataset_feeds_a_dataloader_with_workers(seed):
    import torch

    train, _ = seed.folds()[0]
    dataset = seed.to_torch_dataset(train)
    features, target = dataset[0]
    assert len(dataset) == 36 and features.shape == (128, 130) and features.dtype == torch.float32
    assert target.item() == seed.metadata["classID"].iat[train[0]]
    loader = torch.utils.data.DataLoader(dataset, batch_size=12, num_workers=2)
    batches = list(loader)
    assert [len(targets) for _, targets in batches] == [12, 12, 12]
    np.testing.assert_array_equal(batches[0][0].numpy(), seed.read(train[:12]))
