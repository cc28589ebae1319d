"""A user's own folder dataset and CSV: labels, the fallback split by source, reserved columns.

One folder of spoken-digit-like clips is built through the real snakemake
(``all`` and ``evaluate``), as a new user would: a CSV of ``path,label,speaker``
that leaves one file out and one label empty, a file at the root with no label,
and ``dataset.source_column: speaker``, with no fold column.
"""

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import run_snakemake, tone, write_audio
from test_folds import assert_stats_match_numpy

import melstore
from melstore.cli import main
from melstore.errors import ConfigError
from melstore.pipeline.manifest import RESERVED_COLUMNS, build_manifest

SPEAKERS = [f"spk{s}" for s in range(6)]
DIGITS = ["zero", "one", "two"]
UNLISTED = "spk0/extra.wav"  # on disk, not in the CSV: its folder names it
EMPTY_LABEL = "spk1/two_1.wav"  # in the CSV with an empty label: its folder names it
AT_ROOT = "loose.wav"  # neither: stored unlabelled
FEATURE_SETS = {
    "digits": {"preset": "seed", "n_mels": 24, "duration": 0.5},
    "digits_compact": {"preset": "seed", "n_mels": 24, "duration": None, "precision_db": 0.05},
}


def make_dataset(root):
    """Every speaker says every digit twice, in one folder per speaker; returns the CSV path."""
    rows = []
    for s, speaker in enumerate(SPEAKERS):
        for d, digit in enumerate(DIGITS):
            for take in range(2):
                path = f"{speaker}/{digit}_{take}.wav"
                write_audio(root / path, tone(8000, 0.4, 1, 300 + 250 * d + 20 * s, s + take), 8000)
                label = "" if path == EMPTY_LABEL else digit
                rows.append({"path": path, "label": label, "speaker": speaker})
    for i, extra in enumerate([UNLISTED, AT_ROOT]):
        write_audio(root / extra, tone(8000, 0.4, 1, 2000 + 100 * i, 99 + i), 8000)
    csv = root.parent / "digits.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The dataset built through `snakemake all evaluate`: work directory and snakemake's result."""
    root = tmp_path_factory.mktemp("digits-data") / "audio"
    csv = make_dataset(root)
    workdir = tmp_path_factory.mktemp("digits-build")
    config = {
        "dataset": {
            "name": "digits",
            "layout": "folder",
            "root": str(root),
            "metadata": str(csv),
            "source_column": "speaker",
        },
        "features": list(FEATURE_SETS),
        "feature_sets": FEATURE_SETS,
    }
    result = run_snakemake(workdir, config, "all", "evaluate")
    return workdir, result


def store_path(digits, feature_set):
    return digits[0] / f"results/digits/{feature_set}.h5"


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_every_clip_has_the_csv_label_else_its_folder_else_none(digits, feature_set):
    with melstore.open(store_path(digits, feature_set)) as store:
        labels = dict(zip(store.metadata["path"], store.metadata["label"], strict=True))
    assert len(labels) == len(SPEAKERS) * len(DIGITS) * 2 + 2
    assert labels[UNLISTED] == "spk0" and labels[EMPTY_LABEL] == "spk1"
    assert labels[AT_ROOT] == ""
    assert labels["spk3/one_0.wav"] == "one"


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_targets_name_the_first_unlabelled_clip_in_one_line(digits, feature_set):
    with melstore.open(store_path(digits, feature_set)) as store:
        with pytest.raises(melstore.MelstoreError) as err:
            store.targets()
        labelled = store.select(label=sorted(set(store.metadata["label"]) - {""}))
        assert len(labelled) == len(store) - 1
    message = str(err.value)
    assert "\n" not in message and repr(AT_ROOT) in message and "label" in message


def test_evaluate_leaves_the_unlabelled_clip_out(digits):
    workdir, result = digits
    assert "1 unlabelled clip(s) left out" in result.stdout + result.stderr
    for feature_set in FEATURE_SETS:
        table = pd.read_csv(workdir / f"results/digits/{feature_set}.baseline.csv")
        assert table["n_test"].sum() == len(SPEAKERS) * len(DIGITS) * 2 + 1


def test_the_report_names_the_unlabelled_class(digits):
    workdir, _ = digits
    for feature_set in FEATURE_SETS:
        counts = (workdir / f"results/digits/report/{feature_set}/counts.html").read_text()
        assert "(unlabelled)" in counts


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")  # the unlabelled
@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_fallback_folds_keep_each_speaker_in_one_fold(digits, feature_set):
    from sklearn.model_selection import StratifiedGroupKFold

    with melstore.open(store_path(digits, feature_set)) as store:
        meta = store.metadata
        splits = store.folds()
        assert store.source_column == "speaker"
    of_row = np.zeros(len(meta), dtype=int)
    for split in splits:
        of_row[split.test] = split.fold
    speakers = meta["speaker"].where(meta["speaker"] != "", "\0" + meta["clip_id"])
    assert (pd.Series(of_row).groupby(speakers.to_numpy()).nunique() == 1).all()
    # scikit-learn's StratifiedGroupKFold is the reference: the same test sets
    reference = StratifiedGroupKFold(5).split(meta, meta["label"], speakers)
    expected = [set(test) for _, test in reference]
    assert [set(split.test) for split in splits] == expected
    assert all(len(split.test) for split in splits)


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_audit_finds_no_shared_speaker_in_the_fallback_split(digits, feature_set):
    result = CliRunner().invoke(main, ["audit", str(store_path(digits, feature_set))])
    assert result.exit_code == 0, result.output
    assert "LEAKAGE" not in result.output and "speaker" in result.output


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_stored_fold_statistics_follow_the_grouped_folds(digits, feature_set):
    path = store_path(digits, feature_set)
    with melstore.open(path) as store, h5py.File(path) as f:
        assert sorted(f["stats/fold"][()]) == sorted(set(store.fold_of_rows()))
    assert_stats_match_numpy(path)


@pytest.mark.parametrize("feature_set", FEATURE_SETS)
def test_every_column_melstore_writes_is_reserved(digits, feature_set):
    with melstore.open(store_path(digits, feature_set)) as store:
        written = set(store.metadata_columns) - {"label", "speaker"}
    assert written <= set(RESERVED_COLUMNS)


@pytest.mark.parametrize("column", [c for c in RESERVED_COLUMNS if c != "path"])
def test_a_csv_column_named_like_a_store_column_is_refused(tmp_path, column):
    write_audio(tmp_path / "data/a/x.wav", tone(8000, 0.2), 8000)
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["a/x.wav"], column: [1]}).to_csv(csv, index=False)
    with pytest.raises(ConfigError) as err:
        build_manifest(tmp_path / "data", "folder", csv)
    assert f"column {column!r}" in str(err.value) and "\n" not in str(err.value)


def test_a_clashing_column_stops_the_workflow_in_one_line(tmp_path):
    write_audio(tmp_path / "data/a/x.wav", tone(8000, 0.2), 8000)
    csv = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["a/x.wav"], "quantisation_error": [0.5]}).to_csv(csv, index=False)
    config = {
        "dataset": {"name": "x", "layout": "folder", "root": str(tmp_path / "data"),
                    "metadata": str(csv)},
        "features": ["seed"],
    }  # fmt: skip
    result = run_snakemake(tmp_path / "work", config, "-n", check=False)
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if line.startswith("melstore:")]
    assert "'quantisation_error'" in line
    assert not (tmp_path / "work/results").exists()
