"""Every feature set through every target a user touches.

Parametrised over the preset registry itself plus the committed config's derived
sets, so a new preset is tested here without anyone adding it to a list.
"""

import base64
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
from conftest import assert_real_image, every_feature_set, run_snakemake

import melstore

FEATURE_SETS = every_feature_set()
REPORT_FILES = ("classes.png", "power_vs_db.png", "counts.png", "counts.html", "failures.html")


def melstore_cli(*args, cwd):
    command = [sys.executable, "-m", "melstore.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def html_report(demo_evaluated):
    workdir, config, _ = demo_evaluated
    run_snakemake(workdir, config, "all", "evaluate", "--report", "report.html")
    return (workdir / "report.html").read_text()


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_the_default_target_builds_the_store_and_its_report(demo_evaluated, name):
    workdir, _, result = demo_evaluated
    with h5py.File(workdir / f"results/demo/{name}.h5") as f:
        assert f["features"].shape[0] == 48
        assert np.isfinite(f["features"][()]).all()
    report = workdir / "results/demo/report" / name
    for file in REPORT_FILES:
        assert (report / file).stat().st_size > 0, file
    for figure in ("classes.png", "power_vs_db.png", "counts.png"):
        assert_real_image(report / figure, min_colours=50)
    assert f"results/demo/{name}.h5: 48 clips" in result.stdout


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_evaluate_writes_the_baseline_of_every_set(demo_evaluated, name):
    workdir, _, _ = demo_evaluated
    table = pd.read_csv(workdir / f"results/demo/{name}.baseline.csv")
    assert table["fold"].tolist() == [1, 2, 3, 4]
    assert (workdir / f"results/demo/{name}.confusion.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_snakemake_report_embeds_every_set(demo_evaluated, html_report, name):
    results = demo_evaluated[0] / "results/demo"
    shown = [*(results / "report" / name / file for file in REPORT_FILES)]
    for path in [*shown, results / f"{name}.confusion.png"]:
        assert base64.b64encode(path.read_bytes()).decode() in html_report, path.name


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_the_command_line_reads_every_set(demo_evaluated, name, tmp_path):
    workdir, _, _ = demo_evaluated
    store = workdir / f"results/demo/{name}.h5"
    info = melstore_cli("info", store, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert f"{store}: 48 clips, 0 failed" in info.stdout
    first_id = melstore.open(store).metadata["clip_id"][0]
    for clip, image in ((first_id, "by_id.png"), ("0", "by_row.png")):
        shown = melstore_cli("show", store, clip, "-o", tmp_path / image, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert_real_image(tmp_path / image, min_colours=50)
    for kind in ("npz", "parquet"):
        out = tmp_path / f"{name}.{kind}"
        exported = melstore_cli("export", store, "--format", kind, "-o", out, cwd=tmp_path)
        assert exported.returncode == 0, exported.stderr
    with np.load(tmp_path / f"{name}.npz", allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["features"], melstore.open(store).features[()])
    assert len(pd.read_parquet(tmp_path / f"{name}.parquet")) == 48


@pytest.mark.torch
@pytest.mark.parametrize("name", FEATURE_SETS)
def test_every_set_feeds_a_torch_dataset(demo_evaluated, name):
    workdir, _, _ = demo_evaluated
    with melstore.open(workdir / f"results/demo/{name}.h5") as store:
        features, target = store.to_torch_dataset()[3]
        np.testing.assert_array_equal(features.numpy(), store.clip(3))
        assert int(target) == store.targets()[3]
