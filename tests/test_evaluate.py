"""The evaluate target: a linear baseline over the store's own folds, and its report figure."""

import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake

from melstore.errors import MelstoreError
from melstore.report.baseline import (
    RESULT_COLUMNS,
    evaluate_store,
    pooled_features,
    require_extra,
)
from melstore.store.format import StoreWriter, open_store, read_group

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_demo_baseline_reaches_090_for_every_feature_set(demo_evaluated):
    workdir, config, result = demo_evaluated
    for featureset in config["features"]:
        table = pd.read_csv(workdir / f"results/demo/{featureset}.baseline.csv")
        assert list(table.columns) == RESULT_COLUMNS
        assert table["fold"].tolist() == [1, 2, 3, 4]
        assert (table["n_train"] + table["n_test"] == 48).all()
        assert table["accuracy"].mean() >= 0.9, (featureset, table)
        figure = workdir / f"results/demo/{featureset}.confusion.png"
        assert figure.read_bytes().startswith(PNG_SIGNATURE)
        assert f"results/demo/{featureset}.baseline.csv: mean fold accuracy" in result.stdout


def test_the_report_shows_every_confusion_matrix(demo_evaluated):
    workdir, config, _ = demo_evaluated
    run_snakemake(workdir, config, "evaluate", "--report", "report.html")
    report = (workdir / "report.html").read_text()
    for featureset in config["features"]:
        assert f"{featureset}.confusion.png" in report
    assert "it is not the paper's CNN" in report


def test_evaluate_is_not_part_of_the_default_target(tmp_path):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    planned = run_snakemake(tmp_path, config, "--dry-run").stdout
    assert "gather" in planned and "baseline" not in planned


def write_store(path, features, metadata):
    with StoreWriter(path, n_bins=features.shape[-2], n_frames=features.shape[-1]) as writer:
        for clip in features:
            writer.append(clip)
        writer.finish(
            metadata=metadata,
            failures={"clip_id": [], "path": [], "reason": []},
            attrs={"dataset_layout": "folder", "feature_set": "toy", "params": {"kind": "toy"}},
            axes={
                "frequency": np.arange(features.shape[-2]),
                "time": np.arange(features.shape[-1]),
            },
        )
    return path


def test_pooling_leaves_out_padding_frames(tmp_path):
    clip = np.array([[1.0, 3.0, -80.0, -80.0], [2.0, 2.0, -80.0, -80.0]], np.float32)
    metadata = pd.DataFrame({"clip_id": ["a"], "n_frames_valid": [2]})
    path = write_store(tmp_path / "s.h5", clip[None], metadata)
    with open_store(path) as store:
        pooled = pooled_features(store["features"], read_group(store, "metadata"))
    np.testing.assert_allclose(pooled, [[2.0, 2.0, 1.0, 0.0]])  # means, then stds


def test_pooling_covers_every_channel_and_the_concatenated_layout(tmp_path):
    rng = np.random.default_rng(0)
    with StoreWriter(tmp_path / "d.h5", n_bins=3, n_frames=5, channels=["logmel", "delta"]) as w:
        w.append(rng.standard_normal((2, 3, 5)).astype(np.float32))
        w.finish(metadata={"n_frames_valid": [5]}, failures={"clip_id": [], "path": [],
                 "reason": []}, attrs={}, axes={})  # fmt: skip
    with StoreWriter(tmp_path / "v.h5", n_bins=3, n_frames=None) as w:
        for n in (2, 4):
            w.append(np.arange(3 * n, dtype=np.float32).reshape(3, n))
        w.finish(metadata={"clip_id": ["a", "b"]}, failures={"clip_id": [], "path": [],
                 "reason": []}, attrs={}, axes={})  # fmt: skip
    with open_store(tmp_path / "d.h5") as store:
        assert pooled_features(store["features"], read_group(store, "metadata")).shape == (1, 12)
    with open_store(tmp_path / "v.h5") as store:
        metadata = read_group(store, "metadata")
        pooled = pooled_features(store["features"], metadata, concatenated=True)
    np.testing.assert_allclose(pooled[0], [0.5, 2.5, 4.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(pooled[1, :3], [1.5, 5.5, 9.5])


def separable_store(path, *, folds=None):
    """Three classes whose band means differ, 30 clips."""
    rng = np.random.default_rng(1)
    labels = np.repeat(["a", "b", "c"], 10)
    features = rng.normal(0, 1, (30, 4, 6)).astype(np.float32)
    features += (np.searchsorted(["a", "b", "c"], labels) * 3.0)[:, None, None]
    metadata = pd.DataFrame({"clip_id": [f"{x}{i}" for i, x in enumerate(labels)],
                             "label": labels, "n_frames_valid": 6})  # fmt: skip
    if folds is not None:
        metadata["fold"] = folds
    return write_store(path, features, metadata)


def test_without_a_fold_column_the_split_is_stratified_and_deterministic(tmp_path):
    result = evaluate_store(separable_store(tmp_path / "s.h5"))
    assert result.folds["fold"].tolist() == [1, 2, 3, 4, 5]
    assert result.folds["n_test"].tolist() == [6] * 5  # 2 clips of each class per fold
    assert result.mean_accuracy == 1.0


def test_store_folds_are_used_and_bad_stores_get_one_line(tmp_path):
    result = evaluate_store(separable_store(tmp_path / "f.h5", folds=np.tile([1, 2, 3], 10)))
    assert result.folds["fold"].tolist() == [1, 2, 3]
    assert result.folds["n_train"].tolist() == [20, 20, 20]
    with pytest.raises(MelstoreError, match="at least 2 folds in 'fold'"):
        evaluate_store(separable_store(tmp_path / "one.h5", folds=np.ones(30, int)))
    unlabeled = write_store(tmp_path / "u.h5", np.zeros((2, 2, 3), np.float32),
                            pd.DataFrame({"clip_id": ["a", "b"], "n_frames_valid": 3}))  # fmt: skip
    with pytest.raises(MelstoreError, match="no label column"):
        evaluate_store(unlabeled)


def test_missing_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # what `import sklearn` meets when absent
    with pytest.raises(MelstoreError) as err:
        require_extra()
    assert str(err.value) == (
        "the evaluate target needs scikit-learn and matplotlib, sklearn is missing: "
        "pip install -e '.[evaluate]'"
    )
