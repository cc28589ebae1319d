"""Shared fixtures: generated audio and a runner for the real snakemake."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from melstore.features.presets import PRESETS
from melstore.pipeline import demo

REPO = Path(__file__).resolve().parents[1]
USER_CONFIG = "my.yaml"  # the config file name the README's examples use
MELSTORE = str(Path(sys.executable).parent / "melstore")  # the installed command
TORCH_BUILD = "torch==2.13.0+cpu"  # the CPU build .ci/run installs: pip's default bundles CUDA
TORCH_SKIPPED = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected, so the count is of this run
def pytest_collection_modifyitems(config, items):
    """Without torch, skip the tests marked ``torch`` and count them for the summary."""
    if importlib.util.find_spec("torch") is not None:
        return
    needs_torch = [item for item in items if item.get_closest_marker("torch")]
    for item in needs_torch:
        item.add_marker(pytest.mark.skip(reason="PyTorch is not installed"))
    config.stash[TORCH_SKIPPED] = len(needs_torch)


def pytest_terminal_summary(terminalreporter, config):
    skipped = config.stash.get(TORCH_SKIPPED, 0)
    if skipped:  # one line, so a run without torch cannot pass for a run of them all
        tests = "test is" if skipped == 1 else "tests are"
        terminalreporter.write_line(
            f"melstore: torch is not installed: the {skipped} torch {tests} skipped "
            f'(pip install "{TORCH_BUILD}" runs them; docs/reading.md#with-pytorch names its index)'
        )


def tone(sr: int, seconds: float, channels: int = 1, freq: float = 440.0, seed: int = 0):
    """A sine plus a little noise, float32 (frames, channels), peak about 0.5."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(1, round(sr * seconds))) / sr
    y = 0.45 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(len(t))
    gains = np.linspace(1.0, 0.6, channels)
    return (y[:, None] * gains[None, :]).astype(np.float32)


def write_audio(path: Path, samples, sr: int, *, container="WAV", subtype="PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sr, format=container, subtype=subtype)
    return path


def snakemake_command(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> list:
    """The real snakemake in ``workdir``, with ``workdir/my.yaml`` as the user's config file.

    It comes after ``args``, which may name targets: ``--configfile`` takes several values.
    """
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(snakefile),
        "--directory", str(workdir),
        "--cores", "2",
        *args,
        "--configfile", str(workdir / USER_CONFIG),
    ]  # fmt: skip


def run_snakemake(
    workdir: Path,
    config: dict,
    *args: str,
    check: bool = True,
    snakefile: Path = REPO / "Snakefile",
):
    """Run the real workflow in ``workdir`` as the README says: ``--configfile my.yaml``.

    ``config`` is written to ``workdir/my.yaml``; Snakemake merges it over the
    committed config.yaml, as it does a user's config file.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / USER_CONFIG).write_text(yaml.safe_dump(config))
    command = snakemake_command(workdir, *args, snakefile=snakefile)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-5000:]}")
    return result


def keep_a_copy(base: Path, tmp_path_factory) -> Path:
    """A copy of the folder ``base`` (a dataset and its build) to restore it from."""
    kept = tmp_path_factory.mktemp(f"{base.name}-kept") / "copy"
    shutil.copytree(base, kept, symlinks=True)  # keeps mtimes to the nanosecond
    return kept


def restore(base: Path, kept: Path) -> None:
    """``base`` as it was kept (:func:`keep_a_copy`), at the same absolute paths."""
    shutil.rmtree(base)
    shutil.copytree(kept, base, symlinks=True)


def standalone_copy(store: Path, out: Path) -> Path:
    """A copy of ``store`` as one file (``melstore pack``), which a test may change freely."""
    from melstore.store.index import pack

    pack(store, out)
    return out


def store_bytes(index: Path) -> int:
    """The bytes of a store on disk: its index and the shard files it lists."""
    import h5py

    with h5py.File(index, "r") as opened:
        names = opened["shards/name"].asstr()[()] if "shards" in opened else []
    return index.stat().st_size + sum((index.parent / name).stat().st_size for name in names)


def merged_config(workdir: Path) -> dict:
    """The config a run in ``workdir`` used: its my.yaml merged over the committed one."""
    from snakemake.utils import update_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    user = workdir / USER_CONFIG
    if user.exists():
        update_config(config, yaml.safe_load(user.read_text()))
    return config


def make_esc50(root, n=3):
    """An ESC-50 layout of ``n`` clips (the first shorter than the rest); returns its CSV rows."""
    rows = []
    for i in range(n):
        name = f"{i + 1}-10{i}-A-{i}.wav"
        write_audio(root / "audio" / name, tone(44100, 5.0 if i else 0.5), 44100)
        rows.append(
            dict(filename=name, fold=i % 5 + 1, target=i, category=f"c{i}", esc10=i == 0,
                 src_file=100 + i, take="A")
        )  # fmt: skip
    (root / "meta").mkdir()
    pd.DataFrame(rows).to_csv(root / "meta/esc50.csv", index=False)
    return rows


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process (imports and sys.modules start empty)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The demo dataset, written once per test session into its own resources/demo folder.

    Tests that change a dataset copy it first.
    """
    root = tmp_path_factory.mktemp("demo") / demo.ROOT
    demo.write(root)
    return root


def every_feature_set() -> list[str]:
    """Every built-in preset (the registry, so a new one cannot dodge the tests), then the
    committed config.yaml's user-defined sets, which derive from presets."""
    committed = yaml.safe_load((REPO / "config.yaml").read_text())
    return [*PRESETS, *committed["feature_sets"]]


@pytest.fixture(scope="session")
def demo_evaluated(tmp_path_factory):
    """The demo with every feature set, built once through `snakemake all evaluate`.

    Returns the work directory, the user's config and snakemake's result.
    """
    config = {"features": every_feature_set()}
    workdir = tmp_path_factory.mktemp("demo-evaluate")
    result = run_snakemake(workdir, config, "all", "evaluate")
    return workdir, merged_config(workdir), result


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The README's quick start: the committed config.yaml built by the real snakemake.

    Returns the work directory and the run's result. Tests only read it.
    """
    workdir = tmp_path_factory.mktemp("demo-build")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return workdir, run_snakemake(workdir, config)


VARIABLE_CLIPS = {  # a folder dataset without a fold column, clips of different lengths
    "bird/a.wav": (16000, 0.4),
    "bird/b.wav": (22050, 1.3),
    "bird/c.wav": (44100, 0.9),
    "frog/d.wav": (16000, 2.0),
    "frog/e.wav": (8000, 0.25),
    "frog/f.wav": (48000, 1.1),
}


@pytest.fixture(scope="session")
def variable_build(tmp_path_factory):
    """A variable-length (``duration: null``) store of a folder dataset with one broken file.

    Returns the work directory and the store's path.
    """
    root = tmp_path_factory.mktemp("variable-data")
    for i, (path, (sr, seconds)) in enumerate(VARIABLE_CLIPS.items()):
        write_audio(root / path, tone(sr, seconds, 1, 300 + 150 * i, i), sr)
    (root / "frog/broken.wav").write_bytes(b"not audio")
    workdir = tmp_path_factory.mktemp("variable-build")
    config = {
        "dataset": {"name": "ponds", "layout": "folder", "root": str(root)},
        "features": ["var"],
        "feature_sets": {"var": {"preset": "seed", "n_mels": 32, "duration": None}},
        "min_success": 0.5,
    }
    run_snakemake(workdir, config)
    return workdir, workdir / "results/ponds/var.h5"


# The leaky ESC-50 folder: (filename, fold, target, src_file, frequency of its tone).
LEAKY_ESC50_CLIPS = [
    ("1-100-A-0.wav", 1, 0, 100, 300),
    ("1-101-A-1.wav", 1, 1, 101, 900),
    ("2-200-A-0.wav", 2, 0, 200, 350),
    ("2-201-A-1.wav", 2, 1, 201, 950),
    ("3-300-A-0.wav", 3, 0, 300, 400),
    ("3-200-B-1.wav", 3, 1, 200, 1000),  # planted: shares src_file 200 with fold 2
    ("4-400-A-0.wav", 4, 0, 400, 450),  # half a second: padded
    ("4-401-A-1.wav", 4, 1, 401, 1050),
    ("5-500-A-0.wav", 5, 0, 500, 500),
    ("5-900-A-1.wav", 5, 1, 900, None),  # planted: the bytes of 1-101-A-1.wav
]
LEAKY_COPY, LEAKY_ORIGINAL = "audio/5-900-A-1.wav", "audio/1-101-A-1.wav"
LEAKY_SHARED = ("audio/2-200-A-0.wav", "audio/3-200-B-1.wav")
LEAKY_FEATURE_SETS = {
    "small": {"preset": "seed", "n_mels": 32, "duration": 1.0},
    "compact": {
        "preset": "seed", "n_mels": 24, "duration": 1.0, "deltas": True, "precision_db": 0.05,
    },
}  # fmt: skip


def make_leaky_esc50(root):
    """The ESC-50 layout of LEAKY_ESC50_CLIPS, tones with noise (one of them short), and its CSV."""
    for i, (name, _, _, _, freq) in enumerate(LEAKY_ESC50_CLIPS):
        path = root / "audio" / name
        if freq is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / LEAKY_ORIGINAL, path)
        else:
            seconds = 0.5 if name.startswith("4-400") else 1.0
            write_audio(path, tone(22050, seconds, 1, freq, seed=i), 22050)
    rows = [
        dict(filename=name, fold=fold, target=target, category=f"c{target}", esc10=False,
             src_file=src, take=name.split("-")[2])
        for name, fold, target, src, _ in LEAKY_ESC50_CLIPS
    ]  # fmt: skip
    (root / "meta").mkdir()
    pd.DataFrame(rows).to_csv(root / "meta/esc50.csv", index=False)


@pytest.fixture(scope="session")
def leaky(tmp_path_factory):
    """The leaky ESC-50 folder built through `snakemake all`: the work directory and data root.

    Its ``compact`` set is a compact store (``precision_db``) with deltas. Tests only read it.
    """
    root = tmp_path_factory.mktemp("leaky-esc50")
    make_leaky_esc50(root)
    workdir = tmp_path_factory.mktemp("leaky-build")
    config = {
        "dataset": {"name": "esc", "layout": "esc50", "root": str(root)},
        "features": list(LEAKY_FEATURE_SETS),
        "feature_sets": LEAKY_FEATURE_SETS,
    }
    run_snakemake(workdir, config)
    return workdir, root


def assert_real_image(path: Path, *, min_colours: int = 500) -> None:
    """``path`` is a PNG with real content: decodable, mostly not background, many colours."""
    from matplotlib.image import imread

    assert path.stat().st_size > 10_000, f"{path} is only {path.stat().st_size} bytes"
    pixels = imread(path)[..., :3]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert non_white > 0.2, f"{path}: only {non_white:.0%} of the pixels are drawn"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours >= min_colours, f"{path}: only {colours} distinct colours"
