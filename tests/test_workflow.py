"""End to end: the real snakemake on small generated datasets."""

import hashlib
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import xxhash
from conftest import merged_config, run_snakemake, tone, write_audio

from melstore.pipeline import demo
from melstore.store.format import read_table

GOOD = {
    "dog/bark1.wav": dict(sr=44100, channels=2, subtype="PCM_16"),
    "dog/bark 2 (copy).wav": dict(sr=48000, channels=1, subtype="PCM_24"),
    "cat/meow.flac": dict(sr=16000, channels=1, subtype="PCM_16", container="FLAC"),
    "cat/tiny.wav": dict(sr=8000, channels=1, subtype="PCM_U8", seconds=0.01),
    "cat/long.wav": dict(sr=22050, channels=2, subtype="FLOAT", seconds=5.0),
}
BAD = {"cat/broken.wav": b"definitely not a RIFF header", "dog/empty.wav": b""}
REASONS = {"cat/broken.wav": "not decodable audio", "dog/empty.wav": "empty file (0 bytes)"}


def in_row_order(paths):
    """Folder clips (their id is the path) in store row order: by the sha256 of the clip id."""
    return sorted(paths, key=lambda path: hashlib.sha256(path.encode()).digest())


# What on_error: fail stops at: the first unusable file in row order.
FIRST_BAD = in_row_order(BAD)[0]


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder-data")
    for i, (rel, spec) in enumerate(GOOD.items()):
        samples = tone(spec["sr"], spec.get("seconds", 1.0), spec["channels"], 300 + 100 * i, i)
        write_audio(root / rel, samples, spec["sr"], container=spec.get("container", "WAV"),
                    subtype=spec["subtype"])  # fmt: skip
    for rel, content in BAD.items():
        (root / rel).write_bytes(content)
    pd.DataFrame({"path": ["dog/bark1.wav", "cat/meow.flac"], "split": ["train", "test"]}).to_csv(
        root.parent / "folder-meta.csv", index=False
    )
    return root


def folder_config(root, **extra):
    return {
        "dataset": {"name": "pets", "layout": "folder", "root": str(root),
                    "metadata": str(root.parent / "folder-meta.csv")},
        "features": ["seed", "small"],
        "feature_sets": {"small": {"preset": "seed", "n_mels": 40, "duration": None}},
        "min_success": 0.5,  # 2 of the 7 files are broken on purpose
        **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def folder_build(tmp_path_factory, folder_dataset):
    workdir = tmp_path_factory.mktemp("work")
    result = run_snakemake(workdir, folder_config(folder_dataset))
    return workdir, result


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_store_has_every_good_clip_in_row_order(folder_build, folder_dataset):
    workdir, _ = folder_build
    store = workdir / "results/pets/seed.h5"
    metadata = read_table(store)
    assert list(metadata["path"]) == in_row_order(GOOD)
    assert list(metadata["label"]) == [p.split("/")[0] for p in in_row_order(GOOD)]
    assert metadata.set_index("path").loc["dog/bark1.wav", "split"] == "train"
    assert metadata.set_index("path").loc["cat/long.wav", "split"] == ""
    with h5py.File(store) as f:
        features = f["features"][()]
        assert features.shape == (len(GOOD), 128, 130) and features.dtype == np.float32
        assert np.isfinite(features).all()
        assert f["axes/frequency"].shape == (128,) and f["axes/time"].shape == (130,)
        assert json.loads(f.attrs["params"])["n_mels"] == 128
        assert f.attrs["feature_set"] == "seed" and f.attrs["dataset"] == "pets"
        assert set(json.loads(f.attrs["versions"])) >= {"librosa", "numpy", "soundfile", "h5py"}
    by_path = metadata.set_index("path")
    assert by_path.loc["dog/bark1.wav", ["native_sr", "native_channels"]].tolist() == [44100, 2]
    assert by_path.loc["cat/tiny.wav", "n_frames_valid"] == 1
    assert by_path.loc["cat/long.wav", "native_duration"] == pytest.approx(5.0)
    for path in GOOD:
        assert (
            by_path.loc[path, "source_xxh128"]
            == xxhash.xxh3_128((folder_dataset / path).read_bytes()).hexdigest()
        )


def test_undecodable_files_become_failure_rows(folder_build):
    workdir, result = folder_build
    failures = read_table(workdir / "results/pets/seed.h5", "failures")
    assert sorted(failures["path"]) == sorted(BAD)
    reasons = dict(zip(failures["path"], failures["reason"], strict=True))
    assert reasons["dog/empty.wav"] == "empty file (0 bytes)"
    assert reasons["cat/broken.wav"].startswith("not decodable audio")
    assert "Traceback" not in result.stderr
    store = "results/pets/seed.h5"
    assert f"2 of {len(GOOD) + len(BAD)} files failed; see failures table in {store}" in (
        result.stdout
    )


def test_too_many_failures_stop_the_run_with_the_commonest_reason(folder_build, tmp_path):
    workdir = tmp_path / "copy"
    shutil.copytree(folder_build[0], workdir)
    config = merged_config(workdir) | {"min_success": 0.95}
    result = run_snakemake(workdir, config, check=False)
    assert result.returncode != 0
    assert "melstore: only 5 of 7 files succeeded (71%), below min_success=0.95" in result.stderr
    assert "Traceback" not in result.stderr


def test_variable_length_store_concatenates_clips(folder_build):
    workdir, _ = folder_build
    store = workdir / "results/pets/small.h5"
    metadata = read_table(store)
    with h5py.File(store) as f:
        assert f.attrs["features_layout"] == "concatenated"
        features = f["features"]
        assert features.shape == (40, int(metadata["n_frames"].sum()))
        long = metadata.set_index("path").loc["cat/long.wav"]
        clip = features[:, long["frame_offset"] : long["frame_offset"] + long["n_frames"]]
    assert long["n_frames"] == 1 + round(5.0 * 22050) // 512
    assert clip.max() == pytest.approx(0.0)  # ref=max: the clip's own peak is 0 dB


def test_second_run_has_nothing_to_do(folder_build, folder_dataset):
    workdir, _ = folder_build
    result = run_snakemake(workdir, folder_config(folder_dataset))
    assert "Nothing to be done" in result.stdout + result.stderr


def test_every_result_file_is_the_same_bytes_on_other_cores(folder_build, folder_dataset, tmp_path):
    workdir, _ = folder_build
    run_snakemake(tmp_path, folder_config(folder_dataset), "--cores", "1")
    results = workdir / "results/pets"
    files = sorted(
        path.relative_to(results) for path in results.rglob("*")
        if path.is_file() and "report" not in path.relative_to(results).parts
    )  # fmt: skip
    assert {"seed.h5", "small.h5", ".seed.index.h5"} <= {str(path) for path in files}
    for path in files:
        assert sha256(tmp_path / "results/pets" / path) == sha256(results / path), path


def test_on_error_fail_stops_with_one_line_naming_the_file(folder_dataset, tmp_path):
    result = run_snakemake(
        tmp_path, folder_config(folder_dataset, on_error="fail"), "--cores", "1", check=False
    )
    assert result.returncode != 0
    assert f"melstore: {FIRST_BAD}: {REASONS[FIRST_BAD]}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results/pets/seed.h5").exists()


def test_demo_config_builds_the_demo_dataset_and_its_stores(tmp_path):
    config = {
        "dataset": {"name": "demo", "layout": "urbansound8k", "root": "resources/demo"},
        "features": ["seed", "logspec"],
    }  # fmt: skip
    result = run_snakemake(tmp_path, config)
    n_clips = len(demo.plan())
    seed = read_table(tmp_path / "results/demo/seed.h5")
    assert len(seed) == n_clips
    assert set(demo.csv_table().columns) <= set(seed.columns)
    assert seed["class"].nunique() >= 5
    with h5py.File(tmp_path / "results/demo/logspec.h5") as f:
        assert f["features"].shape == (n_clips, 161, 299)
        # typed like the CSV, and an empty failures table still holds text columns
        assert {f[f"metadata/{c}"].dtype.kind for c in ("fold", "classID", "fsID")} == {"i"}
        assert f["metadata/start"].dtype.kind == "f"
        failures = [f[f"failures/{c}"].dtype for c in ("clip_id", "path", "reason")]
        assert [h5py.check_string_dtype(d).encoding for d in failures] == ["utf-8"] * 3
    assert result.stdout.count(f"{n_clips} clips, features") == 2
    assert "files failed" not in result.stdout


def test_audio_files_missing_from_the_csv_are_reported(tmp_path, demo_root):
    root = tmp_path / "us8k"
    shutil.copytree(demo_root, root)
    write_audio(root / "audio/fold1/1-2-3-4.wav", tone(8000, 0.5), 8000)
    config = {"dataset": {"name": "u", "layout": "urbansound8k", "root": str(root)},
              "features": ["seed"]}  # fmt: skip
    result = run_snakemake(tmp_path / "work", config, "-n")
    output = result.stdout + result.stderr
    assert "1 audio file(s) under" in output
    assert "left out, e.g. audio/fold1/1-2-3-4.wav" in output


def test_switching_to_on_error_fail_stops_at_an_unusable_file_without_recomputing(
    folder_build, tmp_path
):
    workdir = tmp_path / "copy"
    shutil.copytree(folder_build[0], workdir)  # keeps mtimes; the module's build stays intact
    store = sha256(workdir / "results/pets/seed.h5")
    config = merged_config(workdir) | {"on_error": "fail"}
    result = run_snakemake(workdir, config, check=False)
    assert result.returncode != 0
    assert f"melstore: {FIRST_BAD}: {REASONS[FIRST_BAD]}" in result.stderr
    # the gather alone reruns: no clip is computed, and the store is left as it was
    assert "files computed" not in result.stderr
    assert sha256(workdir / "results/pets/seed.h5") == store
