"""The store writer: atomic, typed, readable by plain h5py, and checked on open."""

import h5py
import numpy as np
import pandas as pd
import pytest

from melstore.errors import MelstoreError
from melstore.store.format import StoreWriter, read_table

FAILURES = pd.DataFrame({"clip_id": ["b"], "path": ["b.wav"], "reason": ["empty file"]})


def write(path, n_frames=4, rows=2):
    metadata = pd.DataFrame(
        {"clip_id": ["a", "c"][:rows], "fold": [1, 2][:rows], "salience": [0.5, np.nan][:rows],
         "esc10": [True, False][:rows], "label": ["dög", None][:rows]}
    )  # fmt: skip
    with StoreWriter(path, n_bins=3, n_frames=n_frames) as writer:
        for i in range(rows):
            writer.append(np.full((3, n_frames or 2 + i), i, dtype=np.float32))
        writer.finish(
            metadata=metadata,
            failures=FAILURES,
            attrs={"feature_set": "x", "params": {"n_mels": 3}},
            axes={"frequency": [1.0, 2.0, 3.0]},
        )


def test_tables_round_trip_with_their_types_and_plain_h5py_reads_them(tmp_path):
    write(tmp_path / "s.h5")
    metadata = read_table(tmp_path / "s.h5")
    assert list(metadata.columns) == ["clip_id", "fold", "salience", "esc10", "label"]
    assert metadata["fold"].dtype == np.int64 and metadata["esc10"].dtype == bool
    assert metadata["label"].tolist() == ["dög", ""]
    assert np.isnan(metadata["salience"].iloc[1])
    pd.testing.assert_frame_equal(read_table(tmp_path / "s.h5", "failures"), FAILURES)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["metadata/label"].asstr()[0] == "dög"
        assert f["features"].chunks == (1, 3, 4)
        assert f.attrs["params"] == '{"n_mels": 3}'


def test_variable_length_clips_are_concatenated_with_offsets(tmp_path):
    write(tmp_path / "v.h5", n_frames=None)
    metadata = read_table(tmp_path / "v.h5")
    assert metadata["frame_offset"].tolist() == [0, 2]
    assert metadata["n_frames"].tolist() == [2, 3]
    with h5py.File(tmp_path / "v.h5") as f:
        assert f["features"].shape == (3, 5)
        assert f["features"][0, 2:].tolist() == [1, 1, 1]


def test_nothing_is_left_at_the_final_path_when_writing_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with StoreWriter(tmp_path / "s.h5", n_bins=3, n_frames=4) as writer:
            writer.append(np.zeros((3, 4), np.float32))
            raise RuntimeError("killed halfway")
    assert list(tmp_path.iterdir()) == []


def test_same_content_gives_the_same_bytes(tmp_path):
    write(tmp_path / "a.h5")
    write(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_files_that_are_not_stores_are_refused(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(MelstoreError, match="not a melstore feature store"):
        read_table(tmp_path / "other.h5")
    write(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5", "a") as f:
        f.attrs["layout_version"] = 99
    with pytest.raises(MelstoreError, match="layout version 99"):
        read_table(tmp_path / "s.h5")


def test_a_clip_of_the_wrong_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        with StoreWriter(tmp_path / "s.h5", n_bins=3, n_frames=4) as writer:
            writer.append(np.zeros((3, 5), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_channels_add_an_axis_and_name_it(tmp_path):
    with StoreWriter(tmp_path / "d.h5", n_bins=3, n_frames=4, channels=["logmel", "delta"]) as w:
        w.append(np.ones((2, 3, 4), np.float32))
        w.finish(metadata={"clip_id": ["a"]}, failures=FAILURES, attrs={}, axes={})
    with h5py.File(tmp_path / "d.h5") as f:
        assert f["features"].shape == (1, 2, 3, 4) and f["features"].chunks == (1, 2, 3, 4)
        assert f.attrs["feature_axes"] == '["clip", "channel", "frequency", "time"]'
        assert f.attrs["channels"] == '["logmel", "delta"]'
    write(tmp_path / "s.h5")
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["feature_axes"] == '["clip", "frequency", "time"]'
        assert "channels" not in f.attrs
    with pytest.raises(ValueError, match="fixed-length"):
        StoreWriter(tmp_path / "v.h5", n_bins=3, n_frames=None, channels=["logmel", "delta"])
