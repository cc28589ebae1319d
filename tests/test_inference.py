"""The same features at inference: ``melstore.extractor`` and ``melstore features``.

Every clip of every store built by the real workflow (each preset and the
committed config's derived sets on the demo, a variable-length set, a compact
set with deltas) is computed again from its audio file, and from the samples
soundfile reads from it, and must equal the stored clip bit for bit.
"""

import json
import re
import warnings

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import REPO, every_feature_set, run_python, standalone_copy

import melstore
from melstore.cli import main
from melstore.pipeline.extract import Progress
from melstore.store.format import Storage

FEATURE_SETS = every_feature_set()


def stored_clips(store_path, workdir):
    """(audio file, stored features) of every clip of a store, in row order."""
    with melstore.open(store_path) as store:
        root = workdir / store.attrs["dataset_root"]  # the demo's root is relative to workdir
        return [(root / path, store.clip(row)) for row, path in enumerate(store.metadata["path"])]


def soundfile_samples(path):
    """The file's samples as soundfile reads them, laid out (channels, n), and its rate."""
    samples, sr = sf.read(path, dtype="float32", always_2d=True)
    return samples.T, sr


def assert_bits_equal(computed, stored, name):
    assert computed.dtype == np.float32 and computed.shape == stored.shape, name
    assert computed.tobytes() == stored.tobytes(), f"{name}: differs from the stored clip"


@pytest.fixture(scope="module")
def demo_samples(demo_evaluated):
    """Each demo file's soundfile samples, read once for every feature set."""
    workdir = demo_evaluated[0]
    return {path: soundfile_samples(path) for path, _ in stored_clips(
        workdir / "results/demo/seed.h5", workdir)}  # fmt: skip


@pytest.mark.parametrize("name", FEATURE_SETS)
def test_every_clip_of_every_feature_set_is_computed_again_bit_for_bit(
    demo_evaluated, demo_samples, name
):
    workdir = demo_evaluated[0]
    extract = melstore.extractor(workdir / f"results/demo/{name}.h5")
    clips = stored_clips(workdir / f"results/demo/{name}.h5", workdir)
    assert len(clips) == 48 and extract.clip_shape == clips[0][1].shape
    for path, stored in clips:
        assert_bits_equal(extract.from_file(path), stored, path)
        samples, sr = demo_samples[path]
        assert_bits_equal(extract.from_array(samples, sr=sr), stored, f"{path} as samples")


def test_a_variable_length_store_gets_each_clip_with_its_own_frames(variable_build):
    workdir, store = variable_build
    extract = melstore.extractor(store)
    assert extract.clip_shape is None
    clips = stored_clips(store, workdir)
    assert len({stored.shape[-1] for _, stored in clips}) == len(clips) == 6
    for path, stored in clips:
        assert_bits_equal(extract.from_file(path), stored, path)
        samples, sr = soundfile_samples(path)
        assert_bits_equal(extract.from_array(samples[0], sr=sr), stored, f"{path} as samples")


def test_float64_samples_of_pcm_give_the_same_bits(demo_evaluated):
    workdir = demo_evaluated[0]
    extract = melstore.extractor(workdir / "results/demo/seed.h5")
    for path, stored in stored_clips(workdir / "results/demo/seed.h5", workdir):
        if sf.info(path).subtype.startswith("PCM"):
            samples, sr = sf.read(path, dtype="float64", always_2d=True)
            assert_bits_equal(extract.from_array(samples.T, sr=sr), stored, path)


def test_a_compact_store_rounds_as_it_stored_unless_told_not_to(leaky):
    workdir = leaky[0]
    store_path = workdir / "results/esc/compact.h5"
    rounded, unrounded = (
        melstore.extractor(store_path),
        melstore.extractor(store_path, rounded=False),
    )
    with melstore.open(store_path) as store:
        errors = store.metadata["quantisation_error"]
        storage = Storage(precision_db=store.precision_db)
        assert store.features.dtype == np.float16 and store.params["deltas"]
    for row, (path, stored) in enumerate(stored_clips(store_path, workdir)):
        assert_bits_equal(rounded.from_file(path), stored, path)
        exact = unrounded.from_file(path)
        assert exact.dtype == np.float32 and not np.array_equal(exact, stored)
        assert float(np.abs(stored.astype(np.float64) - exact).max()) == errors[row]
        assert_bits_equal(storage.quantise(exact, name=path)[0].astype(np.float32), stored, path)


def test_other_library_versions_give_one_warning_naming_them(leaky, tmp_path):
    store = leaky[0] / "results/esc/small.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the versions the store was built with: no warning
        melstore.extractor(store)
    older = standalone_copy(store, tmp_path / "older.h5")
    with h5py.File(older, "r+") as f:
        f.attrs["versions"] = json.dumps({**json.loads(f.attrs["versions"]), "librosa": "0.9.2"})
    with pytest.warns(melstore.VersionWarning) as caught:
        with melstore.open(older) as opened:  # an open store works too, and stays open
            melstore.extractor(opened)
            assert len(opened) == 10
    [warning] = caught
    message = str(warning.message)
    assert message.startswith(f"{older} was built with other library versions: librosa 0.9.2 -> ")
    assert "\n" not in message and "numpy" not in message
    assert warning.filename == __file__  # points at the caller


def test_a_store_without_a_front_end_is_refused_in_one_line(leaky, tmp_path):
    bare = standalone_copy(leaky[0] / "results/esc/small.h5", tmp_path / "bare.h5")
    with h5py.File(bare, "r+") as f:
        del f["frontend"]
    with pytest.raises(melstore.MelstoreError, match=r"bare\.h5 keeps no window and filter bank"):
        melstore.extractor(bare)


@pytest.fixture(scope="module")
def small(leaky):
    """The extractor of the leaky set's small store (22.05 kHz, 1 s, 32 mels)."""
    return melstore.extractor(leaky[0] / "results/esc/small.h5")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "file not found"),
        (b"", "empty file (0 bytes)"),
        (b"RIFF junk", "not decodable audio"),
    ],
)
def test_a_file_that_cannot_be_decoded_raises_one_line_naming_it(small, tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(
        melstore.AudioError, match=f"^{re.escape(str(path))}: {re.escape(reason)}"
    ) as raised:
        small.from_file(path)
    assert "\n" not in str(raised.value)


BadInput = melstore.MelstoreError


@pytest.mark.parametrize(
    ("samples", "sr", "error", "message"),
    [
        (np.zeros(100, np.int16), 22050, BadInput, r"^samples: int16 values; give"),
        (np.zeros((100, 2), np.float32), 22050, BadInput, r"^samples: shape \(100, 2\)"),
        (np.zeros((1, 2, 100)), 22050, BadInput, r"^samples: shape \(1, 2, 100\)"),
        (np.zeros(100), 0, BadInput, r"^sr: 0 is not a sample rate"),
        (np.zeros(100), 22050.0, BadInput, r"^sr: 22050.0 is not a sample rate"),
        (np.zeros(100), True, BadInput, r"^sr: True is not a sample rate"),
        (np.zeros((2, 0)), 22050, melstore.AudioError, r"^samples: no audio frames$"),
        (np.array([0.1, np.nan]), 22050, melstore.AudioError, r"^samples: non-finite samples"),
    ],
)  # fmt: skip
def test_samples_that_are_not_audio_raise_one_line_naming_the_parameter(
    small, samples, sr, error, message
):
    with pytest.raises(error, match=message):
        small.from_array(samples, sr=sr)


def test_from_array_leaves_the_samples_as_they_were(small):
    samples = np.linspace(-0.5, 0.5, 2 * 30000, dtype=np.float32).reshape(2, -1)
    kept = samples.copy()
    small.from_array(samples, sr=16000)
    assert np.array_equal(samples, kept)


def test_the_extractor_is_lazy_in_the_package_and_shows_its_store(small, leaky):
    assert melstore.Extractor is type(small)
    assert repr(small) == (
        f"<melstore.Extractor of {leaky[0] / 'results/esc/small.h5'} (small, (32, 44))>"
    )


def test_computing_features_imports_neither_librosa_nor_snakemake(leaky):
    workdir, root = leaky
    code = f"""
import sys
import melstore
extract = melstore.extractor({str(workdir / "results/esc/small.h5")!r})
extract.from_file({str(root / "audio/1-100-A-0.wav")!r})
print(sorted(name for name in ("librosa", "snakemake", "numba") if name in sys.modules))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


DOCS = (REPO / "docs/reading.md").read_text()
# the numpy part: its PyTorch subsection is tested with the module
INFERENCE = DOCS.split("## Inference")[1].split("\n## ")[0].split("### In PyTorch")[0]


@pytest.mark.parametrize("code", re.findall(r"```python\n(.*?)```", INFERENCE, re.S))
def test_the_docs_inference_example_runs_on_the_demo(code, demo_evaluated, monkeypatch, capsys):
    monkeypatch.chdir(demo_evaluated[0])
    exec(compile(code, "docs/reading.md inference example", "exec"), {})  # noqa: S102
    assert re.fullmatch(r"\S+: class \d+, stored as \d+\n", capsys.readouterr().out)


# --- melstore features ----------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], prog_name="melstore")


def stderr_lines(result):
    """What the command said on stderr, without progress lines (a slow machine may print some)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("melstore: ")]


@pytest.fixture(scope="module")
def leaky_files(leaky):
    """Three of the leaky set's files, as a user names them (strings), and the small store."""
    workdir, root = leaky
    paths = [
        str(root / "audio" / name) for name in ("1-100-A-0.wav", "4-400-A-0.wav", "5-500-A-0.wav")
    ]
    return paths, workdir / "results/esc/small.h5"


def test_features_npz_holds_an_array_per_file_and_leaves_out_a_broken_one(
    leaky_files, small, tmp_path
):
    paths, store = leaky_files
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    out = tmp_path / "new.npz"
    result = run("features", store, paths[0], broken, *paths[1:], "-o", out)
    assert result.exit_code == 1, result.output
    assert stderr_lines(result) == [f"{broken}: not decodable audio: Format not recognised"]
    assert result.stdout.startswith(f"{out}: 3 of 4 files computed (")
    with np.load(out) as written:
        assert written.files == paths
        for path in paths:
            assert_bits_equal(written[path], small.from_file(path), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.wav", "new.npz"]


def test_features_npy_stacks_the_files_in_the_order_given(leaky_files, small, tmp_path):
    paths, store = leaky_files
    out = tmp_path / "new.npy"
    result = run("features", store, *reversed(paths), "-o", out)
    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == []
    stacked = np.load(out)
    assert stacked.shape == (3, 32, 44) and stacked.dtype == np.float32
    for row, path in enumerate(reversed(paths)):
        assert_bits_equal(stacked[row], small.from_file(path), path)


def test_features_npy_is_not_written_when_a_file_fails(leaky_files, tmp_path):
    paths, store = leaky_files
    out = tmp_path / "new.npy"
    result = run("features", store, paths[0], tmp_path / "gone.wav", paths[1], "-o", out)
    assert result.exit_code == 1
    missing, not_written = stderr_lines(result)
    assert missing == f"{tmp_path / 'gone.wav'}: file not found"
    assert not_written.startswith(f"{out} not written: 2 of 3 files computed (")
    assert list(tmp_path.iterdir()) == []


def test_features_h5_holds_the_clips_and_their_paths(leaky_files, small, tmp_path):
    paths, store = leaky_files
    out = tmp_path / "new.h5"
    assert run("features", store, *paths, "-o", out).exit_code == 0
    with h5py.File(out, "r") as f:
        assert f["path"].asstr()[()].tolist() == paths
        assert f["features"].shape == (3, 32, 44) and "n_frames" not in f
        assert f.attrs["feature_set"] == "small" and f.attrs["store"] == str(store)
        assert json.loads(f.attrs["params"]) == small.params
        for row, path in enumerate(paths):
            assert_bits_equal(f["features"][row], small.from_file(path), path)


def test_features_of_a_variable_length_store_in_h5_and_npy(variable_build, tmp_path):
    workdir, store = variable_build
    clips = stored_clips(store, workdir)
    paths = [str(path) for path, _ in clips]
    assert run("features", store, *paths, "-o", tmp_path / "var.h5").exit_code == 0
    with h5py.File(tmp_path / "var.h5", "r") as f:
        offsets, counts = f["frame_offset"][()], f["n_frames"][()]
        for row, (path, stored) in enumerate(clips):
            clip = f["features"][:, offsets[row] : offsets[row] + counts[row]]
            assert_bits_equal(clip, stored, path)
    assert run("features", store, paths[2], "-o", tmp_path / "one.npy").exit_code == 0
    assert_bits_equal(np.load(tmp_path / "one.npy")[0], clips[2][1], paths[2])
    refused = run("features", store, *paths[:2], "-o", tmp_path / "two.npy")
    assert refused.exit_code == 2 and len(refused.stderr.splitlines()) == 1
    assert "two.npy: a .npy stacks its clips in one array" in refused.stderr
    assert "so it holds one file, not 2: write .npz or .h5" in refused.stderr
    assert not (tmp_path / "two.npy").exists()


def test_features_unrounded_gives_a_compact_store_s_values_before_rounding(leaky, tmp_path):
    workdir, root = leaky
    store, path = workdir / "results/esc/compact.h5", str(root / "audio/2-201-A-1.wav")
    assert run("features", store, path, "--unrounded", "-o", tmp_path / "x.npz").exit_code == 0
    with np.load(tmp_path / "x.npz") as written:
        exact = melstore.extractor(store, rounded=False).from_file(path)
        assert_bits_equal(written[path], exact, path)


def test_features_says_on_one_line_that_the_versions_differ(leaky_files, tmp_path):
    paths, store = leaky_files
    older = standalone_copy(store, tmp_path / "older.h5")
    with h5py.File(older, "r+") as f:
        f.attrs["versions"] = json.dumps({**json.loads(f.attrs["versions"]), "soxr": "0.1"})
    result = run("features", older, paths[0], "-o", tmp_path / "x.npz")
    assert result.exit_code == 0
    [line] = stderr_lines(result)
    assert line.startswith(f"warning: {older} was built with other library versions: soxr 0.1 -> ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/gone.h5", "a.wav", "-o", "{tmp}/x.npz"], "Error: {tmp}/gone.h5: no such file"),
        (["{store}", "a.wav", "-o", "{tmp}/x"],
         "melstore features: Invalid value for '-o' / '--output': {tmp}/x: end it in .npz, "
         ".npy or .h5, not no suffix"),
        (["{store}", "a.wav", "b.wav", "a.wav", "-o", "{tmp}/x.npz"],
         "melstore features: Invalid value for 'AUDIO...': a.wav is given twice"),
        (["{store}", "a.wav"], "melstore features: Missing option '-o' / '--output'"),
        (["{store}", "a.wav", "-o", "{store}"], "Error: {store} is the store itself; write"),
        (["{store}", "{tmp}/a.npz", "-o", "{tmp}/a.npz"], "Error: {tmp}/a.npz is one of the audio"),
    ],
)  # fmt: skip
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(leaky_files, tmp_path, args, message):
    store = leaky_files[1]
    result = run("features", *(arg.format(tmp=tmp_path, store=store) for arg in args))
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert message.format(tmp=tmp_path, store=store) in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_progress_without_reuse_leaves_it_out(capsys):
    progress = Progress("features x.npz", total=2, reused=None, every_seconds=0)
    progress.update(failed=1)
    line = capsys.readouterr().err
    assert line.startswith("melstore: features x.npz: 1/2 files computed (")
    assert line.endswith(" s left), 1 failed\n")
