"""Messy input: every file gets an outcome, the dataset folder is never touched."""

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import REPO, run_snakemake, tone, write_audio

from melstore.store.format import read_table

# Names a shell acts on, each touching its own trace file in the shell's directory: $(...) and
# backticks bare or in double quotes, ';' bare, and a quote that ends single quoting before ';'.
GOOD = {
    "formats/u8 with spaces.wav": dict(sr=8000, channels=1, subtype="PCM_U8"),
    "formats/adpcm 'quoted;touch pwned-in-quotes;'.wav": dict(sr=22050, channels=1,
                                                              subtype="IMA_ADPCM"),
    "formats/wavex $(touch pwned-dollar).wav": dict(sr=44100, channels=2, subtype="PCM_24",
                                                    container="WAVEX"),
    "formats/float;touch pwned-semicolon;.wav": dict(sr=48000, channels=2, subtype="FLOAT"),
    "formats/192k-ünïcödé `touch pwned-backtick`.wav": dict(sr=192000, channels=2,
                                                            subtype="PCM_24"),
    "formats/six channels.wav": dict(sr=16000, channels=6, subtype="PCM_16"),
    "formats/one sample.wav": dict(sr=16000, channels=1, subtype="PCM_16", seconds=1 / 16000),
    "formats/shorter than n_fft.wav": dict(sr=22050, channels=1, subtype="PCM_16", seconds=0.02),
    "formats/long.flac": dict(sr=44100, channels=1, subtype="PCM_16", container="FLAC",
                              seconds=9.0),
    "formats/vorbis.ogg": dict(sr=32000, channels=2, subtype="VORBIS", container="OGG"),
}  # fmt: skip
SHELL_TRACES = [trace for name in GOOD for trace in re.findall(r"touch ([\w-]+)", name)]


def bad_files(root):
    """Unusable files, written on the fly; returns path -> expected reason prefix."""
    valid = root.parent / "valid.wav"
    write_audio(valid, tone(16000, 0.5), 16000, container="WAV", subtype="PCM_16")
    nan_samples = tone(16000, 0.5)
    nan_samples[100] = np.nan
    cases = {
        "bad/empty.wav": (b"", "empty file"),
        "bad/text.wav": (b"just some text, not audio\n" * 40, "not decodable audio"),
        "bad/random.wav": (np.random.default_rng(0).bytes(5000), "not decodable audio"),
        "bad/truncated header.wav": (valid.read_bytes()[:30], "not decodable audio"),
    }
    for rel, (content, _) in cases.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    write_audio(root / "bad/no frames.wav", np.zeros((0, 1), np.float32), 16000,
                container="WAV", subtype="PCM_16")  # fmt: skip
    write_audio(root / "bad/nan.wav", nan_samples, 16000, container="WAV", subtype="FLOAT")
    return {
        **{rel: reason for rel, (_, reason) in cases.items()},
        "bad/no frames.wav": "no audio frames",
        "bad/nan.wav": "non-finite samples",
    }


def snapshot(root):
    """Every path below ``root`` with its bytes and mtime (links: their own)."""
    return {
        p.relative_to(root).as_posix(): (
            p.read_bytes() if p.is_file() and not p.is_symlink() else None,
            p.lstat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def messy_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "dataset"
    for i, (rel, spec) in enumerate(GOOD.items()):
        samples = tone(spec["sr"], spec.get("seconds", 1.0), spec["channels"], 300 + 50 * i, i)
        write_audio(root / rel, samples, spec["sr"], container=spec.get("container", "WAV"),
                    subtype=spec["subtype"])  # fmt: skip
    write_audio(root / "formats/silence.wav", np.zeros((22050, 2), np.float32), 22050,
                container="WAV", subtype="PCM_16")  # fmt: skip
    expected_failures = bad_files(root)
    outside = root.parent / "outside.wav"
    write_audio(outside, tone(16000, 0.5), 16000, container="WAV", subtype="PCM_16")
    (root / "bad/link out.wav").symlink_to(outside)
    (root / "bad/broken link.wav").symlink_to(root / "nowhere.wav")
    csv = root.parent / "meta.csv"
    csv.write_text(
        "path,speaker\n"
        "formats/long.flac,anna\n"
        "missing/gone.wav,bob\n"
        "../outside.wav,carl\n"
        f"{outside},dora\n"
    )
    expected_failures |= {
        "bad/link out.wav": "path escapes the dataset root",
        "bad/broken link.wav": "file not found",
        "missing/gone.wav": "file not found",
        "../outside.wav": "path escapes the dataset root",
        str(outside): "path escapes the dataset root",
    }
    before = snapshot(root)
    for path in [root, *root.rglob("*")]:  # read-only, as datasets on shared storage are
        if not path.is_symlink():
            path.chmod(0o555 if path.is_dir() else 0o444)
    workdir = root.parent / "work"
    config = {
        "dataset": {"name": "messy", "layout": "folder", "root": str(root), "metadata": str(csv)},
        "features": ["seed"],
        "min_success": 0.3,
    }
    result = run_snakemake(workdir, config)
    return root, workdir, result, before, expected_failures


def test_every_file_lands_in_the_store_or_in_failures(messy_build):
    root, workdir, _, _, expected_failures = messy_build
    metadata = read_table(workdir / "results/messy/seed.h5")
    failures = read_table(workdir / "results/messy/seed.h5", "failures")
    assert sorted(metadata["path"]) == sorted([*GOOD, "formats/silence.wav"])
    assert metadata.set_index("path").loc["formats/long.flac", "speaker"] == "anna"
    assert sorted(failures["path"]) == sorted(expected_failures)
    for path, reason in zip(failures["path"], failures["reason"], strict=True):
        assert reason.startswith(expected_failures[path]), (path, reason)
        assert "\n" not in reason and "Traceback" not in reason


def test_stored_features_are_finite_and_silence_sits_at_the_floor(messy_build):
    _, workdir, _, _, _ = messy_build
    metadata = read_table(workdir / "results/messy/seed.h5")
    with h5py.File(workdir / "results/messy/seed.h5") as f:
        features = f["features"][()]
    assert np.isfinite(features).all()
    silence = features[list(metadata["path"]).index("formats/silence.wav")]
    assert (silence == -80.0).all()
    by_path = metadata.set_index("path")
    assert by_path.loc["formats/six channels.wav", "native_channels"] == 6
    assert by_path.loc["formats/one sample.wav", "n_frames_valid"] == 1
    assert by_path.loc["formats/long.flac", "native_duration"] == pytest.approx(9.0)


def test_the_dataset_folder_is_left_exactly_as_it_was(messy_build):
    root, _, _, before, _ = messy_build
    assert snapshot(root) == before


def test_no_traceback_reaches_the_user(messy_build):
    _, _, result, _, expected_failures = messy_build
    assert "Traceback" not in result.stdout + result.stderr
    total = len(GOOD) + 1 + len(expected_failures)
    assert f"{len(expected_failures)} of {total} files failed" in result.stdout


def test_no_file_name_reaches_a_shell(messy_build):
    root, workdir, _, _, _ = messy_build
    assert len(SHELL_TRACES) == 4
    # where a shell would run: snakemake's and its jobs' directory, this process's, the dataset's
    places = {workdir, Path.cwd(), REPO, root.parent, root, *filter(Path.is_dir, root.rglob("*"))}
    traces = [place / trace for place in places for trace in SHELL_TRACES]
    assert [trace for trace in traces if trace.exists()] == []
