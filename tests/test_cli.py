"""The melstore command line: info, show, export, and every command's bad arguments.

verify is tested with the incremental builds.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import assert_real_image, standalone_copy
from matplotlib.image import imread

import melstore
from melstore.cli import main
from melstore.features.presets import resolve_feature_set
from melstore.store.format import FAILURE_COLUMNS, StoreWriter


@pytest.fixture(scope="module")
def seed_path(demo_build):
    return demo_build[0] / "results/demo/seed.h5"


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args])


def test_info_shows_rows_counts_params_failures_versions_and_size(seed_path):
    result = run("info", seed_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    [shard_file] = (seed_path.parent / "shards/seed").iterdir()  # 48 clips: the default's one
    n_bytes = seed_path.stat().st_size + shard_file.stat().st_size
    assert lines[0] == f"{seed_path}: 48 clips, 0 failed, {n_bytes / 1e6:.1f} MB with 1 shard file"
    assert "dataset      demo (urbansound8k layout, root resources/demo)" in lines
    assert (
        "features     seed: (48, 128, 130) float32, fixed layout, store layout version 2" in lines
    )
    assert lines[lines.index("clips per class and fold:") + 1].split() == [
        "fold", "1", "2", "3", "4", "total",
    ]  # fmt: skip
    rows = [line.split() for line in lines]
    assert ["hum", "2", "2", "2", "2", "8"] in rows and [
        "total",
        "12",
        "12",
        "12",
        "12",
        "48",
    ] in rows
    assert '  ref         "max"' in lines and "  n_mels      128" in lines
    assert "librosa" in lines[lines.index("versions:") + 1]
    assert lines[-1] == "failures: none"


def test_info_lists_failures_and_the_fallback_folds(variable_build):
    _, store = variable_build
    result = run("info", store)
    assert result.exit_code == 0, result.output
    assert "6 clips, 1 failed" in result.output
    assert "fold (fallback)" in result.output
    assert "frog/broken.wav" in result.output and "not decodable audio" in result.output
    assert "(6, 32, variable)" not in result.output  # the concatenated shape is shown as stored


def test_show_writes_a_real_image_of_the_clip(seed_path, tmp_path):
    out = tmp_path / "figs" / "clip.png"
    result = run("show", seed_path, "100000-0-0-0", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output == f"{out}: 100000-0-0-0 from {seed_path}\n"
    assert_real_image(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.png"]


def test_show_takes_a_row_number_for_the_clip_at_that_row(seed_path, tmp_path):
    with melstore.open(seed_path) as store:
        clip_id = store.metadata["clip_id"][3]
    result = run("show", seed_path, "3", "-o", tmp_path / "by_row.png")
    assert result.exit_code == 0, result.output
    assert result.output == f"{tmp_path / 'by_row.png'}: {clip_id} (row 3) from {seed_path}\n"
    assert run("show", seed_path, clip_id, "-o", tmp_path / "by_id.png").exit_code == 0
    np.testing.assert_array_equal(imread(tmp_path / "by_row.png"), imread(tmp_path / "by_id.png"))


@pytest.fixture(scope="module")
def numbered_path(tmp_path_factory):
    """A small store whose clip ids are integers, none equal to its row."""
    path = tmp_path_factory.mktemp("numbered") / "numbered.h5"
    clip_ids, n_frames = ["10", "0", "1"], 130
    with StoreWriter(path, n_bins=128, n_frames=n_frames, n_clips=len(clip_ids)) as writer:
        for row in range(len(clip_ids)):
            writer.append(np.full((128, n_frames), -10.0 * row, dtype=np.float32))
        writer.finish(
            metadata={"clip_id": clip_ids, "n_frames_valid": [n_frames] * len(clip_ids)},
            failures={c: np.array([], dtype=object) for c in FAILURE_COLUMNS},
            attrs={"dataset": "numbered", "feature_set": "seed",
                   "params": resolve_feature_set("seed", {}).to_dict()},
            axes={"frequency": np.geomspace(40.0, 10000.0, 128),
                  "time": np.arange(n_frames) * 512 / 22050},
        )  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("argument", "shown"),
    [("1", "1"), ("0", "0"), ("10", "10"), ("2", "1 (row 2)"), ("+2", "1 (row 2)")],
)
def test_show_takes_a_clip_id_before_a_row_number(numbered_path, tmp_path, argument, shown):
    result = run("show", numbered_path, argument, "-o", tmp_path / "x.png")
    assert result.exit_code == 0, result.output
    assert result.output == f"{tmp_path / 'x.png'}: {shown} from {numbered_path}\n"


def test_show_handles_variable_length_stores(variable_build, tmp_path):
    _, store = variable_build
    result = run("show", store, "frog/d.wav", "-o", tmp_path / "d.png")
    assert result.exit_code == 0, result.output
    assert_real_image(tmp_path / "d.png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "{store}", "nope", "-o", "{tmp}/x.png"], "has no clip 'nope'"),
        (["show", "{store}", "3.0", "-o", "{tmp}/x.png"], "has no clip '3.0'"),
        (["show", "{store}", "48", "-o", "{tmp}/x.png"], "rows run from 0 to 47, got 48"),
        (["show", "{store}", "-o", "{tmp}/x.png", "--", "-1"], "rows run from 0 to 47, got -1"),
        (["show", "{store}", "100000-0-0-0", "-o", "{tmp}/x.bmpx"], "cannot write a figure"),
        (["info", "{tmp}/missing.h5"], "missing.h5: no such file"),
        (["info", "{tmp}/notes.txt"], "notes.txt: not an HDF5 file"),
        (
            ["export", "{store}", "--format", "npz", "-o", "{tmp}/notes.txt/x.npz"],
            "cannot write {tmp}/notes.txt/x.npz: ",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(seed_path, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not a store")
    args = [a.format(store=seed_path, tmp=tmp_path) for a in args]
    message = message.format(tmp=tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and message in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_export_parquet_holds_the_metadata_in_feature_order(seed_path, tmp_path):
    result = run("export", seed_path, "--format", "parquet", "-o", tmp_path / "meta.parquet")
    assert result.exit_code == 0, result.output
    exported = pd.read_parquet(tmp_path / "meta.parquet")
    with melstore.open(seed_path) as store:
        pd.testing.assert_frame_equal(exported, store.metadata)


def test_export_npz_holds_features_axes_metadata_and_params(seed_path, tmp_path):
    result = run("export", seed_path, "--format", "npz", "-o", tmp_path / "seed.npz")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{tmp_path / 'seed.npz'}: 48 clips, ")
    with melstore.open(seed_path) as store, np.load(tmp_path / "seed.npz") as exported:
        np.testing.assert_array_equal(exported["features"], store.read())
        np.testing.assert_array_equal(exported["frequency"], store.axes.frequency)
        np.testing.assert_array_equal(exported["time"], store.axes.time)
        assert exported["metadata/clip_id"].tolist() == store.metadata["clip_id"].tolist()
        np.testing.assert_array_equal(exported["metadata/fold"], store.metadata["fold"])
        assert '"n_mels": 128' in str(exported["params"])


def test_export_npz_of_a_variable_length_store_keeps_the_offsets(variable_build, tmp_path):
    _, store_path = variable_build
    out = tmp_path / "var.npz"
    assert run("export", store_path, "--format", "npz", "-o", out).exit_code == 0
    with melstore.open(store_path) as store, np.load(out) as exported:
        offsets, counts = exported["metadata/frame_offset"], exported["metadata/n_frames"]
        row = 3
        np.testing.assert_array_equal(
            exported["features"][:, offsets[row] : offsets[row] + counts[row]], store.clip(row)
        )


def test_export_defaults_to_a_file_beside_the_store(seed_path, tmp_path):
    store = standalone_copy(seed_path, tmp_path / "copy.h5")
    assert run("export", store, "--format", "parquet").exit_code == 0
    assert len(pd.read_parquet(tmp_path / "copy.parquet")) == 48


def test_the_entry_point_runs_as_a_program(seed_path):
    command = [sys.executable, "-m", "melstore.cli", "info", str(seed_path.with_name("none.h5"))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"Error: {seed_path.with_name('none.h5')}: no such file\n"


def melstore_script(*args):
    """Run the installed ``melstore`` console script, as a user does."""
    script = Path(sys.executable).with_name("melstore")
    command = [str(script), *(str(arg) for arg in args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def usage_error(*args, line):
    """A case of bad arguments: the one line it must print starts with ``line``."""
    return pytest.param(list(args), line, id=" ".join(args) or "no arguments")


# {tmp} is a folder, {store} an empty file in it
USAGE_ERRORS = [
    *(
        usage_error(name, "--bogus", line=f"melstore {name}: No such option '--bogus'")
        for name in main.commands
    ),
    usage_error("--bogus", line="melstore: No such option '--bogus'"),
    usage_error(line="melstore: Missing command"),
    usage_error("nope", line="melstore: No such command 'nope'"),
    usage_error(
        "info", "{tmp}",
        line="melstore info: Invalid value for 'STORE': File '{tmp}' is a directory",
    ),
    usage_error("info", line="melstore info: Missing argument 'STORE'"),
    usage_error("info", "{store}", "{store}", line="melstore info: Got unexpected extra argument"),
    usage_error(
        "verify", "{store}", "--recompute", "0",
        line="melstore verify: Invalid value for '--recompute': 0 is not in the range",
    ),
    usage_error(
        "verify", "{store}", "--root", "{tmp}/gone",
        line="melstore verify: Invalid value for '--root': Directory '{tmp}/gone' does not exist",
    ),
    usage_error(
        "export", "{store}", "--format", "csv",
        line="melstore export: Invalid value for '--format': 'csv' is not one of 'npz', 'parquet'",
    ),
    usage_error(
        "export", "{store}", "--format",
        line="melstore export: Option '--format' requires an argument",
    ),
    usage_error(
        "export", "{store}",  # click's message for a choice spans three lines
        line="melstore export: Missing option '--format'. Choose from: npz, parquet",
    ),
    usage_error("show", "{store}", "0", line="melstore show: Missing option '-o' / '--output'"),
    usage_error(
        "features", "{store}", "a.wav", "-o", "{tmp}/x.csv",
        line="melstore features: Invalid value for '-o' / '--output': {tmp}/x.csv: end it in "
        ".npz, .npy or .h5, not '.csv'",
    ),
    usage_error("features", "{store}", "-o", "{tmp}/x.npz",
                line="melstore features: Missing argument 'AUDIO...'"),
    usage_error("plan", line="melstore plan: Missing option '--configfile'"),
    usage_error(
        "plan", "--configfile", "{store}", "--cores", "0",
        line="melstore plan: Invalid value for '--cores': 0 is not in the range",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("args", "line"), USAGE_ERRORS)
def test_every_usage_error_exits_2_with_one_line_naming_the_command(tmp_path, args, line):
    store = tmp_path / "store.h5"
    store.write_bytes(b"")
    result = melstore_script(*(arg.format(tmp=tmp_path, store=store) for arg in args))
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(line.format(tmp=tmp_path)), result.stderr


@pytest.mark.parametrize("command", ["", *main.commands])
def test_help_of_every_command_still_exits_0(command):
    result = melstore_script(*command.split(), "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"Usage: melstore {command}".rstrip())


def test_version_still_exits_0():
    result = melstore_script("--version")
    assert (result.returncode, result.stdout) == (0, f"melstore, version {melstore.__version__}\n")
