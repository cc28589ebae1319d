"""A user's dataset is never written, whatever config they give, and looking writes nothing.

Every run here goes through the README's way of pointing at data: a config file
with the dataset section, merged by Snakemake over the committed config.yaml.
"""

import shutil
import stat
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO, make_esc50, run_snakemake, snakemake_command, tone, write_audio

import melstore
from melstore.cli import main
from melstore.store.format import read_table

N_US8K = 20  # fewer clips than the demo's 48: a build of the demo would show


def make_urbansound8k(root, demo_root):
    """A copy of the demo's first clips, as a user's UrbanSound8K folder."""
    csv = pd.read_csv(demo_root / "metadata/UrbanSound8K.csv").head(N_US8K)
    for row in csv.itertuples():
        relative = f"audio/fold{row.fold}/{row.slice_file_name}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(demo_root / relative, root / relative)
    (root / "metadata").mkdir()
    csv.to_csv(root / "metadata/UrbanSound8K.csv", index=False)
    return N_US8K


def make_folder(root):
    for i in range(5):
        write_audio(
            root / f"c{i % 2}/clip{i}.wav", tone(16000, 0.6, 1 + i % 2, 300 + 50 * i), 16000
        )
    return 5


@pytest.fixture
def dataset(request, tmp_path, demo_root):
    """A read-only dataset of the layout ``request.param``, and its clip count."""
    layout = request.param
    root = tmp_path / "data" / layout
    root.mkdir(parents=True)
    if layout == "urbansound8k":
        n_clips = make_urbansound8k(root, demo_root)
    elif layout == "esc50":
        n_clips = len(make_esc50(root))
    else:
        n_clips = make_folder(root)
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield layout, root, n_clips
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def snapshot(root):
    """Every path under ``root`` with its bytes and modification time."""
    return {
        path.relative_to(root).as_posix(): (
            path.read_bytes() if path.is_file() else None,
            path.stat().st_mtime_ns,
        )
        for path in sorted(root.rglob("*"))
    }


LAYOUTS = ["urbansound8k", "esc50", "folder"]


@pytest.mark.parametrize("dataset", LAYOUTS, indirect=True)
def test_a_config_with_only_name_layout_and_root_builds_that_dataset(dataset, tmp_path):
    layout, root, n_clips = dataset
    before = snapshot(root)
    config = {"dataset": {"name": "mine", "layout": layout, "root": str(root)}}
    result = run_snakemake(tmp_path / "work", config)
    assert snapshot(root) == before
    for name in yaml.safe_load((REPO / "config.yaml").read_text())["features"]:
        assert len(read_table(tmp_path / f"work/results/mine/{name}.h5")) == n_clips
    assert not (tmp_path / "work/resources").exists(), "the demo was generated"
    assert "Traceback" not in result.stderr


SOURCE_COLUMNS = {"urbansound8k": "fsID", "esc50": "take", "folder": "label"}


@pytest.mark.parametrize("dataset", LAYOUTS, indirect=True)
def test_a_source_column_is_recorded_audited_and_writes_nothing_to_the_dataset(dataset, tmp_path):
    layout, root, n_clips = dataset
    before = snapshot(root)
    column = SOURCE_COLUMNS[layout]
    config = {
        "dataset": {"name": "mine", "layout": layout, "root": str(root), "source_column": column},
        "features": ["seed"],
    }
    run_snakemake(tmp_path / "work", config)
    assert snapshot(root) == before
    store = tmp_path / "work/results/mine/seed.h5"
    with melstore.open(store) as opened:
        assert opened.attrs["source_column"] == column and len(opened) == n_clips
    page = (tmp_path / "work/results/mine/report/seed/audit.html").read_text()
    assert f"shared {column}" in page
    result = subprocess.run(
        [sys.executable, "-m", "melstore.cli", "audit", str(store)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode in (0, 1) and f"shared {column}" in result.stderr
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "demo_key",
    [{"generate": "demo"}, {"generate": None}, {"root": "resources/demo", "layout": "esc50"}],
)
@pytest.mark.parametrize("dataset", LAYOUTS, indirect=True)
def test_a_demo_related_key_is_refused_in_one_line_and_writes_nothing(dataset, demo_key, tmp_path):
    layout, root, _ = dataset
    before = snapshot(root)
    config = {"dataset": {"name": "mine", "layout": layout, "root": str(root), **demo_key}}
    workdir = tmp_path / "work"
    result = run_snakemake(workdir, config, check=False)
    assert result.returncode != 0
    [message] = [line for line in result.stderr.splitlines() if line.startswith("melstore:")]
    assert "config key 'dataset" in message, message
    assert "Traceback" not in result.stderr
    assert snapshot(root) == before
    assert sorted(p.name for p in workdir.iterdir()) == [".snakemake", "my.yaml"]


LOOKING = [["-n"], ["--lint"], ["--list-changes", "params"], ["--summary"]]


@pytest.mark.parametrize("command", LOOKING, ids=lambda c: c[0])
@pytest.mark.parametrize("built", [False, True], ids=["fresh", "built"])
def test_commands_that_only_look_write_nothing(command, built, tmp_path):
    root = tmp_path / "data"
    make_folder(root)
    workdir = tmp_path / "work"
    config = {"dataset": {"name": "mine", "layout": "folder", "root": str(root)}}
    if built:
        run_snakemake(workdir, {**config, "features": ["seed"]})
        write_audio(root / "c0/new.wav", tone(16000, 0.5), 16000)  # something to rebuild
    run_snakemake(workdir, config, "-n")  # writes my.yaml
    before, data = snapshot(workdir), snapshot(root)
    result = subprocess.run(
        snakemake_command(workdir, *command), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    after = snapshot(workdir)
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert {path for path in changed if not path.startswith(".snakemake")} == set()
    assert snapshot(root) == data


def test_the_snakefile_finds_its_config_from_another_directory(tmp_path):
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-n"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "demo_dataset" in result.stdout  # the demo, generated into this directory's resources/
    assert sorted(p.name for p in tmp_path.iterdir()) == [".snakemake"]


WRITING_COMMANDS = {  # each command that writes a file, with the arguments before its output
    "features": lambda store, root: ["features", store, next(root.rglob("*.wav")), "-o"],
    "pack": lambda store, root: ["pack", store],
    "export parquet": lambda store, root: ["export", store, "--format", "parquet", "-o"],
    "export npz": lambda store, root: ["export", store, "--format", "npz", "-o"],
    "show": lambda store, root: ["show", store, "0", "-o"],
}
OUTPUT_SUFFIX = {"features": ".npz", "pack": ".h5", "export parquet": ".parquet",
                 "export npz": ".npz", "show": ".png"}  # fmt: skip


@pytest.mark.parametrize("command", WRITING_COMMANDS)
@pytest.mark.parametrize("root_given", ["absolute", "relative"])
def test_a_cli_output_inside_the_dataset_is_refused_in_one_line(
    command, root_given, leaky, demo_build, tmp_path, monkeypatch
):
    if root_given == "absolute":
        workdir, root = leaky
        store = workdir / "results/esc/small.h5"
    else:  # the demo records resources/demo, relative to its workflow folder: run from elsewhere
        workdir, root = demo_build[0], demo_build[0] / "resources/demo"
        store = workdir / "results/demo/seed.h5"
        monkeypatch.chdir(tmp_path)
    with melstore.open(store) as opened:
        recorded = opened.attrs["dataset_root"]
    before = snapshot(root)
    output = root / f"new{OUTPUT_SUFFIX[command]}"
    args = [str(arg) for arg in [*WRITING_COMMANDS[command](store, root), output]]
    result = CliRunner().invoke(main, args, prog_name="melstore")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: {output} lies in the dataset {recorded} "
        f"that {store} was built from, and melstore never writes there: write it elsewhere"
    ]
    assert snapshot(root) == before
