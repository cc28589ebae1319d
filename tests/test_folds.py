"""Honest cross-validation: per-fold train statistics, the leakage audit and the drift guard.

The stores are built by the real snakemake from generated audio: an ESC-50
folder with a planted exact copy across folds and a planted shared
``src_file``, the demo (every preset), and a variable-length folder store.
"""

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import (
    LEAKY_COPY,
    LEAKY_FEATURE_SETS,
    LEAKY_ORIGINAL,
    LEAKY_SHARED,
    REPO,
    run_snakemake,
    standalone_copy,
    tone,
    write_audio,
)

import melstore
from melstore.cli import main


def numpy_stats(store, held_out):
    """Mean and std per bin over the valid frames of every clip not in ``held_out``, directly."""
    folds = store.fold_of_rows().to_numpy()
    valid = store.metadata["n_frames_valid"].to_numpy()
    rows = np.arange(len(store)) if held_out is None else np.flatnonzero(folds != held_out)
    frames = np.concatenate([store.clip(r)[..., : valid[r]] for r in rows], axis=-1)
    frames = frames.astype(np.float64)
    return frames.mean(axis=-1), frames.std(axis=-1)


def assert_stats_match_numpy(path):
    with melstore.open(path) as store:
        frame = store.features.shape[1:-1] if store.fixed_length else store.features.shape[:-1]
        for held_out in [None, *sorted(set(store.fold_of_rows()))]:
            mean, std = store.stats(held_out=held_out)
            expected_mean, expected_std = numpy_stats(store, held_out)
            assert mean.dtype == std.dtype == np.float64 and mean.shape == std.shape == frame
            np.testing.assert_allclose(mean, expected_mean, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(std, expected_std, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("feature_set", LEAKY_FEATURE_SETS)
def test_per_fold_train_stats_equal_numpy_for_every_fold(leaky, feature_set):
    assert_stats_match_numpy(leaky[0] / f"results/esc/{feature_set}.h5")


def test_per_fold_stats_of_every_preset_equal_numpy(demo_evaluated):
    workdir, config, _ = demo_evaluated
    for feature_set in config["features"]:
        assert_stats_match_numpy(workdir / f"results/demo/{feature_set}.h5")


def test_stats_of_a_variable_length_store_use_the_fallback_folds(variable_build):
    _, path = variable_build
    assert_stats_match_numpy(path)
    with melstore.open(path) as store, h5py.File(path) as f:
        assert f["stats"].attrs["fold_column"] == "fold (fallback)"
        assert sorted(f["stats/fold"][()]) == sorted(set(store.fold_of_rows()))


def test_stats_leave_out_padding_and_the_held_out_fold(leaky):
    with melstore.open(leaky[0] / "results/esc/small.h5") as store:
        whole, _ = store.stats()
        without_fold_1, _ = store.stats(held_out=1)
        assert not np.allclose(whole, without_fold_1)
        np.testing.assert_allclose(store.stats(held_out=[1])[0], without_fold_1)
        padded = store.read().astype(np.float64).mean(axis=(0, 2))
        assert not np.allclose(whole, padded)  # the short clips' padding is left out


def test_stats_after_a_rerun_that_copies_clips_still_equal_numpy(leaky, tmp_path):
    workdir, root = leaky
    copy_dir, data = tmp_path / "work", tmp_path / "data"
    shutil.copytree(workdir, copy_dir)
    shutil.copytree(root, data)
    config = json.loads(json.dumps(LEAKY_FEATURE_SETS))
    changed = data / "audio/4-401-A-1.wav"
    write_audio(changed, tone(22050, 0.5, 1, 620, seed=7), 22050)
    full = {
        "dataset": {"name": "esc", "layout": "esc50", "root": str(data)},
        "features": list(LEAKY_FEATURE_SETS),
        "feature_sets": config,
    }
    run_snakemake(copy_dir, full)
    logs = "".join(p.read_text() for p in (copy_dir / "logs/esc/extract").rglob("*.log"))
    assert "reused unchanged" in logs and "1 file(s) changed" in logs
    for feature_set in LEAKY_FEATURE_SETS:
        assert_stats_match_numpy(copy_dir / f"results/esc/{feature_set}.h5")


def test_read_normalises_with_the_train_stats_of_the_fold(leaky):
    with melstore.open(leaky[0] / "results/esc/compact.h5") as store:
        split = store.folds()[2]
        assert split.fold == 3 and list(split) == [split.train, split.test]
        mean, std = store.stats(held_out=split.fold)
        expected = (store.read(split.test) - mean[..., None]) / std[..., None]
        normalised = store.read(split.test, normalise=split.fold)
        np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)
        train = store.read(split.train, normalise=split.fold)
        valid = store.metadata["n_frames_valid"].to_numpy()[split.train]
        frames = np.concatenate([clip[..., :n] for clip, n in zip(train, valid, strict=True)], -1)
        np.testing.assert_allclose(frames.mean(axis=-1), 0, atol=1e-4)
        np.testing.assert_allclose(frames.std(axis=-1), 1, atol=1e-4)


@pytest.mark.torch
def test_the_torch_dataset_normalises_as_read_does(leaky):
    import torch

    with melstore.open(leaky[0] / "results/esc/compact.h5") as store:
        split = store.folds()[2]
        dataset = store.to_torch_dataset(split.test, normalise=split.fold)
        loader = torch.utils.data.DataLoader(dataset, batch_size=len(split.test))
        [(features, _)] = list(loader)
        normalised = store.read(split.test, normalise=split.fold)
        np.testing.assert_allclose(features.numpy(), normalised, rtol=1e-6, atol=1e-6)
        assert features.dtype == torch.float32


def test_stats_refuse_an_unknown_fold_in_one_line(leaky):
    with melstore.open(leaky[0] / "results/esc/small.h5") as store:
        with pytest.raises(melstore.MelstoreError, match=r"held_out=7 is not a fold; folds: 1, 2"):
            store.stats(held_out=7)


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


@pytest.mark.parametrize("feature_set", LEAKY_FEATURE_SETS)
def test_audit_names_the_planted_copy_and_the_shared_source_and_exits_1(leaky, feature_set):
    result = run("audit", leaky[0] / f"results/esc/{feature_set}.h5")
    assert result.exit_code == 1, result.output
    identical = [line for line in result.stdout.splitlines() if line.startswith("identical")]
    shared = [line for line in result.stdout.splitlines() if line.startswith("shared")]
    assert len(identical) == 1 and f"fold 1 {LEAKY_ORIGINAL}" in identical[0]
    assert f"fold 5 {LEAKY_COPY}" in identical[0]
    assert shared == [f"shared    src_file 200: fold 2 {LEAKY_SHARED[0]}, fold 3 {LEAKY_SHARED[1]}"]
    [summary] = result.stderr.strip().splitlines()
    assert "LEAKAGE across folds: 1 identical audio (2 clips), 1 shared src_file (2 clips)" in (
        summary
    )
    assert "c0" in result.stdout and "total" in result.stdout  # class balance per fold


def test_the_report_has_the_audit_page(leaky):
    page = (leaky[0] / "results/esc/report/small/audit.html").read_text()
    for path in (LEAKY_ORIGINAL, LEAKY_COPY, *LEAKY_SHARED):
        assert path in page
    assert "LEAKAGE across folds" in page and "Clips per class and fold" in page


def test_audit_of_clean_folds_exits_0(demo_build):
    result = run("audit", demo_build[0] / "results/demo/seed.h5")
    assert result.exit_code == 0, result.output
    verdict = "no leakage across 4 folds (fold), 48 clips; checked identical audio and shared fsID"
    assert verdict in result.stderr


def test_audit_by_a_named_column_and_bad_input_exit_2(leaky, tmp_path):
    store = leaky[0] / "results/esc/small.h5"
    result = run("audit", store, "--source-column", "take")  # takes A and B recur in every fold
    assert result.exit_code == 1 and "shared    take A: fold 1" in result.stdout
    for args, message in [
        (["--source-column", "nope"], "has no metadata column 'nope' to audit sources by"),
        ([], None),
    ]:
        target = store if message else tmp_path / "missing.h5"
        result = run("audit", target, *args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert (message or "missing.h5: no such file") in result.output


@pytest.mark.parametrize("feature_set", LEAKY_FEATURE_SETS)
def test_verify_recompute_passes_a_fresh_store(leaky, feature_set):
    result = run("verify", leaky[0] / f"results/esc/{feature_set}.h5", "--recompute", "20")
    assert result.exit_code == 0, result.output
    tolerance = LEAKY_FEATURE_SETS[feature_set].get("precision_db", 0.01)
    assert "no drift: recomputed 10 clips" in result.stderr
    assert f"tolerance {tolerance:g}; versions as recorded" in result.stderr


def test_verify_recompute_fails_a_store_shifted_by_half_a_db(leaky, tmp_path):
    shifted = tmp_path / "shifted.h5"
    standalone_copy(leaky[0] / "results/esc/small.h5", shifted)
    with h5py.File(shifted, "r+") as f:
        f["features"][...] = f["features"][...] + 0.5
    result = run("verify", shifted, "--recompute", "3", "--root", leaky[1])
    assert result.exit_code == 1
    assert len([line for line in result.stdout.splitlines() if line.startswith("drift")]) == 3
    assert "DRIFT: recomputed 3 clips, largest difference 0.5" in result.stderr


def test_verify_recompute_fails_a_store_built_with_other_params_than_it_records(leaky, tmp_path):
    relabelled = tmp_path / "relabelled.h5"
    standalone_copy(leaky[0] / "results/esc/small.h5", relabelled)
    with h5py.File(relabelled, "r+") as f:
        params = json.loads(f.attrs["params"])
        f.attrs["params"] = json.dumps({**params, "fmax": params["sr"] / 4})
    result = run("verify", relabelled, "--recompute", "20")
    assert result.exit_code == 1 and "DRIFT: recomputed 10 clips" in result.stderr


def test_verify_recompute_names_library_versions_that_differ(leaky, tmp_path):
    older = tmp_path / "older.h5"
    standalone_copy(leaky[0] / "results/esc/small.h5", older)
    with h5py.File(older, "r+") as f:
        f.attrs["versions"] = json.dumps({**json.loads(f.attrs["versions"]), "librosa": "0.9.2"})
    result = run("verify", older, "--recompute", "2")
    assert result.exit_code == 0, result.output  # the values did not move
    assert "version  librosa 0.9.2 in the store" in result.stdout
    assert "versions differ: librosa 0.9.2 -> " in result.stderr


README_CHECKS = [
    line.split("#")[0].split()
    for line in (REPO / "README.md").read_text().splitlines()
    if line.startswith((".venv/bin/melstore audit", ".venv/bin/melstore verify"))
    and ("audit" in line or "--recompute" in line)
]


@pytest.mark.parametrize("command", README_CHECKS, ids=lambda c: c[1])
def test_the_readme_checks_pass_on_the_demo(command, demo_build, monkeypatch):
    assert len(README_CHECKS) == 2
    monkeypatch.chdir(demo_build[0])
    result = run(*command[1:])
    assert result.exit_code == 0, result.output
    assert "no leakage" in result.stderr or "no drift: recomputed 20 clips" in result.stderr
